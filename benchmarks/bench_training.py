"""Training speed per method: examples/s and the wall time of the few-shot run (200 examples, 3 epochs).

    .venv/bin/python benchmarks/bench_training.py                 # QNLI, 200 examples, 3 epochs, all methods
    .venv/bin/python benchmarks/bench_training.py --quick         # 48 examples, 1 epoch: checks the pipeline

Each method trains in its own process with the same data, batch, sequence length and seed (its own
default learning rate). Reported per method: training seconds (the epochs' training parts, without
loading or dev evaluation), examples/s over all epochs and over the epochs after the first (no
graph tracing), the process's wall time, trainable parameters, the dev metric (a sanity check:
200 examples do not make a quality table), and the training time relative to adapters (the paper
claims SPARTAN trains 34% faster than adapters in this setting). With ``--repeats N`` the methods
run N times, interleaved (spartan, adapters, ..., spartan, ...), so a busy machine slows each alike;
a row is the run with the median training time. Prints a Markdown table and writes JSON (default
benchmarks/results/training.json, or training_quick.json with --quick).
"""

import argparse
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.method_runs import (  # noqa: E402
    METHOD_NAMES, machine, print_table, stop_on_sigterm, train_run, write_json)
from spartan_tf.errors import SpartanError, run_cli  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_training.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=METHOD_NAMES, default=list(METHOD_NAMES))
    parser.add_argument("--task", default="qnli")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
    parser.add_argument("--samples", type=int, default=200, help="training examples (class-balanced; default 200)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eval-samples", type=int, default=200, help="dev examples scored after each epoch (default 200)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs per method (default 1)")
    parser.add_argument("--quick", action="store_true", help="48 examples, 1 epoch, 32 dev examples")
    parser.add_argument("--models-dir", help="keep the trained models here, one folder per method (default: a "
                                             "temporary folder; benchmarks/bench_device.py converts kept ones)")
    parser.add_argument("--output", help="JSON file (default benchmarks/results/training[_quick].json)")
    return parser


def summarise(method, run, samples):
    """One table row's numbers from a run's metrics."""
    if "error" in run:
        return {"method": method, "error": run["error"]}
    epoch_seconds = [record["train_seconds"] for record in run["epochs"] if "train_seconds" in record]
    steady = samples / statistics.mean(epoch_seconds[1:]) if len(epoch_seconds) > 1 else None
    return {
        "method": method, "learning_rate": run["learning_rate"], "trainable_parameters": run.get("trainable_parameters"),
        "train_seconds": run["train_seconds"], "epoch_seconds": epoch_seconds,
        "examples_per_second": run["train_examples_per_second"],
        "steady_examples_per_second": round(steady, 2) if steady else None,
        "wall_seconds": run["wall_seconds"], "dev": run["final"],
    }


def median_run(method_runs: list) -> dict:
    """The run with the median training time (a failed run, if any failed), with every run's seconds."""
    failed = [run for run in method_runs if "error" in run]
    if failed:
        return failed[0]
    ordered = sorted(method_runs, key=lambda run: run["train_seconds"])
    return {**ordered[len(ordered) // 2], "train_seconds_all_runs": [run["train_seconds"] for run in method_runs]}


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args.samples, args.epochs, args.eval_samples = 48, 1, 32
    if min(args.samples, args.epochs, args.eval_samples, args.batch_size, args.repeats) < 1:
        raise SpartanError("--samples, --epochs, --eval-samples, --batch-size and --repeats must be >= 1")
    if not (Path(args.data_dir) / "QNLI").is_dir() and args.task == "qnli":
        raise SpartanError(f"--data-dir {args.data_dir}: no QNLI folder (GLUE's TSV layout expected)")
    output = Path(args.output or f"benchmarks/results/training{'_quick' if args.quick else ''}.json")

    runs = {method: [] for method in args.methods}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as scratch:
        models = Path(args.models_dir or scratch)
        for repeat in range(args.repeats):
            for method in args.methods:
                print(f"training {method} ({args.samples} examples, {args.epochs} epochs; repeat {repeat + 1}) ...",
                      file=sys.stderr, flush=True)
                run = train_run(method, args.task, args.data_dir, models / method,
                                "--max-train-samples", args.samples, "--epochs", args.epochs,
                                "--max-eval-samples", args.eval_samples, "--batch-size", args.batch_size,
                                "--max-seq-length", args.max_seq_length, "--seed", args.seed,
                                log=models / f"{method}.log")
                runs[method].append(summarise(method, run, args.samples))
                if "error" in run:
                    print(f"  {method} failed: {run['error']}", file=sys.stderr)
    rows = [median_run(method_runs) for method_runs in runs.values()]
    adapters = next((r for r in rows if r["method"] == "adapters" and "error" not in r), None)
    for row in rows:
        if adapters and "error" not in row:
            row["train_time_vs_adapters"] = round(row["train_seconds"] / adapters["train_seconds"], 3)

    setting = {"task": args.task, "samples": args.samples, "epochs": args.epochs, "batch_size": args.batch_size,
               "max_seq_length": args.max_seq_length, "seed": args.seed, "eval_samples": args.eval_samples,
               "repeats": args.repeats,
               "quick": args.quick}
    write_json(output, {"benchmark": "training", "setting": setting, "machine": machine(), "rows": rows})
    print(f"\n{args.task}, {args.samples} training examples x {args.epochs} epochs, batch {args.batch_size}, "
          f"max length {args.max_seq_length}; median of {args.repeats} interleaved run(s) per method; "
          f"load average {os.getloadavg()[0]:.1f}")
    table = []
    for row in rows:
        if "error" in row:
            table.append([row["method"], "failed: " + row["error"], *[""] * 7])
            continue
        metric, value = next(iter(row["dev"].items()))
        table.append([row["method"], f"{row['learning_rate']:g}", f"{row['trainable_parameters']:,}",
                      f"{row['train_seconds']:.1f}", f"{row['examples_per_second']:.1f}",
                      "-" if row["steady_examples_per_second"] is None else f"{row['steady_examples_per_second']:.1f}",
                      f"{row.get('train_time_vs_adapters', float('nan')):.2f}", f"{row['wall_seconds']:.0f}",
                      f"{metric} {value:.3f}"])
    print_table(["method", "lr", "trainable", "train s", "ex/s", "ex/s after epoch 1", "time vs adapters",
                 "wall s", "dev (sanity)"], table)
    print(f"\nwrote {output}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    sys.exit(run_cli(main))
