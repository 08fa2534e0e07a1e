"""The task model over a tiny random BERT: frozen backbone, memories, head, save/load."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from spartan_tf import artifacts
from spartan_tf.heads import ClassificationHead
from spartan_tf.memory import SparseMemory
from spartan_tf.methods.spartan import SpartanMethod
from spartan_tf.model import build_task_model


def batch(backbone, pairs):
    """Padded int32 features for (text, pair) tuples, via the backbone's tokenizer."""
    encodings = backbone.tokenizer(32).encode_batch(pairs)
    length = max(len(e.ids) for e in encodings)
    pad = lambda rows: np.array([r + [0] * (length - len(r)) for r in rows], np.int32)  # noqa: E731
    return {
        "input_ids": pad([e.ids for e in encodings]),
        "attention_mask": pad([e.attention_mask for e in encodings]),
        "token_type_ids": pad([e.type_ids for e in encodings]),
    }


PAIRS = [("Who wrote Hamlet?", "Hamlet was written by Shakespeare."), ("a short one", "yes"),
         ("What is the capital of France?", "Paris is the capital and largest city of France.")]


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_memories_with_zero_values_leave_the_backbone_output_unchanged(tiny_backbone, path):
    model = build_task_model(tiny_backbone, SpartanMethod(num_parents=4, top_k=2, path=path), 2, 0.1, seed=0)
    for memory in model.after_layers:
        memory.child_values.assign(tf.zeros_like(memory.child_values))
    features = batch(tiny_backbone, PAIRS)
    reference = tiny_backbone._model(**features).last_hidden_state.numpy()
    mask = features["attention_mask"].astype(bool)
    np.testing.assert_allclose(model.encode(features).numpy()[mask], reference[mask], atol=1e-5)


def test_the_backbones_dropout_runs_in_training_only_and_only_when_asked(tiny_backbone):
    features = batch(tiny_backbone, PAIRS)
    mask = features["attention_mask"].astype(bool)
    method = SpartanMethod(num_parents=4, top_k=2)
    for backbone_dropout in (False, True):
        model = build_task_model(tiny_backbone, method, 2, 0.0, seed=0, backbone_dropout=backbone_dropout)
        inference = model.encode(features, training=False).numpy()[mask]
        training = model.encode(features, training=True).numpy()[mask]
        assert np.allclose(training, inference, atol=1e-5) != backbone_dropout


def test_the_memories_dropout_reaches_every_memory_in_training_only(tiny_backbone):
    """--memory-dropout: the model passes training down to each memory, which drops its own output."""
    features = batch(tiny_backbone, PAIRS)
    mask = features["attention_mask"].astype(bool)
    model = build_task_model(tiny_backbone, SpartanMethod(num_parents=4, top_k=2, value_init_std=1.0,
                                                          memory_dropout=0.5), 2, 0.0, seed=0)
    assert [memory.dropout for memory in model.after_layers] == [0.5] * len(model.after_layers)
    inference = model.encode(features, training=False).numpy()[mask]
    np.testing.assert_array_equal(model.encode(features).numpy()[mask], inference)
    assert not np.allclose(model.encode(features, training=True).numpy()[mask], inference, atol=1e-3)


def test_memory_sits_after_every_layer_with_a_residual(tiny_backbone):
    model = build_task_model(tiny_backbone, SpartanMethod(num_parents=4, top_k=2), 2, 0.0, seed=0)
    features = batch(tiny_backbone, PAIRS[:1])
    hidden = tiny_backbone.embed(features["input_ids"], features["token_type_ids"])
    bias = tiny_backbone.attention_bias(features["attention_mask"])
    for index, memory in enumerate(model.after_layers):
        hidden = tiny_backbone.layer(index, hidden, bias)
        weights = memory.parent_weights(hidden).numpy()  # [1, S, E]
        children = tf.nn.softmax(tf.einsum("bsh,ech->bsec", hidden, memory.child_keys) / memory.temperature)
        stored = memory.child_values.numpy()  # as read: centered over all children, times the scale (default 10)
        values = (stored - stored.mean(axis=(0, 1), keepdims=True)) * memory.value_scale
        expected = hidden.numpy() + np.einsum("bse,bsec,ech->bsh", weights, children.numpy(), values)
        hidden = memory(hidden)
        np.testing.assert_allclose(hidden.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(model.encode(features).numpy(), hidden.numpy(), atol=1e-6)


def test_only_memories_and_head_train_and_the_head_starts_from_the_pooler(tiny_backbone):
    model = build_task_model(tiny_backbone, SpartanMethod(num_parents=4, top_k=2), 3, 0.1, seed=0)
    assert tiny_backbone.bert.trainable_weights == []
    assert len(tiny_backbone.bert.non_trainable_weights) == len(tiny_backbone.variables)
    backbone_ids = {id(v) for v in tiny_backbone.variables}
    assert not backbone_ids & {id(v) for v in model.weights}  # the backbone is not the task's state
    assert len(model.after_layers) == tiny_backbone.num_layers
    assert all(isinstance(m, SparseMemory) for m in model.after_layers)
    expected_names = {f"memory_{i:02d}/{w}" for i in range(tiny_backbone.num_layers)
                      for w in ("parent_keys", "child_keys", "child_values")}
    expected_names |= {f"head/{w}" for w in ("pooler_kernel", "pooler_bias", "classifier_kernel", "classifier_bias")}
    assert set(model.named_task_weights()) == expected_names
    assert {id(v) for v in model.trainable_weights} == {id(v) for v in model.named_task_weights().values()}
    kernel, bias = tiny_backbone.pooler_weights()
    np.testing.assert_array_equal(model.head.pooler_kernel.numpy(), kernel)
    np.testing.assert_array_equal(model.head.pooler_bias.numpy(), bias)
    assert model.head.classifier_kernel.shape == (tiny_backbone.hidden_size, 3)


def test_training_moves_every_task_weight_and_no_backbone_weight(tiny_backbone):
    model = build_task_model(tiny_backbone, SpartanMethod(num_parents=4, top_k=2), 2, 0.1, seed=0)
    features = batch(tiny_backbone, PAIRS * 4)
    labels = np.array([0, 1, 0] * 4, np.int32)
    with tf.GradientTape() as tape:
        loss = tf_keras.losses.sparse_categorical_crossentropy(labels, model(features, training=True), from_logits=True)
    for variable, grad in zip(model.trainable_weights, tape.gradient(loss, model.trainable_weights)):
        assert grad is not None and np.abs(tf.convert_to_tensor(grad).numpy()).max() > 0, variable.name

    backbone_before = [v.numpy().copy() for v in tiny_backbone.variables]
    task_before = {name: v.numpy().copy() for name, v in model.named_task_weights().items()}
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-2),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(4), epochs=2, verbose=0)
    for before, variable in zip(backbone_before, tiny_backbone.variables):
        assert np.array_equal(before, variable.numpy()), variable.name  # bit-identical
    for name, variable in model.named_task_weights().items():
        assert not np.array_equal(task_before[name], variable.numpy()), f"{name} never changed"


def test_mean_pooling_head_reads_the_mean_of_the_real_tokens():
    head = ClassificationHead(2, pooling="mean", seed=5, name="head")
    hidden = np.random.default_rng(0).normal(size=(2, 4, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int32)
    logits = head(tf.constant(hidden), attention_mask=tf.constant(mask)).numpy()
    pooler_kernel, pooler_bias, classifier_kernel, classifier_bias = [w.numpy() for w in head.weights]
    means = np.stack([hidden[0].mean(axis=0), hidden[1, :2].mean(axis=0)])  # padding left out
    expected = np.tanh(means @ pooler_kernel + pooler_bias) @ classifier_kernel + classifier_bias
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        ClassificationHead(2, pooling="max")


def test_head_get_config_round_trip(tiny_backbone):
    head = ClassificationHead(3, pooling="mean", dropout=0.2, seed=5, name="head")
    hidden = tf.random.stateless_normal((2, 4, 8), seed=(3, 4))
    logits = head(hidden)
    clone = ClassificationHead.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    clone.build(hidden.shape)
    clone.set_weights(head.get_weights())
    np.testing.assert_array_equal(clone(hidden).numpy(), logits.numpy())
    assert tf_keras.utils.get_registered_name(ClassificationHead) == "spartan_tf>ClassificationHead"


def test_saved_task_reloads_to_identical_logits(tiny_backbone, save_tiny_qnli, tmp_path):
    model = save_tiny_qnli(tmp_path, {"final": {"accuracy": 0.5}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "metrics.json", "weights.npz"]
    reloaded, saved_config, _, task = artifacts.load_trained(tmp_path)
    assert task.name == "qnli" and saved_config["format_version"] == artifacts.FORMAT_VERSION
    features = batch(tiny_backbone, PAIRS)
    np.testing.assert_array_equal(reloaded(features).numpy(), model(features).numpy())
