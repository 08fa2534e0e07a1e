"""The baselines (adapters, LoRA, full fine-tuning) next to SPARTAN, on a tiny random BERT:
what each trains, where its modules sit, and a train/evaluate round trip through the CLIs."""

import dataclasses
import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from repo_paths import GLUE_SAMPLES
from spartan_tf import artifacts, evaluate, train
from spartan_tf.backbone import Backbone
from spartan_tf.bert_layer import encoder_layer
from spartan_tf.errors import run_cli
from spartan_tf.methods import METHODS, AdapterMethod, FullFineTuning, LoraMethod, SpartanMethod
from spartan_tf.methods.lora import merged_backbone
from spartan_tf.model import build_task_model

SMALL = {  # each method at a size that suits the hidden-32 test model
    "spartan": SpartanMethod(num_parents=4, children_per_parent=2, top_k=2),
    "adapters": AdapterMethod(adapter_size=4),
    "lora": LoraMethod(rank=2, alpha=4.0),
    "full": FullFineTuning(),
}
PAIRS = [("Who wrote Hamlet?", "Hamlet was written by Shakespeare."), ("a short one", "yes"),
         ("What is the capital of France?", "Paris is the capital and largest city of France.")]


def features(backbone, pairs=PAIRS):
    """Padded int32 features for (text, pair) tuples."""
    encodings = backbone.tokenizer(32).encode_batch(pairs)
    length = max(len(e.ids) for e in encodings)
    pad = lambda rows: np.array([r + [0] * (length - len(r)) for r in rows], np.int32)  # noqa: E731
    return {"input_ids": pad([e.ids for e in encodings]), "attention_mask": pad([e.attention_mask for e in encodings]),
            "token_type_ids": pad([e.type_ids for e in encodings])}


@pytest.fixture
def own_backbone(tiny_model_dir):
    """A private copy of the tiny backbone, for methods that change it (full fine-tuning)."""
    return Backbone.load(str(tiny_model_dir))


def backbone_for(name, tiny_backbone, tiny_model_dir):
    return Backbone.load(str(tiny_model_dir)) if SMALL[name].trains_backbone else tiny_backbone


def randomise(variables, seed):
    """Give variables (e.g. zero-initialised up-projections) random values, so that they matter."""
    for offset, variable in enumerate(variables):
        variable.assign(tf.random.stateless_normal(variable.shape, seed=(seed, offset), stddev=0.3))


# ----- the registry and the CLI flags ------------------------------------------------------------
def test_every_method_is_registered_with_the_protocol():
    assert set(METHODS) == {"spartan", "adapters", "lora", "full"}
    for name, method in SMALL.items():
        assert method.name == name and method.default_learning_rate > 0
        assert type(method).from_dict(method.to_dict()) == method
    assert [METHODS[n].default_learning_rate for n in ("adapters", "lora", "full")] == [1e-3, 5e-4, 2e-5]
    assert METHODS["full"].trains_backbone and not any(METHODS[n].trains_backbone for n in ("spartan", "adapters", "lora"))


def test_a_model_saved_before_the_value_scale_existed_loads_with_the_scale_it_was_trained_with():
    from spartan_tf.methods.spartan import SpartanMethod

    old = {"name": "spartan", "num_parents": 16, "children_per_parent": 3, "top_k": 8, "temperature": 1.6,
           "balance_loss_scale": 0.0, "path": "dense"}  # a config.json written before the recipe options
    method = SpartanMethod.from_dict(old)
    assert (method.value_scale, method.query_norm, method.output_gain, method.center_values, method.site) == (
        1.0, False, False, False, "layer")
    assert SpartanMethod().value_scale == 10.0 and SpartanMethod().center_values  # a new model: today's defaults


@pytest.mark.parametrize("argv,message", [
    (["--method", "lora", "--adapter-size", "8"], "--adapter-size is a flag of --method adapters, not of --method lora"),
    (["--method", "adapters", "--lora-rank", "4"], "--lora-rank is a flag of --method lora"),
    (["--method", "full", "--num-parents", "4"], "--num-parents is a flag of --method spartan"),
    (["--lora-alpha", "8"], "not of --method spartan"),
    (["--method", "adapters", "--adapter-size", "0"], "--adapter-size 0: must be >= 1"),
    (["--method", "lora", "--lora-rank", "0"], "--lora-rank 0: must be >= 1"),
    (["--method", "lora", "--lora-alpha", "-1"], "--lora-alpha -1.0: must be > 0"),
])
def test_bad_method_flags_give_one_clear_line(argv, message, capsys, tmp_path):
    code = run_cli(train.main, ["--task", "qnli", "--data-dir", str(GLUE_SAMPLES), "--output-dir", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


# ----- where the modules sit -------------------------------------------------------------------
def test_the_reimplemented_encoder_layer_is_the_backbones(tiny_backbone):
    inputs = features(tiny_backbone)
    hidden = tiny_backbone.embed(inputs["input_ids"], inputs["token_type_ids"])
    bias = tiny_backbone.attention_bias(inputs["attention_mask"])
    for index in range(tiny_backbone.num_layers):
        expected = tiny_backbone.layer(index, hidden, bias)
        np.testing.assert_allclose(encoder_layer(tiny_backbone.bert.encoder.layer[index], hidden, bias).numpy(),
                                   expected.numpy(), atol=1e-6)
        hidden = expected


@pytest.mark.parametrize("name", ["adapters", "lora"])
def test_untrained_adapters_and_lora_leave_the_backbone_output_unchanged(name, tiny_backbone):
    model = build_task_model(tiny_backbone, SMALL[name], 2, 0.1, seed=0)
    inputs = features(tiny_backbone)
    reference = tiny_backbone._model(**inputs).last_hidden_state.numpy()
    np.testing.assert_allclose(model.encode(inputs).numpy(), reference, atol=1e-5)


def erf_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def layer_norm(x, gamma, beta, eps):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def numpy_bert_layer(backbone, index, x, mask, adapter=None, lora=None, after_attention=None, after_output=None,
                     layer_norms=None):
    """BERT encoder layer ``index`` written out in numpy from the formulas, with optional Houlsby
    adapters ({site: (down_k, down_b, up_k, up_b)}), LoRA ({target: (A, B, scale)}) or functions
    applied to the attention output and the feed-forward output before their residual and LayerNorm
    (``after_attention``, ``after_output``), and optional LayerNorm weights in place of the backbone's
    (``layer_norms``: {"attention" | "output": (gamma, beta)})."""
    w = {path.split(f"layer_._{index}/", 1)[1]: v.numpy().astype(np.float64)
         for path, v in backbone.named_variables().items() if path.startswith(f"encoder/layer_._{index}/")}
    heads, eps = backbone.config.num_attention_heads, backbone.config.layer_norm_eps
    batch, length, hidden = x.shape

    def project(target):
        kernel = w[f"attention/self/{target}/kernel"]
        if lora and target in lora:
            a, b, scale = lora[target]
            kernel = kernel + scale * a @ b
        out = x @ kernel + w[f"attention/self/{target}/bias"]
        return out.reshape(batch, length, heads, hidden // heads).transpose(0, 2, 1, 3)

    def adapt(site, h):
        if not adapter:
            return h
        down_k, down_b, up_k, up_b = adapter[site]
        return h + erf_gelu(h @ down_k + down_b) @ up_k + up_b

    q, k, v = project("query"), project("key"), project("value")
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hidden // heads) + (1.0 - mask[:, None, None, :]) * -10000.0
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
    h = adapt("attention", context @ w["attention/output/dense/kernel"] + w["attention/output/dense/bias"])
    if after_attention is not None:
        h = after_attention(h)
    norms = {"attention": (w["attention/output/LayerNorm/gamma"], w["attention/output/LayerNorm/beta"]),
             "output": (w["output/LayerNorm/gamma"], w["output/LayerNorm/beta"]), **(layer_norms or {})}
    a = layer_norm(h + x, *norms["attention"], eps)
    f = erf_gelu(a @ w["intermediate/dense/kernel"] + w["intermediate/dense/bias"])
    f = adapt("output", f @ w["output/dense/kernel"] + w["output/dense/bias"])
    if after_output is not None:
        f = after_output(f)
    return layer_norm(f + a, *norms["output"], eps)


def trained_layer_norms(backbone, index, layer_norms) -> dict:
    """The gamma and beta that LayerNormTuning ``layer_norms`` stands for on encoder layer ``index``:
    {site: (gamma (1 + scale), beta (1 + scale) + shift)}, float64."""
    layer = backbone.bert.encoder.layer[index]
    pretrained = {"attention": layer.attention.dense_output.LayerNorm, "output": layer.bert_output.LayerNorm}
    trained = {}
    for site, norm in pretrained.items():
        scale = layer_norms.scales[site].numpy().astype(np.float64)
        shift = layer_norms.shifts[site].numpy().astype(np.float64)
        gamma, beta = norm.gamma.numpy().astype(np.float64), norm.beta.numpy().astype(np.float64)
        trained[site] = (gamma * (1 + scale), beta * (1 + scale) + shift)
    return trained


@pytest.mark.parametrize("name", ["adapters", "adapters+tuned-norms", "lora"])
def test_trained_modules_sit_where_the_formulas_say(name, tiny_backbone):
    """Adapters (with --tune-layer-norms: their LayerNorms' gamma and beta as if trained) and LoRA, against
    the formulas in numpy."""
    method = dataclasses.replace(SMALL["adapters"], tune_layer_norms=True) if name.endswith("norms") else SMALL[name]
    model = build_task_model(tiny_backbone, method, 2, 0.1, seed=0)
    randomise(model.after_layers[0].weights, seed=7)
    inputs = features(tiny_backbone)
    x = tiny_backbone.embed(inputs["input_ids"], inputs["token_type_ids"])
    bias = tiny_backbone.attention_bias(inputs["attention_mask"])
    got = model.method.forward_layer(tiny_backbone, 0, x, bias, inputs["attention_mask"], model.after_layers[0])
    w = {v.name.split("/")[-1].split(":")[0]: v.numpy().astype(np.float64) for v in model.after_layers[0].weights}
    if name.startswith("adapters"):
        extra = {"adapter": {s: tuple(w[f"{s}_{p}"] for p in ("down_kernel", "down_bias", "up_kernel", "up_bias"))
                             for s in ("attention", "output")}}
        if method.tune_layer_norms:
            extra["layer_norms"] = trained_layer_norms(tiny_backbone, 0, model.after_layers[0].layer_norms)
    else:
        extra = {"lora": {t: (w[f"{t}_a"], w[f"{t}_b"], 2.0) for t in ("query", "value")}}  # alpha 4 / rank 2
    expected = numpy_bert_layer(tiny_backbone, 0, x.numpy().astype(np.float64),
                                inputs["attention_mask"].astype(np.float64), **extra)
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4)
    unchanged = tiny_backbone.layer(0, x, bias).numpy()
    assert np.abs(got.numpy() - unchanged).max() > 1e-2  # the modules do change the layer


def test_a_feed_forward_memory_sits_before_the_layers_residual_and_layer_norm(tiny_backbone):
    """--memory-site feed-forward: the memory reads and writes the feed-forward output, where an adapter's
    output site is, with its centered and scaled values (DESIGN.md's formulas, in numpy)."""
    from test_memory import numpy_memory

    method = dataclasses.replace(SMALL["spartan"], site="feed-forward", value_init_std=0.0)
    model = build_task_model(tiny_backbone, method, 2, 0.1, seed=0)
    inputs = features(tiny_backbone)
    reference = tiny_backbone._model(**inputs).last_hidden_state.numpy()
    np.testing.assert_allclose(model.encode(inputs).numpy(), reference, atol=1e-5)  # zero values: the backbone

    memory = model.after_layers[0]
    randomise(memory.weights, seed=7)
    x = tiny_backbone.embed(inputs["input_ids"], inputs["token_type_ids"])
    bias = tiny_backbone.attention_bias(inputs["attention_mask"])
    got = model.method.forward_layer(tiny_backbone, 0, x, bias, inputs["attention_mask"], memory)
    stored = memory.child_values.numpy().astype(np.float64)
    values = (stored - stored.mean(axis=(0, 1), keepdims=True)) * method.value_scale

    def memory_formula(f):
        return numpy_memory(f, memory.parent_keys.numpy().astype(np.float64), memory.child_keys.numpy().astype(np.float64),
                            values, method.top_k, method.temperature)[0]
    expected = numpy_bert_layer(tiny_backbone, 0, x.numpy().astype(np.float64),
                                inputs["attention_mask"].astype(np.float64), after_output=memory_formula)
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4)
    assert np.abs(got.numpy() - tiny_backbone.layer(0, x, bias).numpy()).max() > 1e-2  # the memory does change it


def site_memory_formula(module, method, site):
    """The numpy memory (DESIGN.md's formulas) of SublayerMemories ``module``'s ``site``: h -> h + memory(h)."""
    from test_memory import numpy_memory

    memory = module.memories[site]
    stored = memory.child_values.numpy().astype(np.float64)
    values = (stored - stored.mean(axis=(0, 1), keepdims=True)) * method.value_scale
    return lambda h: numpy_memory(h, memory.parent_keys.numpy().astype(np.float64),
                                  memory.child_keys.numpy().astype(np.float64), values, method.top_k,
                                  method.temperature)[0]


def test_two_memories_sit_on_the_attention_and_feed_forward_outputs(tiny_backbone):
    """--memory-site attention+feed-forward: one memory on the attention output and one on the
    feed-forward output of every layer, each before its residual and LayerNorm (DESIGN.md's formulas,
    in numpy), with weights named by site."""
    method = dataclasses.replace(SMALL["spartan"], site="attention+feed-forward")
    model = build_task_model(tiny_backbone, method, 2, 0.1, seed=0)
    module = model.after_layers[0]
    assert {"memory_00/attention/parent_keys", "memory_00/output/child_values"} <= set(model.named_task_weights())
    assert len(model.named_task_weights()) == 2 * 3 * tiny_backbone.num_layers + 4  # 3 weights a memory; the head's 4
    randomise(module.weights, seed=7)
    inputs = features(tiny_backbone)
    x = tiny_backbone.embed(inputs["input_ids"], inputs["token_type_ids"])
    bias = tiny_backbone.attention_bias(inputs["attention_mask"])
    got = model.method.forward_layer(tiny_backbone, 0, x, bias, inputs["attention_mask"], module)
    memories = {f"after_{site}": site_memory_formula(module, method, site) for site in ("attention", "output")}
    expected = numpy_bert_layer(tiny_backbone, 0, x.numpy().astype(np.float64),
                                inputs["attention_mask"].astype(np.float64), **memories)
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4)
    one_site = numpy_bert_layer(tiny_backbone, 0, x.numpy().astype(np.float64),
                                inputs["attention_mask"].astype(np.float64), after_output=memories["after_output"])
    assert np.abs(got.numpy() - one_site).max() > 1e-2  # the attention output's memory does change it


@pytest.mark.parametrize("site", ["attention+feed-forward", "feed-forward", "layer"])
def test_tuned_layer_norms_are_the_backbones_layer_norms_with_trained_gamma_and_beta(site, tiny_backbone):
    """--tune-layer-norms: the layer's two LayerNorms read as if their gamma and beta had trained,
    gamma * (1 + scale) and beta * (1 + scale) + shift (numpy, from the formulas), starting as the
    backbone's, with the memories where their site puts them; the task owns the four [H] weights a
    layer, the backbone's own stay as they were."""
    method = dataclasses.replace(SMALL["spartan"], site=site, tune_layer_norms=True)
    model = build_task_model(tiny_backbone, method, 2, 0.1, seed=0)
    module = model.after_layers[0]
    sites = ("attention", "output") if site == "attention+feed-forward" else ("output",)
    names = {f"memory_00/layer_norms/{norm}_{part}" for norm in ("attention", "output") for part in ("scale", "shift")}
    names |= {f"memory_00/{memory}/parent_keys" for memory in sites}
    assert names <= set(model.named_task_weights())
    assert len(model.named_task_weights()) == (3 * len(sites) + 4) * tiny_backbone.num_layers + 4
    inputs = features(tiny_backbone)
    x = tiny_backbone.embed(inputs["input_ids"], inputs["token_type_ids"])
    bias = tiny_backbone.attention_bias(inputs["attention_mask"])
    untuned = dataclasses.replace(method, tune_layer_norms=False)
    if site != "attention+feed-forward":  # an untuned model's memory is bare: give it the tuned module's weights
        untuned_model = build_task_model(tiny_backbone, untuned, 2, 0.1, seed=0)
        for bare, twin in zip(untuned_model.after_layers[0].weights, module.memories["output"].weights):
            bare.assign(twin)
        untuned_output = untuned.forward_layer(tiny_backbone, 0, x, bias, inputs["attention_mask"],
                                               untuned_model.after_layers[0])
    else:
        untuned_output = untuned.forward_layer(tiny_backbone, 0, x, bias, inputs["attention_mask"], module)
    np.testing.assert_allclose(model.method.forward_layer(tiny_backbone, 0, x, bias, inputs["attention_mask"],
                                                          module).numpy(), untuned_output.numpy(), atol=1e-6)
    backbone_before = [v.numpy().copy() for v in tiny_backbone.bert.weights]
    randomise(module.weights, seed=7)
    got = model.method.forward_layer(tiny_backbone, 0, x, bias, inputs["attention_mask"], module)
    trained = trained_layer_norms(tiny_backbone, 0, module.layer_norms)
    memories = {name: site_memory_formula(module, method, name) for name in sites}
    layer_input = (x.numpy().astype(np.float64), inputs["attention_mask"].astype(np.float64))
    if site == "layer":  # the memory reads the tuned layer's output
        expected = memories["output"](numpy_bert_layer(tiny_backbone, 0, *layer_input, layer_norms=trained))
    else:
        expected = numpy_bert_layer(tiny_backbone, 0, *layer_input, layer_norms=trained,
                                    **{f"after_{name}": memory for name, memory in memories.items()})
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4)
    assert np.abs(got.numpy() - untuned_output.numpy()).max() > 1e-2  # the tuned norms do change it
    for before, variable in zip(backbone_before, tiny_backbone.bert.weights):
        np.testing.assert_array_equal(variable.numpy(), before)


@pytest.mark.parametrize("argv,message", [
    (["--method", "lora"], "--tune-layer-norms is for --method spartan and adapters, not --method lora"),
    (["--method", "full"], "--tune-layer-norms is for --method spartan and adapters, not --method full"),
])
def test_tuned_layer_norms_where_they_have_no_place_are_one_clear_line(argv, message, tiny_model_dir, capsys, tmp_path):
    code = run_cli(train.main, ["--task", "qnli", "--data-dir", str(GLUE_SAMPLES), "--model", str(tiny_model_dir),
                                "--output-dir", str(tmp_path / "o"), "--tune-layer-norms", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: {message}\n"
    assert not (tmp_path / "o").exists()


def test_memories_from_a_later_layer_leave_the_layers_below_as_the_backbone_has_them(tiny_backbone):
    """--first-memory-layer 1: no memory (and no variable) on layer 0; the model computes what a model
    with a memory on every layer computes when the layer-0 memory's values are zero (it adds nothing),
    and a training step reaches every variable it has."""
    top = build_task_model(tiny_backbone, dataclasses.replace(SMALL["spartan"], first_layer=1), 2, 0.1, seed=5)
    every = build_task_model(tiny_backbone, SMALL["spartan"], 2, 0.1, seed=5)
    assert top.after_layers[0] is None
    assert sorted({key.split("/")[0] for key in top.named_task_weights()}) == ["head", "memory_01"]
    randomise(top.trainable_weights, seed=11)
    every.after_layers[0].child_values.assign(tf.zeros_like(every.after_layers[0].child_values))
    every.after_layers[1].set_weights(top.after_layers[1].get_weights())
    every.head.set_weights(top.head.get_weights())
    inputs = features(tiny_backbone)
    np.testing.assert_allclose(top(inputs).numpy(), every(inputs).numpy(), atol=1e-5)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(top(inputs, training=True))
    gradients = tape.gradient(loss, top.trainable_weights)
    assert all(gradient is not None for gradient in gradients) and len(gradients) == len(top.named_task_weights())


@pytest.mark.parametrize("flag,message", [
    ("-1", "--first-memory-layer -1: must be >= 0"),
    ("2", "--first-memory-layer 2: the backbone has layers 0 to 1"),
])
def test_first_memory_layer_out_of_range_is_one_clear_line(flag, message, tiny_model_dir, capsys, tmp_path):
    code = run_cli(train.main, ["--task", "qnli", "--data-dir", str(GLUE_SAMPLES), "--model", str(tiny_model_dir),
                                "--output-dir", str(tmp_path / "o"), "--first-memory-layer", flag])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_lora_merged_weights_give_the_unmerged_logits(tiny_backbone):
    model = build_task_model(tiny_backbone, SMALL["lora"], 2, 0.1, seed=0)
    for layer in model.after_layers:
        randomise(layer.weights, seed=11)
    merged = model.method.merged_weights(tiny_backbone, model.after_layers)
    assert sorted(merged) == sorted(f"encoder/layer_._{i}/attention/self/{t}/kernel" for i in range(2)
                                    for t in ("query", "value"))
    plain = merged_backbone(model)
    inputs = features(tiny_backbone)
    hidden = plain.embed(inputs["input_ids"], inputs["token_type_ids"])
    bias = plain.attention_bias(inputs["attention_mask"])
    for index in range(plain.num_layers):
        hidden = plain.layer(index, hidden, bias)
    np.testing.assert_allclose(hidden.numpy(), model.encode(inputs).numpy(), atol=1e-5)
    np.testing.assert_allclose(model.head(hidden).numpy(), model(inputs).numpy(), atol=1e-6)
    assert np.abs(hidden.numpy() - tiny_backbone._model(**inputs).last_hidden_state.numpy()).max() > 1e-2
    assert plain.fingerprint() != tiny_backbone.fingerprint()


# ----- what trains -----------------------------------------------------------------------------
def expected_names(name, backbone):
    layers = range(backbone.num_layers)
    head = {f"head/{w}" for w in ("pooler_kernel", "pooler_bias", "classifier_kernel", "classifier_bias")}
    if name == "spartan":
        own = {f"memory_{i:02d}/{w}" for i in layers for w in ("parent_keys", "child_keys", "child_values")}
    elif name == "adapters":
        own = {f"adapter_{i:02d}/{s}_{p}" for i in layers for s in ("attention", "output")
               for p in ("down_kernel", "down_bias", "up_kernel", "up_bias")}
    elif name == "lora":
        own = {f"lora_{i:02d}/{t}_{m}" for i in layers for t in ("query", "value") for m in ("a", "b")}
    else:
        own = {f"backbone/{path}" for path in backbone.named_variables() if not path.startswith("pooler/")}
    return own | head


@pytest.mark.parametrize("name", list(SMALL))
def test_each_method_trains_what_it_says_and_nothing_else(name, tiny_backbone, tiny_model_dir):
    backbone = backbone_for(name, tiny_backbone, tiny_model_dir)
    model = build_task_model(backbone, SMALL[name], 3, 0.1, seed=0)
    named = model.named_task_weights()
    assert set(named) == expected_names(name, backbone)
    assert {id(v) for v in model.trainable_weights} == {id(v) for v in named.values()}
    inputs = features(backbone)
    assert model(inputs).shape == (3, 3)
    assert build_task_model(backbone, SMALL[name], 1, 0.1, seed=0)(inputs).shape == (3, 1)  # regression
    backbone_ids = {id(v) for v in backbone.variables}
    if name == "full":
        assert {id(v) for v in backbone.bert.pooler.weights} & {id(v) for v in model.trainable_weights} == set()
    else:
        assert backbone.bert.trainable_weights == [] and not backbone_ids & {id(v) for v in model.weights}

    batch = features(backbone, PAIRS * 4)
    labels = np.array([0, 1, 2] * 4, np.int32)
    backbone_before = {path: v.numpy().copy() for path, v in backbone.named_variables().items()}
    task_before = {key: v.numpy().copy() for key, v in named.items()}
    optimizer = tf_keras.optimizers.Adam(1e-3 if name == "full" else 1e-2)
    for _ in range(3):  # eager steps (the CLI test below runs Keras fit); the 2nd moves what starts at zero
        with tf.GradientTape() as tape:
            loss = tf_keras.losses.sparse_categorical_crossentropy(labels, model(batch, training=True), from_logits=True)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_weights), model.trainable_weights))
    for key, variable in named.items():
        assert not np.array_equal(task_before[key], variable.numpy()), f"{key} never changed"
    for path, variable in backbone.named_variables().items():
        moved = not np.array_equal(backbone_before[path], variable.numpy())
        assert moved == (name == "full" and not path.startswith("pooler/")), path


# ----- save, load, evaluate --------------------------------------------------------------------
def cli_args(model_dir, out_dir, name):
    sizes = {"spartan": ["--num-parents", 4, "--children", 8, "--top-k", 2], "adapters": ["--adapter-size", 4],
             "lora": ["--lora-rank", 2], "full": ["--learning-rate", 1e-3]}[name]
    return [str(a) for a in ["--task", "qnli", "--method", name, "--model", model_dir, "--data-dir", GLUE_SAMPLES,
                             "--output-dir", out_dir, "--max-train-samples", 16, "--max-eval-samples", 24,
                             "--epochs", 1, "--batch-size", 8, *sizes]]


@pytest.mark.parametrize("name", ["adapters", "lora", "full"])
def test_train_then_evaluate_round_trip(name, tiny_model_dir, tiny_backbone, tmp_path, capsys):
    out_dir = tmp_path / name
    assert run_cli(train.main, cli_args(tiny_model_dir, out_dir, name)) == 0, capsys.readouterr().err
    capsys.readouterr()
    config = json.loads((out_dir / "config.json").read_text())
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert config["method"] == SMALL[name].to_dict() | ({"alpha": 16.0} if name == "lora" else {})
    assert config["training"]["learning_rate"] == (1e-3 if name == "full" else METHODS[name].default_learning_rate)
    # the PRETRAINED weights' fingerprint, even when training changed them
    assert config["backbone"]["fingerprint"] == tiny_backbone.fingerprint()
    assert metrics["method"] == name and metrics["trainable_parameters"] > 0
    with np.load(out_dir / "weights.npz") as weights:
        assert {key.split("/")[0].rstrip("_0123456789") for key in weights.files} == (
            {"head", "backbone"} if name == "full" else {"head", {"adapters": "adapter", "lora": "lora"}[name]})
        assert sum(weights[key].size for key in weights.files) == metrics["trainable_parameters"]

    assert run_cli(evaluate.main, ["--model-dir", str(out_dir), "--max-eval-samples", "24"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["examples"] == 24
    assert result["accuracy"] == pytest.approx(metrics["final"]["accuracy"], abs=1e-9)

    # a shared backbone handed to load_trained is never changed, even by a fully fine-tuned task
    before = [v.numpy().copy() for v in tiny_backbone.variables]
    model, _, backbone, _ = artifacts.load_trained(out_dir, backbone=tiny_backbone)
    assert (backbone is tiny_backbone) == (name != "full")
    assert tiny_backbone.bert.trainable_weights == []
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, tiny_backbone.variables))
    if name == "full":
        with np.load(out_dir / "weights.npz") as weights:
            kernel = "backbone/encoder/layer_._0/attention/self/query/kernel"
            np.testing.assert_array_equal(backbone.named_variables()[kernel[9:]].numpy(), weights[kernel])
            assert not np.array_equal(weights[kernel], tiny_backbone.named_variables()[kernel[9:]].numpy())
