"""The converter (convert/to_tflite.py, spartan_tf.export/bundle/parity/conversion) on tiny random BERTs.

Each conversion here takes a few seconds: the backbone is a 2-layer, hidden-32 BERT (conftest.py)
and the tasks are random memories + heads saved like trained tasks.
"""

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from repo_paths import GLUE_SAMPLES, REPO

MAX_LENGTH = 64
CHECK = "16"  # dev examples in each conversion's parity check
GRAPH = "spartan-4x2-cls"  # the tiny SPARTAN tasks' shared graph: 4 parents x 2 children, CLS pooling
GRAPH_FILE = f"backbone.{GRAPH}.tflite"


def load_cli():
    spec = importlib.util.spec_from_file_location("to_tflite", REPO / "convert" / "to_tflite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def convert(*args):
    """(exit code, stdout, stderr) of ``python convert/to_tflite.py *args``, run in process."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = load_cli().cli([str(arg) for arg in args])
    return code, out.getvalue(), err.getvalue()


TINY_METHODS = {  # small enough for the 2-layer, hidden-32 test backbone
    "spartan": {"name": "spartan", "num_parents": 4, "children_per_parent": 2, "top_k": 2, "temperature": 1.6},
    "spartan_recipe": {"name": "spartan", "num_parents": 4, "children_per_parent": 2, "top_k": 2, "temperature": 1.6,
                       "value_scale": 10.0, "output_gain": True, "center_values": True},  # folded into the task file's values
    "spartan_ffn": {"name": "spartan", "num_parents": 4, "children_per_parent": 2, "top_k": 2, "temperature": 1.6,
                    "value_scale": 10.0, "center_values": True, "site": "feed-forward"},  # inside each layer
    "spartan_sublayers": {"name": "spartan", "num_parents": 4, "children_per_parent": 2, "top_k": 2, "temperature": 1.6,
                          "value_scale": 10.0, "center_values": True, "site": "attention+feed-forward"},  # two a layer
    "spartan_tuned_norms": {"name": "spartan", "num_parents": 4, "children_per_parent": 2, "top_k": 2,
                            "temperature": 1.6, "value_scale": 10.0, "center_values": True,
                            "site": "attention+feed-forward", "tune_layer_norms": True, "first_layer": 1},
    "spartan_tuned_norms_layer": {"name": "spartan", "num_parents": 4, "children_per_parent": 2, "top_k": 2,
                                  "temperature": 1.6, "value_scale": 10.0, "center_values": True,
                                  "tune_layer_norms": True, "first_layer": 1},  # one memory after the layer
    "spartan_tuned_norms_ffn": {"name": "spartan", "num_parents": 4, "children_per_parent": 2, "top_k": 2,
                                "temperature": 1.6, "value_scale": 10.0, "center_values": True,
                                "site": "feed-forward", "tune_layer_norms": True},
    "spartan_top": {"name": "spartan", "num_parents": 4, "children_per_parent": 2, "top_k": 2, "temperature": 1.6,
                    "value_scale": 10.0, "center_values": True, "first_layer": 1},  # no memory on layer 0
    "adapters": {"name": "adapters", "adapter_size": 8},
    "adapters_tuned_norms": {"name": "adapters", "adapter_size": 8, "tune_layer_norms": True},
    "lora": {"name": "lora", "rank": 4, "alpha": 8.0},
    "full": {"name": "full"},
}


def save_tiny_task(out_dir: Path, backbone, task_name: str, seed: int, method_name: str = "spartan",
                   pooling: str = "cls") -> Path:
    """A task directory like spartan_tf.train writes, with random (not trained) task weights.

    The weights are drawn larger than the initialisers' so that the method's modules and head change
    the logits visibly from example to example (parity on near-constant logits would prove little).
    Full fine-tuning gets its own copy of the backbone, its weights moved by small noise.
    """
    from spartan_tf import artifacts, tasks
    from spartan_tf.backbone import Backbone
    from spartan_tf.methods import method_from_dict
    from spartan_tf.model import build_task_model
    from spartan_tf.sources import DataSource

    task = tasks.get_task(task_name)
    method = method_from_dict(TINY_METHODS[method_name])
    if method.trains_backbone:
        backbone = Backbone.load(backbone.source)  # never the shared fixture: this one changes
    model = build_task_model(backbone, method, task.num_outputs, head_dropout=0.0, seed=seed, pooling=pooling)
    rng = np.random.default_rng(seed)
    scale = 0.5 if method_name.startswith("spartan") else 0.1
    for variable in model.weights:
        noise = rng.normal(0.0, scale, variable.shape).astype(np.float32)
        variable.assign(variable + 0.2 * noise if method.trains_backbone else noise)
    config = {
        "task": {
            "name": task.name, "problem_type": task.problem_type, "label_names": list(task.label_names),
            "metric_names": list(task.metric_names), "data": DataSource("glue_dir", data_dir=str(GLUE_SAMPLES)).to_dict(),
        },
        "backbone": backbone.describe(),
        "method": method.to_dict(),
        "head": {"dropout": 0.0, "pooling": pooling},
        "max_seq_length": MAX_LENGTH,
        "training": {},
    }
    artifacts.save_task(out_dir, model, config, {"task": task.name, "final": {task.metric_names[0]: 0.5}})
    return out_dir


@pytest.fixture(scope="module")
def task_dirs(tmp_path_factory, tiny_backbone, other_tiny_model_dir):
    """{"qnli", "sst2": tasks on tiny_backbone, "odd": an rte task on another backbone}."""
    from spartan_tf.backbone import Backbone

    root = tmp_path_factory.mktemp("tasks")
    return {
        "qnli": save_tiny_task(root / "qnli", tiny_backbone, "qnli", seed=11),
        "sst2": save_tiny_task(root / "sst2", tiny_backbone, "sst2", seed=12),
        "odd": save_tiny_task(root / "odd", Backbone.load(str(other_tiny_model_dir)), "rte", seed=13),
    }


@pytest.fixture(scope="module")
def bundle_runs(tmp_path_factory, task_dirs):
    """One int8 bundle written twice: qnli, then sst2 added by a second run (both shared).

    Returns (bundle dir, {"first": (code, stdout, stderr), "second": ...}, shared graph stat after run 1).
    """
    out = tmp_path_factory.mktemp("bundle") / "tflite"
    runs = {"first": convert("--model-dir", task_dirs["qnli"], "--output-dir", out, "--check-samples", CHECK)}
    first_stat = (out / GRAPH_FILE).stat() if (out / GRAPH_FILE).exists() else None
    runs["second"] = convert("--model-dir", task_dirs["sst2"], "--output-dir", out, "--check-samples", CHECK)
    return out, runs, first_stat


@pytest.fixture(scope="module")
def float_bundle(tmp_path_factory, task_dirs):
    out = tmp_path_factory.mktemp("float") / "tflite"
    code, stdout, stderr = convert("--model-dir", task_dirs["qnli"], "--output-dir", out, "--float",
                                   "--check-samples", CHECK)
    assert code == 0, stderr
    return out


def shared_bundle(bundle: Path, task: str):
    """The task of ``bundle`` as the device runs it: its graph's classify with its stored tensors."""
    from spartan_tf.parity import SharedBundle
    from spartan_tf.shared_graph import unpack_task_file

    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["tasks"][task]
    with np.load(bundle / entry["file"]) as archive:
        tensors = unpack_task_file({name: archive[name] for name in archive.files})
    return SharedBundle(bundle / manifest["graphs"][entry["graph"]]["file"], tensors)


# --------------------------------------------------------------------------- the bundle contract


def test_conversion_succeeds_and_prints_parity_and_sizes(bundle_runs):
    _, runs, _ = bundle_runs
    for name in ("first", "second"):
        code, stdout, stderr = runs[name]
        assert code == 0, f"{name} run failed: {stderr}"
        assert "parity on 16" in stdout and "float32 shared graph + float32 tensors" in stdout
        assert "int8 shared graph + int8 tensors (written)" in stdout
        assert "of backbone" in stdout


def test_manifest_fields_and_sha256(bundle_runs, task_dirs, tiny_backbone):
    out, _, _ = bundle_runs
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 3
    assert manifest["created_by"].startswith("spartan-tf ")
    backbone = manifest["backbone"]
    assert backbone == {"fingerprint": tiny_backbone.fingerprint(), "model": tiny_backbone.name, "hidden_size": 32,
                        "num_layers": 2, "max_length": MAX_LENGTH, "weights": "int8"}
    graph = manifest["graphs"][GRAPH]
    assert list(manifest["graphs"]) == [GRAPH] and graph["file"] == GRAPH_FILE
    assert graph["method"] == {"name": "spartan", "num_parents": 4, "children_per_parent": 2, "query_norm": False,
                              "site": "layer"}
    assert graph["pooling"] == "cls"
    assert set(manifest["tasks"]) == {"qnli", "sst2"}

    files = [manifest["tokenizer"], graph] + list(manifest["tasks"].values())
    for entry in files:
        data = (out / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]
        if "bytes" in entry:
            assert len(data) == entry["bytes"]

    qnli = manifest["tasks"]["qnli"]
    assert (qnli["deployment"], qnli["file"], qnli["graph"]) == ("shared", "qnli.npz", GRAPH)
    assert qnli["backbone_fingerprint"] == backbone["fingerprint"]
    assert qnli["label_names"] == ["entailment", "not_entailment"]
    assert qnli["problem_type"] == "classification" and qnli["max_length"] == MAX_LENGTH
    from spartan_tf.methods import method_from_dict

    assert qnli["method"] == method_from_dict(TINY_METHODS["spartan"]).to_dict()  # every hyperparameter
    assert qnli["weights"] == "int8"
    assert qnli["keras_dev_metrics"] == {"accuracy": 0.5}
    assert qnli["size_ratio_to_backbone"] == pytest.approx(qnli["bytes"] / graph["bytes"], abs=1e-5)
    assert len(qnli["reference_inputs"]) == 3 and all(ref["text"] and ref["text_pair"] for ref in qnli["reference_inputs"])
    assert manifest["tasks"]["sst2"]["reference_inputs"][0]["text_pair"] is None


def test_tokenizer_is_the_training_tokenizer(bundle_runs, tiny_backbone):
    out, _, _ = bundle_runs
    assert (out / "tokenizer.json").read_text() == tiny_backbone.tokenizer(MAX_LENGTH).to_str()


def signatures_of(path):
    from spartan_tf.parity import interpreter_class

    interpreter = interpreter_class()(model_path=str(path))
    return interpreter, interpreter.get_signature_list()


def test_shared_graph_signature_and_task_tensors(bundle_runs):
    """One signature: the token inputs and exactly the task file's tensors, dynamic where a task may
    differ (batch, length, label count); the task file stores int8 matrices with a scale per row."""
    from spartan_tf.export import operator_names

    out, _, _ = bundle_runs
    interpreter, signatures = signatures_of(out / GRAPH_FILE)
    tensors = [f"layer_{i:02d}_{name}" for i in range(2) for name in ("keys", "top_k", "values")] + [
        "head_classifier_bias", "head_classifier_kernel", "head_pooler_bias", "head_pooler_kernel"]
    assert signatures == {"classify": {"inputs": sorted(["attention_mask", "input_ids", "token_type_ids"] + tensors),
                                       "outputs": ["logits"]}}
    shapes = {name: list(d["shape_signature"])
              for name, d in interpreter.get_signature_runner("classify").get_input_details().items()}
    assert shapes["input_ids"] == shapes["attention_mask"] == shapes["token_type_ids"] == [-1, -1]
    assert shapes["layer_01_keys"] == [4 + 2 * 4, 32] and shapes["layer_01_values"] == [32, 2 * 4]
    assert shapes["layer_00_top_k"] == [1] and shapes["head_pooler_kernel"] == [32, 32]
    assert shapes["head_classifier_kernel"] == [-1, 32] and shapes["head_classifier_bias"] == [-1]
    with np.load(out / "qnli.npz") as archive:
        stored = {name: archive[name] for name in archive.files}
    assert sorted(name for name in stored if not name.endswith(".scale")) == sorted(tensors)
    assert stored["layer_00_keys"].dtype == np.int8 and stored["layer_00_keys.scale"].shape == (12,)
    assert stored["layer_00_top_k"].dtype == np.float16 and stored["layer_00_top_k"].tolist() == [2.0]
    assert "TOPK_V2" not in operator_names((out / GRAPH_FILE).read_bytes())


@pytest.mark.parametrize("weights", ["int8", "float16", "float32"])
def test_task_file_packing_follows_the_bundle_format(weights):
    """docs/bundle-format.md, "Task files": int8 matrices with one scale per row (max |row| / 127,
    1 for a zero row) and float16 vectors; float16 everything; float32 as is. Unpacked, every
    tensor is float32 and within its storage's rounding of the original."""
    from spartan_tf.shared_graph import pack_task_file, unpack_task_file

    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(4, 6)).astype(np.float32) * np.float32([[1], [100], [0.01], [0]])
    norm = (1 + 0.01 * rng.normal(size=6)).astype(np.float32)
    tensors = {"kernel": matrix, "norm_multiplier": norm, "top_k": np.float32([2.0])}
    packed = pack_task_file(tensors, weights)
    unpacked = unpack_task_file(packed)
    assert sorted(unpacked) == sorted(tensors) and {v.dtype for v in unpacked.values()} == {np.dtype(np.float32)}
    assert unpacked["top_k"].tolist() == [2.0]
    if weights == "float32":
        assert sorted(packed) == sorted(tensors)
        for name, value in tensors.items():
            np.testing.assert_array_equal(unpacked[name], value)
        return
    if weights == "int8":
        expected_scale = np.abs(matrix).max(axis=1) / 127
        expected_scale[3] = 1.0  # the zero row
        assert packed["kernel"].dtype == np.int8 and packed["kernel.scale"].dtype == np.float32
        np.testing.assert_allclose(packed["kernel.scale"], expected_scale, rtol=1e-6)
        assert np.all(np.abs(unpacked["kernel"] - matrix) <= expected_scale[:, None] / 2 * (1 + 1e-5))
    else:
        assert sorted(packed) == sorted(tensors) and packed["kernel"].dtype == np.float16
        np.testing.assert_allclose(unpacked["kernel"], matrix, rtol=2.0 ** -11, atol=1e-7)
    assert packed["norm_multiplier"].dtype == packed["top_k"].dtype == np.float16
    np.testing.assert_allclose(unpacked["norm_multiplier"], norm, rtol=2.0 ** -11)


def test_only_builtin_ops_in_every_written_file(bundle_runs, float_bundle):
    from spartan_tf.export import operator_names

    written = sorted(bundle_runs[0].glob("*.tflite")) + sorted(float_bundle.glob("*.tflite"))
    assert [path.name for path in written] == [GRAPH_FILE, GRAPH_FILE]  # int8 and float32 graphs
    for path in written:
        names = operator_names(path.read_bytes())
        assert "FULLY_CONNECTED" in names, path.name
        assert not [name for name in names if name.startswith("CUSTOM:")], f"{path.name}: {names}"


def test_operator_scan_sees_flex_ops():
    """The scanner behind the test above reports a Flex op when there is one."""
    import tensorflow as tf

    from spartan_tf.errors import SpartanError
    from spartan_tf.export import check_builtin_only, operator_names

    function = tf.function(lambda x: {"y": tf.linalg.inv(x)}, input_signature=[tf.TensorSpec([3, 3], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    flatbuffer = converter.convert()
    assert operator_names(flatbuffer) == ["CUSTOM:FlexMatrixInverse"]
    with pytest.raises(SpartanError, match="FlexMatrixInverse"):
        check_builtin_only(flatbuffer, "inverse")


def test_int8_backbone_quantizes_the_embedding_table(bundle_runs, float_bundle):
    """Dynamic-range int8: about a quarter of the float32 file (the tiny model is mostly embeddings)."""
    int8 = (bundle_runs[0] / GRAPH_FILE).stat().st_size
    float32 = (float_bundle / GRAPH_FILE).stat().st_size
    assert int8 < 0.3 * float32


# --------------------------------------------------------------------------- numbers against Keras


def example_inputs(backbone, texts):
    tokenizer = backbone.tokenizer(MAX_LENGTH)
    encodings = [tokenizer.encode(*text) if isinstance(text, tuple) else tokenizer.encode(text) for text in texts]
    as_batch = lambda values: np.asarray([values], dtype=np.int32)  # noqa: E731
    return [(as_batch(e.ids), as_batch(e.attention_mask), as_batch(e.type_ids)) for e in encodings]


TEXTS = ["Hi.", ("What is the capital of France?", "Paris is the capital and largest city of France."),
         "A much longer sentence, with punctuation, numbers like 1984 and rare words: quixotic zephyr."]


@pytest.mark.parametrize("parents,children,top_k,scale,options", [
    (16, 3, 8, 1.0, {}), (4, 1, 4, 1.0, {}), (6, 2, 1, 1.0, {}), (16, 3, 8, 200.0, {}),
    (16, 3, 8, 1.0, {"query_norm": True, "value_scale": 10.0, "output_gain": True, "center_values": True}),
])
def test_inference_memory_computes_the_layers_numbers(parents, children, top_k, scale, options):
    """export.inference_memory (the form the bundle runs) == SparseMemory on both of its paths, for
    several shapes: one child per parent, every parent chosen, a single parent chosen; logits in
    the hundreds (``scale``), where an exponential without its max subtracted would overflow; and
    the recipe's options (keys read the normalised query, values read times their scale)."""
    import tensorflow as tf

    from spartan_tf.export import inference_memory
    from spartan_tf.memory import SparseMemory

    hidden = np.random.default_rng(0).normal(0.0, scale, (2, 7, 24)).astype(np.float32)
    layer = SparseMemory(parents, children, top_k, temperature=1.6, balance_loss_weight=0.0, seed=3, **options)
    layer.build(tf.TensorShape([None, None, 24]))
    layer.set_weights([np.random.default_rng(i).normal(0.0, 0.5, w.shape).astype(np.float32)
                       for i, w in enumerate(layer.get_weights())])
    expected = {path: SparseMemory.from_config({**layer.get_config(), "path": path}) for path in ("dense", "sparse")}
    for copy in expected.values():
        copy.build(tf.TensorShape([None, None, 24]))
        copy.set_weights(layer.get_weights())
    got = inference_memory(layer)(tf.constant(hidden)).numpy()
    for path, copy in expected.items():
        np.testing.assert_allclose(got, copy(tf.constant(hidden)).numpy(), atol=1e-5 * scale, err_msg=path)
    assert np.abs(got - hidden).max() > 0.05  # the memory adds something visible


def test_int8_memory_keeps_small_keys_precise():
    """The task file quantizes with one int8 scale per tensor. Parent keys 100x smaller than the
    child keys would round to a few levels under a shared scale and weigh the wrong parents (75%
    mean error here); inference_memory's per-column scales keep the int8 memory within a few % of
    the float one."""
    import tensorflow as tf

    from spartan_tf.export import inference_memory, signature_function, to_tflite
    from spartan_tf.memory import SparseMemory
    from spartan_tf.parity import interpreter_class

    layer = SparseMemory(16, 2, 4, temperature=1.0, balance_loss_weight=0.0, seed=3)
    layer.build(tf.TensorShape([None, None, 64]))  # keys [64, 48]: big enough to be quantized
    rng = np.random.default_rng(0)
    parent_keys, child_keys, values = (rng.normal(0.0, 1.0, w.shape).astype(np.float32) for w in layer.get_weights())
    layer.set_weights([parent_keys, child_keys * 100.0, values])
    forward = inference_memory(layer)
    signature = signature_function("memory_00", lambda hidden: {"hidden": forward(hidden)},
                                   [tf.TensorSpec([None, None, 64], tf.float32)])
    runner = interpreter_class()(model_content=to_tflite({"memory_00": signature}, "int8", per_channel=False))
    hidden = rng.normal(0.0, 1.0, (1, 50, 64)).astype(np.float32)
    got = runner.get_signature_runner("memory_00")(hidden=hidden)["hidden"] - hidden
    expected = layer(tf.constant(hidden)).numpy() - hidden
    assert np.abs(got - expected).mean() < 0.1 * np.abs(expected).mean()


def test_inference_memory_keeps_the_top_k_parents_by_rank():
    """The top-k without TOPK_V2, against numpy: with parent keys that are multiples of one vector,
    the parent logits of a position are known exactly, so the parents kept are known too; a tie at
    the k-th largest logit keeps both tied parents (documented in inference_memory)."""
    import tensorflow as tf

    from spartan_tf.export import inference_memory
    from spartan_tf.memory import SparseMemory

    layer = SparseMemory(4, 1, 2, temperature=1.0, balance_loss_weight=0.0, seed=3)
    layer.build(tf.TensorShape([None, None, 3]))
    direction = np.array([1.0, 0.0, 0.0], np.float32)
    parent_keys = np.stack([3.0 * direction, 1.0 * direction, 2.0 * direction, 2.0 * direction])  # logits 3h, h, 2h, 2h
    values = np.broadcast_to(np.arange(1, 5, dtype=np.float32)[:, None, None], (4, 1, 3))
    layer.set_weights([parent_keys, np.zeros((4, 1, 3), np.float32), values])  # parent e adds e + 1 to every unit
    hidden = np.array([[[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]]], np.float32)
    got = inference_memory(layer)(tf.constant(hidden)).numpy() - hidden

    def expected(logits, kept):
        weights = np.where(kept, np.exp(logits - logits.max()), 0.0)
        return float((weights / weights.sum()) @ np.arange(1, 5))

    logits = 0.5 * np.array([3.0, 1.0, 2.0, 2.0])  # kept: parent 0, and the tie of parents 2 and 3
    np.testing.assert_allclose(got[0, 0], expected(logits, [True, False, True, True]), rtol=1e-6)
    logits = -logits  # the order reverses: parent 1, then the tie of 2 and 3
    np.testing.assert_allclose(got[0, 1], expected(logits, [False, True, True, True]), rtol=1e-6)


def test_float_bundle_matches_keras_numbers(float_bundle, task_dirs, tiny_backbone):
    """float32 shared graph with the task's stored tensors, as on the device == the Keras model, at
    several lengths in one interpreter (its inputs re-allocated at each)."""
    from spartan_tf import artifacts

    model = artifacts.load_trained(task_dirs["qnli"], backbone=tiny_backbone)[0]
    shared = shared_bundle(float_bundle, "qnli")
    lengths = set()
    for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
        lengths.add(ids.shape[1])
        keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
        np.testing.assert_allclose(shared.logits(ids, mask, types), keras, atol=1e-4, rtol=1e-4)
    assert len(lengths) == 3


def test_mean_pooling_task_gets_a_graph_of_its_own(tmp_path, task_dirs, tiny_backbone):
    """A head that reads the mean over real tokens: its own shared graph (the last memory on every
    position), beside the CLS one, and the float32 numbers of Keras, padding included; the task also
    has the recipe's value scale and output gain, which travel inside its values."""
    from spartan_tf import artifacts

    mean_dir = save_tiny_task(tmp_path / "sst2-mean", tiny_backbone, "sst2", seed=15, method_name="spartan_recipe",
                              pooling="mean")
    out = tmp_path / "tflite"
    code, _, stderr = convert("--model-dir", task_dirs["qnli"], "--model-dir", mean_dir, "--output-dir", out,
                              "--float", "--check-samples", CHECK)
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["graphs"]) == ["spartan-4x2-cls", "spartan-4x2-mean"]
    assert manifest["tasks"]["sst2"]["graph"] == "spartan-4x2-mean"
    model = artifacts.load_trained(mean_dir, backbone=tiny_backbone)[0]
    shared = shared_bundle(out, "sst2")
    for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
        keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
        np.testing.assert_allclose(shared.logits(ids, mask, types), keras, atol=1e-4, rtol=1e-4)
        padded = [np.pad(array, ((0, 0), (0, 5))) for array in (ids, mask, types)]
        np.testing.assert_allclose(shared.logits(*padded), keras, atol=1e-4, rtol=1e-4)


def shared_and_whole(tmp_path: Path, task: str, *model_dirs):
    """Yields (form, bundle dir, runner of ``task``) for the tasks of ``model_dirs`` converted to float32
    twice: shared (the default) and ``--whole``."""
    from spartan_tf.parity import WholeBundle

    for flags, form in ((["--float"], "shared"), (["--float", "--whole"], "whole")):
        out = tmp_path / form
        sources = [argument for model_dir in model_dirs for argument in ("--model-dir", model_dir)]
        code, _, stderr = convert(*sources, "--output-dir", out, "--check-samples", CHECK, *flags)
        assert code == 0, stderr
        yield form, out, shared_bundle(out, task) if form == "shared" else WholeBundle(out / f"{task}.tflite")


def test_memory_on_the_feed_forward_output_deploys_shared_and_whole(tmp_path, tiny_backbone):
    """A task whose memories sit inside the encoder layers (``--memory-site feed-forward``): a shared graph
    of its own layout beside nothing else, and a fused one-graph file, both with Keras' float32 numbers."""
    from spartan_tf import artifacts

    task_dir = save_tiny_task(tmp_path / "qnli-ffn", tiny_backbone, "qnli", seed=21, method_name="spartan_ffn")
    model = artifacts.load_trained(task_dir, backbone=tiny_backbone)[0]
    assert model.method.site == "feed-forward"
    for form, out, graph in shared_and_whole(tmp_path, "qnli", task_dir):
        if form == "shared":
            assert sorted(json.loads((out / "manifest.json").read_text())["graphs"]) == ["spartan-4x2f-cls"]
        for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
            keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
            np.testing.assert_allclose(graph.logits(ids, mask, types), keras, atol=1e-4, rtol=1e-4)


def test_two_memories_a_layer_deploy_shared_and_whole(tmp_path, tiny_backbone):
    """``--memory-site attention+feed-forward`` (two memories in every encoder layer): a shared graph of its
    own layout whose task file holds both memories' tensors under the adapters' site names, and a fused
    one-graph file, both with Keras' float32 numbers."""
    from spartan_tf import artifacts

    task_dir = save_tiny_task(tmp_path / "qnli-two", tiny_backbone, "qnli", seed=22, method_name="spartan_sublayers")
    model = artifacts.load_trained(task_dir, backbone=tiny_backbone)[0]
    assert sorted(model.after_layers[0].memories) == ["attention", "output"]
    for form, out, graph in shared_and_whole(tmp_path, "qnli", task_dir):
        if form == "shared":
            manifest = json.loads((out / "manifest.json").read_text())
            assert sorted(manifest["graphs"]) == ["spartan-4x2af-cls"]
            with np.load(out / manifest["tasks"]["qnli"]["file"]) as stored:
                memory_tensors = sorted(name for name in stored.files if name.startswith("layer_01"))
                parent_keys = {site: stored[f"layer_00_{site}_keys"][:4] for site in ("attention", "output")}
            assert memory_tensors == [f"layer_01_{site}_{part}" for site in ("attention", "output")
                                      for part in ("keys", "top_k", "values")]
            for site, memory in model.after_layers[0].memories.items():  # rows 0-3: the 4 parents' keys
                np.testing.assert_array_equal(parent_keys[site], memory.parent_keys.numpy())
        for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
            keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
            np.testing.assert_allclose(graph.logits(ids, mask, types), keras, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method_name,graph_key", [("spartan_tuned_norms", "spartan-4x2afn-cls"),
                                                     ("spartan_tuned_norms_layer", "spartan-4x2n-cls"),
                                                     ("spartan_tuned_norms_ffn", "spartan-4x2fn-cls"),
                                                     ("adapters_tuned_norms", "adapters-n-cls")])
def test_tuned_layer_norms_deploy_shared_and_whole(method_name, graph_key, tmp_path, tiny_backbone):
    """``--tune-layer-norms``: the shared graph takes each layer's LayerNorm multipliers (1 + scale) and
    shifts as task tensors (1 and 0 on a SPARTAN layer without memories, here layer 0), and both forms
    give Keras' numbers."""
    from spartan_tf import artifacts

    task_dir = save_tiny_task(tmp_path / "qnli-norms", tiny_backbone, "qnli", seed=23, method_name=method_name)
    model = artifacts.load_trained(task_dir, backbone=tiny_backbone)[0]
    tuned = model.after_layers[-1].layer_norms
    assert np.abs(tuned.scales["output"].numpy()).max() > 0.1
    for form, out, graph in shared_and_whole(tmp_path, "qnli", task_dir):
        if form == "shared":
            manifest = json.loads((out / "manifest.json").read_text())
            assert sorted(manifest["graphs"]) == [graph_key]
            with np.load(out / manifest["tasks"]["qnli"]["file"]) as stored:
                norms = {name: stored[name] for name in stored.files if "_norm_" in name}
            assert sorted(norms) == sorted(f"layer_{index:02d}_{site}_norm_{part}" for index in (0, 1)
                                           for site in ("attention", "output") for part in ("multiplier", "shift"))
            if model.after_layers[0] is None:
                np.testing.assert_array_equal(norms["layer_00_output_norm_multiplier"], np.ones(tiny_backbone.hidden_size))
                np.testing.assert_array_equal(norms["layer_00_attention_norm_shift"], np.zeros(tiny_backbone.hidden_size))
            np.testing.assert_allclose(norms["layer_01_attention_norm_multiplier"],
                                       1 + tuned.scales["attention"].numpy(), rtol=1e-6)
            np.testing.assert_array_equal(norms["layer_01_output_norm_shift"], tuned.shifts["output"].numpy())
        for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
            keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
            np.testing.assert_allclose(graph.logits(ids, mask, types), keras, atol=1e-4, rtol=1e-4)


def test_memories_from_a_later_layer_deploy_on_the_same_shared_graph(tmp_path, task_dirs, tiny_backbone):
    """A task with no memory on layer 0 (``--first-memory-layer 1``) joins the graph of the tasks that have
    one on every layer: its layer-0 tensors are zeros (a memory that adds nothing), and the shared and the
    fused forms compute Keras' numbers."""
    from spartan_tf import artifacts

    task_dir = save_tiny_task(tmp_path / "sst2-top", tiny_backbone, "sst2", seed=23, method_name="spartan_top")
    model = artifacts.load_trained(task_dir, backbone=tiny_backbone)[0]
    assert model.after_layers[0] is None and model.method.first_layer == 1
    for form, out, graph in shared_and_whole(tmp_path, "sst2", task_dirs["qnli"], task_dir):
        if form == "shared":
            manifest = json.loads((out / "manifest.json").read_text())
            assert sorted(manifest["graphs"]) == [GRAPH]  # one graph for both tasks
            with np.load(out / manifest["tasks"]["sst2"]["file"]) as stored:
                assert not stored["layer_00_keys"].any() and not stored["layer_00_values"].any()
                assert stored["layer_01_values"].any()
        for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
            keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
            np.testing.assert_allclose(graph.logits(ids, mask, types), keras, atol=1e-4, rtol=1e-4)


def test_mean_pooling_task_deployed_whole_reads_every_real_token(tmp_path, tiny_backbone):
    """--whole (SPARTAN fused into one graph) with a mean-pooling head: the last memory runs on every
    position and the head skips padding, as in Keras."""
    from spartan_tf import artifacts
    from spartan_tf.parity import WholeBundle

    mean_dir = save_tiny_task(tmp_path / "sst2-mean", tiny_backbone, "sst2", seed=15, pooling="mean")
    out = tmp_path / "whole"
    code, _, stderr = convert("--model-dir", mean_dir, "--output-dir", out, "--float", "--whole",
                              "--check-samples", CHECK)
    assert code == 0, stderr
    model = artifacts.load_trained(mean_dir, backbone=tiny_backbone)[0]
    graph = WholeBundle(out / "sst2.tflite")
    for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
        keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
        np.testing.assert_allclose(graph.logits(ids, mask, types), keras, atol=1e-4, rtol=1e-4)
        padded = [np.pad(array, ((0, 0), (0, 5))) for array in (ids, mask, types)]
        np.testing.assert_allclose(graph.logits(*padded), keras, atol=1e-4, rtol=1e-4)


def test_int8_bundle_close_to_keras_and_padding_is_harmless(bundle_runs, task_dirs, tiny_backbone):
    from spartan_tf import artifacts

    out = bundle_runs[0]
    model = artifacts.load_trained(task_dirs["qnli"], backbone=tiny_backbone)[0]
    shared = shared_bundle(out, "qnli")
    for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
        keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
        logits = shared.logits(ids, mask, types)
        assert np.abs(logits - keras).max() < 0.1 * np.abs(keras).max()
        padded = [np.pad(array, ((0, 0), (0, 5))) for array in (ids, mask, types)]  # pad as a batch would
        np.testing.assert_allclose(shared.logits(*padded), logits, atol=1e-4)


def test_compat_writes_float16_weights_that_run(tmp_path, task_dirs, tiny_backbone):
    """--compat tflite-runtime-2.14: float16 weights (that runtime cannot read TF 2.21's int8 ops)."""
    from spartan_tf import artifacts
    from spartan_tf.export import operator_names

    out = tmp_path / "tflite"
    code, stdout, stderr = convert("--model-dir", task_dirs["qnli"], "--output-dir", out,
                                   "--compat", "tflite-runtime-2.14", "--check-samples", CHECK)
    assert code == 0, stderr
    assert "float16 shared graph + float16 tensors (written)" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backbone"]["weights"] == manifest["tasks"]["qnli"]["weights"] == "float16"
    assert "DEQUANTIZE" in operator_names((out / GRAPH_FILE).read_bytes())
    with np.load(out / "qnli.npz") as archive:
        assert archive["layer_00_keys"].dtype == np.float16
    model = artifacts.load_trained(task_dirs["qnli"], backbone=tiny_backbone)[0]
    shared = shared_bundle(out, "qnli")
    for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
        keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
        np.testing.assert_allclose(shared.logits(ids, mask, types), keras, atol=0.01 * np.abs(keras).max())


def test_regression_task(tmp_path, tiny_backbone):
    """STS-B: one score, no label names; parity compares scores instead of argmax."""
    task_dir = save_tiny_task(tmp_path / "stsb", tiny_backbone, "stsb", seed=14)
    out = tmp_path / "tflite"
    code, stdout, stderr = convert("--model-dir", task_dir, "--output-dir", out, "--check-samples", CHECK)
    assert code == 0, stderr
    assert "score agreement" in stdout and "pearson" in stdout
    entry = json.loads((out / "manifest.json").read_text())["tasks"]["stsb"]
    assert (entry["label_names"], entry["problem_type"]) == ([], "regression")
    ids = np.array([[101, 2000, 102]], np.int32)
    assert shared_bundle(out, "stsb").logits(ids, np.ones_like(ids), np.zeros_like(ids)).shape == (1, 1)


def test_parity_failure_exits_1_and_writes_nothing(tmp_path, monkeypatch, task_dirs):
    """A float32 bundle that disagrees with Keras (here: a head with negated logits) is a bug."""
    from spartan_tf import shared_graph

    original = shared_graph.task_tensors

    def broken_task_tensors(model):
        tensors = original(model)
        return {**tensors, "head_classifier_kernel": -tensors["head_classifier_kernel"],
                "head_classifier_bias": -tensors["head_classifier_bias"]}

    monkeypatch.setattr(shared_graph, "task_tensors", broken_task_tensors)
    out = tmp_path / "bundle"
    code, stdout, stderr = convert("--model-dir", task_dirs["qnli"], "--output-dir", out, "--check-samples", CHECK)
    assert code == 1
    assert "error: task 'qnli': the float32 bundle agrees with Keras on only" in stderr
    assert not out.exists()


# --------------------------------------------------------------------------- re-runs and shared backbone


def test_two_tasks_share_one_backbone_and_rerun_keeps_it(bundle_runs):
    out, runs, first_stat = bundle_runs
    assert first_stat is not None
    after = (out / GRAPH_FILE).stat()
    assert (after.st_mtime_ns, after.st_ino) == (first_stat.st_mtime_ns, first_stat.st_ino)
    assert f"{GRAPH_FILE}: unchanged" in runs["second"][1]
    assert sorted(path.name for path in out.iterdir()) == [
        GRAPH_FILE, "manifest.json", "qnli.npz", "sst2.npz", "tokenizer.json"]


def test_longer_max_length_rebuilds_the_graph_and_stale_files_go(tmp_path, task_dirs, tiny_backbone):
    import shutil

    out = tmp_path / "tflite"
    code, _, stderr = convert("--model-dir", task_dirs["sst2"], "--output-dir", out, "--check-samples", "0", "--whole")
    assert code == 0, stderr
    assert (out / "sst2.tflite").is_file() and not list(out.glob("backbone.*"))
    code, stdout, _ = convert("--model-dir", task_dirs["sst2"], "--output-dir", out, "--check-samples", "0")
    assert code == 0 and "removed sst2.tflite" in stdout
    assert not (out / "sst2.tflite").exists() and (out / "sst2.npz").is_file()
    longer = tmp_path / "qnli-long"
    shutil.copytree(task_dirs["qnli"], longer)
    config = json.loads((longer / "config.json").read_text())
    config["max_seq_length"] = 96
    (longer / "config.json").write_text(json.dumps(config))
    code, stdout, stderr = convert("--model-dir", longer, "--output-dir", out, "--check-samples", "0")
    assert code == 0, stderr
    assert f"converted {GRAPH_FILE}" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backbone"]["max_length"] == 96
    assert set(manifest["tasks"]) == {"qnli", "sst2"}


# --------------------------------------------------------------------------- bad input: one line, exit 2


def test_mismatched_backbones_name_the_odd_one(tmp_path, task_dirs):
    code, _, stderr = convert("--model-dir", task_dirs["qnli"], "--model-dir", task_dirs["sst2"],
                              "--model-dir", task_dirs["odd"], "--output-dir", tmp_path / "b")
    assert code == 2 and stderr.count("\n") == 1
    assert stderr.startswith(f"error: --model-dir {task_dirs['odd']}: task 'rte' was trained on backbone ")
    assert "not the one of the other task(s) qnli, sst2" in stderr
    code, _, stderr = convert("--model-dir", task_dirs["sst2"], "--model-dir", task_dirs["odd"],
                              "--output-dir", tmp_path / "b")
    assert code == 2 and stderr.count("\n") == 1
    assert f"--model-dir {task_dirs['odd']}: task 'rte' was trained on backbone" in stderr


def test_task_on_another_backbone_than_the_bundle_is_refused(bundle_runs, task_dirs):
    out = bundle_runs[0]
    code, _, stderr = convert("--model-dir", task_dirs["odd"], "--output-dir", out)
    assert code == 2
    assert f"--model-dir {task_dirs['odd']}" in stderr and f"the bundle in {out}" in stderr


def test_other_weights_mode_into_a_bundle_is_refused(bundle_runs, task_dirs):
    code, _, stderr = convert("--model-dir", task_dirs["qnli"], "--output-dir", bundle_runs[0], "--float")
    assert code == 2 and "holds a int8 bundle" in stderr


@pytest.mark.parametrize("make, expected", [
    (lambda d: (d / "notes.txt").write_text("mine"), "not empty and has no manifest.json, so it is not a bundle"),
    (lambda d: (d / "manifest.json").write_text("{not json"), "not a readable bundle manifest"),
    (lambda d: (d / "manifest.json").write_text(json.dumps({"format_version": 2, "backbone": {
        "fingerprint": "x", "weights": "int8"}, "tasks": {}})),
     "format version 2, this converter writes 3; convert every task into a new --output-dir"),
])
def test_output_dir_that_is_not_a_bundle_is_refused(tmp_path, task_dirs, make, expected):
    out = tmp_path / "occupied"
    out.mkdir()
    make(out)
    code, _, stderr = convert("--model-dir", task_dirs["qnli"], "--output-dir", out)
    assert code == 2 and expected in stderr
    assert len(list(out.iterdir())) == 1


def test_missing_and_non_model_dirs(tmp_path):
    code, _, stderr = convert("--model-dir", tmp_path / "nope", "--output-dir", tmp_path / "b")
    assert code == 2 and stderr == f"error: --model-dir {tmp_path / 'nope'}: no such directory\n"
    code, _, stderr = convert("--model-dir", tmp_path, "--output-dir", tmp_path / "b")
    assert code == 2 and "no config.json (not a trained spartan-tf model)" in stderr


def test_no_tasks_under_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = convert()
    assert code == 2 and "no trained task under models/" in stderr


def test_check_samples_must_be_a_count(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_cli().cli(["--check-samples", "-3"])
    assert exit_info.value.code == 2
    assert "expected a count >= 0 or 'all'" in capsys.readouterr().err


# --------------------------------------------------------------------------- whole tasks (adapters, LoRA, full)


@pytest.fixture(scope="module")
def method_dirs(tmp_path_factory, tiny_backbone):
    """Tiny tasks of the methods deployed whole: adapters (qnli), LoRA (sst2), full (rte), and a
    second adapters task for qnli that replaces the SPARTAN one in the mixed-bundle test."""
    root = tmp_path_factory.mktemp("methods")
    return {
        "adapters": save_tiny_task(root / "qnli-adapters", tiny_backbone, "qnli", seed=21, method_name="adapters"),
        "lora": save_tiny_task(root / "sst2-lora", tiny_backbone, "sst2", seed=22, method_name="lora"),
        "full": save_tiny_task(root / "rte-full", tiny_backbone, "rte", seed=23, method_name="full"),
    }


def operator_count(path) -> int:
    """Operators in the file's first subgraph (its one signature)."""
    from tensorflow.lite.python import schema_py_generated as tflite_schema

    model = tflite_schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    return model.Subgraphs(0).OperatorsLength()


def test_whole_tasks_compute_what_keras_computes(tmp_path, method_dirs, tiny_backbone):
    """--whole: adapters, LoRA (merged) and full tasks each in one classify graph, no shared graph, and
    each float32 graph's logits equal the trained Keras model's (unmerged for LoRA)."""
    from spartan_tf import artifacts
    from spartan_tf.parity import WholeBundle

    out = tmp_path / "whole"
    code, stdout, stderr = convert(*[arg for d in method_dirs.values() for arg in ("--model-dir", d)],
                                   "--output-dir", out, "--float", "--whole", "--check-samples", CHECK)
    assert code == 0, stderr
    assert stdout.count("float32 whole model (no quantization)") == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 3 and manifest["graphs"] == {}
    assert manifest["backbone"]["fingerprint"] == tiny_backbone.fingerprint()
    assert sorted(path.name for path in out.iterdir()) == [
        "manifest.json", "qnli.tflite", "rte.tflite", "sst2.tflite", "tokenizer.json"]
    for key, method in (("qnli", "adapters"), ("sst2", "lora"), ("rte", "full")):
        entry = manifest["tasks"][key]
        assert entry["deployment"] == "whole" and entry["method"]["name"] == method
        assert "graph" not in entry and "size_ratio_to_backbone" not in entry
        assert entry["sha256"] == hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest()
        assert ("lora_merged" in entry) == (method == "lora")
        _, signatures = signatures_of(out / entry["file"])
        assert signatures == {"classify": {"inputs": ["attention_mask", "input_ids", "token_type_ids"],
                                           "outputs": ["logits"]}}
        model = artifacts.load_trained(method_dirs[method], backbone=tiny_backbone)[0]
        graph = WholeBundle(out / entry["file"])
        for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
            keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
            np.testing.assert_allclose(graph.logits(ids, mask, types), keras, atol=1e-4, rtol=1e-4)
    assert manifest["tasks"]["sst2"]["lora_merged"] is True


def test_adapters_and_unmerged_lora_run_shared(tmp_path, method_dirs, tiny_backbone):
    """By default adapters are shared, and LoRA with --lora-unmerged: each method its own graph, the
    task file only its tensors, the float32 numbers those of Keras."""
    from spartan_tf import artifacts

    out = tmp_path / "shared"
    code, stdout, stderr = convert("--model-dir", method_dirs["adapters"], "--model-dir", method_dirs["lora"],
                                   "--output-dir", out, "--float", "--lora-unmerged", "--check-samples", CHECK)
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert {key: graph["method"] for key, graph in manifest["graphs"].items()} == {
        "adapters-cls": {"name": "adapters"}, "lora-cls": {"name": "lora"}}
    for key, method, graph in (("qnli", "adapters", "adapters-cls"), ("sst2", "lora", "lora-cls")):
        entry = manifest["tasks"][key]
        assert (entry["deployment"], entry["graph"], entry["file"]) == ("shared", graph, f"{key}.npz")
        model = artifacts.load_trained(method_dirs[method], backbone=tiny_backbone)[0]
        shared = shared_bundle(out, key)
        for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
            keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
            np.testing.assert_allclose(shared.logits(ids, mask, types), keras, atol=1e-4, rtol=1e-4)
    assert manifest["tasks"]["sst2"]["lora_merged"] is False


def test_lora_unmerged_keeps_the_low_rank_ops(tmp_path, method_dirs, tiny_backbone):
    """--whole --lora-unmerged: same logits as merged, with the two low-rank matmuls per target still in the graph."""
    from spartan_tf.parity import WholeBundle

    files = {}
    for name, flags in (("merged", []), ("unmerged", ["--lora-unmerged"])):
        code, _, stderr = convert("--model-dir", method_dirs["lora"], "--output-dir", tmp_path / name, "--float",
                                  "--whole", "--check-samples", CHECK, *flags)
        assert code == 0, stderr
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["tasks"]["sst2"]["lora_merged"] is (name == "merged")
        files[name] = tmp_path / name / "sst2.tflite"
    # 2 layers x 2 targets (query, value) x 2 matmuls (A, then B), plus the adds joining them
    assert operator_count(files["unmerged"]) >= operator_count(files["merged"]) + 2 * 2 * 2
    merged, unmerged = WholeBundle(files["merged"]), WholeBundle(files["unmerged"])
    for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
        np.testing.assert_allclose(unmerged.logits(ids, mask, types), merged.logits(ids, mask, types), atol=1e-4)


def test_mixed_bundle_and_a_task_that_changes_deployment(tmp_path, task_dirs, method_dirs):
    """SPARTAN qnli (shared) beside LoRA sst2 (whole, merged) share one bundle and tokenizer; when qnli
    is re-converted as an adapters task, it moves to the adapters graph and the SPARTAN graph goes."""
    out = tmp_path / "mixed"
    code, _, stderr = convert("--model-dir", task_dirs["qnli"], "--model-dir", method_dirs["lora"],
                              "--output-dir", out, "--check-samples", CHECK)
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    qnli, sst2 = manifest["tasks"]["qnli"], manifest["tasks"]["sst2"]
    assert (qnli["deployment"], qnli["graph"]) == ("shared", GRAPH)
    assert sst2["deployment"] == "whole" and "graph" not in sst2
    assert 0 < qnli["size_ratio_to_backbone"] < 1 and (out / GRAPH_FILE).is_file()

    code, stdout, stderr = convert("--model-dir", method_dirs["adapters"], "--output-dir", out,
                                   "--check-samples", CHECK)
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["tasks"]["qnli"]["deployment"], manifest["tasks"]["qnli"]["graph"]) == ("shared", "adapters-cls")
    assert manifest["tasks"]["qnli"]["method"]["name"] == "adapters"
    assert manifest["tasks"]["sst2"] == sst2  # kept as it was
    assert f"removed {GRAPH_FILE}" in stdout
    assert list(manifest["graphs"]) == ["adapters-cls"]
    assert sorted(path.name for path in out.iterdir()) == ["backbone.adapters-cls.tflite", "manifest.json",
                                                            "qnli.npz", "sst2.tflite", "tokenizer.json"]


def test_fixed_length_shared_graph_matches_keras_when_padded(tmp_path, task_dirs, tiny_backbone):
    """shared_signatures(length=L) (the fixed-length buckets of benchmarks/bench_graph_variants.py):
    token inputs [1, L], no shape arithmetic left, and Keras' numbers for texts padded to L."""
    from spartan_tf import artifacts, export, shared_graph
    from spartan_tf.parity import SharedBundle

    model, config = artifacts.load_trained(task_dirs["qnli"], backbone=tiny_backbone)[:2]
    graph_layout = shared_graph.layout(config)
    length = 40
    fixed = export.to_tflite(shared_graph.shared_signatures(tiny_backbone, graph_layout, MAX_LENGTH, length), "float32")
    dynamic = export.to_tflite(shared_graph.shared_signatures(tiny_backbone, graph_layout, MAX_LENGTH), "float32")
    assert "SHAPE" in export.operator_names(dynamic) and "SHAPE" not in export.operator_names(fixed)
    (tmp_path / "fixed.tflite").write_bytes(fixed)
    shared = SharedBundle(tmp_path / "fixed.tflite", shared_graph.task_tensors(model))
    runner_inputs = shared.classify.get_input_details()
    assert list(runner_inputs["input_ids"]["shape_signature"]) == [1, length]
    for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
        assert ids.shape[1] <= length
        keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
        padded = [np.pad(array, ((0, 0), (0, length - array.shape[1]))) for array in (ids, mask, types)]
        np.testing.assert_allclose(shared.logits(*padded), keras, atol=1e-4, rtol=1e-4)


def test_shared_graph_with_task_tensors_as_constants_matches_keras(tmp_path, task_dirs, tiny_backbone):
    """shared_signatures(constants=...) (benchmarks/bench_graph_variants.py --graphs constant-*): the named
    task tensors leave the graph's inputs and are built in; the numbers stay Keras'. A name the graph
    does not take is refused by name."""
    from spartan_tf import artifacts, export, shared_graph
    from spartan_tf.parity import SharedBundle

    model, config = artifacts.load_trained(task_dirs["qnli"], backbone=tiny_backbone)[:2]
    graph_layout = shared_graph.layout(config)
    tensors = shared_graph.task_tensors(model)
    built_in = {name: value for name, value in tensors.items() if name.endswith("_keys") or name.startswith("head_")}
    assert built_in and len(built_in) < len(tensors)
    flatbuffer = export.to_tflite(shared_graph.shared_signatures(tiny_backbone, graph_layout, MAX_LENGTH,
                                                                 constants=built_in), "float32")
    (tmp_path / "partly.tflite").write_bytes(flatbuffer)
    shared = SharedBundle(tmp_path / "partly.tflite", {k: v for k, v in tensors.items() if k not in built_in})
    assert set(shared.classify.get_input_details()) == {"input_ids", "attention_mask", "token_type_ids",
                                                         *(set(tensors) - set(built_in))}
    for ids, mask, types in example_inputs(tiny_backbone, TEXTS):
        keras = model({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).numpy()
        np.testing.assert_allclose(shared.logits(ids, mask, types), keras, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"constants: \['layer_00_adapter'\] are not task tensors of this graph"):
        shared_graph.shared_signatures(tiny_backbone, graph_layout, MAX_LENGTH, constants={"layer_00_adapter": 0})
