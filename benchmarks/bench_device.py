"""Device speed per method: the backbone alone, SPARTAN split and fused, adapters, LoRA unmerged and
merged, and full fine-tuning, through the device client, all in one run.

    .venv/bin/python benchmarks/bench_device.py --models-dir models/bench-fewshot
    .venv/bin/python benchmarks/bench_device.py --models-dir models/bench-fewshot --quick

Every measurement is one ``python device/infer.py --benchmark --json`` process (batch 1, as
requests arrive; tokenization included): texts/s and p50/p90 latency, for 1 and 2 threads, at
sequence lengths 64 and 128 (every input padded or truncated to exactly that many tokens) and at
QNLI dev's real lengths. The seven rows run interleaved, repeat after repeat, so a busy machine
slows them alike; each cell is the median run (by throughput). Ratios: latency against the backbone
alone (the limit: no task at all) and throughput against adapters. CPU ms/text (the client's process
CPU time, all threads) is steadier than wall time when other work shares the machine. The bundles come from
benchmarks/method_bundles.py (converted when missing). Prints Markdown tables, writes JSON
(default benchmarks/results/device.json) and a PNG plot beside it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.method_bundles import REPO, ensure_bundles  # noqa: E402
from benchmarks.method_runs import machine, print_table, write_json  # noqa: E402

ROWS = {  # label -> (bundle form, --graph)
    "backbone alone": ("spartan", "backbone"),
    "SPARTAN split": ("spartan", "split"),
    "SPARTAN fused": ("spartan", "fused"),
    "adapters": ("adapters", "auto"),
    "LoRA unmerged": ("lora-unmerged", "auto"),
    "LoRA merged": ("lora-merged", "auto"),
    "full": ("full", "auto"),
}
DEFAULT_INPUT = REPO.parent / "shared" / "data" / "glue" / "QNLI" / "dev.tsv"


def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_device.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", required=True, help="one trained QNLI model per method (method_bundles.py)")
    parser.add_argument("--bundles-dir", default="models/bench-bundles")
    parser.add_argument("--input", default=str(DEFAULT_INPUT), help="QNLI dev TSV (default: ../shared/data)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--lengths", nargs="+", default=["64", "128", "real"], help="token counts, or 'real'")
    parser.add_argument("--num-texts", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="30 texts, 1 repeat, 1 thread, real lengths")
    parser.add_argument("--output", help="JSON (default benchmarks/results/device[_quick].json)")
    return parser


def run_client(bundle: Path, graph: str, threads: int, length: str, args) -> dict:
    command = [sys.executable, str(REPO / "device" / "infer.py"), "--bundle", str(bundle), "--task", "qnli",
               "--benchmark", "--json", "--graph", graph, "--threads", str(threads), "--batch-size", "1",
               "--num-texts", str(args.num_texts), "--warmup", "10", "--input", args.input]
    if length != "real":
        command += ["--seq-length", length]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return {**json.loads(done.stdout), "command": " ".join(command)}


def median_run(runs: list) -> dict:
    """The run with the median throughput, its CPU time replaced by the median over all runs."""
    chosen = sorted(runs, key=lambda f: f["texts_per_s"])[len(runs) // 2]
    return {**chosen, "cpu_ms_per_text": statistics.median(f["cpu_ms_per_text"] for f in runs)}


def table(cells: dict) -> list:
    """Rows for one (threads, length): texts/s, p50, p90, latency vs backbone, throughput vs adapters."""
    backbone, adapters = cells["backbone alone"], cells["adapters"]
    return [[label, f"{c['texts_per_s']:.1f}", f"{c['latency_ms']['p50']:.2f}", f"{c['latency_ms']['p90']:.2f}",
             f"{c['latency_ms']['p50'] / backbone['latency_ms']['p50']:.2f}x",
             f"{c['texts_per_s'] / adapters['texts_per_s']:.2f}x", f"{c['cpu_ms_per_text']:.2f}",
             f"{c['cpu_ms_per_text'] / backbone['cpu_ms_per_text']:.2f}x", f"{c['peak_rss_mb']:.0f}"]
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
    ax.set_ylabel("texts/s (batch 1, median run)")
    ax.set_title("Device client throughput per method (int8, ai-edge-litert)")
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
    bad = [length for length in args.lengths if length != "real" and not (length.isdigit() and int(length) >= 2)]
    if bad or min(args.threads) < 1 or args.num_texts < 1 or args.repeats < 1:
        sys.exit(f"error: --lengths takes token counts >= 2 or 'real' (got {bad}); --threads, --num-texts and "
                 f"--repeats must be >= 1")
    if not Path(args.input).is_file():
        sys.exit(f"error: --input {args.input}: no such file (QNLI dev TSV expected)")
    output = Path(args.output or f"benchmarks/results/device{'_quick' if args.quick else ''}.json")
    bundles = ensure_bundles(args.models_dir, args.bundles_dir)

    load_before, runs, results = os.getloadavg(), {}, {}
    for threads in args.threads:
        for length in args.lengths:
            key = f"{threads} thread{'s' if threads > 1 else ''}, length {length}"
            runs[key] = {label: [] for label in ROWS}
            for repeat in range(args.repeats):
                for label, (form, graph) in ROWS.items():
                    figures = run_client(bundles[form], graph, threads, length, args)
                    runs[key][label].append(figures)
                    print(f"  {key}, repeat {repeat + 1}: {label} {figures['texts_per_s']} texts/s",
                          file=sys.stderr, flush=True)
            results[key] = {label: median_run(r) for label, r in runs[key].items()}
    load_after = os.getloadavg()

    first = next(iter(next(iter(results.values())).values()))
    print(f"\n{args.num_texts} QNLI dev pairs per run, batch 1, {first['runtime']}, int8 bundles; median of "
          f"{args.repeats} interleaved runs; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    for key, cells in results.items():
        print(f"\n{key} (mean {cells['SPARTAN split']['mean_tokens']} tokens)\n")
        print_table(["deployment", "texts/s", "p50 ms", "p90 ms", "latency vs backbone", "throughput vs adapters",
                     "CPU ms/text", "CPU vs backbone", "peak RSS MB"], table(cells))
    for measure, value in (("p50 latency", lambda c: c["latency_ms"]["p50"]), ("CPU per text", lambda c: c["cpu_ms_per_text"])):
        ratios = [value(cells["SPARTAN split"]) / value(cells["backbone alone"]) for cells in results.values()]
        print(f"\nSPARTAN split {measure} / backbone alone: {', '.join(f'{r:.2f}' for r in ratios)} "
              f"(goal <= 1.05; median {statistics.median(ratios):.2f})")
    write_json(output, {"benchmark": "device", "machine": {**machine(), "load_before": load_before,
                                                           "load_after": load_after},
                        "setting": {"threads": args.threads, "lengths": args.lengths, "num_texts": args.num_texts,
                                    "repeats": args.repeats, "input": args.input, "batch_size": 1},
                        "bundles": {form: str(path) for form, path in bundles.items()},
                        "median": results, "runs": runs})
    plot(results, output.with_suffix(".png"))
    print(f"\nwrote {output} and {output.with_suffix('.png')}")


if __name__ == "__main__":
    main()
