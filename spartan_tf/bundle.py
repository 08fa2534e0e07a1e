"""The device bundle on disk: its file names, its manifest, and the rules for writing into it.

The format is specified in docs/bundle-format.md (the contract with device/infer.py):

    <output dir>/manifest.json             what is in the bundle, with the sha256 of every file
                 backbone.<graph>.tflite   one shared graph per layout of the shared tasks
                 tokenizer.json            the backbone's tokenizer
                 <task>.npz                a shared task: its task tensors only
                 <task>.tflite             a whole task: the model in one graph

Every file is written atomically (temporary file + rename) and the manifest last, so a reader
never sees a half-written file; a file replaced by an interrupted run fails its sha256 check.
"""

import hashlib
import json
import re
from pathlib import Path

from spartan_tf import __version__
from spartan_tf.artifacts import atomic_write_bytes, atomic_write_json
from spartan_tf.errors import SpartanError

FORMAT_VERSION = 3  # 3: shared graphs + task tensors (docs/bundle-format.md, version history)
SHARED, WHOLE = "shared", "whole"  # a task's deployment
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
RESERVED_KEYS = ("backbone", "tokenizer", "manifest")


def task_file(key: str, deployment: str) -> str:
    return f"{key}.npz" if deployment == SHARED else f"{key}.tflite"


def graph_file(key: str) -> str:
    return f"backbone.{key}.tflite"


def task_key(config: dict, model_dir) -> str:
    """The task's name in the bundle: the GLUE task name, or the model directory's name for a
    custom task (several custom tasks can share a bundle). Only [a-z0-9_-] survive."""
    name = config["task"]["name"]
    if name == "custom":
        name = Path(model_dir).resolve().name
    key = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")
    if not key or key in RESERVED_KEYS:
        raise SpartanError(f"--model-dir {model_dir}: cannot name a bundle task {name!r}; rename the directory")
    return key


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_existing(output_dir) -> dict | None:
    """The manifest of the bundle already in ``output_dir``; None if the directory is new or empty.

    Refuses (SpartanError) a file in place of the directory, a non-empty directory without a
    manifest (not a bundle: nothing in it is overwritten), an unreadable manifest, and a format
    version other than this converter's (an older bundle cannot be extended: convert it anew).
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise SpartanError(f"--output-dir {output_dir}: exists and is not a directory")
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return None
    path = output_dir / MANIFEST_FILE
    if not path.is_file():
        raise SpartanError(
            f"--output-dir {output_dir}: not empty and has no {MANIFEST_FILE}, so it is not a bundle; "
            f"choose an empty or new directory"
        )
    try:
        manifest = json.loads(path.read_text())
        version = manifest["format_version"]
        manifest["backbone"]["fingerprint"], manifest["backbone"]["weights"], manifest["tasks"]  # noqa: B018
    except (ValueError, KeyError, TypeError) as err:
        raise SpartanError(f"{path}: not a readable bundle manifest ({type(err).__name__}: {err})") from None
    if version != FORMAT_VERSION:
        raise SpartanError(f"{path}: format version {version!r}, this converter writes {FORMAT_VERSION}; "
                           f"convert every task into a new --output-dir")
    return manifest


def file_matches(output_dir, entry: dict) -> bool:
    """True if the file a manifest entry names exists with the recorded sha256."""
    path = Path(output_dir) / entry["file"]
    return path.is_file() and sha256_hex(path.read_bytes()) == entry.get("sha256")


def write_file(output_dir, name: str, data: bytes) -> dict:
    """Write one bundle file atomically; returns its manifest entry {file, sha256, bytes}."""
    atomic_write_bytes(Path(output_dir) / name, data)
    return {"file": name, "sha256": sha256_hex(data), "bytes": len(data)}


def backbone_entry(backbone, max_length: int, weights: str) -> dict:
    """The manifest's ``backbone`` block: which pretrained backbone every task was trained from."""
    return {
        "fingerprint": backbone.fingerprint(),
        "model": backbone.name,
        "hidden_size": backbone.hidden_size,
        "num_layers": backbone.num_layers,
        "max_length": max_length,
        "weights": weights,
    }


def graph_entry(file_entry: dict, graph_layout: dict) -> dict:
    """One ``graphs`` block: the shared graph's file and its layout (spartan_tf.shared_graph.layout)."""
    return {**file_entry, **graph_layout}


def task_entry(file_entry: dict, config: dict, deployment: str, weights: str, keras_dev_metrics, reference_inputs,
               graph: str | None = None, lora_merged: bool | None = None) -> dict:
    """One task's manifest block (``deployment``: SHARED, on the graph named ``graph``, or WHOLE); a
    shared task's ``size_ratio_to_backbone`` is filled in by ``write_manifest``."""
    method = dict(config["method"])
    entry = {
        "deployment": deployment,
        **file_entry,
        "backbone_fingerprint": config["backbone"]["fingerprint"],
        "label_names": list(config["task"].get("label_names") or []),
        "problem_type": config["task"].get("problem_type", "classification"),
        "max_length": config["max_seq_length"],
        "method": method,
        "weights": weights,
        "keras_dev_metrics": keras_dev_metrics,
        "reference_inputs": reference_inputs,
    }
    if deployment == SHARED:
        entry["graph"] = graph
        entry["size_ratio_to_backbone"] = None
    if lora_merged is not None:
        entry["lora_merged"] = lora_merged
    return entry


def write_manifest(output_dir, backbone_block: dict, tokenizer_entry: dict, graphs: dict, tasks: dict) -> dict:
    """Write manifest.json (last, atomically) with each shared task's size ratio to its graph."""
    for entry in tasks.values():
        if entry["deployment"] == SHARED:
            entry["size_ratio_to_backbone"] = round(entry["bytes"] / graphs[entry["graph"]]["bytes"], 5)
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_by": f"spartan-tf {__version__}",
        "tokenizer": {"file": tokenizer_entry["file"], "sha256": tokenizer_entry["sha256"]},
        "backbone": backbone_block,
        "graphs": dict(sorted(graphs.items())),
        "tasks": dict(sorted(tasks.items())),
    }
    atomic_write_json(Path(output_dir) / MANIFEST_FILE, manifest)
    return manifest
