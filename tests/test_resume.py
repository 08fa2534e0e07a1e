"""A training run killed (SIGKILL) or stopped (SIGINT) mid-epoch resumes and ends where an
uninterrupted run ends."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tf_keras

from repo_paths import GLUE_SAMPLES, REPO
from spartan_tf import train
from spartan_tf.errors import run_cli
from spartan_tf.resume import TrainingState


def command(model_dir, out_dir, *extra):
    # Head dropout 0: everything else random (init, data order) is seeded, so runs are comparable exactly.
    return [sys.executable, "-m", "spartan_tf.train", "--task", "qnli", "--model", str(model_dir),
            "--data-dir", str(GLUE_SAMPLES), "--output-dir", str(out_dir), "--max-train-samples", "160",
            "--max-eval-samples", "20", "--epochs", "2", "--batch-size", "2", "--head-dropout", "0",
            "--num-parents", "4", "--children", "8", "--top-k", "2", "--checkpoint-every", "5", *extra]


def start(argv, log_path):
    log = open(log_path, "w")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log


def wait_for_checkpoint(process, out_dir, newer_than=0.0, timeout=300):
    """Block until a resume checkpoint newer than ``newer_than`` exists (the run is mid-training)."""
    marker = out_dir / "resume" / "checkpoint"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.is_file() and marker.stat().st_mtime > newer_than:
            return marker.stat().st_mtime
        assert process.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError("no resume checkpoint appeared")


def progress_lines(output):
    """(epoch, step) of each progress line that training prints when its output is not a terminal."""
    lines = re.findall(r"^epoch (\d)/2, step (\d+)/80: loss", output, flags=re.MULTILINE)
    return [(int(epoch), int(step)) for epoch, step in lines]


def weights(out_dir):
    with np.load(out_dir / "weights.npz") as saved:
        return {name: saved[name] for name in saved.files}


def test_killed_and_interrupted_runs_resume_to_the_uninterrupted_result(tiny_model_dir, tmp_path, capsys):
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    reference = subprocess.run(command(tiny_model_dir, reference_dir), cwd=REPO, capture_output=True, text=True,
                               timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert reference.returncode == 0, reference.stdout[-2000:] + reference.stderr[-2000:]
    assert not (reference_dir / "resume").exists()  # removed once the model is finished
    # Output to a pipe, not a terminal: a progress line at each checkpoint but an epoch's last step (80 an epoch).
    assert progress_lines(reference.stdout) == [(epoch, step) for epoch in (1, 2) for step in range(5, 80, 5)]

    # 1. SIGKILL mid-epoch: no model, but a resume checkpoint.
    process, log = start(command(tiny_model_dir, resumed_dir), tmp_path / "killed.log")
    wait_for_checkpoint(process, resumed_dir)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    log.close()
    assert not (resumed_dir / "config.json").exists()
    state = json.loads((resumed_dir / "resume" / "run.json").read_text())
    assert state["seed"] == 42 and state["epochs"] == 2

    # Neither a fresh start nor a resume with other settings may overwrite it.
    code = run_cli(train.main, command(tiny_model_dir, resumed_dir)[3:])
    assert code == 2 and "holds an interrupted run; pass --resume" in capsys.readouterr().err
    code = run_cli(train.main, command(tiny_model_dir, resumed_dir, "--resume", "--learning-rate", "0.01")[3:])
    assert code == 2 and "learning_rate: was 0.001, now 0.01" in capsys.readouterr().err

    # 2. Resume, then SIGINT during training: the current step finishes, a checkpoint is written, exit 130.
    seen = (resumed_dir / "resume" / "checkpoint").stat().st_mtime
    process, log = start(command(tiny_model_dir, resumed_dir, "--resume"), tmp_path / "interrupted.log")
    wait_for_checkpoint(process, resumed_dir, newer_than=seen)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    log.close()
    output = (tmp_path / "interrupted.log").read_text()
    assert "resuming at epoch" in output and "Traceback" not in output
    assert "checkpoint written to" in output and "--resume to continue" in output
    assert not (resumed_dir / "config.json").exists()

    # 3. Resume to the end: the same model and metrics as the run never interrupted.
    final = subprocess.run(command(tiny_model_dir, resumed_dir, "--resume"), cwd=REPO, capture_output=True,
                           text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    epoch, step = map(int, re.search(r"resuming at epoch (\d), step (\d+) of 80", final.stdout).groups())
    next_checkpoint = (step // 5 + 1) * 5  # the resumed run counts its steps from where it stopped
    first_line = (epoch, next_checkpoint) if next_checkpoint < 80 else (epoch + 1, 5)
    assert progress_lines(final.stdout)[:1] == ([first_line] if first_line[0] <= 2 else [])
    expected, got = weights(reference_dir), weights(resumed_dir)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5, err_msg=name)
    reference_metrics = json.loads((reference_dir / "metrics.json").read_text())
    resumed_metrics = json.loads((resumed_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in resumed_metrics["epochs"]] == [1, 2]
    assert resumed_metrics["final"] == pytest.approx(reference_metrics["final"], abs=1e-6)
    assert not (resumed_dir / "resume").exists()


def test_resume_needs_an_interrupted_run(tiny_model_dir, tmp_path, capsys):
    code = run_cli(train.main, command(tiny_model_dir, tmp_path / "nothing", "--resume")[3:])
    assert code == 2 and "holds no interrupted run to continue" in capsys.readouterr().err


def small_compiled_model(seed):
    tf_keras.utils.set_random_seed(seed)
    model = tf_keras.Sequential([tf_keras.Input(shape=(3,)), tf_keras.layers.Dense(2)])
    model.compile(optimizer=tf_keras.optimizers.Adam(0.1), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)  # creates the optimizer's slots
    return model


def test_a_cluster_worker_other_than_the_chief_never_writes_the_shared_resume_point(tmp_path):
    """Two workers saving into one resume/ directory raced (one's rename met the other's delete)."""
    settings = {"task": "qnli", "seed": 1}
    chief_model, worker_model = small_compiled_model(1), small_compiled_model(2)
    chief = TrainingState(tmp_path, chief_model, settings, chief=True)
    worker = TrainingState(tmp_path, worker_model, settings, chief=False)
    chief.finish_epoch(0, {"epoch": 1, "accuracy": 0.5})
    written = sorted(path.name for path in (tmp_path / "resume").iterdir())
    worker.finish_epoch(0, {"epoch": 1, "accuracy": 0.5})
    assert sorted(path.name for path in (tmp_path / "resume").iterdir()) == written
    private = Path(worker.manager.directory)
    assert private.is_dir() and not private.is_relative_to(tmp_path)

    # Resuming, a worker reads the chief's checkpoint, not its own copy.
    resumed = TrainingState(tmp_path, small_compiled_model(3), settings, chief=False)
    assert resumed.restore() == (1, 0) and resumed.history == [{"epoch": 1, "accuracy": 0.5}]
    for expected, got in zip(chief_model.get_weights(), resumed.manager.checkpoint.model.get_weights()):
        np.testing.assert_array_equal(got, expected)

    worker.remove()
    assert not private.exists() and (tmp_path / "resume").is_dir()
    chief.remove()
    assert not (tmp_path / "resume").exists()
    resumed.remove()
