"""What do a task file's weights cost in size and accuracy? float32 vs float16 vs int8 per channel vs per tensor.

    .venv/bin/python benchmarks/bench_task_weights.py --model-dir models/qnli [--examples all]

Converts the int8 backbone once and the task file four ways, runs the first N dev examples
through the device chain (int8 backbone + task file) and reports, per task-file variant: bytes,
ratio to the int8 backbone (goal: at most 2%), the task metric, and agreement with Keras.
Prints a table and writes JSON (default benchmarks/results/task_weights.json).
"""

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spartan_tf.errors import SpartanError, run_cli  # noqa: E402
from spartan_tf.artifacts import atomic_write_json  # noqa: E402

VARIANTS = {  # name: (weights mode, per-channel int8 scales)
    "float32": ("float32", True),
    "float16": ("float16", True),
    "int8 per channel": ("int8", True),
    "int8 per tensor (bundle)": ("int8", False),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_task_weights.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="models/qnli")
    parser.add_argument("--examples", default="all", help="first N dev examples, or all (default)")
    parser.add_argument("--output", default="benchmarks/results/task_weights.json")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    count = None if args.examples == "all" else int(args.examples) if args.examples.isdigit() else 0
    if count == 0:
        raise SpartanError(f"--examples {args.examples}: expected a count >= 1 or all")

    from spartan_tf import artifacts, data, export, parity
    from spartan_tf.conversion import dev_examples_for
    from spartan_tf.metrics import compute_metrics

    model, config, backbone, task = artifacts.load_trained(args.model_dir)
    examples = dev_examples_for(config, count)
    encoded = data.encode(backbone.tokenizer(config["max_seq_length"]), examples)
    labels = [example.label for example in examples]
    keras = parity.keras_logits(model, task, encoded)
    metric = task.metric_names[0]
    rows = [{"task_file": "keras (reference)", metric: compute_metrics(task, keras, labels)[metric]}]
    with tempfile.TemporaryDirectory(prefix="bench-task-") as scratch:
        backbone_path = Path(scratch) / "backbone.tflite"
        backbone_path.write_bytes(export.to_tflite(export.backbone_signatures(backbone, config["max_seq_length"]), "int8"))
        backbone_bytes = backbone_path.stat().st_size
        for name, (weights, per_channel) in VARIANTS.items():
            path = Path(scratch) / f"task-{weights}-{per_channel}.tflite"
            path.write_bytes(export.to_tflite(export.task_signatures(model), weights, per_channel=per_channel))
            logits = parity.run_one_by_one(parity.SplitBundle(backbone_path, path), encoded)
            row = parity.compare(name, task, keras, logits, labels)
            rows.append({"task_file": name, "bytes": path.stat().st_size,
                         "ratio_to_int8_backbone": round(path.stat().st_size / backbone_bytes, 5),
                         metric: row.metrics[metric], "agreement_with_keras": row.agreement,
                         "max_abs_logit_diff": row.max_abs_diff})

    print(f"{len(examples)} {task.name} dev examples; int8 backbone {backbone_bytes:,} bytes; {parity.runtime_name()}")
    print(f"{'task file':<26} {'bytes':>10} {'of backbone':>12} {metric:>9} {'agree w/ Keras':>15}")
    for row in rows:
        size = f"{row['bytes']:>10,} {100 * row['ratio_to_int8_backbone']:>11.2f}%" if "bytes" in row else " " * 23
        agree = f"{100 * row['agreement_with_keras']:.2f}%" if "agreement_with_keras" in row else "-"
        print(f"{row['task_file']:<26} {size} {row[metric]:>9.4f} {agree:>15}")
    report = {
        "command": "python benchmarks/bench_task_weights.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "examples": len(examples), "backbone_bytes": backbone_bytes, "runtime": parity.runtime_name(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "rows": rows,
    }
    atomic_write_json(args.output, report)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
