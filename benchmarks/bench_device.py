"""Device speed per deployment: SPARTAN shared and fused, adapters shared and whole, LoRA, a fixed-128
one-graph model, two SPARTAN tasks switching every text, and SPARTAN with two memories a layer, through
the device client, in one run.

    .venv/bin/python benchmarks/bench_device.py --models-dir models/bench-fewshot
    .venv/bin/python benchmarks/bench_device.py --models-dir models/bench-fewshot --quick

The rows run in this one process through the device client's own code (device/spartan_device:
tokenization, padding and the interpreter calls, as ``infer.py`` runs them), batch 1, int8, on the
first ``--num-texts`` QNLI dev pairs: padded or cut to exactly 64 or 128 tokens, or at their real
lengths; with 1 and 2 threads. The fixed-128 row's graph has a fixed [1, 128] input, so its texts
are always padded to 128 (what MediaPipe-style exports run). The two-task row alternates qnli and
sst2 (both SPARTAN, one shared graph) text by text; the two-memory row runs a model trained with
``--memory-site attention+feed-forward``, on its own shared graph. The rows take turns in blocks of
``--block`` texts, the order rotating from block to block, for ``--repeats`` passes: a host whose
speed drifts slows every row alike, so the ratios hold even when the absolute figures move. Per
cell: texts/s, p50/p90 latency per text, and process CPU time per text (all threads); ratios of CPU
time against SPARTAN fused and adapters whole, of throughput against fixed-128. Each row also runs
once as ``python device/infer.py --benchmark --json`` (1 thread, real lengths, 30 texts; the
two-task row on a JSON-lines input alternating the tasks), which gives its peak memory, each task's
load time and the resident memory after each load. The bundles come from
benchmarks/method_bundles.py (converted when missing). Prints Markdown tables, writes JSON (default
benchmarks/results/device.json) and a PNG plot beside it.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "device"))

from benchmarks.method_bundles import FIXED_LENGTH, REPO, ensure_bundles  # noqa: E402
from benchmarks.method_runs import machine, print_table, take_turns, write_json  # noqa: E402

ROWS = {  # label -> (bundle form, the tasks it runs, taking turns text by text)
    "SPARTAN shared": ("spartan", ["qnli"]),
    "SPARTAN fused": ("spartan-whole", ["qnli"]),
    "adapters shared": ("adapters", ["qnli"]),
    "adapters whole": ("adapters-whole", ["qnli"]),
    "LoRA unmerged shared": ("lora-unmerged", ["qnli"]),
    "LoRA merged (plain BERT graph)": ("lora-merged", ["qnli"]),
    "fixed-128 one graph": ("fixed-128", ["qnli"]),
    "SPARTAN shared, 2 tasks switching": ("spartan-2tasks", ["qnli", "sst2"]),
    "SPARTAN shared, two memories a layer": ("spartan-two-sites", ["qnli"]),
    "SPARTAN shared, tuned LayerNorms": ("spartan-tuned-norms", ["qnli"]),
}
FIXED = {"fixed-128 one graph": FIXED_LENGTH}  # rows whose graph takes one length only
TASK = "qnli"
REAL_LENGTHS = ("real", "sorted")  # --lengths that run each text at its own length: file order, or by length
DEFAULT_INPUT = REPO.parent / "shared" / "data" / "glue" / "QNLI" / "dev.tsv"


def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_device.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", required=True, help="one trained QNLI model per method (method_bundles.py)")
    parser.add_argument("--bundles-dir", default="models/bench-bundles")
    parser.add_argument("--input", default=str(DEFAULT_INPUT), help="QNLI dev TSV (default: ../shared/data)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--lengths", nargs="+", default=["64", "128", "real"],
                        help="token counts, 'real' (file order) or 'sorted' (real lengths, texts in length order)")
    parser.add_argument("--num-texts", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the texts (default 3)")
    parser.add_argument("--block", type=int, default=10, help="texts a row runs before the next row's turn")
    parser.add_argument("--quick", action="store_true", help="30 texts, 1 pass, 1 thread, real lengths")
    parser.add_argument("--output", help="JSON (default benchmarks/results/device[_quick].json)")
    return parser


def read_pairs(path: str, count: int) -> list:
    """The first ``count`` (text, text_pair) of a QNLI TSV, read by the client's own reader."""
    from spartan_device.inputs import Record, read_records

    with open(path, "rb") as handle:
        records = [r for r in read_records(handle, path, default_task=TASK) if isinstance(r, Record)]
    return [(r.text, r.text_pair) for r in records[:count]]


def load_engines(bundles: dict, threads: int) -> dict:
    """{row label: a device Engine for it}, every task loaded and warmed up; exits with the client's
    message if a bundle cannot be used."""
    from spartan_device.bundle import read_bundle
    from spartan_device.engine import Engine
    from spartan_device.errors import DeviceError
    from spartan_device.runtime import choose_runtime

    engines = {}
    try:
        runtime = choose_runtime()
        for label, (form, tasks) in ROWS.items():
            engine = Engine(read_bundle(bundles[form]), runtime, threads=threads)
            for task in tasks:
                engine.task(task)
            engines[label] = engine
    except DeviceError as err:
        sys.exit(f"error: {err}")
    return engines


def classify(engine, task: str, pair, length: int | None, max_length: int) -> int:
    """One text through one row, as the client's --benchmark times it: tokenize (truncating to the
    task's ``max_length``), pad to ``length`` (None: its own), run. Returns its tokens."""
    from spartan_device.engine import pad

    batch = pad(engine.tokenization.encode([pair], length or max_length), length)
    engine.logits(engine.task(task), batch)
    return batch.num_tokens


def by_length(engine, pairs: list) -> list:
    """``pairs`` in order of their token count (stable), as ``engine`` tokenizes them for its task."""
    encoded = engine.tokenization.encode(pairs, engine.bundle.task(TASK).max_length)
    return [pair for _, pair in sorted(zip((len(e.ids) for e in encoded), pairs), key=lambda item: item[0])]


def measure(engines: dict, pairs: list, length: int | None, repeats: int, block: int) -> dict:
    """{row: figures}: the rows take turns in blocks of ``block`` texts, rotating who goes first."""
    labels = list(engines)
    tasks = {label: ROWS[label][1] for label in labels}
    max_lengths = {label: {task: engines[label].bundle.task(task).max_length for task in tasks[label]}
                   for label in labels}  # read once
    lengths = {label: FIXED.get(label, length) for label in labels}

    def run(label, index):
        task = tasks[label][index % len(tasks[label])]
        return classify(engines[label], task, pairs[index], lengths[label], max_lengths[label][task])

    latencies, cpu_seconds, tokens = take_turns(labels, len(pairs), run, repeats, block)
    figures = {}
    for label in labels:
        lat = np.asarray(latencies[label])
        figures[label] = {"texts": len(lat), "mean_tokens": round(sum(tokens[label]) / len(lat), 1),
                          "padded_to": lengths[label],
                          "texts_per_s": round(1000.0 * len(lat) / lat.sum(), 1),
                          "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3),
                                         "p90": round(float(np.percentile(lat, 90)), 3)},
                          "cpu_ms_per_text": round(1000.0 * cpu_seconds[label] / len(lat), 3)}
    return figures


def peak_memory(bundles: dict, args, scratch: Path) -> dict:
    """{row: {peak_rss_mb, task_load_ms, rss_after_load_mb}} from one ``infer.py --benchmark --json``
    run per row (1 thread, real lengths; the two-task row on an input alternating its tasks)."""
    pairs = read_pairs(args.input, 30)
    results = {}
    for label, (form, tasks) in ROWS.items():
        source = scratch / f"{form}.jsonl"
        source.write_text("".join(json.dumps({"id": i, "task": tasks[i % len(tasks)], "text": text,
                                              "text_pair": pair}) + "\n" for i, (text, pair) in enumerate(pairs)))
        command = [sys.executable, str(REPO / "device" / "infer.py"), "--bundle", str(bundles[form]), "--benchmark",
                   "--json", "--threads", "1", "--batch-size", "1", "--input", str(source)]
        if label in FIXED:
            command += ["--seq-length", str(FIXED[label])]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            sys.exit(f"error: {' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
        figures = json.loads(done.stdout)
        results[label] = {key: figures[key] for key in ("peak_rss_mb", "task_load_ms", "rss_after_load_mb")}
        results[label]["task_file_bytes"] = {task: (bundles[form] / json.loads(
            (bundles[form] / "manifest.json").read_text())["tasks"][task]["file"]).stat().st_size for task in tasks}
    return results


def table(cells: dict) -> list:
    """Rows for one (threads, length): texts/s, p50, p90, CPU per text, CPU vs SPARTAN fused and vs
    adapters whole, throughput vs fixed-128."""
    fused, adapters, fixed = cells["SPARTAN fused"], cells["adapters whole"], cells["fixed-128 one graph"]
    return [[label, f"{c['texts_per_s']:.1f}", f"{c['latency_ms']['p50']:.2f}", f"{c['latency_ms']['p90']:.2f}",
             f"{c['cpu_ms_per_text']:.2f}", f"{c['cpu_ms_per_text'] / fused['cpu_ms_per_text']:.3f}x",
             f"{c['cpu_ms_per_text'] / adapters['cpu_ms_per_text']:.3f}x",
             f"{c['texts_per_s'] / fixed['texts_per_s']:.2f}x"]
            for label, c in cells.items()]


def plot(results: dict, path: Path):
    """Grouped bars: texts/s per row, one group per (threads, length)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(results)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(ROWS)
    for i, label in enumerate(ROWS):
        ax.bar([c + i * width for c in range(len(configs))], [results[k][label]["texts_per_s"] for k in configs],
               width, label=label)
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(configs))], configs)
    ax.set_ylabel("texts/s (batch 1)")
    ax.set_title("Device client throughput per deployment (int8, ai-edge-litert, batch 1)")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args.num_texts, args.repeats, args.threads, args.lengths = 30, 1, [1], ["real"]
    bad = [length for length in args.lengths
           if length not in REAL_LENGTHS and not (length.isdigit() and int(length) >= 2)]
    if bad or min(args.threads) < 1 or min(args.num_texts, args.repeats, args.block) < 1:
        sys.exit(f"error: --lengths takes token counts >= 2, 'real' or 'sorted' (got {bad}); --threads, --num-texts, "
                 f"--repeats and --block must be >= 1")
    if not Path(args.input).is_file():
        sys.exit(f"error: --input {args.input}: no such file (QNLI dev TSV expected)")
    output = Path(args.output or f"benchmarks/results/device{'_quick' if args.quick else ''}.json")
    bundles = ensure_bundles(args.models_dir, args.bundles_dir, sorted({form for form, _ in ROWS.values()}))
    pairs = read_pairs(args.input, args.num_texts)

    load_before, started, results = os.getloadavg(), time.time(), {}
    for threads in args.threads:
        engines = load_engines(bundles, threads)
        for length in args.lengths:
            key = f"{threads} thread{'s' if threads > 1 else ''}, length {length}"
            texts = by_length(engines["SPARTAN shared"], pairs) if length == "sorted" else pairs
            width = None if length in REAL_LENGTHS else int(length)
            results[key] = measure(engines, texts, width, args.repeats, args.block)
            ratio = results[key]["SPARTAN shared"]["cpu_ms_per_text"] / results[key]["SPARTAN fused"]["cpu_ms_per_text"]
            print(f"  {key}: SPARTAN shared CPU / fused {ratio:.3f} ({time.time() - started:.0f} s)",
                  file=sys.stderr, flush=True)
        del engines
    load_after = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-device-") as scratch:
        memory = peak_memory(bundles, args, Path(scratch))

    from benchmarks.method_runs import cpu_model
    from spartan_device.runtime import choose_runtime

    print(f"\n{len(pairs)} QNLI dev pairs x {args.repeats} passes, batch 1, {choose_runtime()}, int8 bundles, "
          f"CPU {cpu_model()} ({os.cpu_count()} cpus); rows interleaved in blocks of {args.block} texts; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    for key, cells in results.items():
        print(f"\n{key} (mean {cells['SPARTAN shared']['mean_tokens']} tokens)\n")
        print_table(["deployment", "texts/s", "p50 ms", "p90 ms", "CPU ms/text", "CPU vs SPARTAN fused",
                     "CPU vs adapters whole", "texts/s vs fixed-128"], table(cells))
    print("\nmemory of one `infer.py --benchmark` process (1 thread, real lengths)\n")
    print_table(["deployment", "peak RSS MB", "task loads (ms)", "resident after each load (MB)", "task file bytes"],
                [[label, f"{m['peak_rss_mb']:.0f}", ", ".join(f"{t} {ms:.0f}" for t, ms in m["task_load_ms"].items()),
                  ", ".join(f"{t} {mb:.1f}" for t, mb in m["rss_after_load_mb"].items()),
                  ", ".join(f"{t} {b:,}" for t, b in m["task_file_bytes"].items())] for label, m in memory.items()])
    for name, other in (("SPARTAN fused", "goal <= 1.02"), ("adapters whole", "goal <= 1.00"),
                        ("adapters shared", "goal <= 1.00")):
        ratios = [cells["SPARTAN shared"]["cpu_ms_per_text"] / cells[name]["cpu_ms_per_text"] for cells in results.values()]
        print(f"\nSPARTAN shared CPU per text / {name}: {', '.join(f'{r:.3f}' for r in ratios)} ({other})")
    write_json(output, {"benchmark": "device", "machine": {**machine(), "load_before": load_before,
                                                           "load_after": load_after},
                        "setting": {"threads": args.threads, "lengths": args.lengths, "num_texts": len(pairs),
                                    "repeats": args.repeats, "block": args.block, "input": args.input,
                                    "batch_size": 1},
                        "bundles": {form: str(path) for form, path in bundles.items()},
                        "cells": results, "memory": memory})
    if importlib.util.find_spec("matplotlib") is None:  # not in device/requirements.txt: a Pi may lack it
        print(f"\nwrote {output} (no plot: matplotlib is not installed)")
        return
    plot(results, output.with_suffix(".png"))
    print(f"\nwrote {output} and {output.with_suffix('.png')}")


if __name__ == "__main__":
    main()
