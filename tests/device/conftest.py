"""Fixtures: bundles converted from tiny trained tasks (helpers in client_support.py).

Two tasks share the tiny backbone of tests/conftest.py: qnli (pairs, max length 128) and sst2
(single texts, max length 32, so truncation differs per task). Each is trained for one short
epoch on the shipped samples, then converted by convert/to_tflite.py exactly as a user would:
shared (both on one shared graph), whole (--whole: SPARTAN fused into one graph per task), or
mixed (qnli shared, sst2 whole, converted into one bundle by two runs).
"""

import shutil
import sys
from pathlib import Path

import pytest

from client_support import ITEMS, SAMPLES, TASK_LENGTHS, _convert, _run, keras_logits


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
    """float32 weights, both tasks shared: the client must reproduce Keras to float precision."""
    return _convert(tiny_task_dirs, tmp_path_factory.mktemp("bundle-float") / "tflite", "--float")


@pytest.fixture(scope="session")
def int8_bundle(tiny_task_dirs, tmp_path_factory) -> Path:
    """The default conversion (int8 backbone graph, int8 task tensors), both tasks shared."""
    return _convert(tiny_task_dirs, tmp_path_factory.mktemp("bundle-int8") / "tflite")


@pytest.fixture(scope="session")
def whole_bundle(tiny_task_dirs, tmp_path_factory) -> Path:
    """float32, both tasks whole (--whole): each SPARTAN task fused into its own graph, no shared graph."""
    return _convert(tiny_task_dirs, tmp_path_factory.mktemp("bundle-whole") / "tflite", "--float", "--whole")


@pytest.fixture(scope="session")
def reference(tiny_task_dirs) -> dict:
    """{task: Keras logits [len(ITEMS[task]), 2]} of client_support.ITEMS."""
    return {task: keras_logits(tiny_task_dirs[task], items) for task, items in ITEMS.items()}


@pytest.fixture
def bundle_copy(float_bundle, tmp_path) -> Path:
    """A private copy of the float bundle that a test may damage."""
    return Path(shutil.copytree(float_bundle, tmp_path / "bundle"))


@pytest.fixture
def whole_copy(whole_bundle, tmp_path) -> Path:
    """A private copy of the whole (one graph per task) float bundle that a test may damage."""
    return Path(shutil.copytree(whole_bundle, tmp_path / "whole"))


@pytest.fixture(scope="session")
def mixed_bundle(tiny_task_dirs, tmp_path_factory) -> Path:
    """float32, both deployments in one bundle: qnli shared, then sst2 converted --whole beside it."""
    out = tmp_path_factory.mktemp("bundle-mixed") / "tflite"
    _convert({"qnli": tiny_task_dirs["qnli"]}, out, "--float")
    return _convert({"sst2": tiny_task_dirs["sst2"]}, out, "--float", "--whole")


@pytest.fixture(scope="session")
def lora_task_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """sst2 trained with LoRA over the tiny backbone: a whole task once converted."""
    out = tmp_path_factory.mktemp("device-lora") / "sst2"
    _run([sys.executable, "-m", "spartan_tf.train", "--model", str(tiny_model_dir), "--task", "sst2", "--method", "lora",
          "--data-dir", str(SAMPLES), "--max-train-samples", "32", "--max-eval-samples", "16", "--epochs", "1",
          "--max-seq-length", str(TASK_LENGTHS["sst2"]), "--output-dir", str(out)])
    return out


@pytest.fixture(scope="session")
def adapter_task_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """sst2 trained with adapters over the tiny backbone: a shared task of its own graph once converted."""
    out = tmp_path_factory.mktemp("device-adapters") / "sst2"
    _run([sys.executable, "-m", "spartan_tf.train", "--model", str(tiny_model_dir), "--task", "sst2", "--method",
          "adapters", "--adapter-size", "8", "--data-dir", str(SAMPLES), "--max-train-samples", "32",
          "--max-eval-samples", "16", "--epochs", "1", "--max-seq-length", str(TASK_LENGTHS["sst2"]),
          "--output-dir", str(out)])
    return out
