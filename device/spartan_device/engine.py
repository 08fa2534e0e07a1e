"""Tokenize and run a bundle: embed -> (layer_i -> memory_i)* -> head, or a task's fused graph.

The backbone is loaded once; task files are loaded on first use and cached (a failure is cached
too, so a broken task file is reported per line without retrying). Interpreters and their
signature runners are created once and reused for every batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spartan_device.bundle import Bundle, TaskInfo, verified_path
from spartan_device.errors import DeviceError
from spartan_device.runtime import Runtime, captured_stderr, load_interpreter, signature_runner

GRAPHS = ("split", "fused", "backbone")  # backbone: the shared backbone alone (benchmarks only)


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


def pad(encodings: Sequence) -> Batch:
    """Stack encodings into [B, S] int32 arrays padded with 0 (ids, mask and type ids) to the longest."""
    width = max(len(encoding.ids) for encoding in encodings)
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
    info: TaskInfo
    memories: list  # split graph: one _Signature per layer
    head: _Signature | None
    classify: _Signature | None  # fused graph
    interpreter: object = None  # keeps the runners' interpreter alive


class Engine:
    """Runs the tasks of one bundle with one runtime. ``graph``: "split" (the shared backbone and the
    task's small file), "fused" (the task's optional fused file) or "backbone" (no task: benchmarks)."""

    def __init__(self, bundle: Bundle, runtime: Runtime, threads: int | None = None, graph: str = "split",
                 log: Callable[[str], None] | None = None):
        if graph not in GRAPHS:
            raise DeviceError(f"unknown graph {graph!r}; expected one of: {', '.join(GRAPHS)}")
        self.bundle, self.runtime, self.threads, self.graph = bundle, runtime, threads, graph
        self.log = log or (lambda message: None)
        self.loads: list[str] = []  # files loaded, in order (observable in --verbose and tests)
        self._tasks: dict[str, LoadedTask | DeviceError] = {}
        self.tokenization = Tokenization(verified_path(bundle, bundle.tokenizer, "tokenizer"))
        self.embed, self.layers = None, []
        if graph != "fused":
            self._load_backbone()

    # ----- loading ---------------------------------------------------------------------------
    def _load(self, entry, what: str, weights: str):
        start = time.perf_counter()
        path = verified_path(self.bundle, entry, what)
        interpreter = load_interpreter(self.runtime, path, self.threads, what, weights)
        self.loads.append(entry.file)
        size = path.stat().st_size
        self.log(f"loaded {what} {entry.file} ({size / 1e6:.2f} MB) in {time.perf_counter() - start:.2f} s")
        return path, interpreter

    def _load_backbone(self):
        info = self.bundle.backbone
        path, interpreter = self._load(info.entry, "backbone", info.weights)
        self.embed = _Signature(interpreter, "embed", ("input_ids", "token_type_ids"), path, "backbone")
        self.layers = [_Signature(interpreter, f"layer_{i:02d}", ("hidden", "attention_mask"), path, "backbone")
                       for i in range(info.num_layers)]
        self._backbone_interpreter = interpreter  # keeps the runners' interpreter alive
        found = sorted(key for key in interpreter.get_signature_list() if key.startswith("layer_"))
        if len(found) != info.num_layers:
            raise DeviceError(f"backbone {path}: has {len(found)} layer signatures, but the manifest's num_layers "
                              f"is {info.num_layers}; the manifest does not describe this file")
        self._warm_up("backbone", path, lambda: self.backbone_hidden(_DUMMY))

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
        if info.backbone_fingerprint != self.bundle.backbone.fingerprint:
            raise DeviceError(
                f"{what}: built for another backbone (fingerprint {info.backbone_fingerprint[:19]}...), "
                f"but the bundle's backbone is {self.bundle.backbone.fingerprint[:19]}...; "
                "convert the task together with its backbone")
        if self.graph == "fused":
            if info.fused is None:
                raise DeviceError(f"{what}: the bundle has no fused model for it (convert with --fused)")
            path, interpreter = self._load(info.fused, f"{what} fused model", info.weights)
            classify = _Signature(interpreter, "classify", ("input_ids", "attention_mask", "token_type_ids"),
                                  path, what)
            task = LoadedTask(info, [], None, classify, interpreter)
        else:
            path, interpreter = self._load(info.entry, what, info.weights)
            found = sum(key.startswith("memory_") for key in interpreter.get_signature_list())
            if found != self.bundle.backbone.num_layers:
                raise DeviceError(f"{what} {path}: has {found} memory signatures for a backbone of "
                                  f"{self.bundle.backbone.num_layers} layers (num_layers)")
            memories = [_Signature(interpreter, f"memory_{i:02d}", ("hidden",), path, what)
                        for i in range(self.bundle.backbone.num_layers)]
            head = _Signature(interpreter, "head", ("hidden",), path, what)
            task = LoadedTask(info, memories, head, None, interpreter)
        self._warm_up(what, path, lambda: self.logits(task, _DUMMY))
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
        if task.classify is not None:
            out = task.classify(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                token_type_ids=batch.token_type_ids)
        else:
            hidden = self.embed(input_ids=batch.input_ids, token_type_ids=batch.token_type_ids)
            for layer, memory in zip(self.layers, task.memories):
                hidden = memory(hidden=layer(hidden=hidden, attention_mask=batch.attention_mask))
            out = task.head(hidden=hidden)
        expected = (len(batch.input_ids), task.info.num_outputs)
        if out.shape != expected:
            raise DeviceError(f"task {task.info.name}: the model returned shape {list(out.shape)}, expected "
                              f"{list(expected)} (manifest and task file disagree; re-run convert/to_tflite.py)")
        return out

    def backbone_hidden(self, batch: Batch) -> np.ndarray:
        """The shared backbone alone (embed and every layer, no task): [B, S, H]. For benchmarks."""
        hidden = self.embed(input_ids=batch.input_ids, token_type_ids=batch.token_type_ids)
        for layer in self.layers:
            hidden = layer(hidden=hidden, attention_mask=batch.attention_mask)
        return hidden


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
