"""Pick a TFLite interpreter (ai_edge_litert, else tflite_runtime, else tensorflow.lite) and load
models with it, turning the runtimes' errors into one clear line."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from spartan_device.errors import DeviceError

# name -> (module, attribute path of the Interpreter class in it, distribution name for the version)
RUNTIMES = {
    "ai_edge_litert": ("ai_edge_litert.interpreter", "Interpreter", "ai-edge-litert"),
    "tflite_runtime": ("tflite_runtime.interpreter", "Interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow", "lite.Interpreter", "tensorflow"),  # tf.lite is a lazy attribute
}
COMPAT_HINT = (
    "this runtime cannot run the bundle's {weights} ops; re-convert with "
    "`python convert/to_tflite.py --compat tflite-runtime-2.14` (float16 weights, older op versions) "
    "or install ai-edge-litert (`pip install -r device/requirements.txt`)"
)


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter_class: type

    def __str__(self):
        return f"{self.name} {self.version}"


def choose_runtime(name: str | None = None) -> Runtime:
    """The named runtime, or the first importable of RUNTIMES' order; DeviceError if none is."""
    candidates = [name] if name else list(RUNTIMES)
    problems = []
    for candidate in candidates:
        if candidate not in RUNTIMES:
            raise DeviceError(f"--runtime {candidate}: unknown; expected one of: {', '.join(RUNTIMES)}")
        module_name, attribute, dist = RUNTIMES[candidate]
        if candidate == "tensorflow":
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
        try:
            with warnings.catch_warnings(), captured_stderr():
                warnings.simplefilter("ignore")
                interpreter_class = importlib.import_module(module_name)
                for part in attribute.split("."):
                    interpreter_class = getattr(interpreter_class, part)
        except Exception as err:  # ImportError, or a broken install (e.g. numpy ABI mismatch)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            problems.append(f"{candidate}: {first}")
            continue
        return Runtime(candidate, _version(dist), interpreter_class)
    if name:
        raise DeviceError(f"--runtime {name}: cannot import it ({problems[0].split(': ', 1)[1]}); "
                          f"install it, e.g. `pip install {RUNTIMES[name][2]}`")
    raise DeviceError("no TFLite runtime found (tried " + "; ".join(problems) + "); "
                      "install one with `pip install -r device/requirements.txt`")


def load_interpreter(runtime: Runtime, path: Path, threads: int | None, what: str, weights: str = "int8"):
    """An Interpreter for ``path``; DeviceError (with the --compat hint for op-version errors) if the
    runtime cannot read it. The runtimes' own stderr chatter is captured and only shown on failure."""
    failure = None
    with warnings.catch_warnings(), captured_stderr() as chatter:
        warnings.simplefilter("ignore")
        try:
            interpreter = runtime.interpreter_class(model_path=str(path), num_threads=threads)
        except Exception as err:  # the runtimes raise ValueError or RuntimeError
            failure = err
    if failure is not None:
        raise DeviceError(_load_error(runtime, path, what, weights, f"{failure}\n{chatter.text}"))
    return interpreter


MADV_DONTNEED = 4  # Linux's value on every architecture that ai-edge-litert ships for


def release_file_pages(path: Path) -> int:
    """Drop this process's resident pages of ``path``'s read-only file mappings (Linux; 0 elsewhere).

    The runtimes map a model file read-only and read all of it while preparing it: XNNPACK copies
    the weights into its own packed buffers, and the mapped pages stay counted in the process's
    resident memory although most are never read again (13 MB of a 23 MB MiniLM graph here).
    ``madvise(MADV_DONTNEED)`` unmaps them from the process; they stay in the kernel's page cache
    (reclaimable, shared with any other reader) and the few still used (the embedding rows, the
    graph's own tables) fault back in on their next read. Only read-only mappings of exactly this
    file are touched, so no data can be lost. Returns the bytes advised; never raises: on any
    failure (no /proc, no libc, another OS) the pages simply stay.
    """
    import ctypes

    try:
        target = os.path.realpath(path)
        ranges = []
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6 and fields[5].rstrip("\n") == target and "w" not in fields[1]:
                    start, end = (int(value, 16) for value in fields[0].split("-"))
                    ranges.append((start, end - start))
        if not ranges:
            return 0
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.restype = ctypes.c_int
        return sum(size for start, size in ranges if libc.madvise(start, size, MADV_DONTNEED) == 0)
    except (OSError, AttributeError, ValueError):
        return 0


def _load_error(runtime: Runtime, path: Path, what: str, weights: str, detail: str) -> str:
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    op_line = next((line for line in lines if "Didn't find op" in line or "unresolved custom op" in line), None)
    if op_line:
        return f"{what} {path}: {runtime} cannot load it ({op_line}); " + COMPAT_HINT.format(weights=weights)
    first = lines[0] if lines else "unknown error"
    return f"{what} {path}: {runtime} cannot load it ({first}); is it a TFLite model? re-run convert/to_tflite.py"


def signature_runner(interpreter, key: str, path: Path, what: str):
    """The interpreter's signature ``key``; DeviceError naming the file if it is missing."""
    keys = list(interpreter.get_signature_list())
    if key not in keys:
        raise DeviceError(f"{what} {path}: has no signature {key!r} (has: {', '.join(keys) or 'none'}); "
                          "was it written by convert/to_tflite.py for this client's format?")
    return interpreter.get_signature_runner(key)


class _Captured:
    """What was written to fd 2 inside :func:`captured_stderr`; ``text`` is set when it exits."""

    text = ""


@contextlib.contextmanager
def captured_stderr():
    """Redirect file descriptor 2 (where the C++ runtimes log) to a temporary file for a moment."""
    captured = _Captured()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as handle:
        try:
            saved = os.dup(2)
        except OSError:  # no real fd 2 (e.g. embedded); capture nothing
            yield captured
            return
        os.dup2(handle.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            handle.seek(0)
            captured.text = handle.read().decode("utf-8", "replace")


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        if dist == "tensorflow":  # tensorflow-cpu and friends
            try:
                return importlib.import_module("tensorflow").__version__
            except Exception:
                pass
        return "?"
