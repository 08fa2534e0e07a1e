"""benchmarks/bench_ablation.py: its summary against a hand computation, and what it refuses."""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import bench_ablation
from spartan_tf.errors import SpartanError


def run(*accuracies):
    return {"epochs": [{"accuracy": accuracy} for accuracy in accuracies], "train_seconds": 10.0}


def test_summary_gives_mean_and_sd_over_seeds_of_the_last_epoch_and_skips_failed_runs():
    runs = {"a/qnli/1": run(0.5, 0.70), "a/qnli/2": run(0.5, 0.80), "a/qnli/3": {"error": "boom"},
            "a/sst2/1": run(0.9), "b/qnli/1": run(0.6, 0.65)}
    result = bench_ablation.summary(runs, ["a", "b"], ["qnli", "sst2"], [1, 2, 3])
    assert result["a"]["tasks"]["qnli"] == {"mean": pytest.approx(0.75), "sd": pytest.approx(statistics.stdev([0.7, 0.8])),
                                            "seeds": 2}
    assert result["a"]["mean_over_tasks"] == pytest.approx((0.75 + 0.9) / 2)
    assert result["b"]["tasks"] == {"qnli": {"mean": 0.65, "sd": 0.0, "seeds": 1}}
    rows = bench_ablation.table_rows(runs, ["a"], ["qnli"], [1, 2, 3])
    assert rows == [["a", "qnli", 3, "0.750 ± 0.071", "0.500 ± 0.000", "10"]]


def test_refuses_to_mix_runs_of_another_budget_into_an_output(tmp_path):
    output = tmp_path / "ablation.json"
    output.write_text(json.dumps({"budget": {"samples": 200, "epochs": 3, "eval_samples": 1000, "extra": []},
                                  "runs": {}}))
    with pytest.raises(SpartanError, match="holds runs of another budget"):
        bench_ablation.main(["--output", str(output), "--data-dir", str(tmp_path)])
    assert json.loads(output.read_text())["budget"]["samples"] == 200  # left as it was


def test_a_rerun_keeps_the_runs_it_holds_and_the_sections_added_by_hand(tmp_path):
    budget = {"samples": 1000, "epochs": 3, "eval_samples": 1000, "extra": []}
    held = {"default/qnli/42": run(0.6, 0.7)}
    kept = {"note": "seeds run elsewhere", "runs": {"default/qnli/45": run(0.5, 0.8)}}
    output = tmp_path / "ablation.json"
    trained_on = {"cpu_model": "the machine the runs trained on", "date": "2026-12-02 10:00:00 UTC"}
    output.write_text(json.dumps({"budget": budget, "machine": trained_on, "runs": held, "more_seeds": kept}))
    # every requested run is held, so nothing trains; the file is written again
    bench_ablation.main(["--variants", "default", "--tasks", "qnli", "--seeds", "42", "--data-dir", str(tmp_path),
                         "--output", str(output)])
    written = json.loads(output.read_text())
    assert written["runs"] == held and written["more_seeds"] == kept and written["machine"] == trained_on
    assert written["summary"]["default"]["tasks"]["qnli"] == {"mean": 0.7, "sd": 0.0, "seeds": 1}


@pytest.mark.parametrize("argv,message", [(["--variants", "nope"], "--variants: unknown nope"),
                                          (["--tasks", "mnli2"], "--tasks: unknown mnli2"),
                                          (["--epochs", "0"], "--epochs must be >= 1")])
def test_bad_arguments_are_named(argv, message, tmp_path):
    with pytest.raises(SpartanError, match=message):
        bench_ablation.main([*argv, "--data-dir", str(tmp_path), "--output", str(tmp_path / "out.json")])
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("flag,value", [("--samples", "0"), ("--samples", "most"), ("--eval-samples", "-5")])
def test_a_count_that_is_neither_positive_nor_all_is_named(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_ablation.main([flag, value, "--data-dir", str(tmp_path), "--output", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2
    assert f"argument {flag}: expected a positive integer or 'all'" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_all_passes_no_limit_so_the_run_reads_the_whole_split():
    assert bench_ablation.budget_flags(1000, 3, 1000) == ["--epochs", 3, "--max-train-samples", 1000,
                                                          "--max-eval-samples", 1000]
    assert bench_ablation.budget_flags("all", 3, "all") == ["--epochs", 3]
    assert bench_ablation.budget_flags("all", 1, 500) == ["--epochs", 1, "--max-eval-samples", 500]
    assert bench_ablation.build_parser().parse_args(["--samples", "all", "--eval-samples", "7"]).eval_samples == 7


def test_the_full_budget_variants_are_the_commands_of_the_full_budget_table():
    """docs/results/qnli_full_budget.json's section "backbone_dropout_tuned_norms" ran these flags by hand."""
    document = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / "qnli_full_budget.json").read_text())
    command = document["backbone_dropout_tuned_norms"]["command"]
    for name in ("default+backbone-dropout+tuned-norms", "adapters+backbone-dropout+tuned-norms"):
        method, flags = bench_ablation.VARIANTS[name]
        assert all(flag in command for flag in flags), name
        assert method == "spartan" or f"--method {method}" in command


def test_every_variant_names_a_known_method_and_spartan_rows_start_from_a_preset_or_the_defaults():
    for name, (method, flags) in bench_ablation.VARIANTS.items():
        assert method in ("spartan", "adapters", "lora", "full"), name
        if method != "spartan" or name == "default":
            continue
        if name.startswith(("default+", "recipe+")):  # a change to today's defaults or to the recipe
            assert flags and "--preset" not in flags, name
        else:
            assert flags[:2] == ["--preset", "reference"], name


def test_the_recipe_variant_is_what_preset_short_budget_sets():
    """docs/results.md quotes the recipe's rows as the preset's: the two must not drift apart."""
    from spartan_tf import train

    def settings(argv):
        return {name: value for name, value in vars(train.parse_args(["--task", "qnli", *argv])).items()
                if name not in ("preset", "method_flags")}

    assert settings(bench_ablation.RECIPE) == settings(["--preset", "short-budget"])
    assert bench_ablation.VARIANTS["default+ffn-site+query-norm+lr-2e-3+warmup-10%"] == ("spartan", bench_ablation.RECIPE)
    # and the few-shot preset is the variant whose rows docs/results.md quotes for it
    assert settings(bench_ablation.VARIANTS["recipe+from-layer-2+key-init-data"][1]) == settings(["--preset", "few-shot"])


def test_kill_stops_the_running_training_and_removes_the_scratch_folder(tmp_path):
    """`kill <pid>` of a long ablation must not leave its training running nor its scratch folder behind."""
    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, str(repo / "benchmarks" / "bench_ablation.py"), "--quick", "--variants", "default",
               "--tasks", "sst2", "--data-dir", str(repo / "samples" / "glue"), "--output", str(tmp_path / "out.json")]
    ablation = subprocess.Popen(command, cwd=repo, env={**os.environ, "TMPDIR": str(tmp_path)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert ablation.stdout.readline().startswith("== default/sst2/"), ablation.stderr.read()  # training started
    (scratch,) = tmp_path.glob("spartan-ablation-*")
    time.sleep(2)  # the training subprocess is running by now
    ablation.send_signal(signal.SIGTERM)
    stderr = ablation.communicate(timeout=60)[1]
    assert ablation.returncode == 130 and "interrupted: stopped by SIGTERM" in stderr
    assert not scratch.exists()
    trainings = [p for p in Path("/proc").glob("[0-9]*") if str(scratch).encode() in _cmdline(p)]
    assert trainings == [], "the training subprocess outlived the ablation"
    assert not (tmp_path / "out.json").exists()  # no run finished: nothing written


def _cmdline(process_dir) -> bytes:
    try:
        return (process_dir / "cmdline").read_bytes()
    except OSError:  # the process ended while we looked
        return b""
