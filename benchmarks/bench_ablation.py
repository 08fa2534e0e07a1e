"""Training-recipe ablation: variants of a method trained side by side at one budget, several seeds.

    .venv/bin/python benchmarks/bench_ablation.py --variants reference default --tasks qnli
    .venv/bin/python benchmarks/bench_ablation.py --list             # the named variants and their flags
    .venv/bin/python benchmarks/bench_ablation.py --quick            # 32 examples, 1 epoch: checks the pipeline

A variant is a method plus ``python -m spartan_tf.train`` flags (VARIANTS below). Every (variant,
task, seed) trains in its own process on the same class-balanced sample (``--samples``; ``all`` for
the whole training set) and is scored on the first ``--eval-samples`` dev examples (or ``all``)
after every epoch. The table gives, per variant and task, the mean and standard deviation over seeds
of the task's primary metric after the last epoch (and after the first), and the median training
seconds. Runs are written to the JSON as they finish and a rerun with the same output skips the runs
it already holds (``--fresh`` starts over), so a long ablation can be stopped and continued: Ctrl-C
or ``kill`` stops the running training and removes its scratch folder. Other top-level sections of
an existing output (runs kept from elsewhere, added by hand) are written back unchanged, and so is its
``machine`` when the invocation trains nothing.
"""

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.method_runs import machine, print_table, stop_on_sigterm, train_run, write_json  # noqa: E402
from spartan_tf.errors import SpartanError, run_cli  # noqa: E402
from spartan_tf.tasks import GLUE_TASK_NAMES, get_task  # noqa: E402

# name -> (method, train flags). "reference" is the paper's setting (the reference code's defaults);
# "default" is what ``python -m spartan_tf.train`` does with no recipe flags. Every other SPARTAN row
# changes the reference in one respect, unless its name joins several with "+"; a "default+..." row
# changes the default. "vs10+mean-pool" is the default before --center-values (2026-12-02 afternoon).
OLD_DEFAULT = ["--preset", "reference", "--value-scale", "10", "--pooling", "mean"]
# "recipe" is "default+ffn-site+query-norm+lr-2e-3+warmup-10%" (five-task mean 0.598, docs/results.md);
# a "recipe+..." row changes it.
RECIPE = ["--memory-site", "feed-forward", "--query-norm", "--learning-rate", "2e-3", "--warmup-ratio", "0.1"]
# "size-32x3": twice the parents and children, the same share of parents read (664,706 trainable; adapters 743,810).
SIZE_32X3 = ["--num-parents", "32", "--children", "96", "--top-k", "16"]
# "two-sites": two memories a layer, on the attention and feed-forward outputs (where adapters sit).
TWO_SITES = ["--memory-site", "attention+feed-forward"]
VARIANTS = {
    "reference": ("spartan", ["--preset", "reference"]),
    "default": ("spartan", []),
    "const-lr": ("spartan", ["--preset", "reference", "--lr-schedule", "constant"]),
    "lr-3e-3": ("spartan", ["--preset", "reference", "--learning-rate", "3e-3"]),
    "lr-1e-2": ("spartan", ["--preset", "reference", "--learning-rate", "1e-2"]),
    "warmup-10%": ("spartan", ["--preset", "reference", "--warmup-ratio", "0.1"]),
    "value-scale-10": ("spartan", ["--preset", "reference", "--value-scale", "10"]),
    "value-scale-30": ("spartan", ["--preset", "reference", "--value-scale", "30"]),
    "value-scale-100": ("spartan", ["--preset", "reference", "--value-scale", "100"]),
    "vs30+const-lr": ("spartan", ["--preset", "reference", "--value-scale", "30", "--lr-schedule", "constant"]),
    "vs30+lr-3e-3": ("spartan", ["--preset", "reference", "--value-scale", "30", "--learning-rate", "3e-3"]),
    "vs30+mean-pool": ("spartan", ["--preset", "reference", "--value-scale", "30", "--pooling", "mean"]),
    "vs30+mean-pool+warmup": ("spartan", ["--preset", "reference", "--value-scale", "30", "--pooling", "mean",
                                          "--warmup-ratio", "0.1"]),
    "vs10+const-lr": ("spartan", ["--preset", "reference", "--value-scale", "10", "--lr-schedule", "constant"]),
    "vs10+query-norm": ("spartan", ["--preset", "reference", "--value-scale", "10", "--query-norm"]),
    "vs10+mean-pool": ("spartan", OLD_DEFAULT),
    "vs10+backbone-dropout": ("spartan", ["--preset", "reference", "--value-scale", "10", "--backbone-dropout"]),
    "vs10+lr-3e-3": ("spartan", ["--preset", "reference", "--value-scale", "10", "--learning-rate", "3e-3"]),
    "vs10+output-gain": ("spartan", ["--preset", "reference", "--value-scale", "10", "--output-gain"]),
    "vs10+top-k-4": ("spartan", ["--preset", "reference", "--value-scale", "10", "--top-k", "4"]),
    "vs10+temperature-1": ("spartan", ["--preset", "reference", "--value-scale", "10", "--temperature", "1"]),
    "vs10+size-32x3": ("spartan", ["--preset", "reference", "--value-scale", "10", *SIZE_32X3]),
    "vs10+balance-0.01": ("spartan", ["--preset", "reference", "--value-scale", "10", "--balance-loss-scale", "0.01"]),
    "vs10+mean-pool+sharp-keys": ("spartan", [*OLD_DEFAULT, "--query-norm", "--key-init-std", "0.1"]),
    "vs10+mean-pool+top-k-4": ("spartan", [*OLD_DEFAULT, "--top-k", "4"]),
    "vs10+mean-pool+temperature-0.5": ("spartan", [*OLD_DEFAULT, "--temperature", "0.5"]),
    "vs10+mean-pool+sharp-keys+top-k-4": ("spartan", [*OLD_DEFAULT, "--query-norm", "--key-init-std", "0.1",
                                                      "--top-k", "4"]),
    "vs10+mean-pool+sharp-keys+values-0.2": ("spartan", [*OLD_DEFAULT, "--query-norm", "--key-init-std", "0.1",
                                                         "--value-init-std", "0.2"]),
    "default+top-k-4": ("spartan", ["--top-k", "4"]),
    "default+vs30": ("spartan", ["--value-scale", "30"]),
    "default+size-32x3": ("spartan", SIZE_32X3),
    "default+lr-2e-3": ("spartan", ["--learning-rate", "2e-3"]),
    "default+output-gain": ("spartan", ["--output-gain"]),
    "default+keys-0.1": ("spartan", ["--key-init-std", "0.1"]),
    "default+sharp-keys": ("spartan", ["--query-norm", "--key-init-std", "0.1"]),
    "default+ffn-site": ("spartan", ["--memory-site", "feed-forward"]),
    "default+ffn-site+query-norm": ("spartan", ["--memory-site", "feed-forward", "--query-norm"]),
    "default+cls-pool": ("spartan", ["--pooling", "cls"]),
    "default+lr-5e-4": ("spartan", ["--learning-rate", "5e-4"]),
    "default+balance-0.1": ("spartan", ["--balance-loss-scale", "0.1"]),
    "default+balance-1": ("spartan", ["--balance-loss-scale", "1"]),
    "default+temperature-1": ("spartan", ["--temperature", "1"]),
    "default+backbone-dropout": ("spartan", ["--backbone-dropout"]),
    # each method at its best measured setting at QNLI's full budget (docs/results.md, "The LayerNorms tuned at
    # the full budget"): --samples all --eval-samples all
    "default+backbone-dropout+tuned-norms": ("spartan", ["--backbone-dropout", "--tune-layer-norms"]),
    "default+ffn-site+query-norm+lr-2e-3+warmup-10%": ("spartan", RECIPE),
    "recipe+size-32x3": ("spartan", [*RECIPE, *SIZE_32X3]),
    "recipe+size-32x3+output-gain": ("spartan", [*RECIPE, *SIZE_32X3, "--output-gain"]),
    "recipe+lr-3e-3": ("spartan", [*RECIPE, "--learning-rate", "3e-3"]),
    "recipe+output-gain": ("spartan", [*RECIPE, "--output-gain"]),
    "recipe+const-lr": ("spartan", [*RECIPE, "--lr-schedule", "constant"]),
    "recipe+vs30": ("spartan", [*RECIPE, "--value-scale", "30"]),
    "default+from-layer-3": ("spartan", ["--first-memory-layer", "3"]),
    "recipe+from-layer-3": ("spartan", [*RECIPE, "--first-memory-layer", "3"]),
    "recipe+from-layer-2": ("spartan", [*RECIPE, "--first-memory-layer", "2"]),
    "recipe+from-layer-2+key-init-data": ("spartan", [*RECIPE, "--first-memory-layer", "2", "--key-init", "data"]),
    "recipe+backbone-dropout": ("spartan", [*RECIPE, "--backbone-dropout"]),
    "recipe+top-k-16": ("spartan", [*RECIPE, "--top-k", "16"]),
    "recipe+temperature-4": ("spartan", [*RECIPE, "--temperature", "4"]),
    "recipe+temperature-4+from-layer-2": ("spartan", [*RECIPE, "--temperature", "4", "--first-memory-layer", "2"]),
    "recipe+memory-dropout-0.1": ("spartan", [*RECIPE, "--memory-dropout", "0.1"]),
    "recipe+memory-dropout-0.3": ("spartan", [*RECIPE, "--memory-dropout", "0.3"]),
    "recipe+weight-decay-1": ("spartan", [*RECIPE, "--weight-decay", "1"]),
    "recipe+weight-decay-5": ("spartan", [*RECIPE, "--weight-decay", "5"]),
    "recipe+clip-1": ("spartan", [*RECIPE, "--clip-norm", "1"]),
    "recipe+two-sites": ("spartan", [*RECIPE, *TWO_SITES]),
    "recipe+two-sites+size-8x3": ("spartan", [*RECIPE, *TWO_SITES, "--num-parents", "8", "--children", "24",
                                               "--top-k", "4"]),  # the recipe's parameter count
    "recipe+two-sites+memory-dropout-0.1": ("spartan", [*RECIPE, *TWO_SITES, "--memory-dropout", "0.1"]),
    "recipe+two-sites+memory-dropout-0.1+tuned-norms": ("spartan", [*RECIPE, *TWO_SITES, "--memory-dropout", "0.1",
                                                                    "--tune-layer-norms"]),
    "recipe+two-sites+memory-dropout-0.1+balance-1": ("spartan", [*RECIPE, *TWO_SITES, "--memory-dropout", "0.1",
                                                                  "--balance-loss-scale", "1"]),
    "recipe+two-sites+memory-dropout-0.1+from-layer-2": ("spartan", [*RECIPE, *TWO_SITES, "--memory-dropout", "0.1",
                                                                     "--first-memory-layer", "2"]),
    "recipe+two-sites+memory-dropout-0.1+from-layer-3": ("spartan", [*RECIPE, *TWO_SITES, "--memory-dropout", "0.1",
                                                                     "--first-memory-layer", "3"]),
    "recipe+two-sites+temperature-4+from-layer-2": ("spartan", [*RECIPE, *TWO_SITES, "--temperature", "4",
                                                                "--first-memory-layer", "2"]),
    "default+two-sites+memory-dropout-0.1": ("spartan", [*TWO_SITES, "--memory-dropout", "0.1"]),
    "default+warmup-10%": ("spartan", ["--warmup-ratio", "0.1"]),
    "default+lr-2e-3+warmup-10%": ("spartan", ["--learning-rate", "2e-3", "--warmup-ratio", "0.1"]),
    "values-0": ("spartan", ["--preset", "reference", "--value-init-std", "0"]),
    "keys-0.05": ("spartan", ["--preset", "reference", "--key-init-std", "0.05"]),
    "query-norm": ("spartan", ["--preset", "reference", "--query-norm"]),
    "mean-pool": ("spartan", ["--preset", "reference", "--pooling", "mean"]),
    "backbone-dropout": ("spartan", ["--preset", "reference", "--backbone-dropout"]),
    "adapters": ("adapters", []),
    "adapters+warmup-10%": ("adapters", ["--warmup-ratio", "0.1"]),
    "adapters+tuned-norms": ("adapters", ["--tune-layer-norms"]),
    "adapters+backbone-dropout": ("adapters", ["--backbone-dropout"]),
    "adapters+backbone-dropout+tuned-norms": ("adapters", ["--backbone-dropout", "--tune-layer-norms"]),
    "adapters-lr-3e-4": ("adapters", ["--learning-rate", "3e-4"]),
    "adapters-lr-3e-3": ("adapters", ["--learning-rate", "3e-3"]),
    "lora": ("lora", []),
    "lora-lr-2e-3": ("lora", ["--learning-rate", "2e-3"]),
    "full": ("full", []),
    "full-lr-1e-4": ("full", ["--learning-rate", "1e-4"]),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_ablation.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["reference", "default", "adapters"],
                        help="names from --list (default: reference default adapters)")
    parser.add_argument("--tasks", nargs="+", default=["qnli"], help=f"of {', '.join(GLUE_TASK_NAMES)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
    parser.add_argument("--samples", type=count_or_all, default=1000,
                        help="training examples (class-balanced; default 1000), or 'all' for the whole training set")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eval-samples", type=count_or_all, default=1000,
                        help="the first N dev examples are scored after each epoch (default 1000), or 'all'")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="flags added to every run (after the variant's own), e.g. --extra --max-seq-length 64")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--quick", action="store_true", help="32 examples, 1 epoch, 32 dev examples, one seed")
    parser.add_argument("--fresh", action="store_true", help="ignore runs already in --output")
    parser.add_argument("--output", help="JSON file (default benchmarks/results/ablation[_quick].json)")
    return parser


def count_or_all(text: str):
    """An example count for --samples / --eval-samples: a positive integer, or "all"."""
    if text == "all":
        return text
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {count}")
    return count


def budget_flags(samples, epochs, eval_samples) -> list:
    """The ``spartan_tf.train`` flags of a budget; "all" passes no limit, so the run reads the whole split."""
    flags = ["--epochs", epochs]
    if samples != "all":
        flags += ["--max-train-samples", samples]
    if eval_samples != "all":
        flags += ["--max-eval-samples", eval_samples]
    return flags


def run_key(variant, task, seed) -> str:
    return f"{variant}/{task}/{seed}"


def primary(run, task, epoch=-1):
    """The task's primary dev metric after ``epoch`` (default the last), or None for a failed run."""
    if "error" in run:
        return None
    return run["epochs"][epoch][get_task(task).metric_names[0]]


def mean_sd(values) -> str:
    values = [value for value in values if value is not None]
    if not values:
        return "failed"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table_rows(runs: dict, variants, tasks, seeds):
    rows = []
    for variant in variants:
        for task in tasks:
            done = [runs[run_key(variant, task, seed)] for seed in seeds if run_key(variant, task, seed) in runs]
            if not done:
                continue
            seconds = [run["train_seconds"] for run in done if "error" not in run]
            rows.append([variant, task, len(done), mean_sd([primary(run, task) for run in done]),
                         mean_sd([primary(run, task, 0) for run in done]),
                         f"{statistics.median(seconds):.0f}" if seconds else "-"])
    return rows


def summary(runs: dict, variants, tasks, seeds) -> dict:
    """Per variant: per task mean/sd over seeds, and the mean over tasks of the per-task means."""
    result = {}
    for variant in variants:
        per_task = {}
        for task in tasks:
            scores = [primary(runs[key], task) for seed in seeds if (key := run_key(variant, task, seed)) in runs]
            scores = [score for score in scores if score is not None]
            if scores:
                per_task[task] = {"mean": statistics.mean(scores), "sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                                  "seeds": len(scores)}
        if per_task:
            result[variant] = {"tasks": per_task, "mean_over_tasks": statistics.mean(t["mean"] for t in per_task.values())}
    return result


WRITTEN_KEYS = ("budget", "variants", "machine", "runs", "summary")  # what this script writes to --output


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.list:
        for name, (method, flags) in VARIANTS.items():
            print(f"{name:20s} --method {method} {' '.join(flags)}")
        return
    if args.quick:
        args.samples, args.epochs, args.eval_samples, args.seeds = 32, 1, 32, args.seeds[:1]
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        raise SpartanError(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    bad_tasks = [task for task in args.tasks if task not in GLUE_TASK_NAMES]
    if bad_tasks:
        raise SpartanError(f"--tasks: unknown {', '.join(bad_tasks)}; choose from {', '.join(GLUE_TASK_NAMES)}")
    if args.epochs < 1:
        raise SpartanError("--epochs must be >= 1")
    if not Path(args.data_dir).is_dir():
        raise SpartanError(f"--data-dir {args.data_dir}: not a folder (GLUE's TSV layout expected)")
    output = Path(args.output or Path(__file__).parent / "results" / f"ablation{'_quick' if args.quick else ''}.json")
    budget = {"samples": args.samples, "epochs": args.epochs, "eval_samples": args.eval_samples, "extra": args.extra}
    runs, other_sections, trained_on = {}, {}, None
    if output.exists() and not args.fresh:
        previous = json.loads(output.read_text())
        if previous.get("budget") != budget:
            raise SpartanError(f"{output} holds runs of another budget ({previous.get('budget')}); "
                               "pass --fresh to replace it or --output for a new file")
        runs = previous["runs"]
        # Sections added by hand (runs kept from elsewhere, notes) stay as they are.
        other_sections = {key: value for key, value in previous.items() if key not in WRITTEN_KEYS}
        trained_on = previous.get("machine")  # replaced only when this invocation trains something

    def save():
        """Everything in ``runs``, this invocation's and earlier ones' (which may cover other variants)."""
        keys = [key.split("/") for key in runs]
        variants, tasks = (list(dict.fromkeys(parts[i] for parts in keys)) for i in (0, 1))
        seeds = sorted({int(parts[2]) for parts in keys})
        write_json(output, {"budget": budget, "variants": {name: VARIANTS[name] for name in variants},
                            "machine": trained_on or machine(), "runs": runs,
                            "summary": summary(runs, variants, tasks, seeds),
                            **other_sections})

    with tempfile.TemporaryDirectory(prefix="spartan-ablation-") as scratch:
        for seed in args.seeds:  # seeds outermost: an interrupted ablation has every variant at the same seeds
            for task in args.tasks:
                for variant in args.variants:
                    key = run_key(variant, task, seed)
                    if key in runs:
                        continue
                    method, flags = VARIANTS[variant]
                    print(f"== {key}: --method {method} {' '.join(flags)}", flush=True)
                    run = train_run(method, task, args.data_dir, Path(scratch) / "model", *flags,
                                    "--seed", seed, *budget_flags(args.samples, args.epochs, args.eval_samples),
                                    *args.extra)
                    # When each run ended: "machine" holds only the last training invocation's date, and runs merge.
                    finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
                    trained_on = machine()
                    runs[key] = {"command": f"--method {method} {' '.join(flags)}", **run, "finished": finished}
                    score = primary(run, task)
                    print(f"   {run['error'] if score is None else f'{score:.4f}'} ({run['wall_seconds']} s)", flush=True)
                    save()
    save()
    print(f"\n{args.samples} examples x {args.epochs} epochs, dev scored on {args.eval_samples}; "
          f"primary metric, mean ± sd over seeds {' '.join(map(str, args.seeds))}")
    print_table(["variant", "task", "runs", "last epoch", "first epoch", "train s (median)"],
                table_rows(runs, args.variants, args.tasks, args.seeds))
    print(f"\nwrote {output}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    sys.exit(run_cli(main))
