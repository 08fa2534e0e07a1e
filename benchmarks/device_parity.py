"""Does the device client predict what the Keras model predicts? Per-example comparison on a dev file.

    .venv/bin/python benchmarks/device_parity.py --model-dir models/qnli --bundle models/tflite \\
        [--bundle ANOTHER ...] --eval-file ../shared/data/glue/QNLI/dev.tsv [--max-examples N] [--json-out FILE]

Runs the trained Keras model (spartan_tf.artifacts.load_trained, the same model `python -m
spartan_tf.evaluate` scores) and, as a subprocess, `python device/infer.py` on the same rows, then
prints, per bundle: examples, its deployment (shared or whole), Keras and client metrics (the task's
GLUE metrics, e.g. accuracy), the share of examples where both predict the same label, the logit
differences, and whether the goal is met (float32: >= 99% agreement; otherwise the metric within 0.5
points of Keras). The client sees exactly the
file the user would give it (its own TSV reader and tokenization).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spartan_tf.artifacts import atomic_write_json

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def keras_logits(model_dir: str, examples, batch_size: int) -> tuple[np.ndarray, object]:
    """Logits of the Keras task model for ``examples``, in their order."""
    from spartan_tf import artifacts, data

    model, config, backbone, task = artifacts.load_trained(model_dir)
    encoded = data.encode(backbone.tokenizer(config["max_seq_length"]), examples)
    dataset = data.make_dataset(encoded, [ex.label for ex in examples], batch_size, shuffle=False, seed=0,
                                task=task, order_by_length=True)
    order = data.length_order(encoded)
    logits_sorted = model.predict(dataset.map(lambda features, _: features), verbose=0)
    logits = np.empty_like(logits_sorted)
    logits[order] = logits_sorted
    return logits, task


def client_logits(bundle: str, task_name: str, eval_file: Path, batch_size: int, threads: int,
                  runtime: str | None) -> tuple[np.ndarray, list[str], float]:
    """Logits of `python device/infer.py` on ``eval_file``, one row per input row (all must succeed)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "predictions.jsonl"
        command = [sys.executable, str(REPO / "device" / "infer.py"), "--bundle", bundle, "--task", task_name,
                   "--input", str(eval_file), "--output", str(out), "--batch-size", str(batch_size),
                   "--threads", str(threads)] + (["--runtime", runtime] if runtime else [])
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"error: the client failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    return np.array([row["logits"] for row in rows], dtype=np.float64), [row["label"] for row in rows], seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--bundle", action="append", required=True, help="repeatable: one Keras run for all")
    parser.add_argument("--eval-file", required=True, help="a file in the task's GLUE TSV layout")
    parser.add_argument("--max-examples", type=int, help="the first N rows only")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtime")
    parser.add_argument("--json-out", help="also write the figures here as JSON")
    args = parser.parse_args(argv)

    from spartan_tf import artifacts, data
    from spartan_tf.metrics import compute_metrics

    task = artifacts.task_from_config(artifacts.read_config(args.model_dir))
    examples = data.read_task_file(task, args.eval_file)
    eval_file = Path(args.eval_file)
    with tempfile.TemporaryDirectory() as tmp:
        if args.max_examples:  # the same first N rows, as a TSV the client reads
            examples = examples[: args.max_examples]
            lines = eval_file.read_text(encoding="utf-8-sig").splitlines(keepends=True)
            eval_file = Path(tmp) / eval_file.name
            eval_file.write_text("".join(lines[: args.max_examples + 1]), encoding="utf-8")
        clients = {bundle: client_logits(bundle, task.name, eval_file, args.batch_size, args.threads, args.runtime)
                   for bundle in args.bundle}
    start = time.perf_counter()
    keras, task = keras_logits(args.model_dir, examples, args.batch_size)
    keras_s = time.perf_counter() - start
    labels = np.array([ex.label for ex in examples])
    report = {"model_dir": args.model_dir, "eval_file": str(args.eval_file), "examples": len(examples),
              "keras": compute_metrics(task, keras, labels), "keras_seconds": round(keras_s, 1), "bundles": []}
    for bundle, (client, client_labels, client_s) in clients.items():
        if len(client) != len(examples):
            sys.exit(f"error: the client answered {len(client)} rows of {bundle}, expected {len(examples)}")
        diff = np.abs(client - keras)
        manifest = json.loads((Path(bundle) / "manifest.json").read_text())
        figures = {
            "bundle": bundle,
            "weights": manifest["tasks"][task.name].get("weights"),
            "deployment": manifest["tasks"][task.name].get("deployment"),  # shared (a graph + task tensors) or whole
            "client": compute_metrics(task, client, labels),
            "max_abs_logit_diff": float(f"{diff.max():.3g}"),
            "mean_abs_logit_diff": float(f"{diff.mean():.3g}"),
            "client_seconds": round(client_s, 1),
        }
        if not task.is_regression:
            keras_pred, client_pred = keras.argmax(1), client.argmax(1)
            if [task.label_names[i] for i in client_pred] != client_labels:
                sys.exit("error: the client's labels disagree with its own logits")
            figures["agreement"] = round(float((keras_pred == client_pred).mean()), 5)
            figures["disagreements"] = int((keras_pred != client_pred).sum())
        metric = task.metric_names[0]
        gap = 100 * (figures["client"][metric] - report["keras"][metric])
        figures[f"{metric}_minus_keras_points"] = round(gap, 2)
        # the goals: float32 agrees with Keras on >= 99% of examples, int8 within 0.5 points of Keras
        figures["goal_met"] = (figures.get("agreement", 1.0) >= 0.99 if figures["weights"] == "float32"
                               else abs(gap) <= 0.5)
        report["bundles"].append(figures)
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json_out, report)


if __name__ == "__main__":
    main()
