"""Two variants of bench_ablation.py runs compared seed by seed: is the difference more than the seeds' noise?

    .venv/bin/python benchmarks/compare_ablations.py \\
        docs/results/ablation_five_seeds.json:adapters \\
        docs/results/ablation_five_seeds.json:recipe+two-sites+memory-dropout-0.1

Each side is FILE:VARIANT, a variant held in an ablation JSON (the two may come from different files, for
a variant run later with ``--extra``). bench_ablation.py trains every variant of a (task, seed) on the same
sample from the same seed, so the runs pair up: per task, the difference candidate - base on each seed
both sides hold, its mean, a 95% confidence interval for that mean (Student's t over the paired
differences, scipy.stats), and on how many seeds the candidate is ahead; then the same for the mean over
the tasks, on the seeds where both sides hold every task. An interval that holds 0 means these seeds
cannot tell the two apart; one wholly below 0 means the candidate is behind on this sample of seeds.
The two files must share a budget (examples, epochs, dev examples); ``--extra`` may differ.

A results file that groups runs of one budget into sections, each with its own ``runs`` beside the file's
``budget`` (docs/results/qnli_full_budget.json: one section per recipe, each run a ``metrics.json`` keyed
``variant/task/seed``), is read the same way: a variant is looked up in every section.

    .venv/bin/python benchmarks/compare_ablations.py \\
        docs/results/qnli_full_budget.json:adapters+backbone-dropout+tuned-norms \\
        docs/results/qnli_full_budget.json:spartan+backbone-dropout+tuned-norms
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy import stats  # noqa: E402

from benchmarks.bench_ablation import primary  # noqa: E402
from benchmarks.method_runs import print_table, write_json  # noqa: E402
from spartan_tf.errors import SpartanError, run_cli  # noqa: E402
from spartan_tf.tasks import get_task  # noqa: E402

CONFIDENCE = 0.95


def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/compare_ablations.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="FILE:VARIANT, e.g. docs/results/ablation_five_seeds.json:adapters")
    parser.add_argument("candidate", help="FILE:VARIANT, compared against the base")
    parser.add_argument("--tasks", nargs="+", help="default: every task both sides hold")
    parser.add_argument("--output", default="benchmarks/results/comparison.json")
    return parser


def load_side(spec: str) -> dict:
    """{"file", "variant", "budget", "scores": {task: {seed: primary metric}}} of ``FILE:VARIANT``
    (failed runs left out)."""
    path, colon, variant = spec.rpartition(":")
    if not colon or not path or not variant:
        raise SpartanError(f"{spec!r}: expected FILE:VARIANT, e.g. docs/results/ablation_five_seeds.json:adapters")
    try:
        document = json.loads(Path(path).read_text())
        runs, budget = sectioned_runs(document), document["budget"]
    except FileNotFoundError:
        raise SpartanError(f"{path}: no such file (an ablation JSON written by bench_ablation.py expected)") from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise SpartanError(f"{path}: not an ablation JSON written by bench_ablation.py (no runs and budget)") from None
    scores = {}
    for section, key, run in runs:
        run_variant, task, seed = key.rsplit("/", 2)
        score = saved_model_score(run, task) if run_variant == variant else None
        if score is None:
            continue
        task_scores = scores.setdefault(task, {})
        if task_scores.get(int(seed), score) != score:
            raise SpartanError(f"{path}: {key} is held twice with different scores (the second in {section!r})")
        task_scores[int(seed)] = score
    if not scores:
        held = sorted({key.rsplit("/", 2)[0] for _, key, _ in runs})
        raise SpartanError(f"{path}: no finished run of variant {variant!r}; it holds {', '.join(held) or 'none'}")
    return {"file": path, "variant": variant, "budget": budget, "scores": scores}


def saved_model_score(run: dict, task: str):
    """The primary dev metric of the model a run saved: train.py's ``final`` (kept where a run's epochs
    are not), else its last epoch's; None for a failed run."""
    if "error" not in run and "final" in run:
        return run["final"][get_task(task).metric_names[0]]
    return primary(run, task)


def sectioned_runs(document: dict) -> list:
    """[(section, key, run)] of the file's own ``runs`` (section "runs") and of every top-level section
    that holds ``runs`` of its own."""
    sections = [("runs", document["runs"])] + [
        (name, value["runs"]) for name, value in document.items()
        if name != "runs" and isinstance(value, dict) and isinstance(value.get("runs"), dict)]
    return [(name, key, run) for name, runs in sections for key, run in runs.items()]


def paired(base: dict, candidate: dict) -> dict:
    """The paired comparison of two {seed: score} maps over the seeds both hold."""
    seeds = sorted(set(base) & set(candidate))
    differences = [candidate[seed] - base[seed] for seed in seeds]
    result = {"seeds": seeds, "base_mean": statistics.mean(base[seed] for seed in seeds),
              "candidate_mean": statistics.mean(candidate[seed] for seed in seeds),
              "difference": statistics.mean(differences), "per_seed": dict(zip(seeds, differences)),
              "candidate_ahead": sum(difference > 0 for difference in differences), "ci95": None}
    if len(seeds) > 1:
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(seeds) - 1) * statistics.stdev(differences) / len(seeds) ** 0.5
        result["ci95"] = [result["difference"] - half, result["difference"] + half]
    return result


def compare(base: dict, candidate: dict, tasks=None) -> dict:
    """Per task and over tasks (see the module's docstring)."""
    keys = sorted((set(base["budget"]) | set(candidate["budget"])) - {"extra"})
    different = {key: (base["budget"].get(key), candidate["budget"].get(key)) for key in keys
                 if base["budget"].get(key) != candidate["budget"].get(key)}
    if different:
        raise SpartanError(f"{base['file']} and {candidate['file']} hold runs of different budgets: " + ", ".join(
            f"{key} {one} against {other}" for key, (one, other) in different.items()))
    common = [task for task in base["scores"] if task in candidate["scores"]]
    tasks = tasks or common
    missing = [task for task in tasks if task not in common]
    if missing:
        raise SpartanError(f"--tasks: {', '.join(missing)} not held by both sides (both hold: {', '.join(common) or 'none'})")
    per_task = {}
    for task in tasks:
        base_scores, candidate_scores = base["scores"][task], candidate["scores"][task]
        if not set(base_scores) & set(candidate_scores):
            raise SpartanError(f"{task}: no seed held by both sides (base {sorted(base_scores)}, "
                               f"candidate {sorted(candidate_scores)})")
        per_task[task] = paired(base_scores, candidate_scores)
    result = {"tasks": per_task, "mean_over_tasks": None}
    if len(tasks) > 1:
        seeds = set.intersection(*(set(base["scores"][t]) & set(candidate["scores"][t]) for t in tasks))
        if seeds:
            result["mean_over_tasks"] = paired(
                {seed: statistics.mean(base["scores"][t][seed] for t in tasks) for seed in seeds},
                {seed: statistics.mean(candidate["scores"][t][seed] for t in tasks) for seed in seeds})
    return result


def row(label: str, comparison: dict) -> list:
    interval = comparison["ci95"]
    return [label, " ".join(map(str, comparison["seeds"])), f"{comparison['base_mean']:.4f}",
            f"{comparison['candidate_mean']:.4f}", f"{comparison['difference']:+.4f}",
            "-" if interval is None else f"[{interval[0]:+.4f}, {interval[1]:+.4f}]",
            f"{comparison['candidate_ahead']} of {len(comparison['seeds'])}"]


def main(argv=None):
    args = build_parser().parse_args(argv)
    base, candidate = load_side(args.base), load_side(args.candidate)
    result = compare(base, candidate, args.tasks)
    print(f"base {base['variant']} ({base['file']}); candidate {candidate['variant']} ({candidate['file']})")
    budget = ", ".join(f"{key} {value}" for key, value in base["budget"].items() if key != "extra")
    print(f"budget: {budget}; primary dev metric; "
          f"difference = candidate - base, {CONFIDENCE:.0%} interval by Student's t over the paired seeds\n")
    rows = [row(task, comparison) for task, comparison in result["tasks"].items()]
    if result["mean_over_tasks"] is not None:
        rows.append(row("mean over tasks", result["mean_over_tasks"]))
    print_table(["task", "seeds", "base", "candidate", "difference", "95% interval", "candidate ahead"], rows)
    sides = {name: {key: side[key] for key in ("file", "variant", "budget")}
             for name, side in (("base", base), ("candidate", candidate))}
    write_json(args.output, {"benchmark": "compare_ablations", **sides, "confidence": CONFIDENCE, **result})
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
