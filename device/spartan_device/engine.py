"""Tokenize and run a bundle: a split task as embed -> (layer_i -> memory_i)* -> head over the shared
backbone, a whole task (or a split task's fused file) as its one ``classify`` graph.

Files are loaded on first use and cached: the backbone when a split task (or --graph backbone)
first needs it, each task file when its task is first asked for. A failure is cached too, so a
broken file is reported per line without retrying. Interpreters and their signature runners are
created once and reused for every batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spartan_device.bundle import SPLIT, Bundle, TaskInfo, verified_path
from spartan_device.errors import DeviceError
from spartan_device.graphs import CHAINED, GRAPHS, task_graph
from spartan_device.runtime import Runtime, captured_stderr, load_interpreter, signature_runner


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
class LoadedBackbone:
    """backbone.tflite's signatures: embed, then layer_00 ... layer_{L-1}."""

    embed: _Signature
    layers: list[_Signature]
    interpreter: object  # keeps the runners' interpreter alive

    def hidden(self, batch: Batch) -> np.ndarray:
        """The backbone alone (embed and every layer, no task): float32 [B, S, H]."""
        hidden = self.embed(input_ids=batch.input_ids, token_type_ids=batch.token_type_ids)
        for layer in self.layers:
            hidden = layer(hidden=hidden, attention_mask=batch.attention_mask)
        return hidden


@dataclass
class LoadedTask:
    """A task ready to run: chained (``backbone`` + ``memories`` + ``head``) or one ``classify`` graph."""

    info: TaskInfo
    memories: list  # chained: one _Signature per layer
    head: _Signature | None
    classify: _Signature | None  # a whole task's file or a split task's fused file
    interpreter: object = None  # keeps the runners' interpreter alive
    backbone: LoadedBackbone | None = None  # chained only


class Engine:
    """Runs the tasks of one bundle with one runtime. ``graph`` (see graphs.py): "auto" (each task as
    deployed), "split", "fused", or "backbone" (no task: benchmarks)."""

    def __init__(self, bundle: Bundle, runtime: Runtime, threads: int | None = None, graph: str = "auto",
                 log: Callable[[str], None] | None = None):
        if graph not in GRAPHS:
            raise DeviceError(f"unknown graph {graph!r}; expected one of: {', '.join(GRAPHS)}")
        self.bundle, self.runtime, self.threads, self.graph = bundle, runtime, threads, graph
        self.log = log or (lambda message: None)
        self.loads: list[str] = []  # files loaded, in order (observable in --verbose and tests)
        self._tasks: dict[str, LoadedTask | DeviceError] = {}
        self._backbone: LoadedBackbone | DeviceError | None = None
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

    def backbone(self, needed_by: str) -> LoadedBackbone:
        """backbone.tflite, loaded on first use and cached; DeviceError (also cached) if it cannot be
        used. ``needed_by`` names the user for a bundle without the file ("split task qnli")."""
        if self.bundle.backbone.entry is None:
            raise DeviceError(f"the bundle has no backbone file, which {needed_by} needs; "
                              "re-run convert/to_tflite.py")
        if self._backbone is None:
            try:
                self._backbone = self._load_backbone()
            except DeviceError as err:
                self._backbone = err
        if isinstance(self._backbone, DeviceError):
            raise DeviceError(str(self._backbone))  # a fresh exception, as in task()
        return self._backbone

    def _load_backbone(self) -> LoadedBackbone:
        info = self.bundle.backbone
        path, interpreter = self._load(info.entry, "backbone", info.weights)
        embed = _Signature(interpreter, "embed", ("input_ids", "token_type_ids"), path, "backbone")
        layers = [_Signature(interpreter, f"layer_{i:02d}", ("hidden", "attention_mask"), path, "backbone")
                  for i in range(info.num_layers)]
        found = sorted(key for key in interpreter.get_signature_list() if key.startswith("layer_"))
        if len(found) != info.num_layers:
            raise DeviceError(f"backbone {path}: has {len(found)} layer signatures, but the manifest's num_layers "
                              f"is {info.num_layers}; the manifest does not describe this file")
        backbone = LoadedBackbone(embed, layers, interpreter)
        self._warm_up("backbone", path, lambda: backbone.hidden(_DUMMY))
        return backbone

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
        # a split task runs on (or, fused, was built with) the bundle's backbone; a whole task carries its own
        if info.deployment == SPLIT and info.backbone_fingerprint != self.bundle.backbone.fingerprint:
            raise DeviceError(
                f"{what}: built for another backbone (fingerprint {info.backbone_fingerprint[:19]}...), "
                f"but the bundle's backbone is {self.bundle.backbone.fingerprint[:19]}...; "
                "convert the task together with its backbone")
        graph = task_graph(info, self.graph)
        if graph.kind == CHAINED:
            backbone = self.backbone(f"split task {name}")
            path, interpreter = self._load(graph.entry, graph.what, info.weights)
            layers = self.bundle.backbone.num_layers
            found = sum(key.startswith("memory_") for key in interpreter.get_signature_list())
            if found != layers:
                raise DeviceError(f"{what} {path}: has {found} memory signatures for a backbone of "
                                  f"{layers} layers (num_layers)")
            memories = [_Signature(interpreter, f"memory_{i:02d}", ("hidden",), path, what) for i in range(layers)]
            head = _Signature(interpreter, "head", ("hidden",), path, what)
            task = LoadedTask(info, memories, head, None, interpreter, backbone)
        else:
            path, interpreter = self._load(graph.entry, graph.what, info.weights)
            classify = _Signature(interpreter, "classify", ("input_ids", "attention_mask", "token_type_ids"),
                                  path, what)
            task = LoadedTask(info, [], None, classify, interpreter)
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
            hidden = task.backbone.embed(input_ids=batch.input_ids, token_type_ids=batch.token_type_ids)
            for layer, memory in zip(task.backbone.layers, task.memories):
                hidden = memory(hidden=layer(hidden=hidden, attention_mask=batch.attention_mask))
            out = task.head(hidden=hidden)
        expected = (len(batch.input_ids), task.info.num_outputs)
        if out.shape != expected:
            raise DeviceError(f"task {task.info.name}: the model returned shape {list(out.shape)}, expected "
                              f"{list(expected)} (manifest and task file disagree; re-run convert/to_tflite.py)")
        return out

    def backbone_hidden(self, batch: Batch) -> np.ndarray:
        """The shared backbone alone (embed and every layer, no task): [B, S, H]. For benchmarks."""
        return self.backbone("--graph backbone").hidden(batch)


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
