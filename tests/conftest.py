"""Shared fixtures: a tiny randomly initialised BERT saved like a real model directory."""

import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest



def save_tiny_bert(directory: Path, seed: int) -> Path:
    """A 2-layer, hidden-32 TFBertModel with the shipped backbone's real WordPiece tokenizer."""
    import tf_keras
    from transformers import BertConfig, TFBertModel

    from spartan_tf.backbone import shipped_model_dir

    tf_keras.utils.set_random_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=128,
    )
    model = TFBertModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(shipped_model_dir() / name, directory / name)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=1)


@pytest.fixture(scope="session")
def other_tiny_model_dir(tmp_path_factory) -> Path:
    """Same architecture as tiny_model_dir, different weights (hence a different fingerprint)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-other"), seed=2)


@pytest.fixture(scope="session")
def tiny_backbone(tiny_model_dir):
    from spartan_tf.backbone import Backbone

    return Backbone.load(str(tiny_model_dir))


@pytest.fixture(scope="session")
def save_tiny_qnli(tiny_backbone, tiny_model_dir):
    """save(out_dir, metrics) -> model: a SPARTAN QNLI model (E=4, top-2, seed 3) over the tiny BERT,
    written to ``out_dir`` as a finished task directory (as training writes it)."""
    from spartan_tf import artifacts
    from spartan_tf.methods.spartan import SpartanMethod
    from spartan_tf.model import build_task_model

    def save(out_dir, metrics):
        method = SpartanMethod(num_parents=4, top_k=2)
        model = build_task_model(tiny_backbone, method, 2, 0.1, seed=3)
        config = {
            "task": {"name": "qnli", "problem_type": "classification",
                     "label_names": ["entailment", "not_entailment"], "metric_names": ["accuracy"],
                     "data": {"kind": "glue_dir", "data_dir": "samples/glue"}},
            "backbone": {**tiny_backbone.describe(), "model": str(tiny_model_dir)},
            "method": method.to_dict(), "head": {"dropout": 0.1}, "max_seq_length": 32,
        }
        artifacts.save_task(out_dir, model, config, metrics)
        return model

    return save
