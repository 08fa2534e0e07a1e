"""A shared graph and the task tensors it runs: one interpreter invocation per batch, any task.

``backbone.<graph>.tflite`` has one signature, ``classify``: int32 ``input_ids``, ``attention_mask``,
``token_type_ids`` [B, S] and the task's float32 tensors (memory keys and values, adapter or LoRA
matrices, head) -> ``logits`` [B, N]. The backbone inside is held once, whatever the number of
tasks; a task is its ``<task>.npz`` (docs/bundle-format.md).

An input's data does not survive the interpreter's re-allocation, which every new batch shape
triggers (inputs are planned in the arena like any tensor). So the graph remembers which task's
tensors it holds at which shape and sets them again only after a task switch or a shape change:
at one length, a text costs only its three token arrays. A new length resizes the three token
inputs only: a task tensor's input keeps its shape until a task of other shapes comes (resizing
all of them at every new length cost 2% more CPU per text at real QNLI lengths).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spartan_device.errors import DeviceError

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TaskTensors:
    """A shared task's tensors as stored in its ``.npz``: int8 matrices with one float32 scale per row
    (``name`` and ``name.scale``; int8 bundles), float16 or float32 arrays. ``float32_into(buffers)``
    writes them as float32 into reusable buffers: only the current task is held as float32, and a
    task switch allocates nothing (fresh 1.6 MB arrays cost more in page faults than the arithmetic)."""

    def __init__(self, path: Path, what: str):
        try:
            with np.load(path, allow_pickle=False) as archive:
                self.stored = {name: archive[name] for name in archive.files}
        except Exception as err:  # zipfile, zlib and numpy's format errors: all mean a damaged file
            raise DeviceError(f"{what} {path}: not a task tensor file ({err}); re-run convert/to_tflite.py") from None
        for name, value in self.stored.items():
            scaled = value.dtype == np.int8
            if scaled and (f"{name}.scale" not in self.stored or value.ndim != 2
                           or self.stored[f"{name}.scale"].shape != value.shape[:1]):
                raise DeviceError(f"{what} {path}: int8 tensor {name!r} has no matching {name}.scale")
            if not scaled and not name.endswith(".scale") and value.dtype not in (np.float32, np.float16):
                raise DeviceError(f"{what} {path}: tensor {name!r} is {value.dtype}, expected int8, float16 or float32")
        self.names = sorted(name for name in self.stored if not name.endswith(".scale"))
        self.nbytes = sum(value.nbytes for value in self.stored.values())

    def shape(self, name: str) -> tuple:
        return self.stored[name].shape

    def float32_into(self, buffers: dict) -> dict:
        """{name: float32 array} of every tensor, written into ``buffers`` (a dict kept by the caller;
        a buffer of another shape is replaced). Returns ``buffers``."""
        for name in self.names:
            value = self.stored[name]
            buffer = buffers.get(name)
            if buffer is None or buffer.shape != value.shape:
                buffer = buffers[name] = np.empty(value.shape, dtype=np.float32)  # 0-d stays 0-d
            if value.dtype == np.int8:
                np.multiply(value, self.stored[f"{name}.scale"][:, None], out=buffer, casting="unsafe")
            else:
                buffer[...] = value
        for name in set(buffers) - set(self.names):
            del buffers[name]
        return buffers


class SharedGraph:
    """One shared graph's interpreter, with the task tensors currently set in it.

    ``run(batch, key, tensors)``: logits [B, N] of ``batch`` for the task ``key`` whose tensors are
    ``tensors`` (a TaskTensors). The interpreter is driven through its public single-subgraph API
    (resize_tensor_input, allocate_tensors, set_tensor, invoke), which every runtime has; a
    signature runner would set every input on every call.
    """

    def __init__(self, interpreter, path: Path, what: str):
        self.interpreter, self.path, self.what = interpreter, path, what
        keys = list(interpreter.get_signature_list())
        if keys != ["classify"]:
            raise DeviceError(f"{what} {path}: has signatures {keys}, expected only 'classify' (see "
                              "docs/bundle-format.md); re-run convert/to_tflite.py")
        runner = interpreter.get_signature_runner("classify")
        self.inputs = {name: details["index"] for name, details in runner.get_input_details().items()}
        self.input_shapes = {name: tuple(int(d) for d in details["shape_signature"])
                             for name, details in runner.get_input_details().items()}
        outputs = runner.get_output_details()
        subgraph = getattr(runner, "_subgraph_index", 0)
        del runner  # it holds a reference that blocks resize_tensor_input
        if set(TOKEN_INPUTS) - set(self.inputs) or list(outputs) != ["logits"] or subgraph != 0:
            raise DeviceError(f"{what} {path}: signature 'classify' takes {sorted(self.inputs)} and gives "
                              f"{sorted(outputs)}, expected {', '.join(TOKEN_INPUTS)} and task tensors -> logits")
        self.output = outputs["logits"]["index"]
        self.tensor_names = sorted(set(self.inputs) - set(TOKEN_INPUTS))
        self._current = None  # (task key, batch shape) whose tensors are set
        self._floats_of = None  # the task key whose float32 tensors self._floats holds
        self._floats = {}
        self._sized = {}  # task tensor name -> the shape its graph input was last resized to

    def check(self, tensors: TaskTensors, what: str, path: Path):
        """DeviceError unless ``tensors`` are exactly this graph's task inputs, with fitting shapes."""
        if tensors.names != self.tensor_names:
            missing = sorted(set(self.tensor_names) - set(tensors.names))
            extra = sorted(set(tensors.names) - set(self.tensor_names))
            raise DeviceError(f"{what} {path}: its tensors do not fit graph {self.path.name} (missing "
                              f"{missing[:4] or 'none'}, unexpected {extra[:4] or 'none'}); re-run convert/to_tflite.py")
        for name in self.tensor_names:
            want, got = self.input_shapes[name], tensors.shape(name)
            if len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want, got)):
                raise DeviceError(f"{what} {path}: tensor {name} has shape {list(got)}, graph {self.path.name} "
                                  f"takes {list(want)}; re-run convert/to_tflite.py")

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray, key: str,
            tensors: TaskTensors) -> np.ndarray:
        """Float32 logits [B, N]; sets the task tensors only after a task switch or a shape change."""
        interpreter = self.interpreter
        state = (key, input_ids.shape)
        if self._current != state:
            self._current = None  # until everything below has been set
            if self._floats_of != key:  # a task switch: its tensors as float32, in the same buffers
                self._floats_of = None
                tensors.float32_into(self._floats)
                self._floats_of = key
            floats = self._floats
            for name in TOKEN_INPUTS:
                interpreter.resize_tensor_input(self.inputs[name], input_ids.shape)
            for name, value in floats.items():  # a task tensor's shape changes only with the task
                if self._sized.get(name) != value.shape:
                    self._sized.pop(name, None)
                    interpreter.resize_tensor_input(self.inputs[name], value.shape)
                    self._sized[name] = value.shape
            interpreter.allocate_tensors()
            for name, value in floats.items():
                interpreter.set_tensor(self.inputs[name], value)
        interpreter.set_tensor(self.inputs["input_ids"], input_ids)
        interpreter.set_tensor(self.inputs["attention_mask"], attention_mask)
        interpreter.set_tensor(self.inputs["token_type_ids"], token_type_ids)
        interpreter.invoke()
        self._current = state
        return interpreter.get_tensor(self.output)
