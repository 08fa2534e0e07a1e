"""Read and check a bundle's manifest.json (docs/bundle-format.md, format version 3).

A task is ``shared`` (its file ``<task>.npz`` holds only its task tensors, fed to one of the bundle's
shared graphs ``backbone.<graph>.tflite``) or ``whole`` (its file is the whole model, one graph).
Bundles of older format versions (1 and 2: a backbone chained signature by signature) are refused
with one line that names the fix: convert the tasks again.

Nothing is loaded here; :func:`verified_path` checks a file's sha256 against the manifest and is
called right before the file is loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from spartan_device.errors import DeviceError

FORMAT_VERSION = 3  # the one version this client reads
MANIFEST = "manifest.json"
CLASSIFICATION, REGRESSION = "classification", "regression"
SHARED, WHOLE = "shared", "whole"  # a task's deployment


@dataclass(frozen=True)
class FileEntry:
    """A file of the bundle: its path relative to the bundle and its expected sha256 and size."""

    file: str
    sha256: str
    bytes: int | None = None


@dataclass(frozen=True)
class GraphInfo:
    """A shared graph: the backbone with a method's task tensors as inputs (signature ``classify``).
    ``method``: its layout (e.g. {"name": "spartan", "num_parents": 16, ...}); ``pooling``: the head's."""

    name: str
    entry: FileEntry
    method: dict
    pooling: str


@dataclass(frozen=True)
class BackboneInfo:
    """The pretrained backbone every task was trained from (its weights are in the shared graphs)."""

    fingerprint: str
    num_layers: int
    hidden_size: int
    max_length: int
    model: str
    weights: str


@dataclass(frozen=True)
class TaskInfo:
    """One task of the manifest. ``deployment``: SHARED (``entry`` is its task tensors, ``graph`` the
    shared graph they feed) or WHOLE (``entry`` is the whole model, signature classify).
    ``takes_pair``: True/False when its reference inputs tell, else None."""

    name: str
    entry: FileEntry
    backbone_fingerprint: str
    label_names: tuple[str, ...]
    problem_type: str
    max_length: int
    weights: str
    reference_inputs: tuple[dict, ...]
    raw: dict = field(repr=False, compare=False)
    deployment: str = SHARED
    graph: str | None = None  # shared tasks: the key of their graph in the manifest's "graphs"
    method: dict = field(default_factory=dict)  # the training config's method block ("name" and hyperparameters)
    lora_merged: bool | None = None  # LoRA tasks only: folded into the kernels (True) or kept low-rank

    @property
    def method_name(self) -> str | None:
        name = self.method.get("name")
        return name if isinstance(name, str) else None

    @property
    def is_regression(self) -> bool:
        return self.problem_type == REGRESSION

    @property
    def num_outputs(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def takes_pair(self) -> bool | None:
        refs = [r for r in self.reference_inputs if isinstance(r, dict) and isinstance(r.get("text"), str)]
        if not refs:
            return None
        with_pair = [isinstance(r.get("text_pair"), str) for r in refs]
        return True if all(with_pair) else False if not any(with_pair) else None


@dataclass
class Bundle:
    """A parsed manifest. Task entries are validated when first asked for (:meth:`task`), so one
    malformed task entry does not make the other tasks unusable."""

    root: Path
    manifest: dict
    tokenizer: FileEntry
    backbone: BackboneInfo
    graphs: dict  # {name: GraphInfo}
    created_by: str
    format_version: int

    @property
    def task_names(self) -> list[str]:
        return list(self.manifest["tasks"])

    def task(self, name: str) -> TaskInfo:
        tasks = self.manifest["tasks"]
        if name not in tasks:
            known = ", ".join(tasks) or "(none)"
            raise DeviceError(f"unknown task {name!r}; the bundle {self.root} has: {known}")
        info = _task_info(name, tasks[name], f"{self.root / MANIFEST}: tasks.{name}")
        if info.deployment == SHARED and info.graph not in self.graphs:
            raise DeviceError(f"{self.root / MANIFEST}: tasks.{name}: graph {info.graph!r} is not one of the "
                              f"bundle's graphs ({', '.join(self.graphs) or 'none'})")
        return info

    def path(self, entry: FileEntry) -> Path:
        return self.root / entry.file


def read_bundle(directory: str | Path) -> Bundle:
    """Parse ``directory/manifest.json``; DeviceError for a missing, malformed or too new manifest."""
    root = Path(directory)
    path = root / MANIFEST
    if not root.is_dir():
        raise DeviceError(f"--bundle {root}: no such directory (expected the output of convert/to_tflite.py)")
    if not path.is_file():
        raise DeviceError(f"--bundle {root}: no {MANIFEST} (not a spartan-tf bundle; run convert/to_tflite.py)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DeviceError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise DeviceError(f"{path}: not a bundle manifest (JSON nested too deeply)") from None
    if not isinstance(manifest, dict):
        raise DeviceError(f"{path}: expected a JSON object")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DeviceError(f"{path}: missing or invalid format_version")
    if version != FORMAT_VERSION:
        made = "an older" if version < FORMAT_VERSION else "a newer"
        fix = ("re-convert the tasks with convert/to_tflite.py from this release" if version < FORMAT_VERSION
               else "update device/ from the spartan-tf release that wrote the bundle")
        raise DeviceError(f"{path}: bundle format version {version} was written by {made} converter; this client "
                          f"reads version {FORMAT_VERSION} only: {fix}")
    where = str(path)
    tokenizer = _file_entry(_get(manifest, "tokenizer", dict, where), f"{where}: tokenizer")
    block = _get(manifest, "backbone", dict, where)
    bwhere = f"{where}: backbone"
    backbone = BackboneInfo(
        fingerprint=_get(block, "fingerprint", str, bwhere),
        num_layers=_positive(_get(block, "num_layers", int, bwhere), "num_layers", bwhere),
        hidden_size=_positive(_get(block, "hidden_size", int, bwhere), "hidden_size", bwhere),
        max_length=_positive(_get(block, "max_length", int, bwhere), "max_length", bwhere),
        model=str(block.get("model", "?")),
        weights=str(block.get("weights", "?")),
    )
    graphs = {}
    for name, graph in _get(manifest, "graphs", dict, where).items():
        gwhere = f"{where}: graphs.{name}"
        if not isinstance(graph, dict):
            raise DeviceError(f"{gwhere}: expected a JSON object")
        method = _get(graph, "method", dict, gwhere)
        if not isinstance(method.get("name"), str):
            raise DeviceError(f"{gwhere}: method has no name")
        graphs[name] = GraphInfo(name, _file_entry(graph, gwhere), method, _get(graph, "pooling", str, gwhere))
    tasks = _get(manifest, "tasks", dict, where)
    if not tasks:
        raise DeviceError(f"{path}: the bundle holds no tasks")
    return Bundle(root, manifest, tokenizer, backbone, graphs, str(manifest.get("created_by", "?")), version)


def verified_path(bundle: Bundle, entry: FileEntry, what: str) -> Path:
    """The file's path once its sha256 matches the manifest; DeviceError naming the file otherwise."""
    path = bundle.path(entry)
    if not path.is_file():
        raise DeviceError(f"{what} {path}: file missing (listed in {MANIFEST}); re-run convert/to_tflite.py")
    digest = sha256_of(path)
    if digest != entry.sha256.lower():
        raise DeviceError(
            f"{what} {path}: sha256 mismatch (file is corrupt or was modified; expected "
            f"{entry.sha256[:12]}..., got {digest[:12]}...); copy the bundle again or re-run convert/to_tflite.py"
        )
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- field checks


def _task_info(name: str, block, where: str) -> TaskInfo:
    if not isinstance(block, dict):
        raise DeviceError(f"{where}: expected a JSON object")
    deployment = _get(block, "deployment", str, where)
    if deployment not in (SHARED, WHOLE):
        raise DeviceError(f"{where}: unknown deployment {deployment!r} (expected shared or whole)")
    graph = _get(block, "graph", str, where) if deployment == SHARED else None
    problem_type = _get(block, "problem_type", str, where)
    if problem_type not in (CLASSIFICATION, REGRESSION):
        raise DeviceError(f"{where}: unknown problem_type {problem_type!r}")
    labels = _get(block, "label_names", list, where)
    if problem_type == CLASSIFICATION and (len(labels) < 2 or not all(isinstance(x, str) for x in labels)):
        raise DeviceError(f"{where}: a classification task needs >= 2 label names, got {labels!r}")
    method = block.get("method")
    merged = block.get("lora_merged")
    refs = block.get("reference_inputs") or []
    return TaskInfo(
        name=name,
        entry=_file_entry(block, where),
        backbone_fingerprint=_get(block, "backbone_fingerprint", str, where),
        label_names=tuple(labels),
        problem_type=problem_type,
        max_length=_positive(_get(block, "max_length", int, where), "max_length", where),
        weights=str(block.get("weights", "?")),
        reference_inputs=tuple(refs) if isinstance(refs, list) else (),
        raw=block,
        deployment=deployment,
        graph=graph,
        method=method if isinstance(method, dict) else {},
        lora_merged=merged if isinstance(merged, bool) else None,
    )


def _file_entry(block: dict, where: str) -> FileEntry:
    name = _get(block, "file", str, where)
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or not name:
        raise DeviceError(f"{where}: file {name!r} must be a path inside the bundle")
    sha = _get(block, "sha256", str, where)
    if len(sha) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha):
        raise DeviceError(f"{where}: sha256 {sha!r} is not 64 hex digits")
    size = block.get("bytes")
    return FileEntry(name, sha, size if isinstance(size, int) else None)


def _get(block: dict, key: str, kind: type, where: str):
    if key not in block:
        raise DeviceError(f"{where}: missing field {key!r}")
    value = block[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DeviceError(f"{where}: field {key!r} should be a {kind.__name__}, got {value!r}")
    return value


def _positive(value: int, key: str, where: str) -> int:
    if value < 1:
        raise DeviceError(f"{where}: field {key!r} must be >= 1, got {value}")
    return value
