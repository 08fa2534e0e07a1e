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

LONG = " ".join(f"word{i} and the sentence goes on" for i in range(40))  # far beyond 128 tokens
ITEMS = {
    "qnli": [
        ("Who wrote Hamlet?", "Hamlet was written by Shakespeare."),
        ("What is the capital of France?", "Paris is the capital and largest city of France."),
        ("Why?", LONG),                      # truncation takes tokens from the longer text only
        (LONG, "Short answer."),
        (LONG + " first", LONG + " second"),  # both long: longest_first alternates
        ("When did it happen?", "It happened in 1999 , during the summer ."),
    ],
    "sst2": [
        ("it 's a charming and often affecting journey .", None),
        ("unflinchingly bleak and desperate", None),
        (LONG, None),                        # beyond sst2's max length of 32
        ("a", None),
    ],
}


def keras_logits(task_dir, items):
    """Reference logits from the Keras task model, one unpadded example at a time."""
    import numpy as np

    from spartan_tf import artifacts, data

    model, config, backbone, _ = artifacts.load_trained(str(task_dir))
    tokenizer = backbone.tokenizer(config["max_seq_length"])
    encoded = data.encode(tokenizer, [data.Example(text, pair, 0) for text, pair in items])
    rows = []
    for i in range(len(items)):
        features = {name: np.array([encoded[name][i]], dtype=np.int32) for name in data.FEATURE_NAMES}
        rows.append(model(features, training=False).numpy()[0])
    return np.array(rows)


def mixed_input(path):
    """A JSON-lines file that alternates the two tasks, ids i0, i1, ..."""
    lines, order = [], []
    queues = {task: list(enumerate(items)) for task, items in ITEMS.items()}
    while any(queues.values()):
        for task, queue in queues.items():
            if queue:
                index, (text, pair) = queue.pop(0)
                record = {"id": f"i{len(lines)}", "task": task, "text": text}
                if pair is not None:
                    record["text_pair"] = pair
                lines.append(json.dumps(record))
                order.append((task, index))
    path.write_text("\n".join(lines) + "\n")
    return order


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
    # JSON Lines end at "\n" only: str.splitlines() would also cut at \x85 or \u2028, valid inside a string
    return [json.loads(line) for line in text.split("\n") if line.strip()]


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
