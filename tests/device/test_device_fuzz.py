"""Fuzzed inputs to the device client (issue 7): whatever a file holds, no traceback, one clear
message per bad line naming its line number, every good line answered exactly once, in input order,
with its id, and the exit code of README "Run on the device" (0 all answered, 1 some lines failed).

Each hypothesis example is a whole generated file run through ONE client process (a subprocess
start costs about a second): a list of lines, each either good or carrying exactly one defect whose
expected message is known, then the client's stdout and stderr are checked line by line.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from client_support import CLIENT, REPO, json_lines

LABELS = {"qnli": ("entailment", "not_entailment"), "sst2": ("negative", "positive")}
PAIR_TASKS = {"qnli": True, "sst2": False}
FUZZ = settings(max_examples=30, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
PER_RUN_TIMEOUT = 120
TRACEBACK = "Traceback (most recent call last):"


def run(bundle, path_or_dash, *args, stdin: bytes | None = None):
    """The client on a file (or stdin): (returncode, stdout rows, stderr text). Never a traceback."""
    env = {k: v for k, v in os.environ.items() if k != "SPARTAN_DEVICE_DEBUG"}
    done = subprocess.run([sys.executable, str(CLIENT), "--bundle", str(bundle), "--input", str(path_or_dash),
                           "--threads", "1", *map(str, args)], input=stdin, capture_output=True, cwd=REPO,
                          env=env, timeout=PER_RUN_TIMEOUT)
    stderr = done.stderr.decode("utf-8", "replace")
    assert TRACEBACK not in stderr.split("\n"), stderr[-3000:]  # a line of its own: texts may hold the word
    assert done.returncode in (0, 1), f"exit {done.returncode}:\n{stderr[-3000:]}"
    return done.returncode, json_lines(done.stdout.decode("utf-8")), stderr


def check_outcomes(lines, expected, rc, rows, stderr, name):
    """``expected[i]``: ("ok", id, task, key) | ("bad", message fragment) | ("blank",) for ``lines[i]``
    (line i + 1 of the input). Checks stdout, the per-line messages, the summary and the exit code."""
    good = [(i + 1, e) for i, e in enumerate(expected) if e[0] == "ok"]
    bad = [(i + 1, e[1]) for i, e in enumerate(expected) if e[0] == "bad"]
    # every good line answered exactly once, in input order, with its id and task
    assert [(r["id"], r["task"]) for r in rows] == [(e[1], e[2]) for _, e in good], stderr[-2000:]
    for row in rows:
        assert row["label"] in LABELS[row["task"]]
        assert set(row["scores"]) == set(LABELS[row["task"]])
        assert abs(sum(row["scores"].values()) - 1) < 1e-4
        assert len(row["logits"]) == 2 and all(np.isfinite(row["logits"]))
        assert row["label"] == LABELS[row["task"]][int(np.argmax(row["logits"]))]
    # the same text gives the same answer wherever it sits (batch, padding, neighbours)
    by_key = {}
    for row, (_, e) in zip(rows, good):
        by_key.setdefault(e[3], []).append(row["logits"])
    for logits in by_key.values():
        np.testing.assert_allclose(logits, [logits[0]] * len(logits), atol=1e-4)
    # one message per bad line, in order, naming the input and the line; nothing else but the summary
    prefix = f"{name}, line "
    lines_out = stderr.split("\n")  # not splitlines(): messages may quote \x1c, \u2028...
    reported = [line for line in lines_out if line.startswith(prefix)]
    assert [int(line[len(prefix):].split(":", 1)[0]) for line in reported] == [n for n, _ in bad], stderr[-3000:]
    for line, (number, fragment) in zip(reported, bad):
        assert fragment in line, (number, fragment, line)
    others = [line for line in lines_out if line and not line.startswith(prefix)]
    if bad:
        assert others == [f"{len(good)} line(s) answered, {len(bad)} failed"], stderr[-3000:]
    else:
        assert others == [], stderr[-3000:]
    assert rc == (1 if bad else 0)


# --------------------------------------------------------------------------- strategies

# any unicode but surrogates (which UTF-8 cannot encode: see test_lone_surrogate_* below)
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=60)
CONTROL = st.text(st.characters(max_codepoint=0x9F, whitelist_categories=("Cc",)), min_size=1, max_size=5)
WHITESPACE = st.text(st.sampled_from(" \t\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u2029\u3000"),
                     min_size=0, max_size=6)


@st.composite
def some_text(draw):
    """A text with something that is not whitespace: unicode, control characters, sometimes very long."""
    core = draw(st.one_of(ANY_TEXT, CONTROL, st.sampled_from(["\x00", "\u200b", "\ufeff", "\U0001f600", "\u0301",
                                                               "a\u0000b", "\x1b[31mred", "\\n", "null"])))
    text = draw(WHITESPACE) + core + "x" + draw(WHITESPACE)  # "x": never blank
    if draw(st.integers(0, 9)) == 0:
        text = text * draw(st.integers(200, 3000))  # very long: truncated to the task's max length
    return text


JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                        st.floats(allow_nan=False, allow_infinity=False), ANY_TEXT)
JSON_VALUE = st.recursive(JSON_SCALAR, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=6)
LONE_SURROGATE = st.characters(whitelist_categories=("Cs",)).map(lambda c: f"a{c}b")  # JSON can carry one
IDS = st.one_of(st.integers(-(10**30), 10**30), ANY_TEXT, st.none(), LONE_SURROGATE,
                st.floats(allow_nan=False, allow_infinity=False), st.lists(st.integers(), max_size=3))
EXTRA_KEYS = ANY_TEXT.filter(lambda k: k not in ("text", "text_pair", "id", "task"))
NOT_UTF8 = st.sampled_from([b"\xff", b"\xfe\xff", b"\x80", b"\xc3(", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80",
                            b"\xe2\x82", b"\xf4\x90\x80\x80"])
DEFECTS = ["none"] * 8 + ["not_utf8", "latin1", "truncated", "not_object", "missing_text", "text_type", "empty_text",
                          "empty_pair", "pair_type", "task_type", "unknown_task", "no_task", "shape", "blank",
                          "surrogate"]


@st.composite
def jsonl_line(draw, default_task):
    """(raw bytes without newline, expected outcome) for one JSON line with at most one defect."""
    defect = draw(st.sampled_from(DEFECTS))
    task = draw(st.sampled_from(["qnli", "sst2"]))
    obj = {key: draw(JSON_VALUE) for key in draw(st.lists(EXTRA_KEYS, max_size=3, unique=True))}  # extra fields
    obj["text"] = draw(some_text())
    if PAIR_TASKS[task]:
        obj["text_pair"] = draw(some_text())
    elif draw(st.booleans()):
        obj["text_pair"] = None  # a null pair is a single text
    if default_task != task or draw(st.booleans()):
        obj["task"] = task
    has_id = draw(st.booleans())
    if has_id:
        obj["id"] = draw(IDS)
    if draw(st.booleans()):  # field order does not matter
        obj = dict(reversed(list(obj.items())))
    ensure_ascii = draw(st.booleans())

    def dumps(value):
        try:
            return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: only its JSON escape can be written
            return json.dumps(value).encode("utf-8")

    if defect == "none":
        key = (task, obj["text"], obj.get("text_pair"))
        return dumps(obj), ("ok", "LINE" if not has_id else obj["id"], task, key)
    if defect == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t", b"\r", b"  \t \r"])), ("blank",)
    if defect == "not_utf8":
        raw = dumps(obj)
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(NOT_UTF8) + raw[at:], ("bad", "not UTF-8 text (byte 0x")
    if defect == "latin1":
        obj["text"] = draw(st.sampled_from(["caf\u00e9", "na\u00efve \u00fcber", "\u00a3 5", "\u00ff"]))
        return json.dumps(obj, ensure_ascii=False).encode("latin-1", "replace"), ("bad", "not UTF-8 text (byte 0x")
    if defect == "truncated":
        text = dumps(obj).decode("utf-8")  # cut between characters: still UTF-8, no longer JSON
        return text[:draw(st.integers(1, len(text) - 1))].encode("utf-8"), ("bad", "not valid JSON (")
    if defect == "not_object":
        value = draw(st.one_of(JSON_SCALAR, st.lists(JSON_SCALAR, max_size=3)))
        raw = dumps(value)
        if not raw.strip(b" \t\r\n"):
            raw = b"[]"
        return raw, ("bad", "expected a JSON object")
    if defect == "missing_text":
        del obj["text"]
        return dumps(obj), ("bad", 'missing field "text" (found fields: ')
    if defect == "text_type":
        obj["text"] = draw(st.one_of(st.none(), st.booleans(), st.integers(), st.lists(ANY_TEXT, max_size=2)))
        return dumps(obj), ("bad", "text must be a string, got ")
    if defect == "empty_text":
        obj["text"] = draw(WHITESPACE)
        return dumps(obj), ("bad", "empty text (text)")
    if defect == "empty_pair" and PAIR_TASKS[task]:
        obj["text_pair"] = draw(WHITESPACE)
        return dumps(obj), ("bad", "empty text pair (text_pair)")
    if defect == "pair_type" and PAIR_TASKS[task]:
        obj["text_pair"] = draw(st.one_of(st.booleans(), st.integers(), st.lists(ANY_TEXT, max_size=2)))
        return dumps(obj), ("bad", "text_pair must be a string, got ")
    if defect == "task_type":
        obj["task"] = draw(st.one_of(st.booleans(), st.integers(), st.lists(ANY_TEXT, max_size=2), st.dictionaries(
            ANY_TEXT, ANY_TEXT, max_size=1)))
        return dumps(obj), ("bad", 'field "task" must be a string, got ')
    if defect == "unknown_task":
        obj["task"] = draw(ANY_TEXT.filter(lambda t: t not in PAIR_TASKS))
        return dumps(obj), ("bad", "unknown task ")
    if defect == "no_task" and default_task is None:
        obj.pop("task", None)
        return dumps(obj), ("bad", "no task: pass --task, or give each line a task")
    if defect == "surrogate":
        field = "text_pair" if PAIR_TASKS[task] and draw(st.booleans()) else "text"
        obj[field] = draw(LONE_SURROGATE)
        return dumps(obj), ("bad", f"{field} is not valid Unicode (lone surrogate \\u")
    if defect == "shape":
        if PAIR_TASKS[task]:
            del obj["text_pair"]
            return dumps(obj), ("bad", f"task {task} takes a text pair")
        obj["text_pair"] = draw(some_text())
        return dumps(obj), ("bad", f"task {task} takes a single text")
    key = (task, obj["text"], obj.get("text_pair"))  # a defect that does not apply here: a good line
    return dumps(obj), ("ok", "LINE" if not has_id else obj["id"], task, key)


@st.composite
def jsonl_file(draw):
    default_task = draw(st.sampled_from([None, "qnli", "sst2"]))
    lines = draw(st.lists(jsonl_line(default_task), min_size=1, max_size=40))
    raws = [raw for raw, _ in lines]
    expected = [e if e[:2] != ("ok", "LINE") else ("ok", n, e[2], e[3]) for n, (_, e) in enumerate(lines, start=1)]
    if draw(st.booleans()) and raws[0][:1] == b"{":
        raws[0] = b"\xef\xbb\xbf" + raws[0]  # a byte order mark on line 1 is allowed
    final_newline = draw(st.booleans())
    crlf = draw(st.booleans())
    return default_task, raws, expected, final_newline, crlf


def _write(path, raws, final_newline, crlf):
    end = b"\r\n" if crlf else b"\n"
    path.write_bytes(end.join(raws) + (end if final_newline else b""))


@FUZZ
@given(case=jsonl_file())
def test_fuzzed_json_lines(float_bundle, tmp_path_factory, case):
    default_task, raws, expected, final_newline, crlf = case
    path = tmp_path_factory.mktemp("fuzz") / "in.jsonl"
    _write(path, raws, final_newline, crlf)
    args = ["--batch-size", "3"] + (["--task", default_task] if default_task else [])
    rc, rows, stderr = run(float_bundle, path, *args)
    check_outcomes(raws, expected, rc, rows, stderr, str(path))


# --------------------------------------------------------------------------- TSV

TSV_TEXT = some_text().map(lambda t: t.replace("\t", " ").replace("\n", " ")).filter(lambda t: t.strip())
LAYOUTS = {  # task: (header, text column, pair column or None, id column or None)
    "qnli": (["index", "question", "sentence", "label"], 1, 2, 0),
    "sst2": (["sentence", "label"], 0, None, None),
}


@st.composite
def tsv_row(draw, task):
    header, text_i, pair_i, id_i = LAYOUTS[task]
    fields = [draw(st.text("0123456789", min_size=1, max_size=4)) if i == id_i else "" for i in range(len(header))]
    fields[text_i] = draw(TSV_TEXT)
    if pair_i is not None:
        fields[pair_i] = draw(TSV_TEXT)
    fields[-1] = draw(st.sampled_from(["0", "1", "entailment", ""]))
    defect = draw(st.sampled_from(["none"] * 6 + ["missing", "extra", "empty_text", "empty_pair", "not_utf8",
                                                  "blank"]))
    row_id = fields[id_i] if id_i is not None else "LINE"
    key = (task, fields[text_i], fields[pair_i] if pair_i is not None else None)
    raw = "\t".join(fields).encode("utf-8")
    if defect == "missing":
        del fields[draw(st.integers(0, len(fields) - 1))]
        return "\t".join(fields).encode(), ("bad", f"has {len(fields)} tab-separated columns, the header has "
                                                   f"{len(header)}")
    if defect == "extra":
        fields.insert(draw(st.integers(0, len(fields))), draw(TSV_TEXT))
        return "\t".join(fields).encode(), ("bad", f"has {len(fields)} tab-separated columns, the header has "
                                                   f"{len(header)}")
    if defect == "empty_text":
        fields[text_i] = draw(WHITESPACE.map(lambda t: t.replace("\t", " ")))
        return "\t".join(fields).encode(), ("bad", f"empty text ({header[text_i]})")
    if defect == "empty_pair" and pair_i is not None:
        fields[pair_i] = draw(WHITESPACE.map(lambda t: t.replace("\t", " ")))
        return "\t".join(fields).encode(), ("bad", f"empty text pair ({header[pair_i]})")
    if defect == "not_utf8":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(NOT_UTF8) + raw[at:], ("bad", "not UTF-8 text (byte 0x")
    if defect == "blank":
        return b"", ("blank",)
    return raw, ("ok", row_id, task, key)


@st.composite
def tsv_file(draw):
    task = draw(st.sampled_from(sorted(LAYOUTS)))
    rows = draw(st.lists(tsv_row(task), min_size=1, max_size=40))
    rows = [(raw, ("blank",) if not raw.strip(b" \t\r\n") else e) for raw, e in rows]  # e.g. "\t": blank
    raws = ["\t".join(LAYOUTS[task][0]).encode()] + [raw for raw, _ in rows]
    expected = [("header",)] + [e if e[:2] != ("ok", "LINE") else ("ok", n, e[2], e[3])
                                for n, (_, e) in enumerate(rows, start=2)]
    return task, raws, expected, draw(st.booleans()), draw(st.booleans())


@FUZZ
@given(case=tsv_file())
def test_fuzzed_tsv(float_bundle, tmp_path_factory, case):
    task, raws, expected, final_newline, crlf = case
    path = tmp_path_factory.mktemp("fuzz") / "in.tsv"
    _write(path, raws, final_newline, crlf)
    rc, rows, stderr = run(float_bundle, path, "--task", task, "--batch-size", "4")
    check_outcomes(raws, expected, rc, rows, stderr, str(path))


# --------------------------------------------------------------------------- many lines, streaming, extremes


def _many_lines(n=2000):
    """n small mixed-task lines; every 7th is bad in one of a few ways. (raws, expected)."""
    raws, expected = [], []
    for i in range(1, n + 1):
        task = "qnli" if i % 2 else "sst2"
        obj = {"id": f"r{i}", "task": task, "text": f"line {i % 50} says something {'!' * (i % 13)}"}
        if task == "qnli":
            obj["text_pair"] = f"and its pair {i % 17}"
        if i % 7 == 0:
            kind = (i // 7) % 4
            if kind == 0:
                raws.append(b"{\"id\": \"broken\"")
                expected.append(("bad", "not valid JSON"))
            elif kind == 1:
                raws.append(json.dumps({**obj, "text": " "}).encode())
                expected.append(("bad", "empty text (text)"))
            elif kind == 2:
                raws.append(json.dumps(obj).encode().replace(b"says", b"s\xe4ys"))
                expected.append(("bad", "not UTF-8 text (byte 0xe4"))
            else:
                raws.append(json.dumps({**obj, "task": "mnli"}).encode())
                expected.append(("bad", "unknown task 'mnli'"))
            continue
        raws.append(json.dumps(obj).encode())
        expected.append(("ok", obj["id"], task, (task, obj["text"], obj.get("text_pair"))))
    return raws, expected


def test_two_thousand_lines_from_a_file(float_bundle, tmp_path):
    raws, expected = _many_lines()
    path = tmp_path / "many.jsonl"
    _write(path, raws, True, False)
    rc, rows, stderr = run(float_bundle, path)
    check_outcomes(raws, expected, rc, rows, stderr, str(path))
    assert len(rows) == 2000 - 2000 // 7


def test_two_thousand_lines_from_stdin(float_bundle):
    raws, expected = _many_lines()
    rc, rows, stderr = run(float_bundle, "-", stdin=b"\n".join(raws) + b"\n")
    check_outcomes(raws, expected, rc, rows, stderr, "<stdin>")


def test_extremes_in_one_file(float_bundle, tmp_path):
    """A 300 KB line, a line of NULs, every C0 control, zero-width and combining characters,
    deep JSON in an extra field, JSON nested too deeply to parse, and empty files."""
    cases = [
        {"text": "word " * 60_000, "task": "sst2", "id": "huge"},
        {"text": "\x00" * 100, "task": "sst2", "id": "nul"},
        {"text": "".join(map(chr, range(1, 32))) + "z", "task": "sst2", "id": "c0"},
        {"text": "\u200b\u200c\u200d\u2060", "text_pair": "\u0301" * 500, "task": "qnli", "id": "zw"},
        {"text": "x", "task": "sst2", "id": "deep", "extra": json.loads("[" * 500 + "]" * 500)},
        {"text": "\U0001f600" * 5000, "task": "sst2", "id": "emoji"},
    ]
    raws, expected = [], []
    for n, obj in enumerate(cases, start=1):
        raws.append(json.dumps(obj, ensure_ascii=n % 2 == 0).encode())
        expected.append(("ok", obj["id"], obj["task"], (obj["task"], obj["text"], obj.get("text_pair"))))
    path = tmp_path / "extreme.jsonl"
    _write(path, raws, True, False)
    rc, rows, stderr = run(float_bundle, path)
    check_outcomes(raws, expected, rc, rows, stderr, str(path))

    nested = tmp_path / "nested.jsonl"  # json.loads raises RecursionError, not ValueError
    nested.write_bytes(raws[1] + b"\n" + b'{"text": "x", "task": "sst2", "n": ' + b"[" * 100_000 + b"]" * 100_000
                       + b"}\n" + raws[2] + b"\n")
    check_outcomes([raws[1], b"", raws[2]], [expected[1], ("bad", "not valid JSON"), expected[2]],
                   *run(float_bundle, nested), str(nested))

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert run(float_bundle, empty, "--task", "sst2")[:2] == (0, [])
    blank = tmp_path / "blank.tsv"
    blank.write_bytes(b"\n \n\t\r\n")
    assert run(float_bundle, blank, "--task", "sst2")[:2] == (0, [])


# --------------------------------------------------------------------------- found by the fuzzing
# JSON can carry what UTF-8 cannot: a lone surrogate escape ("\ud800"), which json.loads accepts. Before
# the fix in device/spartan_device/inputs.py and outputs.py, one such line aborted the whole run (exit 3,
# every answer lost) and a field name with a newline split its message over two lines.


def _surrogate_file(tmp_path, middle: dict):
    path = tmp_path / "surrogate.jsonl"
    path.write_text("\n".join([json.dumps({"text": "a good film", "task": "sst2", "id": "before"}),
                               json.dumps(middle),  # ensure_ascii: the surrogate stays an escape
                               json.dumps({"text": "a dull film", "task": "sst2", "id": "after"})]) + "\n")
    return path


@pytest.mark.parametrize("field", ["text", "text_pair"])
def test_lone_surrogate_in_a_text_fails_its_line_only(float_bundle, tmp_path, field):
    line = {"text": "question?", "text_pair": "answer.", "task": "qnli", "id": "middle"}
    line[field] = "bad \ud800 here"
    path = _surrogate_file(tmp_path, line)
    rc, rows, stderr = run(float_bundle, path)
    assert rc == 1
    assert [r["id"] for r in rows] == ["before", "after"]
    assert f"{path}, line 2: {field} is not valid Unicode (lone surrogate \\ud800 at character 5)" in stderr


@pytest.mark.parametrize("bad_id", ["\ud800", "x\udc80"])
@pytest.mark.parametrize("to_file", [False, True])
def test_lone_surrogate_in_an_id_is_answered_escaped(float_bundle, tmp_path, bad_id, to_file):
    path = _surrogate_file(tmp_path, {"text": "fine", "task": "sst2", "id": bad_id})
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "SPARTAN_DEVICE_DEBUG"}
    done = subprocess.run([sys.executable, str(CLIENT), "--bundle", str(float_bundle), "--input", str(path),
                           *(["--output", str(out)] if to_file else [])],
                          capture_output=True, cwd=REPO, env=env, timeout=PER_RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    text = (out.read_bytes() if to_file else done.stdout).decode("utf-8")  # strict: the output is UTF-8
    assert [r["id"] for r in json_lines(text)] == ["before", bad_id, "after"]  # the escape reads back


def test_field_names_cannot_break_the_message_line(float_bundle, tmp_path):
    path = tmp_path / "keys.jsonl"
    path.write_text(json.dumps({"task": "sst2", "a\nb": 1, "\x1b[2J": 2}) + "\n")
    rc, rows, stderr = run(float_bundle, path)
    assert rc == 1 and rows == []
    assert stderr.split("\n")[0] == f'{path}, line 1: missing field "text" (found fields: task, a\\nb, \\u001b[2J)'
    assert stderr.count("\n") == 2 and "\x1b" not in stderr  # the message and the summary, nothing raw
