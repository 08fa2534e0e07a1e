"""Fixtures: bundles converted from tiny trained tasks (helpers in client_support.py).

Two tasks share the tiny backbone of tests/conftest.py: qnli (pairs, max length 128) and sst2
(single texts, max length 32, so truncation differs per task). Each is trained for one short
epoch on the shipped samples, then converted by convert/to_tflite.py exactly as a user would.
"""

import shutil
import sys
from pathlib import Path

import pytest

from client_support import SAMPLES, TASK_LENGTHS, _convert, _run


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

