"""A trained task on disk: its small weights, its config and its dev metrics, written atomically.

Layout of a task directory (``models/<task>/``):
    config.json    task, labels, method hyperparameters, backbone identity + fingerprint, max length
    weights.npz    the task's own weights only (memories + head), keyed like ``memory_00/parent_keys``
    metrics.json   dev metrics per epoch and final
    checkpoints/   per-epoch Keras checkpoints (task weights only)
    logs/          TensorBoard
``config.json`` is written last: a directory without it is not a finished model.
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from spartan_tf import __version__
from spartan_tf.errors import SpartanError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.npz"
METRICS_FILE = "metrics.json"
REQUIRED_CONFIG_KEYS = ("format_version", "task", "backbone", "method", "head", "max_seq_length")


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_npz(path, arrays: dict):
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def existing_task(out_dir) -> str | None:
    """The task name of the model in ``out_dir``, or None if it holds no model."""
    config_path = Path(out_dir) / CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        return json.loads(config_path.read_text())["task"]["name"]
    except (ValueError, KeyError, TypeError):
        return "<unreadable config>"


def check_output_dir(out_dir, task_name: str, overwrite: bool):
    """Refuse to write over a finished model unless ``overwrite``; refuse a file in place of a dir."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SpartanError(f"--output-dir {out_dir}: exists and is not a directory")
    found = existing_task(out_dir)
    if found is not None and not overwrite:
        which = "a model of the same task" if found == task_name else f"a model of another task ({found})"
        raise SpartanError(f"--output-dir {out_dir}: already holds {which}; pass --overwrite to replace it")


def save_task(out_dir, model, config: dict, metrics: dict):
    """Write weights, metrics, then config (the marker of a finished model), each atomically."""
    out_dir = Path(out_dir)
    arrays = {name: variable.numpy() for name, variable in model.named_task_weights().items()}
    atomic_write_npz(out_dir / WEIGHTS_FILE, arrays)
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    atomic_write_json(out_dir / CONFIG_FILE, {"format_version": FORMAT_VERSION, "spartan_tf_version": __version__, **config})


def read_config(model_dir) -> dict:
    """The task config in ``model_dir``, checked for presence, version and required fields."""
    path = Path(model_dir) / CONFIG_FILE
    if not Path(model_dir).is_dir():
        raise SpartanError(f"--model-dir {model_dir}: no such directory")
    if not path.is_file():
        raise SpartanError(f"--model-dir {model_dir}: no {CONFIG_FILE} (not a trained spartan-tf model)")
    try:
        config = json.loads(path.read_text())
    except ValueError as err:
        raise SpartanError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise SpartanError(f"{path}: expected a JSON object")
    version = config.get("format_version")
    if not isinstance(version, int):
        raise SpartanError(f"{path}: missing or invalid format_version")
    if version > FORMAT_VERSION:
        raise SpartanError(
            f"{path}: format version {version} is newer than this spartan-tf understands "
            f"({FORMAT_VERSION}); upgrade spartan-tf"
        )
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    if missing:
        raise SpartanError(f"{path}: missing field(s) {', '.join(missing)}")
    return config


def load_weights(model, model_dir):
    """Assign the saved task weights to a built TaskModel, checking names and shapes."""
    path = Path(model_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise SpartanError(f"--model-dir {model_dir}: no {WEIGHTS_FILE}")
    try:
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except (OSError, ValueError) as err:
        raise SpartanError(f"{path}: unreadable weights file ({err})") from None
    expected = model.named_task_weights()
    if set(arrays) != set(expected):
        missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
        raise SpartanError(f"{path}: weights do not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
    for name, variable in expected.items():
        if tuple(arrays[name].shape) != tuple(variable.shape):
            raise SpartanError(f"{path}: {name} has shape {arrays[name].shape}, expected {tuple(variable.shape)}")
        variable.assign(arrays[name])


def task_from_config(config: dict):
    """The TaskSpec a config was trained for (GLUE by name, or custom with its saved labels)."""
    from spartan_tf import tasks

    block = config["task"]
    if block.get("name") == "custom":
        return tasks.custom_task(block.get("label_names") or None, block.get("problem_type", "classification"))
    return tasks.get_task(block.get("name", ""))


def load_trained(model_dir, model_name: str | None = None, backbone=None):
    """Rebuild a trained task: (model, config, backbone, task). ``model_name`` overrides the backbone
    location; its weights must still match the fingerprint recorded at training time. ``backbone``:
    an already loaded Backbone to build on (several tasks over one backbone load it once)."""
    from spartan_tf.backbone import Backbone
    from spartan_tf.methods import method_from_dict
    from spartan_tf.model import build_task_model

    config = read_config(model_dir)
    task = task_from_config(config)
    method = method_from_dict(config["method"])
    if backbone is None:
        backbone = Backbone.load(model_name or config["backbone"]["model"])
    expected = config["backbone"].get("fingerprint")
    if backbone.fingerprint() != expected:
        raise SpartanError(
            f"--model-dir {model_dir}: trained on backbone {config['backbone']['model']} "
            f"({str(expected)[:19]}...), but the backbone loaded from {backbone.source} has a different "
            f"fingerprint ({backbone.fingerprint()[:19]}...); pass --model with the original backbone"
        )
    model = build_task_model(backbone, method, task.num_outputs, config["head"].get("dropout", 0.0), seed=0)
    load_weights(model, model_dir)
    return model, config, backbone, task
