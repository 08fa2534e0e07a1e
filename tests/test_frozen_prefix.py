"""Training that runs the frozen layers below the first memory once per example (frozen_prefix.py)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from repo_paths import GLUE_SAMPLES
from spartan_tf import data, frozen_prefix, train
from spartan_tf.errors import run_cli
from spartan_tf.methods import AdapterMethod, SpartanMethod
from spartan_tf.model import FROZEN_STATES, build_task_model
from spartan_tf.tasks import get_task

TEXTS = [("Who wrote Hamlet?", "Hamlet was written by Shakespeare in about 1600."), ("a short one", "yes"),
         ("What is the capital of France?", "Paris is the capital and largest city of France."),
         ("Where do penguins live?", "Mostly in the southern hemisphere.")]


def spartan_from_layer(first_layer):
    return SpartanMethod(num_parents=4, children_per_parent=2, top_k=2, first_layer=first_layer)


def test_the_frozen_prefix_is_the_layers_below_the_first_module(tiny_backbone):
    assert build_task_model(tiny_backbone, spartan_from_layer(0), 2, 0.1, seed=0).frozen_prefix == 0
    model = build_task_model(tiny_backbone, spartan_from_layer(1), 2, 0.1, seed=0)
    assert model.frozen_prefix == 1
    assert build_task_model(tiny_backbone, AdapterMethod(adapter_size=4), 2, 0.1, seed=0).frozen_prefix == 0


def test_batches_of_frozen_states_give_the_logits_and_gradients_of_batches_of_tokens(tiny_backbone):
    """The same examples batched two ways (shuffled alike, each batch padded to its own longest
    example): from the tokens through every layer, and from the states computed once (padded with
    zeros, a different padding from the one they were computed with)."""
    model = build_task_model(tiny_backbone, spartan_from_layer(1), 2, 0.0, seed=4, pooling="mean")
    for offset, variable in enumerate(model.trainable_weights):  # memories that change the states
        variable.assign(tf.random.stateless_normal(variable.shape, seed=(9, offset), stddev=0.3))
    encoded = data.encode(tiny_backbone.tokenizer(32), [data.Example(a, b, 0) for a, b in TEXTS])
    labels, task = [0, 1, 1, 0], get_task("qnli")
    states = frozen_prefix.with_prefix_states(model, task, encoded, batch_size=3)
    assert [row.shape for row in states[FROZEN_STATES]] == [(len(ids), 32) for ids in encoded["input_ids"]]
    from_tokens = data.make_dataset(encoded, labels, 2, shuffle=True, seed=3, task=task)
    from_states = data.make_dataset(states, labels, 2, shuffle=True, seed=3, task=task)
    for (tokens, y_tokens), (hidden, y_states) in zip(from_tokens, from_states):
        np.testing.assert_array_equal(y_tokens, y_states)
        assert set(hidden) == {FROZEN_STATES, "attention_mask"} and hidden[FROZEN_STATES].dtype == tf.float32
        results = []
        for inputs in (tokens, hidden):
            with tf.GradientTape() as tape:
                logits = model(inputs, training=True)
                loss = tf.reduce_sum(logits * [1.0, -2.0])
            results.append((logits.numpy(), tape.gradient(loss, model.trainable_weights)))
        (logits_a, grads_a), (logits_b, grads_b) = results
        assert np.abs(logits_a).max() > 1e-3
        np.testing.assert_allclose(logits_b, logits_a, atol=1e-5)
        for grad_a, grad_b in zip(grads_a, grads_b):
            np.testing.assert_allclose(tf.convert_to_tensor(grad_b), tf.convert_to_tensor(grad_a), atol=1e-5)


def train_argv(tiny_model_dir, out_dir, *flags):
    return ["--task", "qnli", "--data-dir", str(GLUE_SAMPLES), "--model", str(tiny_model_dir),
            "--max-train-samples", "16", "--max-eval-samples", "8", "--max-seq-length", "32", "--epochs", "2",
            "--num-parents", "4", "--children", "8", "--top-k", "2", "--output-dir", str(out_dir), *flags]


def test_the_frozen_layers_run_once_only_when_nothing_in_them_changes_between_epochs():
    assert frozen_prefix.reason_to_run_every_epoch(backbone_dropout=False, replicas=1, size=1000) is None
    assert "--backbone-dropout" in frozen_prefix.reason_to_run_every_epoch(True, 1, 1000)
    assert "each of the 2 replicas" in frozen_prefix.reason_to_run_every_epoch(False, 2, 1000)
    assert "(more than 1,024 MB)" in frozen_prefix.reason_to_run_every_epoch(False, 1, frozen_prefix.MAX_BYTES + 1)


@pytest.mark.parametrize("flags,line", [
    (["--first-memory-layer", "1"], "frozen layer 0: run once for the 16 training examples"),
    (["--first-memory-layer", "1", "--backbone-dropout"], "frozen layer 0: run in every epoch, as --backbone-dropout"),
    ([], None),
])
def test_training_says_when_it_runs_the_frozen_layers_once(flags, line, tiny_model_dir, tmp_path, capsys):
    assert run_cli(train.main, train_argv(tiny_model_dir, tmp_path / "o", *flags)) == 0
    out = capsys.readouterr().out
    runs_once = line is not None and "run once" in line
    assert ("frozen layer" in out) == (line is not None) and (line is None or line in out)
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert [epoch["epoch"] for epoch in metrics["epochs"]] == [1, 2]
    assert (metrics["frozen_layers_seconds"] > 0) == runs_once  # and it counts as training time
    epochs_seconds = sum(epoch["train_seconds"] for epoch in metrics["epochs"])
    assert metrics["train_seconds"] == pytest.approx(epochs_seconds + metrics["frozen_layers_seconds"], abs=0.06)


def test_states_larger_than_the_memory_budget_leave_the_layers_running_every_epoch(
        tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(frozen_prefix, "MAX_BYTES", 1000)  # 16 examples x 32 floats x 4 bytes take more
    assert run_cli(train.main, train_argv(tiny_model_dir, tmp_path / "o", "--first-memory-layer", "1")) == 0
    out = capsys.readouterr().out
    assert "frozen layer 0: run in every epoch, as their states for these examples would take" in out
    assert "run once" not in out
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["frozen_layers_seconds"] == 0
