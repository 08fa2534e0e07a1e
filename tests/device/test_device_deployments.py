"""Bundle format 3 (docs/bundle-format.md): shared tasks (task tensors on a shared graph) next to whole
ones, task switching on one shared graph, adapters and unmerged LoRA shared too, and older formats
refused with the fix named.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from client_support import ITEMS, REPO, _convert, json_lines, keras_logits, mixed_input, rewrite_manifest, run_client

sys.path.insert(0, str(REPO / "device"))

from spartan_device.bundle import read_bundle  # noqa: E402
from spartan_device.engine import Engine, pad  # noqa: E402
from spartan_device.runtime import choose_runtime  # noqa: E402

PAIR = ITEMS["qnli"][0]
GRAPH = "spartan-16x3-mean"  # the tiny tasks' SPARTAN layout: 16 parents x 3 children, mean pooling (the default)
GRAPH_FILE = f"backbone.{GRAPH}.tflite"


def copy(bundle: Path, tmp_path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def loads(stderr: str) -> list[str]:
    """The files a --verbose run loaded, in order: "shared graph <key> <file>", "task qnli qnli.npz"..."""
    return [line[len("loaded "):].split(" (")[0] for line in stderr.splitlines() if line.startswith("loaded ")]


def check_matches_keras(stdout: str, order, reference, atol=1e-4):
    rows = json_lines(stdout)
    assert [row["id"] for row in rows] == [f"i{i}" for i in range(len(order))]
    for row, (task, index) in zip(rows, order):
        assert row["task"] == task
        np.testing.assert_allclose(row["logits"], reference[task][index], atol=atol, err_msg=f"{task} #{index}")


def pair_args(bundle):
    return ("--bundle", bundle, "--task", "qnli", "--text", PAIR[0], "--text-pair", PAIR[1])


# --------------------------------------------------------------------------- shared and whole


def test_shared_and_whole_tasks_in_one_input_match_keras(mixed_bundle, reference, tmp_path):
    """qnli shared (its tensors on the SPARTAN graph), sst2 whole (fused into its own graph)."""
    order = mixed_input(tmp_path / "mixed.jsonl")
    done = run_client("--bundle", mixed_bundle, "--input", tmp_path / "mixed.jsonl", "--batch-size", 3, "--verbose",
                      check_rc=0)
    check_matches_keras(done.stdout, order, reference)
    assert loads(done.stderr) == [f"shared graph {GRAPH} {GRAPH_FILE}", "task qnli qnli.npz", "task sst2 sst2.tflite"]
    # the whole task alone never loads the shared graph
    done = run_client("--bundle", mixed_bundle, "--task", "sst2", "--text", ITEMS["sst2"][0][0], "--json",
                      "--verbose", check_rc=0)
    assert loads(done.stderr) == ["task sst2 sst2.tflite"]
    np.testing.assert_allclose(json.loads(done.stdout)["logits"], reference["sst2"][0], atol=1e-4)


def test_whole_bundle_has_no_shared_graph(whole_bundle, reference, tmp_path):
    assert sorted(p.name for p in whole_bundle.glob("*.tflite")) == ["qnli.tflite", "sst2.tflite"]
    order = mixed_input(tmp_path / "mixed.jsonl")
    done = run_client("--bundle", whole_bundle, "--input", tmp_path / "mixed.jsonl", "--verbose", check_rc=0)
    check_matches_keras(done.stdout, order, reference)
    assert loads(done.stderr) == ["task qnli qnli.tflite", "task sst2 sst2.tflite"]
    data = json.loads(run_client("--bundle", whole_bundle, "--list", "--json", check_rc=0).stdout)
    assert data["format_version"] == 3 and data["graphs"] == []
    figures = json.loads(run_client("--bundle", whole_bundle, "--task", "qnli", "--benchmark", "--num-texts", 6,
                                    "--json", check_rc=0).stdout)
    assert (figures["deployment"], figures["method"]) == ("whole", "spartan")


def test_switching_tasks_sets_their_tensors_and_never_reloads_the_graph(float_bundle, reference):
    """In process: texts of two tasks on one shared graph, in an order that catches stale tensors
    (a task switch at an unchanged length, a length change within one task): every logit is its own
    task's, and the only files loaded are the graph once and each task file once."""
    engine = Engine(read_bundle(float_bundle), choose_runtime(), threads=1)
    qnli, sst2 = engine.task("qnli"), engine.task("sst2")
    graph = qnli.graph
    assert sst2.graph is graph
    single = {task: engine.encode(engine.task(task).info, ITEMS[task]) for task in ITEMS}
    steps = [("qnli", 0), ("sst2", 0), ("qnli", 0), ("qnli", 1), ("sst2", 2), ("sst2", 1), ("qnli", 5), ("sst2", 3),
             ("qnli", 2), ("qnli", 0)]
    for task, index in steps:
        logits = engine.logits(engine.task(task), pad([single[task][index]]))[0]
        np.testing.assert_allclose(logits, reference[task][index], atol=1e-4, err_msg=f"{task} #{index}")
    # both tasks padded to one width: a task switch with no re-allocation must still switch the tensors
    width = max(len(single["qnli"][0].ids), len(single["sst2"][0].ids)) + 3
    qnli_wide, sst2_wide = pad([single["qnli"][0]], width=width), pad([single["sst2"][0]], width=width)
    for task, batch in ((qnli, qnli_wide), (sst2, sst2_wide), (qnli, qnli_wide)):
        np.testing.assert_allclose(engine.logits(task, batch)[0], reference[task.info.name][0], atol=1e-4)
    assert engine.loads == [GRAPH_FILE, "qnli.npz", "sst2.npz"]


def test_graph_pages_are_released_after_loading_and_fault_back_correctly(float_bundle, reference, monkeypatch):
    """Once a task is loaded and warmed up, its graph file's mapped pages are released (they no longer
    count as the process's memory); the texts run after that still give Keras' logits."""
    if not sys.platform.startswith("linux"):
        pytest.skip("madvise and /proc/self/smaps: Linux only")
    import spartan_device.engine as engine_module
    from test_device_units import mapped_rss_kb

    released = []

    def recording(path):
        released.append((Path(path).name, engine_module_release(path)))
        return released[-1][1]

    engine_module_release = engine_module.release_file_pages
    monkeypatch.setattr(engine_module, "release_file_pages", recording)
    engine = Engine(read_bundle(float_bundle), choose_runtime(), threads=1)
    task = engine.task("qnli")
    graph_bytes = task.graph.path.stat().st_size
    assert released and released[0][0] == task.graph.path.name and released[0][1] >= graph_bytes  # it was mapped
    assert mapped_rss_kb(task.graph.path) < 64
    for index, encoding in enumerate(engine.encode(task.info, ITEMS["qnli"])):
        np.testing.assert_allclose(engine.logits(task, pad([encoding]))[0], reference["qnli"][index], atol=1e-4)


def test_task_tensors_must_fit_their_graph(bundle_copy):
    """A task file whose tensors are not the graph's inputs (a missing one, a wrong shape) is refused by name."""
    path = bundle_copy / "qnli.npz"
    with np.load(path) as archive:
        tensors = {name: archive[name] for name in archive.files}

    def rewrite(arrays):
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        import hashlib
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        rewrite_manifest(bundle_copy, lambda m: m["tasks"]["qnli"].update(sha256=digest))

    rewrite({name: value for name, value in tensors.items() if name != "layer_01_values"})
    done = run_client(*pair_args(bundle_copy), check_rc=2)
    assert done.stderr.startswith(f"error: task qnli {path}: its tensors do not fit graph {GRAPH_FILE} (missing "
                                  "['layer_01_values'], unexpected none)")
    rewrite({**tensors, "layer_01_keys": tensors["layer_01_keys"][:, :-1]})
    done = run_client(*pair_args(bundle_copy), check_rc=2)
    assert f"error: task qnli {path}: tensor layer_01_keys has shape [64, 31], graph {GRAPH_FILE} takes [64, 32]" \
        in done.stderr
    path.write_bytes(b"not a zip file")
    rewrite_manifest(bundle_copy, lambda m: m["tasks"]["qnli"].update(
        sha256=__import__("hashlib").sha256(b"not a zip file").hexdigest()))
    done = run_client(*pair_args(bundle_copy), check_rc=2)
    assert done.stderr.startswith(f"error: task qnli {path}: not a task tensor file (")
    run_client("--bundle", bundle_copy, "--task", "sst2", "--text", "fine", check_rc=0)  # the other task still runs


def test_broken_graph_stops_its_tasks_only(mixed_bundle, tmp_path):
    bundle = copy(mixed_bundle, tmp_path)
    graph = bundle / GRAPH_FILE
    graph.write_bytes(graph.read_bytes()[:1000])
    run_client("--bundle", bundle, "--task", "sst2", "--text", "fine", check_rc=0)
    done = run_client(*pair_args(bundle), check_rc=2)
    assert done.stderr.startswith(f"error: shared graph {GRAPH} {graph}: sha256 mismatch")
    mixed_input(tmp_path / "mixed.jsonl")
    done = run_client("--bundle", bundle, "--input", tmp_path / "mixed.jsonl", check_rc=1)
    assert {row["task"] for row in json_lines(done.stdout)} == {"sst2"}
    assert done.stderr.count(f": shared graph {GRAPH} {graph}: sha256 mismatch") == len(ITEMS["qnli"])


def test_fingerprint_is_checked_for_shared_tasks_only(mixed_bundle, tmp_path):
    """A whole task carries its own weights: its backbone_fingerprint only records where it came from."""
    bundle = copy(mixed_bundle, tmp_path)
    rewrite_manifest(bundle, lambda m: [m["tasks"][t].update(backbone_fingerprint="sha256:" + "0" * 64)
                                        for t in ("qnli", "sst2")])
    run_client("--bundle", bundle, "--task", "sst2", "--text", "fine", check_rc=0)
    done = run_client(*pair_args(bundle), check_rc=2)
    assert "error: task qnli: built for another backbone (fingerprint sha256:0000000000" in done.stderr
    rows = {row["task"]: row for row in json.loads(run_client("--bundle", bundle, "--list", "--json",
                                                              check_rc=1).stdout)["tasks"]}
    assert (rows["qnli"]["status"], rows["sst2"]["status"]) == ("built for another backbone", "ok")


# --------------------------------------------------------------------------- the manifest


@pytest.mark.parametrize("version,made,fix", [
    (2, "an older", "re-convert the tasks with convert/to_tflite.py from this release"),
    (1, "an older", "re-convert the tasks with convert/to_tflite.py from this release"),
    (4, "a newer", "update device/ from the spartan-tf release that wrote the bundle"),
])
def test_other_format_versions_get_one_line_naming_the_fix(bundle_copy, version, made, fix):
    rewrite_manifest(bundle_copy, lambda m: m.update(format_version=version))
    for args in (pair_args(bundle_copy), ("--bundle", bundle_copy, "--list")):
        done = run_client(*args, check_rc=2)
        assert done.stdout == ""
        assert done.stderr == (f"error: {bundle_copy / 'manifest.json'}: bundle format version {version} was written "
                               f"by {made} converter; this client reads version 3 only: {fix}\n")


@pytest.mark.parametrize("change,fragment", [
    (lambda e: e.pop("deployment"), "tasks.qnli: missing field 'deployment'"),
    (lambda e: e.update(deployment="split"), "tasks.qnli: unknown deployment 'split' (expected shared or whole)"),
    (lambda e: e.pop("graph"), "tasks.qnli: missing field 'graph'"),
    (lambda e: e.update(graph="adapters-mean"),
     f"tasks.qnli: graph 'adapters-mean' is not one of the bundle's graphs ({GRAPH})"),
])
def test_bad_deployment_fields_fail_that_task(mixed_bundle, tmp_path, change, fragment):
    bundle = copy(mixed_bundle, tmp_path)
    rewrite_manifest(bundle, lambda m: change(m["tasks"]["qnli"]))
    done = run_client(*pair_args(bundle), check_rc=2)
    assert done.stderr == f"error: {bundle / 'manifest.json'}: {fragment}\n"
    mixed_input(tmp_path / "mixed.jsonl")
    done = run_client("--bundle", bundle, "--input", tmp_path / "mixed.jsonl", check_rc=1)
    assert {row["task"] for row in json_lines(done.stdout)} == {"sst2"}
    assert done.stderr.count(fragment) == len(ITEMS["qnli"])
    listing = run_client("--bundle", bundle, "--list", check_rc=1).stdout
    assert f"task qnli: invalid manifest entry: {bundle / 'manifest.json'}: {fragment}" in listing


def test_list_and_benchmark_name_deployment_and_method(mixed_bundle):
    listing = run_client("--bundle", mixed_bundle, "--list", check_rc=0).stdout.splitlines()
    assert f"graph {GRAPH}  {GRAPH_FILE}  " in "\n".join(listing)
    assert next(x for x in listing if x.startswith("task qnli")).startswith(
        f"task qnli     shared on {GRAPH} spartan  qnli.npz")
    assert next(x for x in listing if x.startswith("task sst2")).startswith("task sst2     whole spartan  sst2.tflite")
    data = json.loads(run_client("--bundle", mixed_bundle, "--list", "--json", check_rc=0).stdout)
    rows = {row["task"]: row for row in data["tasks"]}
    assert {k: rows["qnli"][k] for k in ("deployment", "graph", "method")} == {
        "deployment": "shared", "graph": GRAPH, "method": "spartan"}
    assert (rows["sst2"]["deployment"], rows["sst2"]["graph"], rows["sst2"]["ratio_to_backbone"]) == ("whole", None, None)
    assert 0 < rows["qnli"]["ratio_to_backbone"] < 1
    for task, expected in (("qnli", ("shared", "spartan")), ("sst2", ("whole", "spartan"))):
        figures = json.loads(run_client("--bundle", mixed_bundle, "--task", task, "--benchmark", "--num-texts", 4,
                                        "--json", check_rc=0).stdout)
        assert (figures["deployment"], figures["method"]) == expected


# --------------------------------------------------------------------------- adapters and LoRA


def test_adapters_and_lora_run_shared_or_whole(tiny_task_dirs, adapter_task_dir, lora_task_dir, reference, tmp_path):
    """What convert/to_tflite.py writes: adapters shared (a graph of their own beside SPARTAN's), LoRA
    shared with --lora-unmerged and whole (merged) by default; the client matches the Keras models."""
    sst2_items = [("sst2", i) for i in range(len(ITEMS["sst2"]))]
    (tmp_path / "sst2.jsonl").write_text("".join(json.dumps({"id": f"i{i}", "text": text}) + "\n"
                                                 for i, (text, _) in enumerate(ITEMS["sst2"])))
    order = mixed_input(tmp_path / "mixed.jsonl")
    expected = {"qnli": reference["qnli"], "sst2": keras_logits(adapter_task_dir, ITEMS["sst2"])}
    mixed = _convert({"qnli": tiny_task_dirs["qnli"], "sst2": adapter_task_dir}, tmp_path / "adapters", "--float")
    done = run_client("--bundle", mixed, "--input", tmp_path / "mixed.jsonl", "--verbose", check_rc=0)
    check_matches_keras(done.stdout, order, expected)
    assert loads(done.stderr) == [f"shared graph {GRAPH} {GRAPH_FILE}", "task qnli qnli.npz",
                                  "shared graph adapters-mean backbone.adapters-mean.tflite", "task sst2 sst2.npz"]

    lora = {"sst2": keras_logits(lora_task_dir, ITEMS["sst2"])}
    for flags, deployment, file in ((["--lora-unmerged"], "shared", "sst2.npz"), ([], "whole", "sst2.tflite")):
        bundle = _convert({"sst2": lora_task_dir}, tmp_path / f"lora-{deployment}", "--float", *flags)
        done = run_client("--bundle", bundle, "--input", tmp_path / "sst2.jsonl", "--verbose", check_rc=0)
        check_matches_keras(done.stdout, sst2_items, lora)
        assert loads(done.stderr)[-1] == f"task sst2 {file}"
        row = json.loads(run_client("--bundle", bundle, "--list", "--json", check_rc=0).stdout)["tasks"][0]
        assert (row["deployment"], row["method"], row["lora_merged"]) == (deployment, "lora", deployment == "whole")


def test_task_tensor_inputs_are_resized_only_when_their_shapes_change(float_bundle, reference, tmp_path):
    """A new text length resizes the three token inputs only; a task whose tensors have other shapes
    (here three outputs instead of two) resizes its tensors' inputs, and the next task gets its own
    shapes back: every logit stays its task's."""
    from spartan_device.shared import TaskTensors

    engine = Engine(read_bundle(float_bundle), choose_runtime(), threads=1)
    qnli = engine.task("qnli")
    graph = qnli.graph
    resized, real = [], graph.interpreter

    class Spy:  # the interpreter, with its resize calls recorded
        def __getattr__(self, name):
            return getattr(real, name)

        def resize_tensor_input(self, index, shape, *args, **kwargs):
            resized.append(index)
            return real.resize_tensor_input(index, shape, *args, **kwargs)

    graph.interpreter = Spy()
    encodings = engine.encode(qnli.info, ITEMS["qnli"])
    assert len({len(e.ids) for e in encodings}) >= 3
    for index, encoding in enumerate(encodings):
        np.testing.assert_allclose(engine.logits(qnli, pad([encoding]))[0], reference["qnli"][index], atol=1e-4)
    token_inputs = {graph.inputs[name] for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert set(resized) <= token_inputs and len(resized) >= 3 * 3

    stored = dict(np.load(float_bundle / "qnli.npz"))
    stored["head_classifier_kernel"] = np.concatenate([stored["head_classifier_kernel"]] * 2)[:3]
    stored["head_classifier_bias"] = np.array([0.5, -0.5, 2.0], dtype=np.float32)
    np.savez(tmp_path / "three.npz", **stored)
    three = TaskTensors(tmp_path / "three.npz", "task three")
    batch = pad([encodings[0]])
    resized.clear()
    out = graph.run(batch.input_ids, batch.attention_mask, batch.token_type_ids, "three", three)
    assert out.shape == (1, 3)
    assert out[0, 2] - out[0, 0] == pytest.approx(1.5, abs=1e-4)  # the same kernel row, biases 2.0 and 0.5
    assert {graph.inputs["head_classifier_kernel"], graph.inputs["head_classifier_bias"]} <= set(resized)
    assert not set(resized) - token_inputs - {graph.inputs["head_classifier_kernel"], graph.inputs["head_classifier_bias"]}
    np.testing.assert_allclose(engine.logits(qnli, batch)[0], reference["qnli"][0], atol=1e-4)
