"""Nothing lost, nothing crashes (training side): atomic writes, corrupt model directories, fuzzed readers."""

import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spartan_tf import artifacts, data, evaluate, tasks
from spartan_tf.errors import SpartanError, run_cli
from spartan_tf.methods.spartan import SpartanMethod
from spartan_tf.model import build_task_model


# ----------------------------------------------------------------------------- atomic writes
def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    artifacts.atomic_write_json(target, {"version": 1})

    def power_cut(fd):
        raise OSError("power cut")

    monkeypatch.setattr(os, "fsync", power_cut)
    with pytest.raises(OSError, match="power cut"):
        artifacts.atomic_write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


# ----------------------------------------------------------------------------- corrupt model directories
@pytest.fixture(scope="module")
def saved_model(save_tiny_qnli, tmp_path_factory):
    """A finished tiny QNLI model directory."""
    out_dir = tmp_path_factory.mktemp("model")
    save_tiny_qnli(out_dir, {"final": {}})
    return out_dir


def damaged_copy(saved_model, tmp_path, damage):
    copy = tmp_path / "damaged"
    shutil.copytree(saved_model, copy)
    damage(copy)
    return copy


def edit_config(**changes):
    def damage(model_dir):
        config = json.loads((model_dir / "config.json").read_text())
        for dotted, value in changes.items():
            block, *rest = dotted.split("__")
            if rest:
                config[block][rest[0]] = value
            elif value is None:
                del config[block]
            else:
                config[block] = value
        (model_dir / "config.json").write_text(json.dumps(config))
    return damage


def truncate(name, keep=0.5):
    def damage(model_dir):
        path = model_dir / name
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return damage


def flip_bit(name):
    def damage(model_dir):
        raw = bytearray((model_dir / name).read_bytes())
        raw[len(raw) // 2] ^= 0x10
        (model_dir / name).write_bytes(bytes(raw))
    return damage


def swap_weights():
    def damage(model_dir):
        with np.load(model_dir / "weights.npz") as saved:
            arrays = {name: saved[name] + 0.01 for name in saved.files}  # same names and shapes, other values
        np.savez(model_dir / "weights.npz", **arrays)
    return damage


@pytest.mark.parametrize("damage,message", [
    (truncate("config.json"), "not valid JSON"),
    (edit_config(format_version=99), "format version 99 is newer than this spartan-tf understands"),
    (edit_config(method=None), "missing field method"),
    (edit_config(max_seq_length="128"), "field max_seq_length should be a int, not str"),
    (edit_config(task__label_names="entailment"), "field task.label_names should be a list"),
    (edit_config(method__num_parents="four"), "method 'spartan': bad hyperparameters in the task config"),
    (edit_config(backbone__fingerprint="sha256:0000"), "different fingerprint"),
    (truncate("weights.npz"), "does not match the sha256"),
    (flip_bit("weights.npz"), "does not match the sha256"),
    (swap_weights(), "swapped in from another model"),
])
def test_damaged_model_directories_are_refused_by_name(saved_model, tmp_path, capsys, damage, message):
    damaged = damaged_copy(saved_model, tmp_path, damage)
    code = run_cli(evaluate.main, ["--model-dir", str(damaged), "--max-eval-samples", "4"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1


def test_a_corrupt_weights_file_without_a_recorded_hash_still_fails_cleanly(saved_model, tmp_path, tiny_backbone):
    damaged = damaged_copy(saved_model, tmp_path, flip_bit("weights.npz"))
    model = build_task_model(tiny_backbone, SpartanMethod(num_parents=4, top_k=2), 2, 0.1, seed=0)
    with pytest.raises(SpartanError, match="corrupt weights file"):
        artifacts.load_weights(model, damaged)  # the zip's own CRC-32 catches the flipped bit


# ----------------------------------------------------------------------------- fuzzed readers
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
cells = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@FUZZ
@given(raw=st.binary(max_size=400))
def test_glue_reader_survives_arbitrary_bytes(tmp_path, raw):
    path = tmp_path / "dev.tsv"
    path.write_bytes(b"index\tquestion\tsentence\tlabel\n" + raw)
    try:
        examples = data.read_task_file(tasks.get_task("qnli"), path)
    except SpartanError as err:
        assert str(path) in str(err)
    else:
        assert all(isinstance(e.text, str) and e.label in (0, 1) for e in examples)


@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({"text": cells, "label": st.sampled_from(["a", "b", "", "c\td"])},
                                           optional={"text_pair": cells, "extra": cells}), max_size=12),
       suffix=st.sampled_from([".jsonl", ".tsv", ".csv"]))
def test_custom_reader_answers_or_names_the_problem(tmp_path, rows, suffix):
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:
        sep = "\t" if suffix == ".tsv" else ","
        columns = ["text", "label"] + (["text_pair"] if any("text_pair" in row for row in rows) else [])
        lines = [sep.join(columns)] + [sep.join(str(row.get(c, "")) for c in columns) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        examples, labels = data.read_custom_file(path, None, "classification")
    except SpartanError as err:
        assert str(path) in str(err) or "label" in str(err)
    else:
        assert labels == tuple(sorted(labels)) and all(0 <= e.label < len(labels) for e in examples)


@FUZZ
@given(text=st.text(max_size=3000), pair=st.one_of(st.none(), st.text(max_size=3000)))
def test_encoding_any_unicode_respects_the_maximum_length(tiny_backbone, text, pair):
    example = data.Example(text or "x", pair or None, 0)
    encoded = data.encode(tiny_backbone.tokenizer(64), [example])
    ids = encoded["input_ids"][0]
    assert 2 <= len(ids) <= 64 and ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
    assert len(encoded["attention_mask"][0]) == len(ids) == len(encoded["token_type_ids"][0])
