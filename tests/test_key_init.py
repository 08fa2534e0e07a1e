"""--key-init data (spartan_tf/key_init.py): keys from k-means of the queries a memory sees."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from spartan_tf import key_init, train
from spartan_tf.errors import SpartanError, run_cli
from spartan_tf.methods.spartan import SpartanMethod
from spartan_tf.model import build_task_model
from spartan_tf.tasks import get_task

GLUE_SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "glue"


def clustered_queries(rng, clusters=4, per_cluster=200, hidden=16):
    """Queries around ``clusters`` well-separated centres, all shifted by one large common vector."""
    common = 10.0 * rng.normal(size=hidden)
    centres = 3.0 * rng.normal(size=(clusters, hidden))
    points = np.concatenate([centre + 0.1 * rng.normal(size=(per_cluster, hidden)) for centre in centres])
    labels = np.repeat(np.arange(clusters), per_cluster)
    return (common + points).astype(np.float32), labels


def test_parent_keys_send_each_cluster_to_its_own_parent_at_the_set_logit_spread():
    queries, labels = clustered_queries(np.random.default_rng(0))
    parent_keys, child_keys = key_init.kmeans_keys(queries, num_parents=4, children=3, temperature=2.0, seed=0)
    assert parent_keys.shape == (4, 16) and child_keys.shape == (4, 3, 16)
    assert parent_keys.dtype == child_keys.dtype == np.float32
    logits = queries @ parent_keys.T
    top = logits.argmax(axis=1)
    assert all(len(set(top[labels == cluster])) == 1 for cluster in range(4))  # a cluster routes as one
    assert len(set(top)) == 4  # and each to a parent of its own
    mean = queries.mean(axis=0)
    np.testing.assert_allclose(parent_keys @ mean, 0, atol=1e-3)  # no key favours every token alike
    assert np.std(logits) == pytest.approx(key_init.LOGIT_STD, rel=1e-3)


def test_child_keys_split_a_parents_tokens_at_the_set_logit_spread_after_the_temperature():
    queries, _ = clustered_queries(np.random.default_rng(1), clusters=2)
    parent_keys, child_keys = key_init.kmeans_keys(queries, num_parents=2, children=2, temperature=2.0, seed=0)
    parents = (queries @ parent_keys.T).argmax(axis=1)
    child_logits = np.concatenate([queries[parents == e] @ child_keys[e].T for e in range(2)]) / 2.0
    assert np.std(child_logits) == pytest.approx(key_init.LOGIT_STD, rel=1e-3)
    np.testing.assert_allclose(child_keys.reshape(4, -1) @ queries.mean(axis=0), 0, atol=1e-3)


def test_a_parent_with_fewer_tokens_than_children_still_gets_distinct_finite_child_keys():
    rng = np.random.default_rng(2)
    queries = np.concatenate([rng.normal(size=(50, 8)), [[40.0] * 8]]).astype(np.float32)  # one outlier
    parent_keys, child_keys = key_init.kmeans_keys(queries, num_parents=2, children=3, temperature=1.0, seed=0)
    assert np.isfinite(child_keys).all() and np.isfinite(parent_keys).all()
    assert all(len({tuple(np.round(key, 5)) for key in child_keys[e]}) == 3 for e in range(2))


def test_a_memory_records_the_query_it_computes_and_stops_when_the_recording_ends(tiny_backbone):
    method = SpartanMethod(num_parents=4, children_per_parent=2, top_k=2)
    model = build_task_model(tiny_backbone, method, 2, 0.1, seed=3)
    ids = tf.constant([[101, 2054, 2003, 102, 0], [101, 7592, 102, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": tf.cast(ids > 0, tf.int32), "token_type_ids": tf.zeros_like(ids)}
    memories = key_init.memories_of(model)
    assert memories == model.after_layers  # one memory a layer, bottom first
    with key_init.recording_queries(memories) as records:
        model.encode(batch, training=False)
    assert [len(record) for record in records] == [1, 1]
    # independently: memory 0 reads encoder layer 0's output (site "layer", no query norm)
    hidden = tiny_backbone.embed(batch["input_ids"], batch["token_type_ids"], False)
    layer_0 = tiny_backbone.layer(0, hidden, tiny_backbone.attention_bias(batch["attention_mask"], hidden.dtype), False)
    np.testing.assert_allclose(records[0][0], layer_0.numpy(), atol=1e-5)
    assert all("query" not in vars(memory) for memory in memories)  # the method is the class's again
    model.encode(batch, training=False)
    assert [len(record) for record in records] == [1, 1]


def test_training_with_data_keys_starts_from_them_and_counts_their_time(tiny_model_dir, tmp_path, capsys, monkeypatch):
    started = {}
    original = key_init.initialize_keys

    def remember_keys(model, task, encoded, seed):
        seconds = original(model, task, encoded, seed)
        started["keys"] = [memory.parent_keys.numpy().copy() for memory in key_init.memories_of(model)]
        return seconds

    monkeypatch.setattr(key_init, "initialize_keys", remember_keys)
    argv = ["--task", "qnli", "--data-dir", str(GLUE_SAMPLES), "--model", str(tiny_model_dir),
            "--max-train-samples", "16", "--max-eval-samples", "8", "--max-seq-length", "32", "--epochs", "1",
            "--num-parents", "4", "--children", "8", "--top-k", "2", "--memory-site", "attention+feed-forward",
            "--key-init", "data", "--output-dir", str(tmp_path / "o")]
    assert run_cli(train.main, argv) == 0
    assert "keys set from k-means of each memory's queries" in capsys.readouterr().out
    assert len(started["keys"]) == 4  # two memories a layer, two layers
    for keys in started["keys"]:  # the set spread, not the random start's
        assert np.linalg.norm(keys, axis=1) == pytest.approx(np.linalg.norm(keys, axis=1)[0], rel=0.5)
        assert np.abs(keys).max() > 0.05
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["key_init_seconds"] > 0
    epochs_seconds = sum(epoch["train_seconds"] for epoch in metrics["epochs"])
    assert metrics["train_seconds"] == pytest.approx(epochs_seconds + metrics["key_init_seconds"], abs=0.06)
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["method"]["key_init"] == "data"


def test_an_unknown_key_init_is_named():
    with pytest.raises(SpartanError, match="--key-init 'kmeans': expected one of"):
        SpartanMethod(key_init="kmeans")


def test_too_few_tokens_to_cluster_is_a_clear_error_naming_the_fix(tiny_backbone):
    model = build_task_model(tiny_backbone, SpartanMethod(num_parents=8, children_per_parent=1, top_k=2), 2, 0.1, seed=3)
    encoded = {"input_ids": [[101, 2054, 102]], "attention_mask": [[1, 1, 1]], "token_type_ids": [[0, 0, 0]]}
    with pytest.raises(SpartanError, match="the 1 training texts hold 3 tokens, fewer than the 8 parents"):
        key_init.initialize_keys(model, get_task("qnli"), encoded, seed=0)
