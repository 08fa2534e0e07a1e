"""Bundle format 2 (docs/bundle-format.md): whole tasks next to split ones, the --graph choices
(auto, split, fused, backbone), a bundle without a backbone file, and format 1 still read.

Most whole tasks here are the converter's fused files declared whole (conftest.py: mixed_bundle,
whole_bundle): one graph, signature classify, exactly what a whole task's file is. The last test runs
what convert/to_tflite.py itself writes for a LoRA task.
"""

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from client_support import ITEMS, REPO, _convert, json_lines, keras_logits, mixed_input, rewrite_manifest, run_client

sys.path.insert(0, str(REPO / "device"))

from spartan_device.bundle import read_bundle  # noqa: E402
from spartan_device.errors import DeviceError  # noqa: E402
from spartan_device.graphs import CHAINED, CLASSIFY, backbone_user, task_graph  # noqa: E402

PAIR = ITEMS["qnli"][0]
NO_SPLIT_FORM = "task sst2 is deployed whole (method lora): it has no split form; use --graph auto or fused"
NO_BACKBONE = "the bundle has no backbone file, which split task qnli needs; re-run convert/to_tflite.py"


def copy(bundle: Path, tmp_path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def drop_backbone_file(bundle: Path):
    """Remove backbone.tflite and the manifest's backbone file, sha256 and bytes (format 2 allows it)."""
    def change(manifest):
        (bundle / manifest["backbone"].pop("file")).unlink()
        del manifest["backbone"]["sha256"], manifest["backbone"]["bytes"]

    rewrite_manifest(bundle, change)


def loads(stderr: str) -> list[str]:
    """The files a --verbose run loaded, in order: "backbone backbone.tflite", "task qnli qnli.tflite"..."""
    return [line[len("loaded "):].split(" (")[0] for line in stderr.splitlines() if line.startswith("loaded ")]


def check_matches_keras(stdout: str, order, reference):
    rows = json_lines(stdout)
    assert [row["id"] for row in rows] == [f"i{i}" for i in range(len(order))]
    for row, (task, index) in zip(rows, order):
        assert row["task"] == task
        np.testing.assert_allclose(row["logits"], reference[task][index], atol=1e-4, err_msg=f"{task} #{index}")


def pair_args(bundle):
    return ("--bundle", bundle, "--task", "qnli", "--text", PAIR[0], "--text-pair", PAIR[1])


# --------------------------------------------------------------------------- whole tasks run


def test_split_and_whole_tasks_in_one_input_match_keras(mixed_bundle, reference, tmp_path):
    """--graph auto (the default): qnli chained over backbone.tflite, sst2 as its one file; each loaded once."""
    order = mixed_input(tmp_path / "mixed.jsonl")
    done = run_client("--bundle", mixed_bundle, "--input", tmp_path / "mixed.jsonl", "--batch-size", 3, "--verbose",
                      check_rc=0)
    check_matches_keras(done.stdout, order, reference)
    assert "graph auto" in done.stderr
    assert loads(done.stderr) == ["backbone backbone.tflite", "task qnli qnli.tflite", "task sst2 sst2.tflite"]
    # the whole task alone never loads the backbone
    done = run_client("--bundle", mixed_bundle, "--task", "sst2", "--text", ITEMS["sst2"][0][0], "--json",
                      "--verbose", check_rc=0)
    assert loads(done.stderr) == ["task sst2 sst2.tflite"]
    np.testing.assert_allclose(json.loads(done.stdout)["logits"], reference["sst2"][0], atol=1e-4)


def test_whole_only_bundle_has_no_backbone_file(whole_bundle, reference, tmp_path):
    assert not (whole_bundle / "backbone.tflite").exists()
    order = mixed_input(tmp_path / "mixed.jsonl")
    for graph in ("auto", "fused"):  # a whole task's file is a fused graph: both mean the same
        done = run_client("--bundle", whole_bundle, "--input", tmp_path / "mixed.jsonl", "--graph", graph, "--verbose",
                          check_rc=0)
        check_matches_keras(done.stdout, order, reference)
        assert loads(done.stderr) == ["task qnli qnli.tflite", "task sst2 sst2.tflite"]
    listing = run_client("--bundle", whole_bundle, "--list", check_rc=0).stdout
    assert "backbone  (no file: every task is deployed whole)" in listing
    data = json.loads(run_client("--bundle", whole_bundle, "--list", "--json", check_rc=0).stdout)
    assert data["format_version"] == 2
    assert {k: data["backbone"][k] for k in ("file", "bytes", "status")} == {"file": None, "bytes": None,
                                                                             "status": "none"}
    figures = json.loads(run_client("--bundle", whole_bundle, "--task", "qnli", "--benchmark", "--num-texts", 6,
                                    "--json", check_rc=0).stdout)
    assert (figures["graph"], figures["deployment"], figures["method"]) == ("auto", "whole", "adapters")
    done = run_client("--bundle", whole_bundle, "--task", "qnli", "--benchmark", "--graph", "backbone", check_rc=2)
    assert done.stderr == ("error: the bundle has no backbone file, which --graph backbone needs; "
                           "re-run convert/to_tflite.py\n")


def test_whole_task_warm_up_and_shape_check(mixed_bundle, tmp_path):
    """As for a fused file: a split task file declared whole has no classify signature, and a label count
    that the logits contradict is refused by name."""
    bundle = copy(mixed_bundle, tmp_path)
    rewrite_manifest(bundle, lambda m: m["tasks"]["qnli"].update(deployment="whole"))
    done = run_client(*pair_args(bundle), check_rc=2)
    assert done.stderr.startswith(f"error: task qnli {bundle / 'qnli.tflite'}: has no signature 'classify' (has: ")
    rewrite_manifest(bundle, lambda m: m["tasks"]["sst2"].update(label_names=["a", "b", "c"]))
    done = run_client("--bundle", bundle, "--task", "sst2", "--text", "fine", check_rc=2)
    assert "error: task sst2: the model returned shape [1, 2], expected [1, 3]" in done.stderr


# --------------------------------------------------------------------------- --graph


def test_graph_split_refuses_a_whole_task(mixed_bundle, tmp_path):
    done = run_client("--bundle", mixed_bundle, "--task", "sst2", "--text", "fine", "--graph", "split", check_rc=2)
    assert done.stderr == f"error: {NO_SPLIT_FORM}\n"
    mixed_input(tmp_path / "mixed.jsonl")  # lines of qnli (split: answered) and sst2 (whole: refused by line)
    done = run_client("--bundle", mixed_bundle, "--input", tmp_path / "mixed.jsonl", "--graph", "split", check_rc=1)
    assert {row["task"] for row in json_lines(done.stdout)} == {"qnli"}
    failed = [line for line in done.stderr.splitlines() if ", line " in line]
    assert len(failed) == len(ITEMS["sst2"]) and all(line.endswith(f": {NO_SPLIT_FORM}") for line in failed)


def test_graph_fused_runs_each_task_in_one_graph(mixed_bundle, reference, tmp_path):
    """fused: qnli's fused file (no backbone loaded), sst2's own file."""
    order = mixed_input(tmp_path / "mixed.jsonl")
    done = run_client("--bundle", mixed_bundle, "--input", tmp_path / "mixed.jsonl", "--graph", "fused", "--verbose",
                      check_rc=0)
    check_matches_keras(done.stdout, order, reference)
    assert loads(done.stderr) == ["task qnli fused model qnli.fused.tflite", "task sst2 sst2.tflite"]


def test_graph_table_in_process(mixed_bundle):
    """graphs.py's table for both deployments, and who needs the backbone up front."""
    bundle = read_bundle(mixed_bundle)
    qnli, sst2 = bundle.task("qnli"), bundle.task("sst2")
    assert (qnli.deployment, qnli.method_name, qnli.lora_merged) == ("split", "spartan", None)
    assert (sst2.deployment, sst2.method_name, sst2.lora_merged, sst2.fused) == ("whole", "lora", True, None)
    runs = [(qnli, "auto"), (qnli, "split"), (qnli, "fused"), (sst2, "auto"), (sst2, "fused")]
    table = {(info.name, graph): (g.kind, g.entry.file, g.what) for info, graph in runs
             for g in [task_graph(info, graph)]}
    assert table == {
        ("qnli", "auto"): (CHAINED, "qnli.tflite", "task qnli"),
        ("qnli", "split"): (CHAINED, "qnli.tflite", "task qnli"),
        ("qnli", "fused"): (CLASSIFY, "qnli.fused.tflite", "task qnli fused model"),
        ("sst2", "auto"): (CLASSIFY, "sst2.tflite", "task sst2"),
        ("sst2", "fused"): (CLASSIFY, "sst2.tflite", "task sst2"),
    }
    with pytest.raises(DeviceError, match=f"^{re.escape(NO_SPLIT_FORM)}$"):
        task_graph(sst2, "split")
    assert backbone_user(bundle, "auto", "qnli") == "split task qnli"
    assert backbone_user(bundle, "auto", "sst2") is None
    assert backbone_user(bundle, "auto", None) is None  # an input's lines may all be sst2
    assert backbone_user(bundle, "split", None) == "split task qnli"  # sst2 cannot run: every line that runs needs it
    assert backbone_user(bundle, "fused", "qnli") is None
    assert backbone_user(bundle, "backbone", "sst2") == "--graph backbone"


# --------------------------------------------------------------------------- the backbone: lazy, optional


def test_split_task_without_backbone_file_is_refused(mixed_bundle, tmp_path):
    bundle = copy(mixed_bundle, tmp_path)
    drop_backbone_file(bundle)
    done = run_client(*pair_args(bundle), check_rc=2)
    assert done.stderr == f"error: {NO_BACKBONE}\n"
    run_client(*pair_args(bundle), "--graph", "fused", check_rc=0)  # its fused file needs no backbone
    run_client("--bundle", bundle, "--task", "sst2", "--text", "fine", check_rc=0)
    order = mixed_input(tmp_path / "mixed.jsonl")
    done = run_client("--bundle", bundle, "--input", tmp_path / "mixed.jsonl", check_rc=1)
    assert {row["task"] for row in json_lines(done.stdout)} == {"sst2"}
    failed = [line for line in done.stderr.splitlines() if ", line " in line]
    assert len(failed) == sum(task == "qnli" for task, _ in order)
    assert all(line.endswith(f": {NO_BACKBONE}") for line in failed)
    listing = run_client("--bundle", bundle, "--list", check_rc=1).stdout
    assert "[needs the backbone file, which the bundle lacks]" in next(x for x in listing.splitlines()
                                                                        if x.startswith("task qnli"))


def test_broken_backbone_fails_when_first_needed(mixed_bundle, tmp_path):
    """Loaded lazily: a damaged backbone.tflite does not stop a whole task, and stops a split task
    with a message naming the file: for --text at once, for an input file on each of its lines."""
    bundle = copy(mixed_bundle, tmp_path)
    backbone = bundle / "backbone.tflite"
    backbone.write_bytes(backbone.read_bytes()[:1000])
    run_client("--bundle", bundle, "--task", "sst2", "--text", "fine", check_rc=0)
    done = run_client(*pair_args(bundle), check_rc=2)
    assert done.stderr.startswith(f"error: backbone {backbone}: sha256 mismatch")
    mixed_input(tmp_path / "mixed.jsonl")
    done = run_client("--bundle", bundle, "--input", tmp_path / "mixed.jsonl", check_rc=1)
    assert {row["task"] for row in json_lines(done.stdout)} == {"sst2"}
    assert done.stderr.count(f": backbone {backbone}: sha256 mismatch") == len(ITEMS["qnli"])
    # an input of a split task (--task qnli) surely needs it: one error before any line, as in format 1
    (tmp_path / "qnli.tsv").write_text("question\tsentence\n" + "".join(f"{q}\t{s}\n" for q, s in ITEMS["qnli"]))
    done = run_client("--bundle", bundle, "--task", "qnli", "--input", tmp_path / "qnli.tsv", check_rc=2)
    assert done.stdout == "" and done.stderr.startswith(f"error: backbone {backbone}: sha256 mismatch")


def test_fingerprint_is_checked_for_split_tasks_only(mixed_bundle, tmp_path):
    """A whole task carries its own weights: its backbone_fingerprint only records where it came from."""
    bundle = copy(mixed_bundle, tmp_path)
    rewrite_manifest(bundle, lambda m: [m["tasks"][t].update(backbone_fingerprint="sha256:" + "0" * 64)
                                        for t in ("qnli", "sst2")])
    run_client("--bundle", bundle, "--task", "sst2", "--text", "fine", check_rc=0)
    for graph in ("auto", "fused"):
        done = run_client(*pair_args(bundle), "--graph", graph, check_rc=2)
        assert "error: task qnli: built for another backbone (fingerprint sha256:0000000000" in done.stderr
    rows = {row["task"]: row for row in json.loads(run_client("--bundle", bundle, "--list", "--json",
                                                              check_rc=1).stdout)["tasks"]}
    assert (rows["qnli"]["status"], rows["sst2"]["status"]) == ("built for another backbone", "ok")


# --------------------------------------------------------------------------- the manifest


def test_format_1_manifest_is_read_as_split_tasks(float_bundle, reference, tmp_path):
    """Version 1: no deployment field (every task split), the backbone file always listed."""
    bundle = copy(float_bundle, tmp_path)

    def to_version_1(manifest):
        manifest["format_version"] = 1
        for entry in manifest["tasks"].values():
            entry.pop("deployment", None)
            entry.pop("lora_merged", None)

    rewrite_manifest(bundle, to_version_1)
    order = mixed_input(tmp_path / "mixed.jsonl")
    done = run_client("--bundle", bundle, "--input", tmp_path / "mixed.jsonl", "--verbose", check_rc=0)
    check_matches_keras(done.stdout, order, reference)
    assert loads(done.stderr) == ["backbone backbone.tflite", "task qnli qnli.tflite", "task sst2 sst2.tflite"]
    data = json.loads(run_client("--bundle", bundle, "--list", "--json", check_rc=0).stdout)
    assert data["format_version"] == 1
    assert [(t["deployment"], t["method"]) for t in data["tasks"]] == [("split", "spartan")] * 2
    # version 1 always has the backbone file
    rewrite_manifest(bundle, lambda m: [m["backbone"].pop(k) for k in ("file", "sha256", "bytes")])
    done = run_client("--bundle", bundle, "--list", check_rc=2)
    assert done.stderr == f"error: {bundle / 'manifest.json'}: backbone: missing field 'file'\n"


@pytest.mark.parametrize("deployment,fragment", [
    (None, "tasks.sst2: missing field 'deployment' (split or whole; required from format version 2)"),
    ("fused", "tasks.sst2: unknown deployment 'fused' (expected split or whole)"),
    (3, "tasks.sst2: unknown deployment 3 (expected split or whole)"),
])
def test_missing_or_unknown_deployment_fails_that_task(mixed_bundle, tmp_path, deployment, fragment):
    bundle = copy(mixed_bundle, tmp_path)

    def change(manifest):
        if deployment is None:
            del manifest["tasks"]["sst2"]["deployment"]
        else:
            manifest["tasks"]["sst2"]["deployment"] = deployment

    rewrite_manifest(bundle, change)
    done = run_client("--bundle", bundle, "--task", "sst2", "--text", "fine", check_rc=2)
    assert done.stderr == f"error: {bundle / 'manifest.json'}: {fragment}\n"
    mixed_input(tmp_path / "mixed.jsonl")
    done = run_client("--bundle", bundle, "--input", tmp_path / "mixed.jsonl", check_rc=1)
    assert {row["task"] for row in json_lines(done.stdout)} == {"qnli"}
    assert done.stderr.count(fragment) == len(ITEMS["sst2"])
    listing = run_client("--bundle", bundle, "--list", check_rc=1).stdout
    assert f"task sst2: invalid manifest entry: {bundle / 'manifest.json'}: {fragment}" in listing


def test_list_and_benchmark_name_deployment_and_method(mixed_bundle):
    listing = run_client("--bundle", mixed_bundle, "--list", check_rc=0).stdout.splitlines()
    assert next(x for x in listing if x.startswith("task qnli")).startswith("task qnli     split spartan  qnli.tflite")
    assert next(x for x in listing if x.startswith("task sst2")).startswith("task sst2     whole lora (merged)  "
                                                                             "sst2.tflite")
    data = json.loads(run_client("--bundle", mixed_bundle, "--list", "--json", check_rc=0).stdout)
    rows = {row["task"]: row for row in data["tasks"]}
    assert {k: rows["qnli"][k] for k in ("deployment", "method", "lora_merged", "fused")} == {
        "deployment": "split", "method": "spartan", "lora_merged": None, "fused": "qnli.fused.tflite"}
    assert {k: rows["sst2"][k] for k in ("deployment", "method", "lora_merged", "fused", "ratio_to_backbone")} == {
        "deployment": "whole", "method": "lora", "lora_merged": True, "fused": None, "ratio_to_backbone": None}
    assert rows["qnli"]["ratio_to_backbone"] > 0
    for task, expected in (("qnli", ("split", "spartan", None)), ("sst2", ("whole", "lora", True))):
        figures = json.loads(run_client("--bundle", mixed_bundle, "--task", task, "--benchmark", "--num-texts", 4,
                                        "--json", check_rc=0).stdout)
        assert (figures["deployment"], figures["method"], figures["lora_merged"]) == expected
    text = run_client("--bundle", mixed_bundle, "--task", "sst2", "--benchmark", "--num-texts", 4, check_rc=0).stdout
    assert text.startswith("benchmark: 4 texts (task sst2 whole lora, mean ")


# --------------------------------------------------------------------------- the converter's own format 2


def test_converted_lora_task_runs_whole(tiny_task_dirs, lora_task_dir, reference, tmp_path):
    """convert/to_tflite.py writes a LoRA task whole (merged): next to a split task, and alone in a
    bundle without backbone file; the client matches the Keras models."""
    expected = {"qnli": reference["qnli"], "sst2": keras_logits(lora_task_dir, ITEMS["sst2"])}
    order = mixed_input(tmp_path / "mixed.jsonl")
    mixed = _convert({"qnli": tiny_task_dirs["qnli"], "sst2": lora_task_dir}, tmp_path / "mixed", "--float")
    done = run_client("--bundle", mixed, "--input", tmp_path / "mixed.jsonl", "--verbose", check_rc=0)
    check_matches_keras(done.stdout, order, expected)
    assert loads(done.stderr) == ["backbone backbone.tflite", "task qnli qnli.tflite", "task sst2 sst2.tflite"]
    rows = {row["task"]: row for row in json.loads(run_client("--bundle", mixed, "--list", "--json",
                                                              check_rc=0).stdout)["tasks"]}
    assert [(rows[t]["deployment"], rows[t]["method"], rows[t]["lora_merged"]) for t in ("qnli", "sst2")] == [
        ("split", "spartan", None), ("whole", "lora", True)]

    alone = _convert({"sst2": lora_task_dir}, tmp_path / "alone", "--float")
    assert not (alone / "backbone.tflite").exists()
    (tmp_path / "sst2.jsonl").write_text("".join(json.dumps({"id": f"i{i}", "text": text}) + "\n"
                                                 for i, (text, _) in enumerate(ITEMS["sst2"])))
    done = run_client("--bundle", alone, "--input", tmp_path / "sst2.jsonl", check_rc=0)
    check_matches_keras(done.stdout, [("sst2", i) for i in range(len(ITEMS["sst2"]))], expected)
    run_client("--bundle", alone, "--list", check_rc=0)
