"""Bundles converted from tiny trained tasks, and a helper that runs the device client as a subprocess.

Two tasks share the tiny backbone of tests/conftest.py: qnli (pairs, max length 128) and sst2
(single texts, max length 32, so truncation differs per task). Each is trained for one short
epoch on the shipped samples, then converted by convert/to_tflite.py exactly as a user would.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "device" / "infer.py"
SAMPLES = REPO / "samples" / "glue"
TASK_LENGTHS = {"qnli": 128, "sst2": 32}


def _run(command, **kwargs):
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def run_client(*args, stdin=None, env=None, check_rc=None):
    """``python device/infer.py ARGS``; never a traceback on stderr, whatever the outcome."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("SPARTAN_DEVICE_DEBUG", None)
    done = subprocess.run([sys.executable, str(CLIENT), *map(str, args)], input=stdin, capture_output=True,
                          cwd=REPO, env=full_env, text=not isinstance(stdin, bytes))
    stderr = done.stderr if isinstance(done.stderr, str) else done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr
    if check_rc is not None:
        assert done.returncode == check_rc, f"exit {done.returncode}, expected {check_rc}:\n{stderr}"
    return done


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_task_dirs(tiny_model_dir, tmp_path_factory) -> dict:
    """{task: trained model directory} for qnli and sst2 over the tiny backbone."""
    root = tmp_path_factory.mktemp("device-tasks")
    dirs = {}
    for task, length in TASK_LENGTHS.items():
        out = root / task
        _run([sys.executable, "-m", "spartan_tf.train", "--model", str(tiny_model_dir), "--task", task,
              "--data-dir", str(SAMPLES), "--max-train-samples", "32", "--max-eval-samples", "16",
              "--epochs", "1", "--max-seq-length", str(length), "--output-dir", str(out)])
        dirs[task] = out
    return dirs


def _convert(task_dirs: dict, out: Path, *flags) -> Path:
    command = [sys.executable, str(REPO / "convert" / "to_tflite.py"), "--output-dir", str(out), "--check-samples", "3",
               *flags]  # 3: the manifest keeps 3 reference inputs; the tests compare with Keras themselves
    for directory in task_dirs.values():
        command += ["--model-dir", str(directory)]
    _run(command)
    return out


@pytest.fixture(scope="session")
def float_bundle(tiny_task_dirs, tmp_path_factory) -> Path:
    """float32 weights, with fused models: the client must reproduce Keras to float precision."""
    return _convert(tiny_task_dirs, tmp_path_factory.mktemp("bundle-float") / "tflite", "--float", "--fused")


@pytest.fixture(scope="session")
def int8_bundle(tiny_task_dirs, tmp_path_factory) -> Path:
    """The default conversion (int8 dynamic-range weights), with fused models."""
    return _convert(tiny_task_dirs, tmp_path_factory.mktemp("bundle-int8") / "tflite", "--fused")


@pytest.fixture
def bundle_copy(float_bundle, tmp_path) -> Path:
    """A private copy of the float bundle that a test may damage."""
    return Path(shutil.copytree(float_bundle, tmp_path / "bundle"))


def rewrite_manifest(bundle: Path, change):
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
