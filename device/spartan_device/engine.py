"""Tokenize and run a bundle: a shared task as its shared graph's one invocation with the task's
tensors (shared.py), a whole task as its own ``classify`` graph.

Files are loaded on first use and cached: a shared graph when a task of it is first asked for
(once, whatever the number of its tasks), each task file when its task is first asked for. A
failure is cached too, so a broken file is reported per line without retrying. Switching tasks
never reloads a graph: the next task's tensors are set into it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spartan_device.bundle import SHARED, Bundle, TaskInfo, verified_path
from spartan_device.errors import DeviceError
from spartan_device.runtime import Runtime, captured_stderr, load_interpreter, release_file_pages, signature_runner
from spartan_device.shared import SharedGraph, TaskTensors


@dataclass
class Batch:
    """Padded model inputs, int32 [B, S] each, S = the batch's longest sequence."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


class Tokenization:
    """The bundle's tokenizer.json, used as in training: no padding, longest-first truncation to the
    task's max_length, pairs through the post-processor ([CLS] a [SEP] b [SEP], type ids 0/1)."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        try:
            self._json = path.read_text(encoding="utf-8")
            Tokenizer.from_str(self._json)
        except Exception as err:
            raise DeviceError(f"tokenizer {path}: cannot load it ({err})") from None
        self._by_length = {}

    def tokenizer(self, max_length: int):
        if max_length not in self._by_length:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_str(self._json)
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
            self._by_length[max_length] = tokenizer
        return self._by_length[max_length]

    def encode(self, items: Sequence[tuple[str, str | None]], max_length: int) -> list:
        """One ``tokenizers.Encoding`` per (text, text_pair or None)."""
        inputs = [text if pair is None else (text, pair) for text, pair in items]
        return self.tokenizer(max_length).encode_batch(inputs)


def pad(encodings: Sequence, width: int | None = None) -> Batch:
    """Stack encodings into [B, S] int32 arrays padded with 0 (ids, mask and type ids) to the longest,
    or to ``width`` (S = width; no encoding may be longer)."""
    width = width or max(len(encoding.ids) for encoding in encodings)
    arrays = [np.zeros((len(encodings), width), dtype=np.int32) for _ in range(3)]
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        arrays[0][row, :n] = encoding.ids
        arrays[1][row, :n] = encoding.attention_mask
        arrays[2][row, :n] = encoding.type_ids
    return Batch(*arrays)


_DUMMY = Batch(*(np.array([[101, 102]], dtype=np.int32), np.ones((1, 2), np.int32), np.zeros((1, 2), np.int32)))


class _Signature:
    """A signature runner checked against the names of docs/bundle-format.md; returns its one output."""

    def __init__(self, interpreter, key: str, inputs: Sequence[str], path: Path, what: str):
        self.runner = signature_runner(interpreter, key, path, what)
        found = set(self.runner.get_input_details())
        if found != set(inputs):
            raise DeviceError(f"{what} {path}: signature {key!r} takes {sorted(found)}, expected {sorted(inputs)} "
                              "(see docs/bundle-format.md)")
        outputs = list(self.runner.get_output_details())
        if len(outputs) != 1:
            raise DeviceError(f"{what} {path}: signature {key!r} has {len(outputs)} outputs, expected 1")
        self.output = outputs[0]

    def __call__(self, **inputs) -> np.ndarray:
        return self.runner(**inputs)[self.output]


@dataclass
class LoadedTask:
    """A task ready to run: shared (``graph`` + ``tensors``) or whole (its one ``classify`` graph)."""

    info: TaskInfo
    graph: SharedGraph | None = None
    tensors: TaskTensors | None = None
    classify: _Signature | None = None
    interpreter: object = None  # keeps a whole task's runner's interpreter alive
    fixed_shape: tuple | None = None  # a whole graph exported with a fixed [batch, length] input


class Engine:
    """Runs the tasks of one bundle with one runtime."""

    def __init__(self, bundle: Bundle, runtime: Runtime, threads: int | None = None,
                 log: Callable[[str], None] | None = None):
        self.bundle, self.runtime, self.threads = bundle, runtime, threads
        self.log = log or (lambda message: None)
        self.loads: list[str] = []  # files loaded, in order (observable in --verbose and tests)
        self._tasks: dict[str, LoadedTask | DeviceError] = {}
        self._graphs: dict[str, SharedGraph | DeviceError] = {}
        self.tokenization = Tokenization(verified_path(bundle, bundle.tokenizer, "tokenizer"))

    # ----- loading ---------------------------------------------------------------------------
    def _load(self, entry, what: str, weights: str):
        start = time.perf_counter()
        path = verified_path(self.bundle, entry, what)
        interpreter = load_interpreter(self.runtime, path, self.threads, what, weights)
        self.loads.append(entry.file)
        size = path.stat().st_size
        self.log(f"loaded {what} {entry.file} ({size / 1e6:.2f} MB) in {time.perf_counter() - start:.2f} s")
        return path, interpreter

    def graph(self, name: str) -> SharedGraph:
        """The shared graph ``name``, loaded on first use and cached; DeviceError (also cached) if it
        cannot be used."""
        cached = self._graphs.get(name)
        if cached is None:
            try:
                info = self.bundle.graphs[name]
                path, interpreter = self._load(info.entry, f"shared graph {name}", self.bundle.backbone.weights)
                cached = SharedGraph(interpreter, path, f"shared graph {name}")
            except DeviceError as err:
                cached = err
            self._graphs[name] = cached
        if isinstance(cached, DeviceError):
            raise DeviceError(str(cached))  # a fresh exception, as in task()
        return cached

    def task(self, name: str) -> LoadedTask:
        """The task, loaded on first use and cached; DeviceError (also cached) if it cannot be used."""
        cached = self._tasks.get(name)
        if cached is None:
            try:
                cached = self._load_task(name)
            except DeviceError as err:
                cached = err
            self._tasks[name] = cached
        if isinstance(cached, DeviceError):
            raise DeviceError(str(cached))  # a fresh exception: re-raising one object grows its traceback
        return cached

    def _load_task(self, name: str) -> LoadedTask:
        info = self.bundle.task(name)
        what = f"task {name}"
        if info.deployment == SHARED:
            # a shared task runs on the bundle's backbone; a whole task carries its own
            if info.backbone_fingerprint != self.bundle.backbone.fingerprint:
                raise DeviceError(
                    f"{what}: built for another backbone (fingerprint {info.backbone_fingerprint[:19]}...), "
                    f"but the bundle's backbone is {self.bundle.backbone.fingerprint[:19]}...; "
                    "convert the task together with its backbone")
            graph = self.graph(info.graph)
            start = time.perf_counter()
            path = verified_path(self.bundle, info.entry, what)
            tensors = TaskTensors(path, what)
            graph.check(tensors, what, path)
            self.loads.append(info.entry.file)
            self.log(f"loaded {what} {info.entry.file} ({path.stat().st_size / 1e3:.0f} KB) in "
                     f"{1000 * (time.perf_counter() - start):.1f} ms")
            task = LoadedTask(info, graph=graph, tensors=tensors)
        else:
            path, interpreter = self._load(info.entry, what, info.weights)
            classify = _Signature(interpreter, "classify", ("input_ids", "attention_mask", "token_type_ids"),
                                  path, what)
            shape = tuple(int(d) for d in classify.runner.get_input_details()["input_ids"]["shape_signature"])
            fixed = shape if len(shape) == 2 and min(shape) > 0 else None  # -1: a dynamic dimension
            task = LoadedTask(info, classify=classify, interpreter=interpreter, fixed_shape=fixed)
        self._warm_up(what, path, lambda: self.logits(task, _DUMMY))
        # Prepared and run once: the graph file's pages the runtime has copied need not stay resident.
        release_file_pages(task.graph.path if task.graph is not None else path)
        return task

    def _warm_up(self, what: str, path: Path, call):
        """Run a 1 x 2 dummy batch once: the runtime prepares its kernels (and prints its one-time
        log lines, captured here), and a file the runtime cannot execute fails now, by name."""
        failure = None
        with captured_stderr() as chatter:
            try:
                call()
            except (RuntimeError, ValueError) as err:
                failure = err
        if failure is not None:
            detail = " ".join(f"{failure} {chatter.text}".split())
            raise DeviceError(f"{what} {path}: {self.runtime} cannot run it ({detail[:300]})")

    # ----- running ---------------------------------------------------------------------------
    def encode(self, info: TaskInfo, items: Sequence[tuple[str, str | None]]) -> list:
        return self.tokenization.encode(items, info.max_length)

    def logits(self, task: LoadedTask, batch: Batch) -> np.ndarray:
        """Float32 logits [B, num_outputs] of one padded batch."""
        if task.graph is not None:
            out = task.graph.run(batch.input_ids, batch.attention_mask, batch.token_type_ids, task.info.name,
                                 task.tensors)
        elif task.fixed_shape is not None:
            out = self._fixed_logits(task, batch)
        else:
            out = task.classify(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                token_type_ids=batch.token_type_ids)
        expected = (len(batch.input_ids), task.info.num_outputs)
        if out.shape != expected:
            raise DeviceError(f"task {task.info.name}: the model returned shape {list(out.shape)}, expected "
                              f"{list(expected)} (manifest and task file disagree; re-run convert/to_tflite.py)")
        return out


    @staticmethod
    def _fixed_logits(task: LoadedTask, batch: Batch) -> np.ndarray:
        """A graph with a fixed [rows, length] input (e.g. a fixed-128 export): each slice of ``rows``
        texts padded with zeros (mask 0) to ``length``."""
        rows, length = task.fixed_shape
        if batch.input_ids.shape[1] > length:
            raise DeviceError(f"task {task.info.name}: its graph takes {length} tokens at most, the batch has "
                              f"{batch.input_ids.shape[1]}")
        out = []
        for start in range(0, len(batch.input_ids), rows):
            arrays = []
            for array in (batch.input_ids, batch.attention_mask, batch.token_type_ids):
                part = array[start:start + rows]
                arrays.append(np.pad(part, ((0, rows - len(part)), (0, length - array.shape[1]))))
            logits = task.classify(input_ids=arrays[0], attention_mask=arrays[1], token_type_ids=arrays[2])
            out.append(logits[:len(batch.input_ids[start:start + rows])])
        return np.concatenate(out)


def scores(info: TaskInfo, logits: np.ndarray) -> list[dict]:
    """Per row: {"label", "scores", "logits"}: softmax probabilities by label name, or the regression score."""
    results = []
    logits = np.asarray(logits, dtype=np.float64)
    for row in logits:
        if info.is_regression:
            value = round(float(row[0]), 6)
            results.append({"label": value, "scores": {"score": value}, "logits": [value]})
            continue
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        best = int(np.argmax(row))
        results.append({
            "label": info.label_names[best],
            "scores": {name: round(float(p), 6) for name, p in zip(info.label_names, probs)},
            "logits": [round(float(x), 6) for x in row],
        })
    return results
