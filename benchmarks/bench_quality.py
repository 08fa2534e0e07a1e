"""Quality per method: the dev metric on QNLI, SST-2, RTE, CoLA and STS-B with the shipped backbone,
trainable parameters, and the bytes a task adds.

    .venv/bin/python benchmarks/bench_quality.py                        # full training sets, 3 epochs: hours
    .venv/bin/python benchmarks/bench_quality.py --quick                # 64 train / 64 dev examples, 1 epoch
    .venv/bin/python benchmarks/bench_quality.py --tasks rte --seeds 1 2 3

Every (task, method, seed) trains in its own process with the method's default learning rate and
the same data, batch (16), epochs (3), sequence length (128) and seed. Metrics are GLUE's (accuracy;
Matthews correlation for CoLA; Pearson and Spearman for STS-B) on the full dev set unless
``--max-eval-samples``. "Task bytes" is the size of the task's weights.npz, as training writes it
(float32: the modules and head; for full fine-tuning the whole fine-tuned backbone); what a task
costs on the device, per method and deployment, is benchmarks/bench_storage.py's. Results are
written after every run (a long run that stops keeps what it measured): JSON, default
benchmarks/results/quality.json (quality_quick.json with --quick).
"""

import argparse
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.method_runs import (  # noqa: E402
    METHOD_NAMES, machine, print_table, stop_on_sigterm, train_run, write_json)
from spartan_tf import tasks  # noqa: E402
from spartan_tf.errors import SpartanError, run_cli  # noqa: E402

TASKS = ("qnli", "sst2", "rte", "cola", "stsb")
FOLDERS = {"qnli": "QNLI", "sst2": "SST-2", "rte": "RTE", "cola": "CoLA", "stsb": "STS-B"}


def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_quality.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=METHOD_NAMES, default=list(METHOD_NAMES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42], help="one run per seed (default 42)")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-train-samples", type=int, help="class-balanced sample of each training set")
    parser.add_argument("--max-eval-samples", type=int, help="first N dev examples")
    parser.add_argument("--quick", action="store_true", help="64 train / 64 dev examples, 1 epoch")
    parser.add_argument("--models-dir", help="keep the trained models here (default: a temporary folder)")
    parser.add_argument("--output", help="JSON file (default benchmarks/results/quality[_quick].json)")
    return parser


def cell(values):
    """'0.812' for one seed, '0.812 ± 0.004' (mean ± sample std) for several."""
    if not values:
        return "failed"
    return f"{values[0]:.3f}" if len(values) == 1 else f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(runs, args):
    """The table: one row per method, one column per task (its primary metric), parameters and bytes."""
    headers = ["method", *[f"{t} {tasks.get_task(t).metric_names[0]}" for t in args.tasks], "mean",
               "trainable params", "task bytes"]
    table = []
    for method in args.methods:
        mine = [r for r in runs if r["method"] == method]
        row, means = [method], []
        for task in args.tasks:
            metric = tasks.get_task(task).metric_names[0]
            values = [r["final"][metric] for r in mine if r["task"] == task and "final" in r]
            row.append(cell(values))
            means += [statistics.mean(values)] if values else []
        row.append(f"{statistics.mean(means):.3f}" if len(means) == len(args.tasks) else "-")
        done = [r for r in mine if "final" in r]
        row.append(f"{done[0]['trainable_parameters']:,}" if done else "-")
        row.append(f"{done[0]['weights_bytes']:,}" if done else "-")
        table.append(row)
    print_table(headers, table)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args.max_train_samples, args.max_eval_samples, args.epochs = 64, 64, 1
    for flag, value in [("--epochs", args.epochs), ("--max-train-samples", args.max_train_samples),
                        ("--max-eval-samples", args.max_eval_samples)]:
        if value is not None and value < 1:
            raise SpartanError(f"{flag} {value}: must be >= 1")
    missing = [FOLDERS[t] for t in args.tasks if not (Path(args.data_dir) / FOLDERS[t]).is_dir()]
    if missing:
        raise SpartanError(f"--data-dir {args.data_dir}: no {', '.join(missing)} folder (GLUE's TSV layout expected)")
    output = Path(args.output or f"benchmarks/results/quality{'_quick' if args.quick else ''}.json")
    setting = {"tasks": args.tasks, "methods": args.methods, "seeds": args.seeds, "epochs": args.epochs,
               "max_train_samples": args.max_train_samples, "max_eval_samples": args.max_eval_samples,
               "quick": args.quick, "batch_size": 16, "max_seq_length": 128}
    extra = ["--epochs", args.epochs]
    extra += ["--max-train-samples", args.max_train_samples] if args.max_train_samples else []
    extra += ["--max-eval-samples", args.max_eval_samples] if args.max_eval_samples else []

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as scratch:
        models = Path(args.models_dir or scratch)
        for task in args.tasks:
            for method in args.methods:
                for seed in args.seeds:
                    name = f"{task}-{method}-seed{seed}"
                    print(f"training {name} ...", file=sys.stderr, flush=True)
                    run = train_run(method, task, args.data_dir, models / name, *extra, "--seed", seed,
                                    log=models / f"{name}.log")
                    if "error" in run:
                        print(f"  {name} failed: {run['error']}", file=sys.stderr)
                    else:
                        print(f"  {name}: {run['final']} in {run['wall_seconds']:.0f} s", file=sys.stderr)
                    runs.append({"task": task, "method": method, "seed": seed,
                                 **{k: v for k, v in run.items() if k != "epochs"}})
                    write_json(output, {"benchmark": "quality", "setting": setting, "machine": machine(), "runs": runs})
    report(runs, args)
    print(f"\nwrote {output}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    sys.exit(run_cli(main))
