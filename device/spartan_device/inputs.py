"""Input records from JSON lines or a GLUE-layout TSV, line by line, so one bad line never stops a file.

JSON lines: an object per line with ``text``, optional ``text_pair``, ``id``, ``task``.
TSV: a header, then tab-separated rows (no quoting, as GLUE's files). The text columns are, in this
order of preference, the first pair whose first column is in the header (the second is used when
present): text/text_pair, question/sentence (QNLI), sentence1/sentence2 (RTE, MNLI, STS-B, WNLI),
question1/question2 (QQP), "#1 String"/"#2 String" (MRPC), premise/hypothesis, sentence (SST-2,
CoLA's test file). ``--columns A[,B]`` overrides the rule. CoLA's header-less train/dev files (4
columns, text last) are recognised when the task is cola. An ``id``/``index``/``idx`` column gives
ids and a ``task`` column gives each row's task. Ids default to the line number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from spartan_device.errors import DeviceError

TEXT_COLUMNS = (
    ("text", "text_pair"), ("question", "sentence"), ("sentence1", "sentence2"), ("question1", "question2"),
    ("#1 String", "#2 String"), ("premise", "hypothesis"), ("sentence", None),
)
ID_COLUMNS = ("id", "index", "idx")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
TSV_SUFFIXES = (".tsv", ".tab")
FORMATS = ("auto", "jsonl", "tsv")


@dataclass(frozen=True)
class Record:
    """One text (or text pair) to classify; ``line`` is its 1-based line in the input."""

    line: int
    id: object
    task: str | None
    text: str
    text_pair: str | None


@dataclass(frozen=True)
class BadLine:
    line: int
    message: str


def read_records(lines: Iterable[bytes], name: str, fmt: str = "auto", default_task: str | None = None,
                 columns: tuple[str, ...] | None = None) -> Iterator[Record | BadLine]:
    """Records and bad lines of an input, in order. ``lines``: raw lines (bytes, with or without
    terminators). DeviceError for problems of the whole input (no header, no text column)."""
    numbered = _non_blank(lines)
    first = next(numbered, None)
    if first is None:
        return
    fmt = detect_format(name, fmt, first[1])
    items = _chain(first, numbered)
    if fmt == "jsonl":
        yield from _jsonl(items, default_task)
    else:
        yield from _tsv(items, name, default_task, columns)


def detect_format(name: str, fmt: str, first: bytes) -> str:
    if fmt != "auto":
        return fmt
    lower = name.lower()
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if lower.endswith(TSV_SUFFIXES):
        return "tsv"
    return "jsonl" if first.lstrip(b"\xef\xbb\xbf \t").startswith(b"{") else "tsv"


# --------------------------------------------------------------------------- JSON lines


def _jsonl(items, default_task) -> Iterator[Record | BadLine]:
    for line, raw in items:
        text = _decode(line, raw)
        if isinstance(text, BadLine):
            yield text
            continue
        try:
            obj = json.loads(text)
        except ValueError as err:
            yield BadLine(line, f"not valid JSON ({getattr(err, 'msg', err)} at column {getattr(err, 'colno', '?')})")
            continue
        except RecursionError:
            yield BadLine(line, "not valid JSON here (nested too deeply)")
            continue
        if not isinstance(obj, dict):
            yield BadLine(line, 'expected a JSON object like {"text": "..."}')
            continue
        if "text" not in obj:
            found = ", ".join(shown(key) for key in obj) or "none"
            yield BadLine(line, f'missing field "text" (found fields: {found})')
            continue
        task = obj.get("task", default_task)
        if task is not None and not isinstance(task, str):
            yield BadLine(line, f'field "task" must be a string, got {task!r}')
            continue
        yield make_record(line, obj.get("id", line), task, obj["text"], obj.get("text_pair"), "text", "text_pair")


# --------------------------------------------------------------------------- TSV


def _tsv(items, name, default_task, columns) -> Iterator[Record | BadLine]:
    header_line, raw_header = next(items)
    header_text = _decode(header_line, raw_header)
    if isinstance(header_text, BadLine):
        raise DeviceError(f"{name}, line {header_line}: the TSV header {header_text.message}")
    header = [column.strip() for column in header_text.split("\t")]
    try:
        text_col, pair_col = _text_columns(header, columns)
    except DeviceError as err:
        if columns is None and (default_task or "").lower() == "cola" and len(header) == 4:
            # CoLA's train/dev files: source, label, original label, sentence; no header.
            yield from _rows(_chain((header_line, raw_header), items), None, 3, None, None, None, default_task)
            return
        raise DeviceError(f"{name}: {err}") from None
    id_col = next((header.index(c) for c in ID_COLUMNS if c in header), None)
    task_col = header.index("task") if "task" in header else None
    yield from _rows(items, header, header.index(text_col), pair_col and header.index(pair_col),
                     id_col, task_col, default_task)


def _text_columns(header: list[str], columns: tuple[str, ...] | None) -> tuple[str, str | None]:
    if columns is not None:
        missing = [c for c in columns if c not in header]
        if missing:
            raise DeviceError(f"--columns: no column {missing[0]!r} in the header (found: {', '.join(map(shown, header))})")
        return columns[0], columns[1] if len(columns) > 1 else None
    for text, pair in TEXT_COLUMNS:
        if text in header:
            return text, pair if pair in header else None
    known = ", ".join(text for text, _ in TEXT_COLUMNS)
    raise DeviceError(f"no text column in the TSV header (found: {', '.join(map(shown, header)) or 'nothing'}); "
                      f"expected one of: {known}; or pass --columns NAME[,PAIR_NAME]")


def _rows(items, header, text_i, pair_i, id_i, task_i, default_task) -> Iterator[Record | BadLine]:
    width = len(header) if header is not None else 4
    what = "the header has" if header is not None else "CoLA's layout has"
    for line, raw in items:
        text = _decode(line, raw)
        if isinstance(text, BadLine):
            yield text
            continue
        fields = text.split("\t")
        if len(fields) != width:
            yield BadLine(line, f"has {len(fields)} tab-separated columns, {what} {width}")
            continue
        task = fields[task_i].strip() if task_i is not None and fields[task_i].strip() else default_task
        record_id = fields[id_i] if id_i is not None else line
        text_name = header[text_i] if header else f"column {text_i + 1}"
        pair_name = header[pair_i] if header and pair_i is not None else None
        yield make_record(line, record_id, task, fields[text_i], None if pair_i is None else fields[pair_i],
                      text_name, pair_name)


# --------------------------------------------------------------------------- shared


def make_record(line, record_id, task, text, pair, text_name, pair_name) -> Record | BadLine:
    if not isinstance(text, str):
        return BadLine(line, f"{text_name} must be a string, got {text!r}")
    if not text.strip():
        return BadLine(line, f"empty text ({text_name})")
    if pair is not None:
        if not isinstance(pair, str):
            return BadLine(line, f"{pair_name} must be a string, got {pair!r}")
        if not pair.strip():
            return BadLine(line, f"empty text pair ({pair_name})")
    for value, name in ((text, text_name), (pair, pair_name)):
        problem = _not_unicode(value)
        if problem:
            return BadLine(line, f"{name} {problem}")
    if task is None:
        return BadLine(line, "no task: pass --task, or give each line a task")
    return Record(line, record_id, task, text, pair)


def shown(name: str) -> str:
    """A user-given name, safe on one terminal line: printable as is, else escaped like JSON."""
    return name if name.isprintable() else json.dumps(name)[1:-1]


def _not_unicode(value: str | None) -> str | None:
    """What is wrong with a text UTF-8 cannot encode (JSON allows lone surrogates like \\ud800)."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"is not valid Unicode (lone surrogate \\u{ord(value[err.start]):04x} at character {err.start + 1})"
    return None


def _decode(line: int, raw: bytes) -> str | BadLine:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return BadLine(line, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at position {err.start + 1})")
    if line == 1:
        text = text.removeprefix("\ufeff")
    return text.rstrip("\r\n")


def _non_blank(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(lines, start=1):
        if raw.strip(b" \t\r\n"):
            yield number, raw


def _chain(first, rest):
    yield first
    yield from rest
