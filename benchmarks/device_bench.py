"""Device client speed: the split bundle vs the task's fused model vs the shared backbone alone.

    .venv/bin/python benchmarks/device_bench.py --bundle models/tflite --task qnli \\
        --input ../shared/data/glue/QNLI/dev.tsv --num-texts 500 --repeats 3 \\
        [--threads 1] [--batch-size 1] [--json-out benchmarks/results/device_bench.json]

Runs `python device/infer.py --benchmark --json` once per graph and repeat, interleaved (split, fused,
backbone, split, ...) so that a busy machine slows every graph alike, and reports per graph the run
with the median throughput: texts/s, latency percentiles per batch (tokenization included) and
peak memory. Needs a bundle converted with --fused. Prints a Markdown table; --json-out also writes
every run, the commands and the machine.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from spartan_tf.artifacts import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
GRAPHS = {"split": "split bundle (backbone + task file)", "fused": "fused model (one graph)",
          "backbone": "backbone alone (no memories, no head)"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def run_once(args, graph: str) -> tuple[dict, list[str]]:
    command = [sys.executable, str(REPO / "device" / "infer.py"), "--bundle", args.bundle, "--task", args.task,
               "--benchmark", "--json", "--graph", graph, "--threads", str(args.threads),
               "--batch-size", str(args.batch_size), "--num-texts", str(args.num_texts), "--warmup", str(args.warmup)]
    if args.input:
        command += ["--input", args.input]
    if args.runtime:
        command += ["--runtime", args.runtime]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return json.loads(done.stdout), command


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="models/tflite")
    parser.add_argument("--task", default="qnli")
    parser.add_argument("--input", help="texts to run (default: the task's reference inputs, cycled)")
    parser.add_argument("--num-texts", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runtime")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)

    runs = {graph: [] for graph in GRAPHS}
    commands = {}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        for graph in GRAPHS:
            figures, commands[graph] = run_once(args, graph)
            runs[graph].append(figures)
            print(f"  repeat {repeat + 1}/{args.repeats} {graph}: {figures['texts_per_s']} texts/s", file=sys.stderr)
    load_after = os.getloadavg()

    chosen = {graph: sorted(r, key=lambda f: f["texts_per_s"])[len(r) // 2] for graph, r in runs.items()}
    split_rate = chosen["split"]["texts_per_s"]
    first = chosen["split"]
    print(f"\n{first['texts']} texts (mean {first['mean_tokens']} tokens), {first['runtime']}, {args.threads} thread(s), "
          f"batch {args.batch_size}; median of {args.repeats} interleaved runs; {cpu_model()}, "
          f"{os.cpu_count()} cpus; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| graph | texts/s | vs split | p50 ms | p90 ms | p99 ms | peak RSS MB | all runs, texts/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for graph, label in GRAPHS.items():
        f = chosen[graph]
        lat = f["latency_ms"]
        every = ", ".join(str(r["texts_per_s"]) for r in runs[graph])
        print(f"| {label} | {f['texts_per_s']:.1f} | {f['texts_per_s'] / split_rate:.2f}x | {lat['p50']:.2f} | "
              f"{lat['p90']:.2f} | {lat['p99']:.2f} | {f['peak_rss_mb']:.0f} | {every} |")
    if args.json_out:
        atomic_write_json(args.json_out, {
            "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(),
                        "load_average_before": load_before, "load_average_after": load_after},
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "commands": {graph: " ".join(command) for graph, command in commands.items()},
            "median": chosen, "runs": runs,
        })


if __name__ == "__main__":
    main()
