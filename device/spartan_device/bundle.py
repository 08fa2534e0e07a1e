"""Read and check a bundle's manifest.json (docs/bundle-format.md, format versions 1 and 2).

Version 2 added each task's ``deployment`` (split: memories + head over the shared backbone file;
whole: the whole model in the task's file) and made the backbone's file optional (absent when every
task is whole). A version 1 bundle reads as version 2 with every task split.

Nothing is loaded here; :func:`verified_path` checks a file's sha256 against the manifest and is
called right before the file is loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from spartan_device.errors import DeviceError

FORMAT_VERSION = 2  # the newest version this client reads; it reads every older one too
MANIFEST = "manifest.json"
CLASSIFICATION, REGRESSION = "classification", "regression"
SPLIT, WHOLE = "split", "whole"  # a task's deployment


@dataclass(frozen=True)
class FileEntry:
    """A file of the bundle: its path relative to the bundle and its expected sha256 and size."""

    file: str
    sha256: str
    bytes: int | None = None


@dataclass(frozen=True)
class BackboneInfo:
    """The pretrained backbone of every task; ``entry`` is None when the bundle has no backbone file
    (format 2, every task whole)."""

    entry: FileEntry | None
    fingerprint: str
    num_layers: int
    hidden_size: int
    max_length: int
    model: str
    weights: str


@dataclass(frozen=True)
class TaskInfo:
    """One task of the manifest. ``deployment``: SPLIT (``entry`` holds memory_XX and head; ``fused`` is
    the optional one-graph copy) or WHOLE (``entry`` is the whole model, signature classify; no
    ``fused``). ``takes_pair``: True/False when its reference inputs tell, else None."""

    name: str
    entry: FileEntry
    backbone_fingerprint: str
    label_names: tuple[str, ...]
    problem_type: str
    max_length: int
    weights: str
    fused: FileEntry | None
    reference_inputs: tuple[dict, ...]
    raw: dict = field(repr=False, compare=False)
    deployment: str = SPLIT
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
        return _task_info(name, tasks[name], f"{self.root / MANIFEST}: tasks.{name}", self.format_version)

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
    if version > FORMAT_VERSION:
        raise DeviceError(
            f"{path}: bundle format version {version} is newer than this client understands "
            f"(version {FORMAT_VERSION}); update device/ from the spartan-tf release that wrote the bundle"
        )
    where = str(path)
    tokenizer = _file_entry(_get(manifest, "tokenizer", dict, where), f"{where}: tokenizer")
    block = _get(manifest, "backbone", dict, where)
    bwhere = f"{where}: backbone"
    has_file = version < 2 or "file" in block or "sha256" in block  # version 2: optional (whole tasks only)
    backbone = BackboneInfo(
        entry=_file_entry(block, bwhere) if has_file else None,
        fingerprint=_get(block, "fingerprint", str, bwhere),
        num_layers=_positive(_get(block, "num_layers", int, bwhere), "num_layers", bwhere),
        hidden_size=_positive(_get(block, "hidden_size", int, bwhere), "hidden_size", bwhere),
        max_length=_positive(_get(block, "max_length", int, bwhere), "max_length", bwhere),
        model=str(block.get("model", "?")),
        weights=str(block.get("weights", "?")),
    )
    tasks = _get(manifest, "tasks", dict, where)
    if not tasks:
        raise DeviceError(f"{path}: the bundle holds no tasks")
    return Bundle(root, manifest, tokenizer, backbone, str(manifest.get("created_by", "?")), version)


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


def _task_info(name: str, block, where: str, version: int) -> TaskInfo:
    if not isinstance(block, dict):
        raise DeviceError(f"{where}: expected a JSON object")
    if "deployment" not in block and version >= 2:
        raise DeviceError(f"{where}: missing field 'deployment' (split or whole; required from format version 2)")
    deployment = block.get("deployment", SPLIT)  # version 1: every task split
    if deployment not in (SPLIT, WHOLE):
        raise DeviceError(f"{where}: unknown deployment {deployment!r} (expected split or whole)")
    problem_type = _get(block, "problem_type", str, where)
    if problem_type not in (CLASSIFICATION, REGRESSION):
        raise DeviceError(f"{where}: unknown problem_type {problem_type!r}")
    labels = _get(block, "label_names", list, where)
    if problem_type == CLASSIFICATION and (len(labels) < 2 or not all(isinstance(x, str) for x in labels)):
        raise DeviceError(f"{where}: a classification task needs >= 2 label names, got {labels!r}")
    fused = block.get("fused") if deployment == SPLIT else None  # a whole task is its own one-graph model
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
        fused=_file_entry(fused, f"{where}.fused") if isinstance(fused, dict) else None,
        reference_inputs=tuple(refs) if isinstance(refs, list) else (),
        raw=block,
        deployment=deployment,
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
