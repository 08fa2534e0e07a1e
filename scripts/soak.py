#!/usr/bin/env python3
"""Soak test of the device client (issue 7; not in CI): stream N mixed-task inputs through ONE
`python device/infer.py --input -` process and watch throughput and resident memory.

    .venv/bin/python scripts/soak.py --bundle models/tflite                 # 10,000 qnli + sst2 lines
    .venv/bin/python scripts/soak.py --bundle B --tasks qnli,sst2 --lines 10000 --every 1000

Inputs: the shipped GLUE samples (samples/glue/<TASK>/dev.tsv) for qnli and sst2 when the bundle has
those tasks, plus every task's manifest reference_inputs; lines alternate between the tasks and each
text gets a counter so no two lines are identical. Every line must be answered, in order, with its
id (exit code 0). Reports texts/s per --every lines and the client's resident memory (VmRSS from
/proc/<pid>/status) once every task is loaded (after the first window) and at the end; the growth
must stay under --max-growth (5%). Prints a table and writes JSON under benchmarks/results/.
Exit code 0 pass, 1 a check failed, 2 bad options or bundle.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

from spartan_tf.artifacts import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "device" / "infer.py"
SAMPLE_FILES = {"qnli": ("QNLI/dev.tsv", "question", "sentence"), "sst2": ("SST-2/dev.tsv", "sentence", None)}


def rss_kb(pid: int, field: str = "VmRSS") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def pools(manifest: dict, tasks: list[str]) -> dict[str, list[tuple[str, str | None]]]:
    """(text, text_pair) inputs per task: the GLUE samples when shipped, plus the reference inputs."""
    result = {}
    for task in tasks:
        items = []
        if task in SAMPLE_FILES:
            name, text_col, pair_col = SAMPLE_FILES[task]
            path = REPO / "samples" / "glue" / name
            if path.is_file():
                with open(path, encoding="utf-8", newline="") as handle:
                    for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                        items.append((row[text_col], row[pair_col] if pair_col else None))
        for ref in manifest["tasks"][task].get("reference_inputs") or []:
            if isinstance(ref, dict) and isinstance(ref.get("text"), str):
                items.append((ref["text"], ref.get("text_pair")))
        if not items:
            raise SystemExit(f"error: task {task}: no inputs (no shipped sample, no reference_inputs)")
        result[task] = items
    return result


def make_lines(inputs: dict, n: int) -> list[bytes]:
    tasks = list(inputs)
    lines = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        text, pair = inputs[task][(i // len(tasks)) % len(inputs[task])]
        record = {"id": i, "task": task, "text": f"{text} ({i})"}
        if pair is not None:
            record["text_pair"] = pair
        lines.append((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="models/tflite")
    parser.add_argument("--tasks", help="comma-separated (default: qnli,sst2 when present, else every task)")
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=1_000, help="report throughput and memory every N lines")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-growth", type=float, default=0.05, help="allowed RSS growth, start to end (0.05)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "soak.json"))
    args = parser.parse_args(argv)
    if args.lines < 1 or args.every < 1:
        print("error: --lines and --every must be >= 1", file=sys.stderr)
        return 2
    bundle = Path(args.bundle)
    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        print(f"error: --bundle {bundle}: cannot read manifest.json ({err})", file=sys.stderr)
        return 2
    available = list(manifest.get("tasks") or {})
    if args.tasks:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        unknown = [t for t in tasks if t not in available]
        if unknown:
            print(f"error: --tasks: {unknown[0]!r} is not in the bundle (has: {', '.join(available)})",
                  file=sys.stderr)
            return 2
    else:
        tasks = [t for t in ("qnli", "sst2") if t in available] or available
    lines = make_lines(pools(manifest, tasks), args.lines)

    command = [sys.executable, str(CLIENT), "--bundle", str(bundle), "--input", "-", "--batch-size",
               str(args.batch_size)] + (["--threads", str(args.threads)] if args.threads else [])
    stderr_path = Path(args.output).with_suffix(".stderr.txt")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    start = time.perf_counter()
    with open(stderr_path, "wb") as stderr_file:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_file,
                                   cwd=REPO)

        def feed():
            try:
                for line in lines:
                    process.stdin.write(line)
                process.stdin.flush()  # stdin stays open: the client answers a stream without EOF, so it is
            except (BrokenPipeError, ValueError):  # still alive when its last answer arrives (RSS read)
                pass

        threading.Thread(target=feed, daemon=True).start()
        rows, problems = [], []
        answered, last_t, last_n = 0, start, 0
        first_answer_s = rss_first = rss_loaded = rss_end = peak = None
        for raw in process.stdout:
            result = json.loads(raw)
            if result.get("id") != answered:
                problems.append(f"answer {answered} has id {result.get('id')!r}")
                process.kill()
                break
            answered += 1
            if answered == 1:
                first_answer_s, rss_first = time.perf_counter() - start, rss_kb(process.pid)
            if answered == 16 * args.batch_size * len(tasks):  # a full window: every task loaded and run
                rss_loaded = rss_kb(process.pid)
            if answered % args.every == 0 or answered == args.lines:
                now = time.perf_counter()
                rows.append({"lines": answered, "elapsed_s": round(now - start, 2),
                             "texts_per_s": round((answered - last_n) / max(now - last_t, 1e-9), 1),
                             "rss_mb": round((rss_kb(process.pid) or 0) / 1024, 1)})
                last_t, last_n = now, answered
            if answered == args.lines:  # the last answer: the client is alive, waiting for more input
                rss_end, peak = rss_kb(process.pid), rss_kb(process.pid, "VmHWM")
                process.stdin.close()
                print(f"  {answered:>6} lines  {rows[-1]['elapsed_s']:>8.1f} s  {rows[-1]['texts_per_s']:>7.1f} texts/s"
                      f"  RSS {rows[-1]['rss_mb']:.1f} MB", file=sys.stderr, flush=True)
        returncode = process.wait()
    total_s = time.perf_counter() - start
    stderr_text = stderr_path.read_text(errors="replace")
    if returncode != 0:
        problems.append(f"client exit code {returncode}: {stderr_text.strip()[-500:]}")
    if answered != args.lines:
        problems.append(f"{answered} of {args.lines} lines answered")
    baseline = rss_loaded or rss_first
    growth = (rss_end - baseline) / baseline if baseline and rss_end else None
    if growth is None:
        problems.append("could not read the client's memory from /proc")
    elif growth >= args.max_growth:
        problems.append(f"RSS grew {growth:.1%} (limit {args.max_growth:.0%})")
    steady = [r["texts_per_s"] for r in rows[1:]] or [r["texts_per_s"] for r in rows]
    report = {
        "command": " ".join([Path(sys.executable).name, "scripts/soak.py", *(argv or sys.argv[1:])]),
        "client_command": " ".join(command[1:]),
        "bundle": str(bundle), "tasks": tasks, "lines": args.lines, "answered": answered,
        "batch_size": args.batch_size, "threads": args.threads or "client default",
        "total_s": round(total_s, 1), "texts_per_s_overall": round(answered / total_s, 1),
        "texts_per_s_steady_min": min(steady) if steady else None,
        "texts_per_s_steady_max": max(steady) if steady else None,
        "first_answer_s": round(first_answer_s, 2) if first_answer_s else None,
        "rss_mb": {"first_answer": round((rss_first or 0) / 1024, 1),
                   "start_all_tasks_loaded": round((baseline or 0) / 1024, 1),
                   "end": round((rss_end or 0) / 1024, 1), "peak": round((peak or 0) / 1024, 1)},
        "rss_growth": round(growth, 4) if growth is not None else None,
        "max_growth": args.max_growth, "per_interval": rows, "passed": not problems, "problems": problems,
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    atomic_write_json(args.output, report)
    stderr_path.unlink(missing_ok=True) if not problems else None

    print(f"soak: {answered}/{args.lines} lines, tasks {', '.join(tasks)}, bundle {bundle}, "
          f"{os.cpu_count()} CPUs, load {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| lines | elapsed s | texts/s (interval) | RSS MB |")
    print("| ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['lines']} | {row['elapsed_s']} | {row['texts_per_s']} | {row['rss_mb']} |")
    rss = report["rss_mb"]
    print(f"RSS: {rss['first_answer']} MB at the first answer, {rss['start_all_tasks_loaded']} MB once every task "
          f"ran (start), {rss['end']} MB at the end (growth {growth:.2%}), peak {rss['peak']} MB"
          if growth is not None else "RSS: unavailable")
    print(f"overall {report['texts_per_s_overall']} texts/s in {report['total_s']} s; JSON: {args.output}")
    for problem in problems:
        print(f"FAIL: {problem}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
