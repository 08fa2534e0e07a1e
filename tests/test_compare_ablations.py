"""benchmarks/compare_ablations.py: paired differences against a hand computation, and what it refuses."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import compare_ablations
from spartan_tf.errors import SpartanError

BUDGET = {"samples": 1000, "epochs": 3, "eval_samples": 1000, "extra": []}
T_975_DF2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (statistical tables)


def ablation_file(path, scores, budget=BUDGET):
    """An ablation JSON holding {"variant/task/seed": primary metric}; None marks a failed run."""
    metric = {"qnli": "accuracy", "stsb": "pearson"}
    runs = {key: {"error": "boom"} if value is None else
            {"epochs": [{metric[key.split("/")[1]]: value}], "train_seconds": 1.0} for key, value in scores.items()}
    path.write_text(json.dumps({"budget": budget, "runs": runs}))
    return path


def test_paired_differences_interval_and_the_mean_over_tasks_against_a_hand_computation(tmp_path):
    file = ablation_file(tmp_path / "a.json", {
        "base/qnli/1": 0.70, "base/qnli/2": 0.80, "base/qnli/3": 0.60, "base/qnli/4": 0.50,
        "new/qnli/1": 0.72, "new/qnli/2": 0.81, "new/qnli/3": 0.66,  # seed 4 not run
        "base/stsb/1": 0.80, "base/stsb/2": 0.90, "base/stsb/3": 0.85,
        "new/stsb/1": 0.78, "new/stsb/2": 0.95, "new/stsb/3": None,  # seed 3 failed
    })
    output = tmp_path / "comparison.json"
    compare_ablations.main([f"{file}:base", f"{file}:new", "--output", str(output)])
    result = json.loads(output.read_text())

    qnli = result["tasks"]["qnli"]
    differences = [0.02, 0.01, 0.06]
    mean = sum(differences) / 3
    sd = (sum((d - mean) ** 2 for d in differences) / 2) ** 0.5
    assert qnli["seeds"] == [1, 2, 3]
    assert qnli["difference"] == pytest.approx(mean)
    assert qnli["ci95"] == pytest.approx([mean - T_975_DF2 * sd / 3 ** 0.5, mean + T_975_DF2 * sd / 3 ** 0.5])
    assert qnli["base_mean"] == pytest.approx(0.70) and qnli["candidate_ahead"] == 3

    stsb = result["tasks"]["stsb"]  # the failed run drops seed 3 from both sides
    assert stsb["seeds"] == [1, 2] and stsb["candidate_ahead"] == 1
    assert stsb["difference"] == pytest.approx((-0.02 + 0.05) / 2)

    over_tasks = result["mean_over_tasks"]  # only seeds 1 and 2 hold both tasks on both sides
    assert over_tasks["seeds"] == [1, 2]
    assert over_tasks["per_seed"] == {"1": pytest.approx((0.02 - 0.02) / 2), "2": pytest.approx((0.01 + 0.05) / 2)}
    assert result["base"]["variant"] == "base" and result["candidate"]["file"] == str(file)


def test_a_single_shared_seed_gives_no_interval(tmp_path):
    file = ablation_file(tmp_path / "a.json", {"base/qnli/1": 0.7, "new/qnli/1": 0.6})
    comparison = compare_ablations.compare(compare_ablations.load_side(f"{file}:base"),
                                           compare_ablations.load_side(f"{file}:new"))
    assert comparison["tasks"]["qnli"]["ci95"] is None
    assert comparison["tasks"]["qnli"]["difference"] == pytest.approx(-0.1)
    assert comparison["mean_over_tasks"] is None  # one task: nothing to average


def test_sides_from_two_files_must_share_a_budget(tmp_path):
    one = ablation_file(tmp_path / "one.json", {"base/qnli/1": 0.7})
    other = ablation_file(tmp_path / "other.json", {"new/qnli/1": 0.6},
                          budget={**BUDGET, "samples": 200, "extra": ["--key-init", "data"]})
    with pytest.raises(SpartanError, match="different budgets: samples 1000 against 200"):
        compare_ablations.main([f"{one}:base", f"{other}:new", "--output", str(tmp_path / "out.json")])
    assert not (tmp_path / "out.json").exists()
    same = ablation_file(tmp_path / "same.json", {"new/qnli/1": 0.6}, budget={**BUDGET, "extra": ["--key-init", "data"]})
    compare_ablations.main([f"{one}:base", f"{same}:new", "--output", str(tmp_path / "out.json")])  # --extra may differ
    assert json.loads((tmp_path / "out.json").read_text())["tasks"]["qnli"]["seeds"] == [1]


def test_a_results_file_in_sections_is_read_as_one_budget(tmp_path):
    """qnli_full_budget.json's layout: the file's budget, runs at top level and in dated sections, each
    run a train.py metrics.json whose ``final`` is the saved model's score (kept where epochs are not)."""
    budget = {"train_rows": 10293, "epochs": 3, "dev_examples": 2732}
    def metrics(final, last_epoch):
        return {"final": {"accuracy": final}, "epochs": [{"accuracy": 0.5}, {"accuracy": last_epoch}]}
    file = tmp_path / "full_budget.json"
    file.write_text(json.dumps({"budget": budget, "machine": {"cpus": 2},
                                "runs": {"base/qnli/1": metrics(0.80, 0.80)},
                                "one_recipe": {"command": "c", "runs": {"base/qnli/2": metrics(0.82, 0.82),
                                                                        "new/qnli/1": metrics(0.83, 0.83)}},
                                "later": {"runs": {"new/qnli/2": {"final": {"accuracy": 0.81},
                                                                   "epochs_from_log": [0.81]}}}}))
    output = tmp_path / "out.json"
    compare_ablations.main([f"{file}:base", f"{file}:new", "--output", str(output)])
    qnli = json.loads(output.read_text())["tasks"]["qnli"]
    assert qnli["seeds"] == [1, 2]
    assert qnli["per_seed"] == {"1": pytest.approx(0.03), "2": pytest.approx(-0.01)}

    ablation = ablation_file(tmp_path / "ablation.json", {"new/qnli/1": 0.6})
    with pytest.raises(SpartanError, match="different budgets: dev_examples 2732 against None"):
        compare_ablations.main([f"{file}:base", f"{ablation}:new", "--output", str(tmp_path / "o.json")])

    document = json.loads(file.read_text())
    document["later"]["runs"]["base/qnli/1"] = metrics(0.70, 0.70)  # the top-level run says 0.80
    file.write_text(json.dumps(document))
    with pytest.raises(SpartanError, match="base/qnli/1 is held twice with different scores"):
        compare_ablations.main([f"{file}:base", f"{file}:new", "--output", str(tmp_path / "o.json")])


@pytest.mark.parametrize("spec,message", [
    ("no-colon.json", "expected FILE:VARIANT"),
    ("{missing}:base", "no such file"),
    ("{file}:nope", "no finished run of variant 'nope'; it holds base, new"),
    ("{garbage}:base", "not an ablation JSON"),
])
def test_bad_sides_are_named(spec, message, tmp_path):
    file = ablation_file(tmp_path / "a.json", {"base/qnli/1": 0.7, "new/qnli/1": 0.6})
    (tmp_path / "garbage.json").write_text("[1, 2]")
    spec = spec.format(file=file, missing=tmp_path / "missing.json", garbage=tmp_path / "garbage.json")
    with pytest.raises(SpartanError, match=message):
        compare_ablations.main([spec, f"{file}:new", "--output", str(tmp_path / "out.json")])


def test_tasks_not_held_by_both_sides_are_refused(tmp_path):
    file = ablation_file(tmp_path / "a.json", {"base/qnli/1": 0.7, "new/qnli/1": 0.6, "base/stsb/1": 0.8})
    with pytest.raises(SpartanError, match=r"--tasks: stsb not held by both sides \(both hold: qnli\)"):
        compare_ablations.main([f"{file}:base", f"{file}:new", "--tasks", "stsb", "--output", str(tmp_path / "o.json")])
    no_shared_seed = ablation_file(tmp_path / "b.json", {"base/qnli/1": 0.7, "new/qnli/2": 0.6})
    with pytest.raises(SpartanError, match=r"qnli: no seed held by both sides \(base \[1\], candidate \[2\]\)"):
        compare_ablations.main([f"{no_shared_seed}:base", f"{no_shared_seed}:new", "--output", str(tmp_path / "o.json")])


def test_the_command_line_prints_one_error_line_and_exits_non_zero(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(repo / "benchmarks" / "compare_ablations.py"), "a.json", "b.json:x"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "'a.json': expected FILE:VARIANT" in result.stderr and "Traceback" not in result.stderr
