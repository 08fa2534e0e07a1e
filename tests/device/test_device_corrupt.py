"""Corrupt or hostile bundles (issue 7): a truncated, bit-flipped or swapped file, a manifest with
missing fields, wrong types, not JSON or from the future, a task from another backbone. Each is
detected before use with a message naming the file or field: exit code 2 when nothing can run,
per-line errors when only one task is hit; never a crash of the interpreter (a signal), never an answer.
Also: --output is written atomically, even when the client is SIGKILLed mid-run.
"""

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from client_support import CLIENT, REPO, json_lines, rewrite_manifest, run_client

PAIR = ("Who wrote Hamlet?", "Hamlet was written by Shakespeare.")
GRAPH = "spartan-16x3-mean"  # the shared graph both tiny tasks run on
GRAPH_FILE = f"backbone.{GRAPH}.tflite"


def mixed_file(tmp_path) -> Path:
    """qnli, sst2, qnli, sst2: lines 1 and 3 are qnli."""
    path = tmp_path / "mixed.jsonl"
    rows = [{"id": "q1", "task": "qnli", "text": PAIR[0], "text_pair": PAIR[1]},
            {"id": "s1", "task": "sst2", "text": "a charming film"},
            {"id": "q2", "task": "qnli", "text": "Why?", "text_pair": "Because."},
            {"id": "s2", "task": "sst2", "text": "a dull film"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def no_answer(done):
    """Exit code 2, no crash (a negative code is a signal), nothing on stdout."""
    assert done.returncode == 2, f"exit {done.returncode}: {done.stderr}"
    assert done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


def pair_text(bundle):
    return run_client("--bundle", bundle, "--task", "qnli", "--text", PAIR[0], "--text-pair", PAIR[1])


def single_text(bundle):
    return run_client("--bundle", bundle, "--task", "sst2", "--text", "a charming film")


def resign(bundle: Path, name: str):
    """Make the manifest's sha256/bytes agree with the file as it now is (a hostile or careless edit)."""
    data = (bundle / name).read_bytes()

    def change(manifest):
        entry = next(t for block in ("graphs", "tasks") for t in manifest[block].values() if t["file"] == name)
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))

    rewrite_manifest(bundle, change)


# --------------------------------------------------------------------------- (a) truncated shared graph


@pytest.mark.parametrize("keep", [0, 100, "half", -1])
def test_truncated_backbone_is_refused_by_name(bundle_copy, keep):
    backbone = bundle_copy / GRAPH_FILE
    data = backbone.read_bytes()
    backbone.write_bytes(data[:len(data) // 2 if keep == "half" else keep])
    for done in (single_text(bundle_copy), pair_text(bundle_copy)):
        no_answer(done)
        assert done.stderr.startswith(f"error: shared graph {GRAPH} {backbone}: sha256 mismatch (file is corrupt or "
                                      "was modified")
    listing = run_client("--bundle", bundle_copy, "--list", check_rc=1)
    assert GRAPH_FILE in listing.stdout and "[corrupt (sha256 mismatch)]" in listing.stdout


def test_truncated_backbone_with_matching_checksum_never_crashes(bundle_copy):
    """Even when the manifest's sha256 was "fixed" to match, the runtime must refuse the file by name:
    exit 2, no segmentation fault."""
    backbone = bundle_copy / GRAPH_FILE
    for size in (len(backbone.read_bytes()) // 2, 64, 8):  # each cut of the previous one
        backbone.write_bytes(backbone.read_bytes()[:size])
        resign(bundle_copy, GRAPH_FILE)
        done = single_text(bundle_copy)
        no_answer(done)
        assert done.stderr.startswith(f"error: shared graph {GRAPH} {backbone}: ")
        assert "cannot load it" in done.stderr or "cannot run it" in done.stderr or "signature" in done.stderr


# --------------------------------------------------------------------------- (b) one bit flipped


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_one_flipped_bit_in_a_task_file(bundle_copy, tmp_path, where):
    task_file = bundle_copy / "qnli.npz"
    data = bytearray(task_file.read_bytes())
    data[{"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]] ^= 0x01
    task_file.write_bytes(bytes(data))
    done = pair_text(bundle_copy)
    no_answer(done)
    assert done.stderr.startswith(f"error: task qnli {task_file}: sha256 mismatch")
    # in a file of several tasks: the qnli lines fail by line, the sst2 lines are answered
    path = mixed_file(tmp_path)
    done = run_client("--bundle", bundle_copy, "--input", path, check_rc=1)
    assert [row["id"] for row in json_lines(done.stdout)] == ["s1", "s2"]
    for line in (1, 3):
        assert f"{path}, line {line}: task qnli {task_file}: sha256 mismatch" in done.stderr
    assert "2 line(s) answered, 2 failed" in done.stderr


def test_one_flipped_bit_in_the_tokenizer(bundle_copy):
    tokenizer = bundle_copy / "tokenizer.json"
    data = bytearray(tokenizer.read_bytes())
    data[len(data) // 3] ^= 0x04
    tokenizer.write_bytes(bytes(data))
    done = single_text(bundle_copy)
    no_answer(done)
    assert done.stderr.startswith(f"error: tokenizer {tokenizer}: sha256 mismatch")


@pytest.mark.parametrize("offset", [4, 5, 6, 7, 8, 12, 16])
def test_flipped_bytes_in_a_file_header_with_matching_checksum_never_crash(whole_bundle, tmp_path, offset):
    """A damaged task file whose checksum was recomputed reaches the reader: it must be refused (or,
    if the flip is harmless, answered), never kill the interpreter; a whole task's flatbuffer and a
    shared task's tensor archive alike."""
    import shutil

    assert_flipped_byte_is_refused_or_harmless(Path(shutil.copytree(whole_bundle, tmp_path / "bundle")),
                                               "sst2.tflite", offset)


@pytest.mark.parametrize("offset", [0, 4, 8, 12, 30, -22, -10])
def test_flipped_bytes_in_a_task_tensor_archive_never_crash(bundle_copy, offset):
    assert_flipped_byte_is_refused_or_harmless(bundle_copy, "sst2.npz", offset)


def assert_flipped_byte_is_refused_or_harmless(bundle_copy, name, offset):
    """Flip the byte at ``offset`` of task sst2's file ``name``, re-sign it, run one text: exit 0 (the
    flip was harmless) or 2 with an error naming the file, never a signal."""
    task_file = bundle_copy / name
    data = bytearray(task_file.read_bytes())
    data[offset] ^= 0xFF
    task_file.write_bytes(bytes(data))
    resign(bundle_copy, name)
    done = single_text(bundle_copy)
    assert done.returncode in (0, 2), f"exit {done.returncode} (negative: killed by a signal): {done.stderr[-2000:]}"
    if done.returncode == 2:
        assert done.stderr.startswith(f"error: task sst2 {task_file}: "), done.stderr


# --------------------------------------------------------------------------- (c) two task files swapped


def test_swapped_task_files_are_refused(bundle_copy, tmp_path):
    qnli, sst2 = bundle_copy / "qnli.npz", bundle_copy / "sst2.npz"
    qnli_bytes, sst2_bytes = qnli.read_bytes(), sst2.read_bytes()
    qnli.write_bytes(sst2_bytes)
    sst2.write_bytes(qnli_bytes)
    done = pair_text(bundle_copy)
    no_answer(done)
    assert done.stderr.startswith(f"error: task qnli {qnli}: sha256 mismatch")
    done = single_text(bundle_copy)
    no_answer(done)
    assert done.stderr.startswith(f"error: task sst2 {sst2}: sha256 mismatch")
    path = mixed_file(tmp_path)
    done = run_client("--bundle", bundle_copy, "--input", path, check_rc=1)
    assert done.stdout == ""
    for line, task, file in ((1, "qnli", qnli), (2, "sst2", sst2), (3, "qnli", qnli), (4, "sst2", sst2)):
        assert f"{path}, line {line}: task {task} {file}: sha256 mismatch" in done.stderr
    assert "0 line(s) answered, 4 failed" in done.stderr
    listing = run_client("--bundle", bundle_copy, "--list", check_rc=1).stdout
    assert listing.count("[corrupt (sha256 mismatch)]") == 2


# --------------------------------------------------------------------------- (d) manifest


def _drop(*keys):
    def change(manifest):
        block = manifest
        for key in keys[:-1]:
            block = block[key]
        del block[keys[-1]]
    return change


def _set(value, *keys):
    def change(manifest):
        block = manifest
        for key in keys[:-1]:
            block = block[key]
        block[keys[-1]] = value
    return change


MANIFEST_FATAL = [  # (id, change, fragment of the one error line); every case: exit 2 for every task
    ("no format_version", _drop("format_version"), "missing or invalid format_version"),
    ("format_version string", _set("1", "format_version"), "missing or invalid format_version"),
    ("format_version bool", _set(True, "format_version"), "missing or invalid format_version"),
    ("format_version float", _set(1.0, "format_version"), "missing or invalid format_version"),
    ("older format", _set(2, "format_version"), "bundle format version 2 was written by an older converter"),
    ("future format", _set(4, "format_version"), "bundle format version 4 was written by a newer converter"),
    ("far future format", _set(10**6, "format_version"), "bundle format version 1000000 was written by a newer"),
    ("no tokenizer", _drop("tokenizer"), "missing field 'tokenizer'"),
    ("tokenizer not object", _set("tokenizer.json", "tokenizer"), "field 'tokenizer' should be a dict"),
    ("tokenizer no sha256", _drop("tokenizer", "sha256"), "tokenizer: missing field 'sha256'"),
    ("no backbone", _drop("backbone"), "missing field 'backbone'"),
    ("no graphs", _drop("graphs"), "missing field 'graphs'"),
    ("graph no file", _drop("graphs", GRAPH, "file"), f"graphs.{GRAPH}: missing field 'file'"),
    ("graph file escapes", _set("../backbone.tflite", "graphs", GRAPH, "file"), "must be a path inside the bundle"),
    ("graph file absolute", _set("/etc/passwd", "graphs", GRAPH, "file"), "must be a path inside the bundle"),
    ("graph no sha256", _drop("graphs", GRAPH, "sha256"), f"graphs.{GRAPH}: missing field 'sha256'"),
    ("graph sha256 short", _set("abc", "graphs", GRAPH, "sha256"), "sha256 'abc' is not 64 hex digits"),
    ("graph sha256 int", _set(123, "graphs", GRAPH, "sha256"), "field 'sha256' should be a str"),
    ("graph no method", _drop("graphs", GRAPH, "method"), f"graphs.{GRAPH}: missing field 'method'"),
    ("graph no pooling", _drop("graphs", GRAPH, "pooling"), f"graphs.{GRAPH}: missing field 'pooling'"),
    ("no fingerprint", _drop("backbone", "fingerprint"), "backbone: missing field 'fingerprint'"),
    ("no num_layers", _drop("backbone", "num_layers"), "backbone: missing field 'num_layers'"),
    ("num_layers string", _set("2", "backbone", "num_layers"), "field 'num_layers' should be a int, got '2'"),
    ("num_layers zero", _set(0, "backbone", "num_layers"), "field 'num_layers' must be >= 1"),
    ("no tasks", _drop("tasks"), "missing field 'tasks'"),
    ("tasks a list", _set([], "tasks"), "field 'tasks' should be a dict, got []"),
    ("tasks empty", _set({}, "tasks"), "the bundle holds no tasks"),
]


@pytest.mark.parametrize("change,fragment", [c[1:] for c in MANIFEST_FATAL], ids=[c[0] for c in MANIFEST_FATAL])
def test_manifest_problem_stops_everything_by_name(bundle_copy, change, fragment):
    rewrite_manifest(bundle_copy, change)
    manifest = bundle_copy / "manifest.json"
    done = single_text(bundle_copy)
    no_answer(done)
    assert fragment in done.stderr, done.stderr
    assert str(manifest) in done.stderr or "backbone" in done.stderr, done.stderr  # names the file


@pytest.mark.parametrize("field,value,fragment", [
    ("hidden_size", "384", "backbone: field 'hidden_size' should be a int, got '384'"),
    ("max_length", "128", "backbone: field 'max_length' should be a int, got '128'"),
    ("hidden_size", -1, "backbone: field 'hidden_size' must be >= 1, got -1"),
    ("hidden_size", None, "backbone: field 'hidden_size' should be a int, got None"),
])
def test_backbone_fields_of_the_wrong_type_are_refused(bundle_copy, field, value, fragment):
    rewrite_manifest(bundle_copy, _set(value, "backbone", field))
    done = single_text(bundle_copy)
    no_answer(done)
    assert done.stderr.startswith(f"error: {bundle_copy / 'manifest.json'}: {fragment}"), done.stderr


TASK_ENTRY = [  # (id, change of tasks.qnli, fragment): the qnli lines fail, sst2 still runs
    ("not an object", "qnli.npz", "tasks.qnli: expected a JSON object"),
    ("no file", lambda t: t.pop("file"), "tasks.qnli: missing field 'file'"),
    ("no sha256", lambda t: t.pop("sha256"), "tasks.qnli: missing field 'sha256'"),
    ("no fingerprint", lambda t: t.pop("backbone_fingerprint"), "missing field 'backbone_fingerprint'"),
    ("no problem_type", lambda t: t.pop("problem_type"), "missing field 'problem_type'"),
    ("odd problem_type", lambda t: t.update(problem_type="ranking"), "unknown problem_type 'ranking'"),
    ("no label_names", lambda t: t.pop("label_names"), "missing field 'label_names'"),
    ("label_names a string", lambda t: t.update(label_names="ab"), "field 'label_names' should be a list"),
    ("one label", lambda t: t.update(label_names=["yes"]), "needs >= 2 label names"),
    ("label not a string", lambda t: t.update(label_names=["a", 1]), "needs >= 2 label names"),
    ("three labels for two outputs", lambda t: t.update(label_names=["a", "b", "c"]),
     "the model returned shape [1, 2], expected [1, 3]"),
    ("regression with two outputs", lambda t: t.update(problem_type="regression", label_names=[]),
     "the model returned shape [1, 2], expected [1, 1]"),
    ("max_length string", lambda t: t.update(max_length="128"), "field 'max_length' should be a int"),
    ("max_length negative", lambda t: t.update(max_length=-5), "field 'max_length' must be >= 1"),
    ("file escapes", lambda t: t.update(file="../../qnli.npz"), "must be a path inside the bundle"),
    ("file is the tokenizer", lambda t: t.update(file="tokenizer.json"), "sha256 mismatch"),
]


@pytest.mark.parametrize("change,fragment", [c[1:] for c in TASK_ENTRY], ids=[c[0] for c in TASK_ENTRY])
def test_bad_task_entry_fails_that_task_only(bundle_copy, tmp_path, change, fragment):
    def edit(manifest):
        if isinstance(change, str):
            manifest["tasks"]["qnli"] = change
        else:
            change(manifest["tasks"]["qnli"])

    rewrite_manifest(bundle_copy, edit)
    path = mixed_file(tmp_path)
    done = run_client("--bundle", bundle_copy, "--input", path, check_rc=1)
    assert [row["id"] for row in json_lines(done.stdout)] == ["s1", "s2"]
    for line in (1, 3):
        message = next(x for x in done.stderr.splitlines() if x.startswith(f"{path}, line {line}: "))
        assert fragment in message, message


NOT_JSON = [
    ("empty", b""), ("garbage", b"{oops"), ("truncated", None), ("not UTF-8", b'{"format_version": 1, "x": "\xff"}'),
    ("binary", bytes(range(256))), ("a list", b"[]"), ("null", b"null"), ("a number", b"1"),
    ("huge integer", b'{"format_version": 1' + b"0" * 5000 + b"}"),
    ("deeply nested", b'{"format_version": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
]


@pytest.mark.parametrize("content", [c[1] for c in NOT_JSON], ids=[c[0] for c in NOT_JSON])
def test_manifest_not_json(bundle_copy, content):
    manifest = bundle_copy / "manifest.json"
    if content is None:
        content = manifest.read_bytes()[:len(manifest.read_bytes()) // 2]
    manifest.write_bytes(content)
    for done in (single_text(bundle_copy), run_client("--bundle", bundle_copy, "--list")):
        no_answer(done)
        assert done.stderr.startswith(f"error: {manifest}: "), done.stderr


# --------------------------------------------------------------------------- (e) a task from another backbone


@pytest.fixture(scope="session")
def other_backbone_bundle(other_tiny_model_dir, tmp_path_factory):
    """sst2 trained and converted over a backbone of the same shape but other weights."""
    from client_support import SAMPLES, _convert, _run

    out = tmp_path_factory.mktemp("other-task") / "sst2"
    _run([sys.executable, "-m", "spartan_tf.train", "--model", str(other_tiny_model_dir), "--task", "sst2",
          "--data-dir", str(SAMPLES), "--max-train-samples", "16", "--max-eval-samples", "8", "--epochs", "1",
          "--max-seq-length", "32", "--output-dir", str(out)])
    return _convert({"sst2": out}, tmp_path_factory.mktemp("bundle-other") / "tflite", "--float")


def test_task_copied_from_another_backbones_bundle_is_refused(bundle_copy, other_backbone_bundle, tmp_path):
    """The user copies sst2.npz and its manifest entry from a bundle built on another backbone (same
    shapes, so without the check it would run and answer nonsense)."""
    other = json.loads((other_backbone_bundle / "manifest.json").read_text())
    (bundle_copy / "sst2.npz").write_bytes((other_backbone_bundle / "sst2.npz").read_bytes())
    rewrite_manifest(bundle_copy, lambda m: m["tasks"].update(sst2=other["tasks"]["sst2"]))
    ours = json.loads((bundle_copy / "manifest.json").read_text())["backbone"]["fingerprint"]
    assert other["backbone"]["fingerprint"] != ours
    done = single_text(bundle_copy)
    no_answer(done)
    assert done.stderr.startswith(f"error: task sst2: built for another backbone (fingerprint "
                                  f"{other['backbone']['fingerprint'][:19]}...), but the bundle's backbone is "
                                  f"{ours[:19]}...")
    path = mixed_file(tmp_path)
    done = run_client("--bundle", bundle_copy, "--input", path, check_rc=1)
    assert [row["id"] for row in json_lines(done.stdout)] == ["q1", "q2"]
    assert f"{path}, line 2: task sst2: built for another backbone" in done.stderr
    assert "[built for another backbone]" in run_client("--bundle", bundle_copy, "--list", check_rc=1).stdout


# --------------------------------------------------------------------------- --output under SIGKILL


def _start_streaming(bundle, out, *flags):
    return subprocess.Popen([sys.executable, str(CLIENT), "--bundle", str(bundle), "--task", "sst2", "--input", "-",
                             "--output", str(out), *flags], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO)


def _kill_mid_run(process, directory: Path, name: str, lines: int, how=signal.SIGKILL):
    """Feed ``lines`` lines, keep stdin open, wait until the client has written answers to its temporary
    file (so the run is really half done), then send it ``how``. Returns the temporary files seen."""
    for i in range(lines):
        process.stdin.write(json.dumps({"id": i, "text": f"line {i} of a long stream"}).encode() + b"\n")
    process.stdin.flush()
    deadline = time.monotonic() + 120
    temporaries = []
    while time.monotonic() < deadline and process.poll() is None:
        temporaries = [p for p in directory.iterdir() if p.name.startswith(f".{name}.") and p.stat().st_size > 0]
        if temporaries:
            break
        time.sleep(0.05)
    assert temporaries, f"no answers written before the deadline (exit {process.poll()})"
    process.send_signal(how)
    process.wait(timeout=30)
    return temporaries


@pytest.mark.parametrize("existing", [True, False])
def test_output_is_whole_or_absent_after_sigkill(float_bundle, tmp_path, existing):
    out = tmp_path / "preds.jsonl"
    if existing:
        out.write_text('{"id": "old"}\n')
    process = _start_streaming(float_bundle, out, *(["--force"] if existing else []))
    try:
        _kill_mid_run(process, tmp_path, out.name, 400)
    finally:
        process.kill()
    if existing:
        assert out.read_text() == '{"id": "old"}\n'  # the previous version survives, untouched
    else:
        assert not out.exists()  # no partial file under the final name
    # a later run replaces it whole (a temporary left by the killed run is not in the way)
    done = run_client("--bundle", float_bundle, "--task", "sst2", "--input", "-", "--output", out, "--force",
                      stdin="".join(json.dumps({"id": i, "text": f"t{i}"}) + "\n" for i in range(50)), check_rc=0)
    assert done.stdout == ""
    assert [row["id"] for row in json_lines(out.read_text())] == list(range(50))
    assert [p.name for p in tmp_path.iterdir()] == ["preds.jsonl"]  # the killed run's temporary was removed


def test_sigterm_discards_the_temporary_file(float_bundle, tmp_path):
    """SIGTERM (a service stopped, a shell closed) unwinds like Ctrl-C: one line, no file left at all."""
    out = tmp_path / "preds.jsonl"
    process = _start_streaming(float_bundle, out)
    try:
        _kill_mid_run(process, tmp_path, out.name, 400, signal.SIGTERM)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert process.stderr.read().decode() == "terminated\n"
    assert list(tmp_path.iterdir()) == []


def test_output_complete_when_the_stream_ends(float_bundle, tmp_path):
    """The control of the test above: the same stream, closed instead of killed, gives every answer."""
    out = tmp_path / "preds.jsonl"
    process = _start_streaming(float_bundle, out)
    timer = threading.Timer(180, process.kill)
    timer.start()
    try:
        stdin = "".join(json.dumps({"id": i, "text": f"line {i} of a long stream"}) + "\n" for i in range(400))
        _, stderr = process.communicate(stdin.encode(), timeout=180)
    finally:
        timer.cancel()
    assert process.returncode == 0, stderr
    assert [row["id"] for row in json_lines(out.read_text())] == list(range(400))
    assert [p.name for p in tmp_path.iterdir()] == ["preds.jsonl"]
