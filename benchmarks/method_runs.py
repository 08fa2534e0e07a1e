"""One training run of ``python -m spartan_tf.train`` in its own process, as the baseline benchmarks use it.

Each run is a fresh process (a fresh TensorFlow, no graphs or memory left over from the previous
method), so every method is timed the same way a user would run it.
"""

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from spartan_tf.artifacts import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
METHOD_NAMES = ("spartan", "adapters", "lora", "full")


def stop_on_sigterm(signum, frame):
    """``kill`` acts as Ctrl-C (install at a benchmark's entry with ``signal.signal(SIGTERM, ...)``): the
    KeyboardInterrupt stops the running ``train_run`` subprocess and removes the scratch folders."""
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def train_run(method: str, task: str, data_dir, out_dir, *extra, log=None) -> dict:
    """Train ``method`` on ``task`` into ``out_dir``; returns metrics.json plus ``wall_seconds``,
    ``weights_bytes`` and ``learning_rate``, or ``{"error": ...}`` (see ``failure_message``) if it failed.
    The run's per-epoch checkpoints are deleted; the model itself (config, weights) stays."""
    out_dir = Path(out_dir)
    command = [sys.executable, "-m", "spartan_tf.train", "--task", task, "--method", method,
               "--data-dir", str(data_dir), "--output-dir", str(out_dir), "--overwrite", *map(str, extra)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - start
    if log is not None:
        Path(log).write_text(f"$ {' '.join(command)}\n{result.stdout}\n--- stderr ---\n{result.stderr}")
    if result.returncode != 0:
        return {"error": failure_message(result.returncode, result.stderr), "wall_seconds": round(wall, 1)}
    metrics = json.loads((out_dir / "metrics.json").read_text())
    config = json.loads((out_dir / "config.json").read_text())
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # per-epoch weights + optimizer: ~270 MB for full
    return {**metrics, "wall_seconds": round(wall, 1), "weights_bytes": (out_dir / "weights.npz").stat().st_size,
            "learning_rate": config["training"]["learning_rate"], "method_config": config["method"]}


def failure_message(returncode: int, stderr: str) -> str:
    """Why a run failed: the signal that killed it (its stderr's last line is then whatever TensorFlow
    last logged, not the cause), else the last line of its stderr, else its exit code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {returncode}"


# The instruction sets that decide an int8 runtime's speed; two VMs that both say "AMD EPYC" differ in them.
SIMD_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx512_bf16": "AVX-512 BF16",
              "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8", "asimddp": "NEON dot product", "i8mm": "I8MM"}


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name and its SIMD extensions from ``cpuinfo`` (Linux), e.g. "AMD EPYC (AVX2)";
    else what platform knows."""
    name, flags = None, set()
    try:
        with open(cpuinfo, encoding="utf-8") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if name is None and key in ("model name", "hardware", "cpu model"):
                    name = value.strip()
                elif not flags and key in ("flags", "features"):
                    flags = set(value.split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    simd = [label for flag, label in SIMD_FLAGS.items() if flag in flags]
    return f"{name} ({', '.join(simd)})" if simd else name


def machine() -> dict:
    """What the figures were measured on (the load average matters: this host's cores are shared)."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def take_turns(labels, count: int, call, repeats: int, block: int, warm_up: int = 5):
    """Time ``call(label, index)`` for every index in ``range(count)``, ``repeats`` times per label.

    The labels take turns in blocks of ``block`` indices, the one that goes first rotating from block
    to block, so a host whose speed drifts slows every label alike; the first ``warm_up`` indices run
    once per label beforehand, untimed. Returns ({label: [ms per call]}, {label: process CPU seconds},
    {label: [what each timed call returned]}).
    """
    labels = list(labels)
    for label in labels:
        for index in range(min(warm_up, count)):
            call(label, index)
    latencies = {label: [] for label in labels}
    returned = {label: [] for label in labels}
    cpu_seconds = dict.fromkeys(labels, 0.0)
    turn = 0
    for _ in range(repeats):
        for start in range(0, count, block):
            order = labels[turn % len(labels):] + labels[:turn % len(labels)]
            turn += 1
            for label in order:
                cpu_start = time.process_time()
                for index in range(start, min(start + block, count)):
                    t0 = time.perf_counter()
                    returned[label].append(call(label, index))
                    latencies[label].append(1000.0 * (time.perf_counter() - t0))
                cpu_seconds[label] += time.process_time() - cpu_start
    return latencies, cpu_seconds, returned


def write_json(path, obj):
    atomic_write_json(path, obj)


def print_table(headers, rows):
    """A Markdown table (also readable in a terminal)."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(line([str(h) for h in headers]))
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print(line(row))
