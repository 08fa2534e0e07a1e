"""A trained task on disk: its small weights, its config and its dev metrics, written atomically.

Layout of a task directory (``models/<task>/``):
    config.json    task, labels, method hyperparameters, backbone identity + fingerprint, max length
    weights.npz    the task's own weights only (the method's modules + head), keyed like ``memory_00/parent_keys``;
                   full fine-tuning adds the fine-tuned backbone (``backbone/encoder/...``)
    metrics.json   dev metrics per epoch and final
    checkpoints/   per-epoch Keras checkpoints (task weights only)
    logs/          TensorBoard
``config.json`` is written last: a directory without it is not a finished model.
"""

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from spartan_tf import __version__
from spartan_tf.errors import SpartanError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.npz"
METRICS_FILE = "metrics.json"
# The fields every task config needs, with their JSON types: checked before anything is built from it.
CONFIG_SCHEMA = {
    "task": dict, "task.name": str, "task.problem_type": str, "task.label_names": list, "task.data": dict,
    "backbone": dict, "backbone.model": str, "backbone.fingerprint": str,
    "method": dict, "method.name": str, "head": dict, "max_seq_length": int,
}


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_npz(path, arrays: dict) -> str:
    """Write ``arrays`` as one .npz file, atomically; returns the sha256 of the bytes written."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def existing_task(out_dir) -> str | None:
    """The task name of the model in ``out_dir``, or None if it holds no model."""
    config_path = Path(out_dir) / CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        return json.loads(config_path.read_text())["task"]["name"]
    except (ValueError, KeyError, TypeError):
        return "<unreadable config>"


RESUME_DIR = "resume"  # an unfinished run's checkpoint (spartan_tf.resume)


def unfinished_run(out_dir) -> bool:
    """Whether ``out_dir`` holds the resume checkpoint of an interrupted training run."""
    return (Path(out_dir) / RESUME_DIR / "checkpoint").is_file()


def check_output_dir(out_dir, task_name: str, overwrite: bool, resume: bool = False):
    """Refuse to write over a finished model or an unfinished run unless asked; check --resume has a run."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SpartanError(f"--output-dir {out_dir}: exists and is not a directory")
    found = existing_task(out_dir)
    if resume:
        if found is not None:
            raise SpartanError(f"--resume: {out_dir} already holds a finished model of {found}")
        if not unfinished_run(out_dir):
            raise SpartanError(f"--resume: {out_dir} holds no interrupted run to continue")
        return
    if found is not None and not overwrite:
        which = "a model of the same task" if found == task_name else f"a model of another task ({found})"
        raise SpartanError(f"--output-dir {out_dir}: already holds {which}; pass --overwrite to replace it")
    if unfinished_run(out_dir):
        if not overwrite:
            raise SpartanError(f"--output-dir {out_dir}: holds an interrupted run; pass --resume to continue "
                               "it, or --overwrite to start over")
        shutil.rmtree(out_dir / RESUME_DIR)


def save_task(out_dir, model, config: dict, metrics: dict):
    """Write weights, metrics, then config (the marker of a finished model), each atomically.

    The config records the weights file's sha256, so a weights file swapped in from another model
    (same shapes, other values) is refused on load instead of giving wrong answers.
    """
    out_dir = Path(out_dir)
    arrays = {name: variable.numpy() for name, variable in model.named_task_weights().items()}
    weights_sha256 = atomic_write_npz(out_dir / WEIGHTS_FILE, arrays)
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    atomic_write_json(out_dir / CONFIG_FILE, {"format_version": FORMAT_VERSION, "spartan_tf_version": __version__,
                                              **config, "weights_sha256": weights_sha256})


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
    for field, kind in CONFIG_SCHEMA.items():
        value = config
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            raise SpartanError(f"{path}: missing field {field}")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SpartanError(f"{path}: field {field} should be a {kind.__name__}, not {type(value).__name__}")
    return config


def load_weights(model, model_dir, expected_sha256: str | None = None):
    """Assign the saved task weights to a built TaskModel, checking the file's sha256, names and shapes."""
    path = Path(model_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise SpartanError(f"--model-dir {model_dir}: no {WEIGHTS_FILE}")
    if expected_sha256 is not None and hashlib.sha256(path.read_bytes()).hexdigest() != expected_sha256:
        raise SpartanError(f"{path}: does not match the sha256 recorded in {CONFIG_FILE} "
                           "(corrupt, or swapped in from another model)")
    try:  # zip checks each array's CRC-32, so a truncated or bit-flipped file fails here
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise SpartanError(f"{path}: unreadable or corrupt weights file ({err})") from None
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
    an already loaded Backbone to build on (several tasks over one backbone load it once); a method
    that trains the backbone (full fine-tuning) leaves it untouched and loads a copy of its own."""
    from spartan_tf.backbone import Backbone
    from spartan_tf.methods import method_from_dict
    from spartan_tf.model import build_task_model

    config = read_config(model_dir)
    task = task_from_config(config)
    method = method_from_dict(config["method"])
    if backbone is not None and method.trains_backbone:
        backbone = Backbone.load(model_name or backbone.source)  # its own copy: the saved weights replace these
    if backbone is None:
        backbone = Backbone.load(model_name or config["backbone"]["model"])
    expected = config["backbone"].get("fingerprint")
    if backbone.fingerprint() != expected:
        raise SpartanError(
            f"--model-dir {model_dir}: trained on backbone {config['backbone']['model']} "
            f"({str(expected)[:19]}...), but the backbone loaded from {backbone.source} has a different "
            f"fingerprint ({backbone.fingerprint()[:19]}...); pass --model with the original backbone"
        )
    head = config["head"]
    model = build_task_model(backbone, method, task.num_outputs, head.get("dropout", 0.0), seed=0,
                             pooling=head.get("pooling", "cls"))
    # With a method that trains the backbone, this also loads its fine-tuned weights.
    load_weights(model, model_dir, config.get("weights_sha256"))
    return model, config, backbone, task
