"""`python -m spartan_tf.train` / `spartan_tf.evaluate` end to end on a tiny BERT and the shipped samples."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from repo_paths import GLUE_SAMPLES, REPO
from spartan_tf import evaluate, train
from spartan_tf.errors import run_cli
from spartan_tf.methods.spartan import PRESETS


def run(module, argv, capsys):
    """(exit code, stdout, stderr) of a CLI main run in this process."""
    code = run_cli(module.main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny_args(model_dir, out_dir, task="qnli", *extra):
    return ["--task", task, "--model", model_dir, "--data-dir", GLUE_SAMPLES, "--output-dir", out_dir,
            "--max-train-samples", 32, "--max-eval-samples", 40, "--epochs", 1, "--batch-size", 8,
            "--num-parents", 4, "--children", 8, "--top-k", 2, *extra]


@pytest.fixture(scope="module")
def trained_qnli(tiny_model_dir, tmp_path_factory):
    """A tiny QNLI model trained by the CLI; returns (out_dir, stdout of training)."""
    out_dir = tmp_path_factory.mktemp("qnli-model")
    code = run_cli(train.main, [str(a) for a in tiny_args(tiny_model_dir, out_dir) + ["--overwrite"]])
    assert code == 0
    return out_dir


def test_training_writes_a_complete_small_model(trained_qnli, tiny_model_dir):
    names = {p.name for p in trained_qnli.iterdir()}
    assert {"config.json", "weights.npz", "metrics.json", "checkpoints", "logs"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    config = json.loads((trained_qnli / "config.json").read_text())
    assert config["task"]["name"] == "qnli"
    assert config["task"]["label_names"] == ["entailment", "not_entailment"]
    assert config["method"] == {"name": "spartan", "num_parents": 4, "children_per_parent": 2, "top_k": 2,
                                "temperature": 1.6, "balance_loss_scale": 0.0, "path": "dense",
                                "query_norm": False, "key_init_std": 0.02, "value_init_std": 0.02,
                                "value_scale": 10.0, "output_gain": False,
                                "center_values": True, "site": "layer", "first_layer": 0, "memory_dropout": 0.0,
                                "key_init": "random", "tune_layer_norms": False}
    assert config["head"] == {"dropout": 0.1, "pooling": "mean"}
    assert config["training"]["lr_schedule"] == "linear" and config["training"]["warmup_ratio"] == 0.0
    assert config["training"]["backbone_dropout"] is False  # the default: the backbone runs without dropout
    assert config["training"]["clip_norm"] is None and config["training"]["weight_decay"] is None
    assert config["backbone"]["model"] == str(tiny_model_dir)
    assert config["backbone"]["fingerprint"].startswith("sha256:")
    assert config["max_seq_length"] == 128 and config["training"]["train_examples"] == 32
    with np.load(trained_qnli / "weights.npz") as weights:
        assert sorted(weights.files)[0] == "head/classifier_bias"
        assert weights["memory_01/child_values"].shape == (4, 2, 32)  # E, C, H of the tiny model
    assert list((trained_qnli / "checkpoints").glob("epoch-01.index"))
    assert list((trained_qnli / "logs").rglob("events.out.tfevents.*"))


def test_evaluate_reproduces_the_training_metric(trained_qnli, capsys):
    metrics = json.loads((trained_qnli / "metrics.json").read_text())
    assert metrics["epochs"][0]["epoch"] == 1 and metrics["train_examples_per_second"] > 0
    code, out, err = run(evaluate, ["--model-dir", trained_qnli, "--max-eval-samples", 40], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["examples"] == 40
    assert result["accuracy"] == pytest.approx(metrics["final"]["accuracy"], abs=1e-9)


def test_evaluate_on_an_eval_file_scores_it(trained_qnli, tmp_path, capsys):
    rows = (GLUE_SAMPLES / "QNLI" / "dev.tsv").read_text().splitlines()[:11]
    eval_file = tmp_path / "ten.tsv"
    eval_file.write_text("\n".join(rows) + "\n")
    code, out, err = run(evaluate, ["--model-dir", trained_qnli, "--eval-file", eval_file], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["examples"] == 10 and result["accuracy"] in {i / 10 for i in range(11)}


def test_refuses_an_output_dir_holding_a_model_without_overwrite(trained_qnli, tiny_model_dir, capsys):
    before = (trained_qnli / "weights.npz").read_bytes()
    code, _, err = run(train, tiny_args(tiny_model_dir, trained_qnli, "sst2"), capsys)
    assert code == 2
    assert "already holds a model of another task (qnli)" in err and "--overwrite" in err
    code, _, err = run(train, tiny_args(tiny_model_dir, trained_qnli), capsys)
    assert code == 2 and "already holds a model of the same task" in err
    assert (trained_qnli / "weights.npz").read_bytes() == before


def test_evaluate_refuses_a_backbone_with_another_fingerprint(trained_qnli, other_tiny_model_dir, capsys):
    code, out, err = run(evaluate, ["--model-dir", trained_qnli, "--model", other_tiny_model_dir], capsys)
    assert code == 2 and out == ""
    assert "different fingerprint" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv,message", [
    (["--task", "glue"], "unknown task 'glue'"),
    (["--task", "qnli", "--data-dir", "/no/such/dir"], "/no/such/dir"),
    (["--task", "custom", "--train-file", "x.tsv"], "--eval-file"),
    (["--task", "qnli", "--data-dir", GLUE_SAMPLES, "--children", "50"], "multiple of --num-parents"),
    (["--task", "qnli", "--data-dir", GLUE_SAMPLES, "--top-k", "20"], "--top-k 20"),
    (["--task", "qnli", "--data-dir", GLUE_SAMPLES, "--epochs", "0"], "--epochs 0"),
    (["--task", "qnli", "--data-dir", GLUE_SAMPLES, "--warmup-ratio", "1"], "--warmup-ratio 1.0"),
    (["--task", "qnli", "--data-dir", GLUE_SAMPLES, "--value-scale", "0"], "--value-scale 0.0"),
    (["--task", "qnli", "--data-dir", GLUE_SAMPLES, "--memory-dropout", "1"],
     "--memory-dropout 1.0: must be in [0, 1)"),
    (["--task", "qnli", "--data-dir", GLUE_SAMPLES, "--learning-rate", "0"], "--learning-rate 0.0: must be > 0"),
    (["--task", "qnli", "--data-dir", GLUE_SAMPLES, "--clip-norm", "0"], "--clip-norm 0.0: must be > 0"),
    (["--task", "qnli", "--data-dir", GLUE_SAMPLES, "--weight-decay", "-1"], "--weight-decay -1.0: must be > 0"),
    (["--task", "qnli", "--data-dir", GLUE_SAMPLES, "--method", "adapters", "--preset", "reference"],
     "--preset reference is a SPARTAN recipe"),
])
def test_bad_arguments_give_one_clear_line(argv, message, capsys, tmp_path):
    code, _, err = run(train, argv + ["--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_preset_reference_restores_the_papers_setting_and_explicit_flags_win():
    reference = train.parse_args(["--task", "qnli", "--preset", "reference"])
    assert (reference.learning_rate, reference.lr_schedule, reference.pooling, reference.value_scale,
            reference.center_values, reference.query_norm, reference.top_k,
            reference.backbone_dropout) == (1e-3, "linear", "cls", 1.0, False, False, 8, False)
    mixed = train.parse_args(["--task", "qnli", "--preset", "reference", "--value-scale", "3"])
    assert mixed.value_scale == 3.0 and mixed.lr_schedule == "linear"
    every_flag = {action.dest for action in train.build_parser()._actions}
    assert all(set(preset) <= every_flag for preset in PRESETS.values())  # a preset names real flags only


def test_preset_short_budget_is_the_measured_recipe_on_top_of_the_defaults():
    short = train.parse_args(["--task", "qnli", "--preset", "short-budget"])
    default = train.parse_args(["--task", "qnli"])
    changed = {name for name, value in vars(short).items()
               if name != "method_flags" and vars(default)[name] != value}  # method_flags: each parser's own actions
    assert changed == {"preset", "memory_site", "query_norm", "learning_rate", "warmup_ratio"}
    assert (short.memory_site, short.query_norm, short.learning_rate, short.warmup_ratio) == (
        "feed-forward", True, 2e-3, 0.1)
    assert train.parse_args(["--task", "qnli", "--preset", "short-budget", "--learning-rate", "1e-3"]).learning_rate == 1e-3


def test_malformed_row_names_file_and_line(tmp_path, capsys):
    qnli = tmp_path / "glue" / "QNLI"
    qnli.mkdir(parents=True)
    (qnli / "train.tsv").write_text(
        "index\tquestion\tsentence\tlabel\n0\tWho?\tHe did.\tentailment\n1\tWhy?\tbecause\tmaybe\n")
    (qnli / "dev.tsv").write_text("index\tquestion\tsentence\tlabel\n0\tWho?\tHe did.\tentailment\n")
    code, _, err = run(train, ["--task", "qnli", "--data-dir", tmp_path / "glue", "--output-dir", tmp_path / "o"], capsys)
    assert code == 2 and "train.tsv" in err and "line 3" in err


def test_empty_training_set_is_refused(tmp_path, capsys):
    qnli = tmp_path / "glue" / "QNLI"
    qnli.mkdir(parents=True)
    (qnli / "train.tsv").write_text("index\tquestion\tsentence\tlabel\n")
    (qnli / "dev.tsv").write_text("index\tquestion\tsentence\tlabel\n0\tWho?\tHe did.\tentailment\n")
    code, _, err = run(train, ["--task", "qnli", "--data-dir", tmp_path / "glue", "--output-dir", tmp_path / "o"], capsys)
    assert code == 2 and "no examples" in err and "train.tsv" in err


def test_custom_task_learns_its_labels_from_the_file(tiny_model_dir, tmp_path, capsys):
    rows = [("the match ended two nil", "sport"), ("shares fell sharply today", "business"),
            ("the striker scored twice", "sport"), ("profits rose in the quarter", "business")] * 4
    for name in ("train.jsonl", "dev.jsonl"):
        (tmp_path / name).write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in rows))
    out_dir = tmp_path / "model"
    code, out, err = run(train, ["--task", "custom", "--model", tiny_model_dir, "--train-file", tmp_path / "train.jsonl",
                                 "--eval-file", tmp_path / "dev.jsonl", "--output-dir", out_dir, "--epochs", 1,
                                 "--num-parents", 4, "--children", 8, "--top-k", 2], capsys)
    assert code == 0, err
    config = json.loads((out_dir / "config.json").read_text())
    assert config["task"]["label_names"] == ["business", "sport"]
    assert config["task"]["data"]["kind"] == "files"
    code, out, err = run(evaluate, ["--model-dir", out_dir], capsys)
    assert code == 0 and json.loads(out.splitlines()[-1])["examples"] == 16


def test_stsb_trains_as_regression_and_reports_correlations(tiny_model_dir, tmp_path, capsys):
    out_dir = tmp_path / "stsb"
    code, out, err = run(train, tiny_args(tiny_model_dir, out_dir, "stsb"), capsys)
    assert code == 0, err
    metrics = json.loads((out_dir / "metrics.json").read_text())["final"]
    assert set(metrics) == {"pearson", "spearmanr"} and all(-1 <= v <= 1 for v in metrics.values())
    with np.load(out_dir / "weights.npz") as weights:
        assert weights["head/classifier_kernel"].shape == (32, 1)


def test_unreachable_hub_name_is_one_clear_line(tmp_path, capsys):
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        pytest.skip("the model hub is reachable from here")
    except OSError:
        pass
    start = time.monotonic()
    code, _, err = run(train, ["--task", "qnli", "--data-dir", GLUE_SAMPLES, "--model", "bert-base-uncased",
                               "--output-dir", tmp_path / "o"], capsys)
    assert code == 2 and "bert-base-uncased" in err and "cannot be reached" in err
    assert err.count("\n") == 1 and time.monotonic() - start < 60


def test_the_real_command_exits_2_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "spartan_tf.train", "--task", "qnli", "--data-dir", tmp_path],
                            capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "QNLI" in result.stderr


@pytest.mark.parametrize("to_terminal", [False, True])
def test_a_log_file_gets_a_progress_line_at_each_resume_checkpoint(to_terminal, tiny_model_dir, tmp_path, capsys,
                                                                   monkeypatch):
    # 32 examples in batches of 4: 8 steps an epoch; a line at steps 3 and 6, none at 8 (the epoch's own line)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: to_terminal)
    code, out, _ = run(train, tiny_args(tiny_model_dir, tmp_path / "o", "qnli", "--epochs", 2, "--batch-size", 4,
                                        "--checkpoint-every", 3), capsys)
    assert code == 0
    lines = re.findall(r"^epoch (\d)/2, step (\d+)/8: loss (\S+), (\S+) s a step, epoch done in ~(\d+) (s|min)$",
                       out, flags=re.MULTILINE)
    if to_terminal:  # Keras' live bar shows the steps instead
        assert lines == []
        return
    assert [(epoch, step) for epoch, step, *_ in lines] == [("1", "3"), ("1", "6"), ("2", "3"), ("2", "6")]
    for _, step, loss, seconds_a_step, left, unit in lines:
        assert 0 < float(loss) < 5 and unit == "s"  # seconds, not "~0 min", for a short epoch
        assert abs(int(left) - float(seconds_a_step) * (8 - int(step))) <= 1  # the steps left at that pace
