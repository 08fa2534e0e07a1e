"""Training under tf.distribute: MirroredStrategy over 2 logical CPUs, and 2 workers on localhost."""

import json
import os
import socket
import subprocess
import sys

import pytest

from repo_paths import GLUE_SAMPLES, REPO

from spartan_tf.distribute import global_batch_size
from spartan_tf.errors import SpartanError


def test_mirrored_training_matches_one_device_and_checkpoints_cross(tiny_model_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "distributed_check.py"), str(tiny_model_dir), str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    # Training moved every weight, and the two runs (with the load-balancing loss on) agree.
    assert min(report["max_abs_moved"].values()) > 1e-3
    assert max(report["max_abs_diff"].values()) < 1e-5, report["max_abs_diff"]
    assert report["loss_single"] == pytest.approx(report["loss_mirrored"], abs=1e-5)
    assert report["checkpoint_mirrored_to_single"] == 0.0
    assert report["checkpoint_single_to_mirrored"] == 0.0


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_two_workers_train_with_multiworker_mirrored_strategy(tiny_model_dir, tmp_path):
    workers = [f"localhost:{port}" for port in free_ports(2)]
    out_dir = tmp_path / "model"
    command = [sys.executable, "-m", "spartan_tf.train", "--strategy", "multiworker", "--task", "qnli",
               "--model", str(tiny_model_dir), "--data-dir", str(GLUE_SAMPLES), "--output-dir", str(out_dir),
               "--max-train-samples", "16", "--max-eval-samples", "16", "--epochs", "1", "--batch-size", "4",
               "--num-parents", "4", "--children", "8", "--top-k", "2"]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "PYTHONPATH": str(REPO)}
        log = open(tmp_path / f"worker{index}.log", "w")
        processes.append((subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        codes = [process.wait(timeout=420) for process, _ in processes]
    finally:
        for process, log in processes:
            process.kill() if process.poll() is None else None
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    for log in logs:
        assert "strategy MultiWorkerMirroredStrategy (2 replicas); global batch 8 (4 per replica)" in log
    config = json.loads((out_dir / "config.json").read_text())  # written once, by the chief (worker 0)
    assert config["training"]["replicas"] == 2 and config["training"]["global_batch_size"] == 8
    assert (out_dir / "weights.npz").is_file()


def test_multiworker_without_tf_config_is_a_clear_error(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "spartan_tf.train", "--strategy", "multiworker", "--task", "qnli", "--data-dir",
         str(GLUE_SAMPLES), "--output-dir", str(tmp_path / "o"), "--max-train-samples", "4"],
        capture_output=True, text=True, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "TF_CONFIG" in result.stderr.strip().splitlines()[-1]


def test_global_batch_rules():
    assert global_batch_size(16, 4, per_replica=True) == 64
    assert global_batch_size(16, 4, per_replica=False) == 16
    with pytest.raises(SpartanError, match="not divisible by 3 replicas"):
        global_batch_size(16, 3, per_replica=False)
