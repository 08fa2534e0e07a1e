"""SparseMemory against an independent NumPy computation of DESIGN.md's formulas."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from spartan_tf.memory import SparseMemory


def numpy_memory(h, P, K, V, top_k, temperature, query_norm=False):
    """DESIGN.md's formulas, position by position, in float64: (next_hidden, parent_weights).
    With ``query_norm`` the keys are matched against (h - mean(h)) / sqrt(var(h) + 1e-6)."""
    B, S, H = h.shape
    E = P.shape[0]
    out = np.zeros_like(h, dtype=np.float64)
    weights = np.zeros((B, S, E))
    for b in range(B):
        for s in range(S):
            x = h[b, s].astype(np.float64)
            query = (x - x.mean()) / np.sqrt(x.var() + 1e-6) if query_norm else x
            a = P @ query
            keep = np.argsort(-a)[:top_k]
            masked = np.full(E, -np.inf)
            masked[keep] = a[keep]
            p = np.exp(masked - masked.max())
            p /= p.sum()
            m = np.zeros(H)
            for e in range(E):
                c = K[e] @ query / temperature
                q = np.exp(c - c.max())
                q /= q.sum()
                m += p[e] * (q @ V[e])
            out[b, s] = x + m
            weights[b, s] = p
    return out, weights


def loaded_memory(P, K, V, top_k, temperature, path, **kwargs):
    layer = SparseMemory(P.shape[0], K.shape[1], top_k, temperature, path=path, **kwargs)
    layer.build((None, None, P.shape[1]))
    layer.parent_keys.assign(P)
    layer.child_keys.assign(K)
    layer.child_values.assign(V)
    return layer


def random_case(seed, B=2, S=5, H=12, E=6, C=4):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(B, S, H)), rng.normal(size=(E, H)), rng.normal(size=(E, C, H)),
            rng.normal(size=(E, C, H)))


@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize("top_k,temperature", [(1, 1.0), (3, 1.6), (6, 0.5)])
def test_matches_numpy_formulas(path, top_k, temperature):
    h, P, K, V = random_case(seed=top_k)
    expected, expected_weights = numpy_memory(h, P, K, V, top_k, temperature)
    layer = loaded_memory(P, K, V, top_k, temperature, path)
    hidden = tf.constant(h, tf.float32)
    np.testing.assert_allclose(layer(hidden).numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.parent_weights(hidden).numpy(), expected_weights, atol=1e-6)
    assert (np.count_nonzero(layer.parent_weights(hidden).numpy(), axis=-1) == top_k).all()


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_reproduces_shipped_reference_vectors(path):
    vectors = np.load(__import__("pathlib").Path(__file__).parent / "data" / "memory_vectors.npz")
    for case in ("small", "reference_defaults", "top1"):
        get = lambda name: vectors[f"{case}__{name}"]  # noqa: E731
        layer = loaded_memory(get("P"), get("K"), get("V"), int(get("top_k")), float(get("temperature")), path)
        out = layer(tf.constant(get("h"), tf.float32)).numpy()
        np.testing.assert_allclose(out, get("next_hidden"), rtol=1e-5, atol=1e-5)


def test_dense_and_sparse_paths_agree_values_and_gradients():
    h, P, K, V = random_case(seed=7, E=16, C=3, H=24)
    hidden = tf.constant(h, tf.float32)
    results = []
    for path in ("dense", "sparse"):
        layer = loaded_memory(P, K, V, 8, 1.6, path)
        with tf.GradientTape() as tape:
            out = layer(hidden)
            loss = tf.reduce_sum(out * out)
        results.append((out.numpy(), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, layer.trainable_weights)]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for dense_grad, sparse_grad in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(dense_grad, sparse_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_parents_never_chosen_get_exactly_zero_gradient(path):
    h, P, K, V = random_case(seed=3, B=1, S=1, E=8, C=3)
    layer = loaded_memory(P, K, V, 3, 1.6, path)
    hidden = tf.constant(h, tf.float32)
    chosen = set(np.nonzero(layer.parent_weights(hidden).numpy()[0, 0])[0])
    assert len(chosen) == 3
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(hidden)))
    grads = dict(zip(["P", "K", "V"], [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, layer.trainable_weights)]))
    for parent in range(8):
        for name, grad in grads.items():
            if parent in chosen:
                assert np.abs(grad[parent]).max() > 0, (name, parent)
            else:
                assert np.all(grad[parent] == 0.0), (name, parent)


def test_balance_loss_matches_formula_and_ignores_padding():
    h, P, K, V = random_case(seed=5, B=2, S=4, E=6)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.int32)
    layer = loaded_memory(P, K, V, 2, 1.6, "dense", balance_loss_weight=0.25)
    layer(tf.constant(h, tf.float32), attention_mask=tf.constant(mask))
    _, weights = numpy_memory(h, P, K, V, 2, 1.6)
    usage = weights[mask == 1].mean(axis=0)  # mean parent weight over real tokens, per parent
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), 0.25 * np.sum(usage**2), rtol=1e-5)
    quiet = loaded_memory(P, K, V, 2, 1.6, "dense")
    quiet(tf.constant(h, tf.float32), attention_mask=tf.constant(mask))
    assert quiet.losses == []  # off by default


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_query_norm_and_value_scale_match_numpy(path):
    """query_norm: keys read layer_norm(h) but the residual adds to h itself; value_scale: the values
    read are the stored ones times the scale."""
    h, P, K, V = random_case(seed=7)
    h = 3.0 * h + 5.0  # a mean and a scale that the norm removes
    expected, expected_weights = numpy_memory(h, P, K, 4.0 * V, 3, 1.6, query_norm=True)
    layer = loaded_memory(P, K, V, 3, 1.6, path, query_norm=True, value_scale=4.0)
    hidden = tf.constant(h, tf.float32)
    np.testing.assert_allclose(layer(hidden).numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(layer.parent_weights(hidden).numpy(), expected_weights, atol=1e-6)
    np.testing.assert_allclose(layer.values().numpy(), 4.0 * V, rtol=1e-6)


def test_output_gain_scales_the_memory_output_per_hidden_unit():
    h, P, K, V = random_case(seed=8)
    gain = np.linspace(0.5, 2.0, h.shape[-1])
    expected, _ = numpy_memory(h, P, K, V * gain, 3, 1.6)
    layer = loaded_memory(P, K, V, 3, 1.6, "dense", output_gain=True)
    np.testing.assert_array_equal(layer.gain.numpy(), np.ones(h.shape[-1]))  # starts at 1
    layer.gain.assign(gain)
    np.testing.assert_allclose(layer(tf.constant(h, tf.float32)).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_center_values_reads_the_values_minus_their_mean_over_all_children(path):
    """center_values: the memory computes DESIGN.md's formulas with V - mean(V over every child), and
    the gradient of a stored value is (w_j - mean_i w_i) * g: none when the routing is uniform."""
    h, P, K, V = random_case(seed=9)
    centered = V - V.mean(axis=(0, 1), keepdims=True)
    expected, _ = numpy_memory(h, P, K, 2.0 * centered, 3, 1.6)
    layer = loaded_memory(P, K, V, 3, 1.6, path, value_scale=2.0, center_values=True)
    hidden = tf.constant(h, tf.float32)
    np.testing.assert_allclose(layer(hidden).numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(layer.values().numpy(), 2.0 * centered, rtol=1e-5, atol=1e-6)
    uniform = loaded_memory(np.zeros_like(P), np.zeros_like(K), V, P.shape[0], 1.6, path, center_values=True)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(uniform(hidden) * tf.constant(h, tf.float32))
    np.testing.assert_allclose(tape.gradient(loss, uniform.child_values).numpy(), 0.0, atol=1e-5)


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_dropout_drops_the_memory_output_in_training_and_keeps_the_residual_whole(path):
    h, P, K, V = random_case(seed=10, S=40)
    expected, _ = numpy_memory(h, P, K, V, 3, 1.6)
    layer = loaded_memory(P, K, V, 3, 1.6, path, dropout=0.25, seed=5)
    hidden = tf.constant(h, tf.float32)
    np.testing.assert_allclose(layer(hidden).numpy(), expected, rtol=1e-5, atol=1e-5)  # inference: no dropout
    memory = expected - h
    added = layer(hidden, training=True).numpy() - h  # each unit of m is dropped, or kept and scaled by 1 / 0.75
    dropped = np.isclose(added, 0.0, atol=1e-5)
    np.testing.assert_allclose(added[~dropped], memory[~dropped] / 0.75, rtol=1e-4, atol=1e-4)
    assert 0.15 < dropped.mean() < 0.35


def test_initial_scales_of_keys_and_values():
    """value_initializer_range is the std of the values as read (after value_scale); 0 gives zeros."""
    layer = SparseMemory(num_parents=16, children_per_parent=4, top_k=2, key_initializer_range=0.05,
                         value_initializer_range=0.02, value_scale=10.0, seed=1)
    layer.build((None, None, 256))
    assert np.std(layer.parent_keys.numpy()) == pytest.approx(0.05 * 0.88, rel=0.1)  # truncated normal
    assert np.std(layer.values().numpy()) == pytest.approx(0.02 * 0.88, rel=0.1)
    assert np.std(layer.child_values.numpy()) == pytest.approx(0.002 * 0.88, rel=0.1)
    identity = SparseMemory(num_parents=4, children_per_parent=2, top_k=2, value_initializer_range=0.0, seed=1)
    hidden = tf.random.stateless_normal((2, 3, 8), seed=(1, 2))
    np.testing.assert_array_equal(identity(hidden).numpy(), hidden.numpy())


def test_get_config_round_trip_and_registered_name():
    layer = SparseMemory(num_parents=5, children_per_parent=2, top_k=2, temperature=0.7,
                         balance_loss_weight=0.1, path="sparse", query_norm=True, key_initializer_range=0.05,
                         value_initializer_range=0.01, value_scale=3.0, output_gain=True, center_values=True,
                         dropout=0.2, seed=11, name="memory_03")
    hidden = tf.random.stateless_normal((2, 3, 10), seed=(1, 2))
    out = layer(hidden)
    config = layer.get_config()
    clone = SparseMemory.from_config(config)
    assert clone.get_config() == config
    clone.build(hidden.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(hidden).numpy(), out.numpy())
    serialized = tf_keras.layers.serialize(layer)
    assert tf_keras.utils.get_registered_name(SparseMemory) == "spartan_tf>SparseMemory"
    assert tf_keras.utils.get_registered_object("spartan_tf>SparseMemory") is SparseMemory
    revived = tf_keras.layers.deserialize(serialized)
    assert isinstance(revived, SparseMemory) and revived.get_config() == config


def test_seeds_give_distinct_reproducible_initial_weights():
    def weights(seed):
        layer = SparseMemory(num_parents=4, children_per_parent=2, top_k=2, seed=seed)
        layer.build((None, None, 8))
        return [w.numpy() for w in layer.weights]

    first, again, other = weights(1), weights(1), weights(31)
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    assert not np.array_equal(first[1], first[2])  # keys and values differ within a layer


@pytest.mark.parametrize("kwargs,message", [
    ({"top_k": 0}, "top_k"), ({"top_k": 17}, "top_k"), ({"temperature": 0}, "temperature"),
    ({"path": "fast"}, "path"), ({"children_per_parent": 0}, "children_per_parent"),
    ({"key_initializer_range": 0}, "key_initializer_range"), ({"value_scale": 0}, "value_scale"),
    ({"dropout": 1.0}, "dropout"),
])
def test_rejects_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparseMemory(**kwargs)


def test_sublayer_memories_config_round_trip_and_two_distinct_memories():
    """SublayerMemories (``--memory-site attention+feed-forward``): each site runs its own SparseMemory,
    built from one config with its own seed; the config round-trips through Keras' registry."""
    from spartan_tf.methods.sublayer_memories import SITES, SublayerMemories

    config = {"num_parents": 4, "children_per_parent": 2, "top_k": 2, "value_scale": 10.0, "center_values": True,
              "seed": 11}
    layer = SublayerMemories(config, name="memory_02")
    hidden = tf.random.stateless_normal((2, 3, 8), seed=(1, 2))
    outputs = {site: layer(hidden, site=site).numpy() for site in SITES}
    for offset, site in enumerate(SITES):
        alone = SparseMemory(**{**config, "seed": 11 + 5 * offset})
        np.testing.assert_array_equal(alone(hidden).numpy(), outputs[site])  # the site's memory, seeded its way
    assert np.abs(outputs["attention"] - outputs["output"]).max() > 1e-4  # two memories, not one
    assert [w.name for w in layer.weights][:3] == ["memory_02/attention/parent_keys:0",
                                                   "memory_02/attention/child_keys:0",
                                                   "memory_02/attention/child_values:0"]
    assert tf_keras.utils.get_registered_name(SublayerMemories) == "spartan_tf>SublayerMemories"
    revived = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
    assert isinstance(revived, SublayerMemories) and revived.get_config() == layer.get_config()
    revived.build(hidden.shape)
    revived.set_weights(layer.get_weights())
    for site in SITES:
        np.testing.assert_array_equal(revived(hidden, site=site).numpy(), outputs[site])


def test_sublayer_memories_of_one_site_hold_that_memory_only():
    """SublayerMemories(sites=("output",)): a single memory a layer whose module also tunes the layer's
    LayerNorms; it holds the "output" memory alone, seeded as in the pair, and keeps ``sites`` through
    its config. Its LayerNorm hooks build it first when no memory has run yet (site "layer"), under its
    own name. Unknown sites are one clear error."""
    from spartan_tf.methods.sublayer_memories import SublayerMemories

    config = {"num_parents": 4, "children_per_parent": 2, "top_k": 2, "seed": 11}
    layer = SublayerMemories(config, sites=("output",), tune_layer_norms=True, name="memory_03")
    hidden = tf.random.stateless_normal((2, 3, 8), seed=(1, 2))
    hooks = layer.layer_norm_hooks(hidden.shape)
    assert layer.built and sorted(hooks) == ["after_attention_norm", "after_output_norm"]
    assert sorted(w.name for w in layer.weights) == sorted(
        [f"memory_03/output/{name}:0" for name in ("parent_keys", "child_keys", "child_values")]
        + [f"memory_03/layer_norms/{site}_{part}:0" for site in ("attention", "output") for part in ("scale", "shift")])
    np.testing.assert_array_equal(layer(hidden, site="output").numpy(),
                                  SparseMemory(**{**config, "seed": 11 + 5})(hidden).numpy())
    revived = SublayerMemories.from_config(layer.get_config())
    assert revived.sites == ("output",) and revived.get_config() == layer.get_config()
    with pytest.raises(ValueError, match=r"sites \['ffn'\]: expected some of \('attention', 'output'\)"):
        SublayerMemories(config, sites=("ffn",))


def test_sublayer_memories_with_tuned_layer_norms_round_trip():
    """SublayerMemories(tune_layer_norms=True) owns a LayerNormTuning: four [H] weights beside the
    memories', starting at 0 (the identity), then LayerNorm output * (1 + scale) + shift; the
    registry, get_config and from_config keep it."""
    from spartan_tf.methods.layer_norm_tuning import SITES, LayerNormTuning
    from spartan_tf.methods.sublayer_memories import SublayerMemories

    layer = SublayerMemories({"num_parents": 4, "children_per_parent": 2, "top_k": 2, "seed": 3},
                             tune_layer_norms=True, name="memory_01")
    hidden = tf.random.stateless_normal((2, 3, 8), seed=(4, 5))
    layer(hidden, site="attention")
    norms = [weight for weight in layer.weights if "layer_norms" in weight.name]
    assert len(layer.weights) == 10 and sorted(w.name for w in norms) == sorted(
        f"memory_01/layer_norms/{site}_{part}:0" for part in ("scale", "shift") for site in SITES)
    np.testing.assert_array_equal(layer.layer_norms(hidden, site="output").numpy(), hidden.numpy())
    for offset, weight in enumerate(norms):
        weight.assign(tf.random.stateless_normal(weight.shape, seed=(6, offset)))
    assert tf_keras.utils.get_registered_name(LayerNormTuning) == "spartan_tf>LayerNormTuning"
    revived = SublayerMemories.from_config(layer.get_config())
    assert revived.tune_layer_norms and revived.get_config() == layer.get_config()
    revived.build(hidden.shape)
    revived.set_weights(layer.get_weights())
    for site in SITES:
        expected = hidden.numpy() * (1 + layer.layer_norms.scales[site].numpy()) + layer.layer_norms.shifts[site].numpy()
        np.testing.assert_allclose(revived.layer_norms(hidden, site=site).numpy(), expected, rtol=1e-6)
        hook = revived.layer_norms.hooks()[f"after_{site}_norm"]
        np.testing.assert_allclose(hook(hidden).numpy(), expected, rtol=1e-6)
