"""Helpers of the device tests: run the client as a subprocess, convert tiny tasks, edit manifests.

A module of its own (not conftest.py) so that its name cannot clash with tests/conftest.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path


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


def _convert(task_dirs: dict, out: Path, *flags) -> Path:
    command = [sys.executable, str(REPO / "convert" / "to_tflite.py"), "--output-dir", str(out), "--check-samples", "3",
               *flags]  # 3: the manifest keeps 3 reference inputs; the tests compare with Keras themselves
    for directory in task_dirs.values():
        command += ["--model-dir", str(directory)]
    _run(command)
    return out


def rewrite_manifest(bundle: Path, change):
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
