"""Bad input never costs a good line and never shows a traceback: each case gets a clear message
naming the input (and the line), the other lines are answered, and the exit code says so."""

import hashlib
import json
from pathlib import Path

from client_support import json_lines, rewrite_manifest, run_client

GOOD_PAIR = {"text": "Who wrote Hamlet?", "text_pair": "Hamlet was written by Shakespeare."}


def test_every_bad_line_reported_every_good_line_answered(float_bundle, tmp_path):
    lines = [
        json.dumps({**GOOD_PAIR, "id": "ok1"}).encode(),                    # 1 good
        json.dumps({"text": "", "id": "x"}).encode(),                       # 2 empty text
        b"{not json",                                                       # 3 invalid JSON
        json.dumps({"text_pair": "no text"}).encode(),                      # 4 missing field
        json.dumps({**GOOD_PAIR, "task": "mnli"}).encode(),                 # 5 unknown task
        '{"text": "caf\u00e9 ok", "task": "sst2", "id": "ok2"}'.encode(),   # 6 good (UTF-8 accent)
        '{"text": "caf\u00e9", "task": "sst2"}'.encode("latin-1"),          # 7 not UTF-8
        b"",                                                                # 8 blank: skipped
        json.dumps({"text": "only one text"}).encode(),                     # 9 qnli needs a pair
        json.dumps({"text": "great", "text_pair": "film", "task": "sst2"}).encode(),  # 10 sst2 takes one text
        json.dumps({"text": "   ", "task": "sst2"}).encode(),               # 11 blank text
        json.dumps(["text"]).encode(),                                      # 12 not an object
        json.dumps({**GOOD_PAIR, "text_pair": ""}).encode(),                # 13 empty pair
        json.dumps({**GOOD_PAIR, "id": "ok3"}).encode(),                    # 14 good
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    done = run_client("--bundle", float_bundle, "--task", "qnli", "--input", path, check_rc=1)
    assert [row["id"] for row in json_lines(done.stdout)] == ["ok1", "ok2", "ok3"]
    errors = [line for line in done.stderr.splitlines() if line.startswith(str(path))]
    expected = {
        2: "empty text (text)",
        3: "not valid JSON",
        4: 'missing field "text"',
        5: "unknown task 'mnli'; the bundle",
        7: "not UTF-8 text (byte 0xe9",
        9: "task qnli takes a text pair",
        10: "task sst2 takes a single text",
        11: "empty text (text)",
        12: "expected a JSON object",
        13: "empty text pair (text_pair)",
    }
    assert len(errors) == len(expected), done.stderr
    for error, (line, message) in zip(errors, expected.items()):
        assert error.startswith(f"{path}, line {line}: {message}"), error
    assert "3 line(s) answered, 10 failed" in done.stderr


def test_tsv_bad_rows(float_bundle, tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_bytes(b"index\tquestion\tsentence\tlabel\n"
                     b"0\tWho wrote Hamlet?\tShakespeare did.\tentailment\n"
                     b"1\tmissing a column\tentailment\n"
                     b"2\t\tempty question\tentailment\n"
                     b"3\tcaf\xe9?\tlatin-1\tentailment\n"
                     b"4\tWhy?\tBecause.\tnot_entailment\n")
    done = run_client("--bundle", float_bundle, "--task", "qnli", "--input", path, check_rc=1)
    assert [row["id"] for row in json_lines(done.stdout)] == ["0", "4"]
    assert f"{path}, line 3: has 3 tab-separated columns, the header has 4" in done.stderr
    assert f"{path}, line 4: empty text (question)" in done.stderr
    assert f"{path}, line 5: not UTF-8 text" in done.stderr


def test_tsv_without_text_column_names_the_columns(float_bundle, tmp_path):
    path = tmp_path / "odd.tsv"
    path.write_text("a\tb\nx\ty\n")
    done = run_client("--bundle", float_bundle, "--task", "sst2", "--input", path, check_rc=2)
    assert done.stderr.startswith(f"error: {path}: no text column in the TSV header (found: a, b)")
    ok = run_client("--bundle", float_bundle, "--task", "sst2", "--input", path, "--columns", "b", check_rc=0)
    assert json_lines(ok.stdout)[0]["id"] == 2


def test_stdin_bad_lines_have_line_numbers(float_bundle):
    stdin = b'{"text": "good", "task": "sst2"}\n\xff\xfe\n{"text": "x", "task": "nope"}\n'
    done = run_client("--bundle", float_bundle, "--input", "-", stdin=stdin, check_rc=1)
    stderr = done.stderr.decode()
    assert "<stdin>, line 2: not UTF-8 text" in stderr
    assert "<stdin>, line 3: unknown task 'nope'" in stderr
    assert len(json_lines(done.stdout.decode())) == 1


def test_missing_input_and_bundle(float_bundle, tmp_path):
    done = run_client("--bundle", float_bundle, "--task", "qnli", "--input", tmp_path / "nope.jsonl", check_rc=2)
    assert done.stderr == f"error: --input {tmp_path / 'nope.jsonl'}: no such file\n"
    done = run_client("--bundle", tmp_path / "nowhere", "--list", check_rc=2)
    assert "error: --bundle" in done.stderr and "no such directory" in done.stderr
    done = run_client("--bundle", tmp_path, "--list", check_rc=2)
    assert "no manifest.json" in done.stderr


def test_unknown_task_and_usage_errors(float_bundle):
    done = run_client("--bundle", float_bundle, "--task", "mnli", "--text", "hi", check_rc=2)
    assert done.stderr.strip() == f"error: unknown task 'mnli'; the bundle {float_bundle} has: qnli, sst2"
    done = run_client("--bundle", float_bundle, "--text", "hi", check_rc=2)
    assert "--task is needed: the bundle has qnli, sst2" in done.stderr
    done = run_client("--bundle", float_bundle, "--task", "sst2", "--text", "  ", check_rc=2)
    assert "error: empty text (--text)" in done.stderr
    done = run_client("--bundle", float_bundle, "--task", "qnli", "--text", "no pair", check_rc=2)
    assert "task qnli takes a text pair" in done.stderr
    done = run_client("--bundle", float_bundle, "--task", "qnli", check_rc=2)
    assert "give exactly one of --text, --input, --list, --benchmark" in done.stderr
    done = run_client("--bundle", float_bundle, "--task", "qnli", "--text", "a", "--threads", "0", check_rc=2)
    assert "--threads must be >= 1" in done.stderr
    done = run_client("--bundle", float_bundle, "--task", "sst2", "--text", "a", "--runtime", "tflite_runtime",
                      check_rc=2)
    assert "error: --runtime tflite_runtime: cannot import it" in done.stderr


def test_corrupt_task_file_fails_its_lines_only(bundle_copy, tmp_path):
    task_file = bundle_copy / "sst2.npz"
    data = bytearray(task_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    task_file.write_bytes(bytes(data))
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({**GOOD_PAIR, "task": "qnli"}) + "\n" + json.dumps({"text": "a", "task": "sst2"})
                    + "\n" + json.dumps({"text": "b", "task": "sst2"}) + "\n")
    done = run_client("--bundle", bundle_copy, "--input", path, check_rc=1)
    assert [row["task"] for row in json_lines(done.stdout)] == ["qnli"]
    for line in (2, 3):
        assert f"{path}, line {line}: task sst2 {task_file}: sha256 mismatch (file is corrupt or was modified" \
            in done.stderr
    listing = run_client("--bundle", bundle_copy, "--list", check_rc=1)
    assert "[corrupt (sha256 mismatch)]" in listing.stdout


def test_missing_task_file(bundle_copy):
    (bundle_copy / "qnli.npz").unlink()
    done = run_client("--bundle", bundle_copy, "--task", "qnli", "--text", "a", "--text-pair", "b", check_rc=2)
    assert f"error: task qnli {bundle_copy / 'qnli.npz'}: file missing (listed in manifest.json)" in done.stderr
    run_client("--bundle", bundle_copy, "--task", "sst2", "--text", "still works", check_rc=0)


def test_corrupt_or_missing_shared_graph_stops_its_tasks(bundle_copy):
    backbone = bundle_copy / "backbone.spartan-16x3-mean.tflite"
    backbone.write_bytes(backbone.read_bytes()[:-10])
    done = run_client("--bundle", bundle_copy, "--task", "sst2", "--text", "hi", check_rc=2)
    assert f"error: shared graph spartan-16x3-mean {backbone}: sha256 mismatch" in done.stderr
    backbone.unlink()
    done = run_client("--bundle", bundle_copy, "--task", "sst2", "--text", "hi", check_rc=2)
    assert f"error: shared graph spartan-16x3-mean {backbone}: file missing" in done.stderr


def _replace_task_file(bundle: Path, task: str, data: bytes):
    """Put ``data`` in the task's file and make the manifest's sha256 agree (the checksum passes)."""
    (bundle / f"{task}.tflite").write_bytes(data)
    rewrite_manifest(bundle, lambda m: m["tasks"][task].update(sha256=hashlib.sha256(data).hexdigest(),
                                                               bytes=len(data)))


def test_not_a_tflite_file_is_named(whole_copy):
    _replace_task_file(whole_copy, "sst2", b"this is not a flatbuffer" * 10)
    done = run_client("--bundle", whole_copy, "--task", "sst2", "--text", "hi", check_rc=2)
    assert done.stderr.startswith(f"error: task sst2 {whole_copy / 'sst2.tflite'}: ai_edge_litert 2.3.0 cannot load it (")
    assert "is it a TFLite model?" in done.stderr


def _with_op_version(data: bytes, op: str, version: int) -> bytes:
    """The same model with ``op``'s operator version raised, as a newer converter would write it."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    code = getattr(schema.BuiltinOperator, op)
    patched = 0
    for operator in model.operatorCodes:
        if max(operator.builtinCode, operator.deprecatedBuiltinCode) == code:
            operator.version = version
            patched += 1
    assert patched, f"no {op} in the model"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_runtime_without_the_ops_is_told_to_reconvert(whole_copy, tmp_path):
    """What tflite-runtime 2.14 says about TF 2.21's int8 ops, reproduced by raising an op version."""
    bundle_copy = whole_copy
    _replace_task_file(bundle_copy, "sst2", _with_op_version((bundle_copy / "sst2.tflite").read_bytes(),
                                                             "FULLY_CONNECTED", 99))
    done = run_client("--bundle", bundle_copy, "--task", "sst2", "--text", "hi", check_rc=2)
    assert "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '99'" in done.stderr
    assert "re-convert with `python convert/to_tflite.py --compat tflite-runtime-2.14`" in done.stderr
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"text": "a", "task": "sst2"}) + "\n" + json.dumps({**GOOD_PAIR, "task": "qnli"}) + "\n")
    done = run_client("--bundle", bundle_copy, "--input", path, check_rc=1)
    assert f"{path}, line 1: task sst2 " in done.stderr and "--compat tflite-runtime-2.14" in done.stderr
    assert [row["task"] for row in json_lines(done.stdout)] == ["qnli"]


def test_newer_format_version_is_refused(bundle_copy):
    rewrite_manifest(bundle_copy, lambda m: m.update(format_version=4))
    done = run_client("--bundle", bundle_copy, "--list", check_rc=2)
    assert "bundle format version 4 was written by a newer converter; this client reads version 3 only" in done.stderr


def test_task_for_another_backbone_is_refused(bundle_copy):
    def change(manifest):
        manifest["tasks"]["sst2"]["backbone_fingerprint"] = "sha256:" + "0" * 64

    rewrite_manifest(bundle_copy, change)
    done = run_client("--bundle", bundle_copy, "--task", "sst2", "--text", "hi", check_rc=2)
    assert "error: task sst2: built for another backbone (fingerprint sha256:0000000000" in done.stderr
    run_client("--bundle", bundle_copy, "--task", "qnli", "--text", "a", "--text-pair", "b", check_rc=0)
    assert "[built for another backbone]" in run_client("--bundle", bundle_copy, "--list", check_rc=1).stdout


def test_malformed_manifest(bundle_copy):
    (bundle_copy / "manifest.json").write_text("{oops")
    done = run_client("--bundle", bundle_copy, "--list", check_rc=2)
    assert f"error: {bundle_copy / 'manifest.json'}: not valid JSON" in done.stderr
