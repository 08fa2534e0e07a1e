"""Examples from files, few-shot sampling, tokenization, and tf.data input pipelines.

Sources of examples:
  * GLUE TSV files in the layout that GLUE's ``download_glue_data.py`` writes
    (``<data_dir>/QNLI/train.tsv`` ...): :func:`read_glue_split`, :func:`read_task_file`;
  * tensorflow-datasets ``glue/<task>``: :func:`load_tfds_split`;
  * the user's own ``.tsv`` / ``.csv`` / ``.jsonl`` with columns text, [text_pair,] label:
    :func:`read_custom_file`.
Every bad input raises :class:`SpartanError` naming the file (and 1-based line) and what was expected.
"""

from __future__ import annotations

import csv
import json
import math
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from spartan_tf.errors import SpartanError
from spartan_tf.tasks import CLASSIFICATION, GLUE_TASK_NAMES, REGRESSION, TaskSpec, custom_task

FEATURE_NAMES = ("input_ids", "attention_mask", "token_type_ids")
SPLITS = ("train", "dev")


@dataclass(frozen=True)
class Example:
    """One input: a text (or text pair) and its label (class index, or float score for regression)."""

    text: str
    text_pair: str | None
    label: int | float


# --------------------------------------------------------------------------- GLUE TSV files


@dataclass(frozen=True)
class GlueLayout:
    """Where a GLUE task's files live and which columns / tfds features hold the texts and the label.

    Columns are header names; CoLA's train/dev files have no header, so its columns are 0-based
    indexes into rows of exactly ``num_columns`` fields.
    """

    folder: str
    text: str | int
    text_pair: str | int | None
    label: str | int
    tfds_text: str
    tfds_text_pair: str | None
    dev_file: str = "dev.tsv"
    num_columns: int | None = None


# Column names from GLUE's TSVs; tfds feature names from tensorflow_datasets/text/glue.py.
GLUE_LAYOUTS = {
    "cola": GlueLayout("CoLA", 3, None, 1, "sentence", None, num_columns=4),
    "sst2": GlueLayout("SST-2", "sentence", None, "label", "sentence", None),
    "mrpc": GlueLayout("MRPC", "#1 String", "#2 String", "Quality", "sentence1", "sentence2"),
    "stsb": GlueLayout("STS-B", "sentence1", "sentence2", "score", "sentence1", "sentence2"),
    "qqp": GlueLayout("QQP", "question1", "question2", "is_duplicate", "question1", "question2"),
    "mnli": GlueLayout("MNLI", "sentence1", "sentence2", "gold_label", "premise", "hypothesis",
                       dev_file="dev_matched.tsv"),
    "qnli": GlueLayout("QNLI", "question", "sentence", "label", "question", "sentence"),
    "rte": GlueLayout("RTE", "sentence1", "sentence2", "label", "sentence1", "sentence2"),
    "wnli": GlueLayout("WNLI", "sentence1", "sentence2", "label", "sentence1", "sentence2"),
}


def _glue_layout(task: TaskSpec) -> GlueLayout:
    if task.name not in GLUE_LAYOUTS:
        raise SpartanError(f"task {task.name!r} is not a GLUE task; expected one of: {', '.join(GLUE_TASK_NAMES)}")
    return GLUE_LAYOUTS[task.name]


def glue_split_path(task: TaskSpec, data_dir: str | Path, split: str) -> Path:
    """The file of ``split`` ("train" | "dev"): ``<data_dir>/<Folder>/<file>``, or ``<data_dir>/<file>``
    when ``data_dir`` is the task folder itself (named like ``QNLI``)."""
    layout = _glue_layout(task)
    if split not in SPLITS:
        raise SpartanError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    file_name = "train.tsv" if split == "train" else layout.dev_file
    expected = data_dir / layout.folder / file_name
    if not data_dir.is_dir():
        problem = "is not a directory" if data_dir.exists() else "does not exist"
        raise SpartanError(f"data directory {data_dir} {problem}; expected {expected} (GLUE layout)")
    candidates = [expected]
    if data_dir.name.lower() in (layout.folder.lower(), task.name):  # the task folder itself
        candidates.append(data_dir / file_name)
    for path in candidates:
        if path.is_file():
            return path
    raise SpartanError(f"no {task.name} {split} file: expected {expected} (GLUE layout)")


def read_glue_split(task: TaskSpec, data_dir: str | Path, split: str) -> list[Example]:
    """All examples of a GLUE task's ``split`` ("train" | "dev"; MNLI dev = dev_matched) under ``data_dir``."""
    return read_task_file(task, glue_split_path(task, data_dir, split))


def read_task_file(task: TaskSpec, path: str | Path) -> list[Example]:
    """All examples of one file in the TSV layout of GLUE task ``task`` (e.g. a user's own dev file)."""
    layout = _glue_layout(task)
    path = _existing_file(path)
    rows = _read_delimited(path, delimiter="\t", quoting=csv.QUOTE_NONE)
    if layout.num_columns is None:  # columns located by name in the header
        header, rows = _read_header(path, rows)
        columns = _locate_columns(path, header, layout.text, layout.text_pair, layout.label)
        width = len(header)
    else:
        columns, width = (layout.text, layout.text_pair, layout.label), layout.num_columns
    text_col, pair_col, label_col = columns
    examples = []
    for line, row in rows:
        where = f"{path}, line {line}"
        if len(row) != width:
            raise SpartanError(f"{where}: has {len(row)} tab-separated columns, expected {width}")
        examples.append(Example(
            text=_text(row[text_col], where, "text"),
            text_pair=None if pair_col is None else _text(row[pair_col], where, "text pair"),
            label=_parse_label(row[label_col], task, where, accept_index=True),
        ))
    if not examples:
        raise SpartanError(f"{path}: no examples")
    return examples


# --------------------------------------------------------------------------- custom files


def read_custom_file(path: str | Path, label_names: Sequence[str] | None = None,
                     problem_type: str = CLASSIFICATION,
                     label_column: str = "label") -> tuple[list[Example], tuple[str, ...]]:
    """Examples of a user's ``.tsv`` / ``.csv`` / ``.jsonl`` with fields text, optional text_pair, label.

    Classification: ``label_names=None`` takes the sorted unique label strings of the file as the
    class names (a training file); given names (an eval file), other labels are errors.
    Regression: labels are float scores and the returned names are ``()``.
    Texts must be non-empty; so must text_pair wherever that column/field is present.
    ``.tsv`` is read verbatim (no quoting, like GLUE); ``.csv`` follows the usual CSV quoting rules.
    ``label_column`` names the label column or field (default ``label``).
    Returns (examples, label_names).
    """
    path = _existing_file(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        records = _read_jsonl(path, label_column)
    elif suffix in (".tsv", ".csv"):
        records = _read_table_records(path, suffix, label_column)
    else:
        raise SpartanError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected .tsv, .csv or .jsonl")
    records = list(records)
    if not records:
        raise SpartanError(f"{path}: no examples")

    regression = problem_type == REGRESSION
    if problem_type == CLASSIFICATION and label_names is None:
        label_names = tuple(sorted({_label_string(rec[label_column], f"{path}, line {line}") for line, rec in records}))
        if len(label_names) < 2:
            raise SpartanError(f"{path}: found {len(label_names)} distinct label(s) {list(label_names)}; "
                               "classification needs at least 2")
    task = custom_task(label_names, problem_type)
    examples = []
    for line, rec in records:
        where = f"{path}, line {line}"
        pair = rec.get("text_pair")
        label = rec[label_column] if regression else _label_string(rec[label_column], where)
        examples.append(Example(
            text=_text(rec["text"], where, "text"),
            text_pair=None if pair is None else _text(pair, where, "text_pair"),
            label=_parse_label(label, task, where, accept_index=False),
        ))
    return examples, task.label_names


def _read_table_records(path: Path, suffix: str, label_column: str) -> Iterator[tuple[int, dict]]:
    """(line, {column: value}) for each row of a .tsv (no quoting) or .csv (standard quoting)."""
    if suffix == ".tsv":
        rows = _read_delimited(path, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        rows = _read_delimited(path, delimiter=",", quoting=csv.QUOTE_MINIMAL)
    header, rows = _read_header(path, rows)
    _locate_columns(path, header, "text", None, label_column)  # fails early naming a missing column
    for line, row in rows:
        if len(row) != len(header):
            raise SpartanError(f"{path}, line {line}: has {len(row)} columns, expected {len(header)} "
                               f"({', '.join(header)})")
        yield line, dict(zip(header, row))


def _read_jsonl(path: Path, label_column: str) -> Iterator[tuple[int, dict]]:
    """(line, object) for each non-blank line of a JSON-lines file; text and the label are required."""
    with _open_text(path) as f:
        for line, raw in enumerate(_decoded_lines(path, f), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as err:
                raise SpartanError(f"{path}, line {line}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise SpartanError(f"{path}, line {line}: expected a JSON object with text and label")
            for key in ("text", label_column):
                if key not in record:
                    raise SpartanError(f"{path}, line {line}: missing field {key!r}; "
                                       f"found fields: {', '.join(record) or '(none)'}")
            yield line, record


# --------------------------------------------------------------------------- shared parsing helpers


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise SpartanError(f"{path} not found" if not path.exists() else f"{path} is not a file")
    return path


def _open_text(path: Path):
    # utf-8-sig drops a byte-order mark (GLUE's MRPC files start with one, as do Excel CSVs).
    return open(path, encoding="utf-8-sig", newline="")


def _decoded_lines(path: Path, lines: Iterator[str]) -> Iterator[str]:
    try:
        yield from lines
    except UnicodeDecodeError:
        raise SpartanError(f"{path}: is not UTF-8 text") from None


def _read_delimited(path: Path, delimiter: str, quoting: int) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each non-blank record."""
    with _open_text(path) as f:
        reader = csv.reader(_decoded_lines(path, f), delimiter=delimiter, quoting=quoting, strict=True)
        line = 1
        try:
            for row in reader:
                if row:
                    yield line, row
                line = reader.line_num + 1
        except csv.Error as err:
            raise SpartanError(f"{path}, line {line}: cannot parse ({err})") from None


def _read_header(path: Path, rows: Iterator[tuple[int, list[str]]]) -> tuple[list[str], Iterator]:
    first = next(rows, None)
    if first is None:
        raise SpartanError(f"{path}: no examples (the file is empty)")
    return [name.strip() for name in first[1]], rows


def _locate_columns(path: Path, header: list[str], *names: str | None) -> tuple[int | None, ...]:
    """0-based index of each named column (None stays None); SpartanError naming a missing one."""
    for name in names:
        if name is not None and name not in header:
            raise SpartanError(f"{path}: missing column {name!r}; found columns: {', '.join(header)}")
    return tuple(None if name is None else header.index(name) for name in names)


def _text(value, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise SpartanError(f"{where}: {what} must be a string, got {value!r}")
    if not value.strip():
        raise SpartanError(f"{where}: empty {what}")
    return value


def _label_string(value, where: str) -> str:
    """A class label as text: JSON may give 0/1 as numbers."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise SpartanError(f"{where}: label must be a string or an integer, got {value!r}")


def _parse_label(value, task: TaskSpec, where: str, accept_index: bool) -> int | float:
    """A class index (by name, or by index "0".."K-1" when accept_index) or a finite float score."""
    if task.is_regression:
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = math.nan
        if isinstance(value, bool) or not math.isfinite(score):
            raise SpartanError(f"{where}: score {value!r} is not a finite number")
        return score
    value = value.strip()
    if value in task.label_names:
        return task.label_names.index(value)
    if accept_index and value.isdigit() and int(value) < len(task.label_names):
        return int(value)
    expected = ", ".join(task.label_names)
    if accept_index:
        expected += f" (or an index 0..{len(task.label_names) - 1})"
    raise SpartanError(f"{where}: unknown label {value!r}; expected one of: {expected}")


# --------------------------------------------------------------------------- tensorflow-datasets

_TFDS_SPLITS = {"train": "train", "dev": "validation"}
_REACHABILITY_TIMEOUT_S = 5.0


def load_tfds_split(task: TaskSpec, split: str, data_dir: str | Path | None = None) -> list[Example]:
    """All examples of ``split`` ("train" | "dev"; MNLI dev = validation_matched) of tfds ``glue/<task>``.

    If the dataset is not prepared in ``data_dir`` (tfds' default when None), its download host must
    answer within a few seconds; otherwise SpartanError (tfds itself would retry for minutes).
    """
    import tensorflow_datasets as tfds  # slow to import; only this function needs it

    layout = _glue_layout(task)
    if split not in SPLITS:
        raise SpartanError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    name = f"glue/{task.name}"
    tfds_split = "validation_matched" if (task.name, split) == ("mnli", "dev") else _TFDS_SPLITS[split]
    builder = tfds.builder(name, data_dir=None if data_dir is None else str(data_dir))
    if not builder.is_prepared():
        url = builder.builder_config.data_url or "https://dl.fbaipublicfiles.com/"  # MRPC: no zip, same host
        host = urlparse(url).hostname
        if not _reachable(url):
            raise SpartanError(f"cannot download {name} with tensorflow-datasets: {host} is unreachable; "
                               "pass --data-dir DIR with GLUE's TSV files")
        builder.download_and_prepare()
    examples = []
    for record in tfds.as_numpy(builder.as_dataset(split=tfds_split)):
        pair = record[layout.tfds_text_pair].decode("utf-8") if layout.tfds_text_pair else None
        label = float(record["label"]) if task.is_regression else int(record["label"])
        examples.append(Example(record[layout.tfds_text].decode("utf-8"), pair, label))
    return examples


def _reachable(url: str, timeout: float = _REACHABILITY_TIMEOUT_S) -> bool:
    """Whether ``url``'s server answers (any HTTP status) within ``timeout`` seconds, proxies included.

    Runs in a daemon thread so that a hanging DNS lookup cannot exceed the timeout either.
    """
    answered = threading.Event()

    def probe():
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                answered.set()
        except urllib.error.HTTPError:  # the server answered, with an error status
            answered.set()
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return answered.is_set()


# --------------------------------------------------------------------------- few-shot sampling


def few_shot_sample(examples: Sequence[Example], n: int, seed: int, task: TaskSpec) -> list[Example]:
    """A seeded sample of ``n`` examples, returned in their original order.

    Classification: class-balanced, n // K per class for the K classes present; the remainder goes to
    classes picked at random (seeded); a class with too few examples gives all it has and the others
    share its deficit evenly. Regression: a seeded uniform sample. ``n >= len(examples)``: all of them.
    """
    if n <= 0:
        raise SpartanError(f"few-shot size must be positive, got {n}")
    if n >= len(examples):
        return list(examples)
    rng = np.random.default_rng(seed)
    if task.is_regression:
        chosen = rng.choice(len(examples), size=n, replace=False)
        return [examples[i] for i in sorted(chosen)]

    by_class: dict[int, list[int]] = {}
    for i, example in enumerate(examples):
        by_class.setdefault(example.label, []).append(i)
    classes = sorted(by_class)
    quota = dict.fromkeys(classes, 0)
    open_classes = [classes[i] for i in rng.permutation(len(classes))]  # who gets remainders first
    left = n
    while left > 0:  # terminates: each round places all of `left` or fills at least one class
        share, extra = divmod(left, len(open_classes))
        for rank, label in enumerate(open_classes):
            give = min(share + (rank < extra), len(by_class[label]) - quota[label])
            quota[label] += give
            left -= give
        open_classes = [label for label in open_classes if quota[label] < len(by_class[label])]
    chosen = []
    for label in classes:
        chosen.extend(rng.permutation(by_class[label])[: quota[label]].tolist())
    return [examples[i] for i in sorted(chosen)]


# --------------------------------------------------------------------------- tokenization and tf.data


def encode(tokenizer, examples: Sequence[Example]) -> dict[str, list[list[int]]]:
    """Token ids, attention mask and token type ids of each example, unpadded.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` set up by the caller with ``no_padding()`` and
    ``enable_truncation(max_length)`` (longest_first). Returns {feature name: N lists of length L_i}.
    """
    if tokenizer.padding is not None:
        raise ValueError("call tokenizer.no_padding() first: make_dataset pads each batch itself")
    if tokenizer.truncation is None:
        raise ValueError("call tokenizer.enable_truncation(max_length) first")
    inputs = [ex.text if ex.text_pair is None else (ex.text, ex.text_pair) for ex in examples]
    encodings = tokenizer.encode_batch(inputs)
    return {
        "input_ids": [enc.ids for enc in encodings],
        "attention_mask": [enc.attention_mask for enc in encodings],
        "token_type_ids": [enc.type_ids for enc in encodings],
    }


def length_order(encoded: dict[str, list]) -> np.ndarray:
    """Example indexes sorted by token count (stable): the order of ``make_dataset(order_by_length=True)``."""
    return np.argsort([len(mask) for mask in encoded["attention_mask"]], kind="stable")


def make_dataset(encoded: dict[str, list], labels: Sequence[int | float], batch_size: int,
                 shuffle: bool, seed: int, task: TaskSpec, order_by_length: bool = False):
    """Batches of (features, labels); each batch is padded with 0 to its own longest sequence.

    ``encoded``: {feature name: N rows}, a row a list of L_i ints (as ``encode`` gives) or an array
    [L_i, ...] (the frozen layers' states, see frozen_prefix.py); it must hold ``attention_mask``.
    features: the same names, int32 [B, S] (or the arrays' dtype, [B, S, ...]); labels [B] int32 for
    classification, float32 for regression. ``shuffle`` reshuffles every epoch (deterministic for a
    seed). ``order_by_length`` (evaluation) batches similar lengths together to cut padding; element i
    is then example ``length_order(encoded)[i]``; labels still travel with their features.
    """
    import tensorflow as tf  # imported here so that reading files never pays for (or logs) TensorFlow

    if shuffle and order_by_length:
        raise ValueError("shuffle and order_by_length exclude each other")
    if len(labels) != len(encoded["attention_mask"]) or len(labels) == 0:
        raise ValueError(f"need one label per example, got {len(labels)} labels for "
                         f"{len(encoded['attention_mask'])} examples")
    order = length_order(encoded) if order_by_length else np.arange(len(labels))
    lengths = np.array([len(encoded["attention_mask"][i]) for i in order], dtype=np.int64)
    features = {name: tf.RaggedTensor.from_row_lengths(_rows_end_to_end(rows, order, lengths.sum()), lengths)
                for name, rows in encoded.items()}
    label_dtype = np.float32 if task.is_regression else np.int32
    dataset = tf.data.Dataset.from_tensor_slices((features, np.asarray(labels, dtype=label_dtype)[order]))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    # A ragged batch -> dense [B, S] with S = this batch's longest sequence, padded with 0.
    dataset = dataset.ragged_batch(batch_size).map(
        lambda feats, y: ({name: value.to_tensor() for name, value in feats.items()}, y))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _rows_end_to_end(rows: list, order: np.ndarray, total: int) -> np.ndarray:
    """``rows[i]`` for i in ``order``, joined along their first axis: int32 [total] from lists of ints,
    or the arrays' own dtype [total, ...]."""
    if isinstance(rows[0], np.ndarray):
        return np.concatenate([rows[i] for i in order])
    return np.fromiter((t for i in order for t in rows[i]), dtype=np.int32, count=total)
