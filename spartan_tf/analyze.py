"""Which parents specialise in what: run a trained SPARTAN model over a labelled file and report.

    python -m spartan_tf.analyze --model-dir models/bbc --data test.tsv [--label-column label]
                                 [--output-dir DIR] [--compare OTHER_MODEL_DIR]

Writes report.md, report.json, parent_weights.npz and PNG figures to --output-dir (default
MODEL_DIR/analysis); with --compare, the other model's report goes to OUTPUT_DIR/compare and the
main report puts both side by side. See docs/analysis.md.
"""

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from spartan_tf.errors import SpartanError, run_cli


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m spartan_tf.analyze", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="a SPARTAN model written by spartan_tf.train")
    parser.add_argument("--data", required=True, help="labelled file: .tsv/.csv/.jsonl with text[, text_pair], label, "
                                                      "or for a GLUE model a file in the task's GLUE layout")
    parser.add_argument("--label-column", default="label", help="label column of a text[, text_pair] file (default label)")
    parser.add_argument("--output-dir", help="default: MODEL_DIR/analysis")
    parser.add_argument("--compare", metavar="OTHER_MODEL_DIR", help="also analyse this model (same labels) side by side")
    parser.add_argument("--model", help="backbone location, if it moved since training (fingerprint must match)")
    parser.add_argument("--max-examples", type=int, help="the first N examples of --data only")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shuffles", type=int, default=20, help="label permutations for the chance level (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the permutations (default 0)")
    parser.add_argument("--untrained-control", action="store_true",
                        help="also score the same memories at their initial weights (the training seed's), to "
                             "separate what training added from what the frozen backbone already gives")
    return parser


def machine() -> str:
    """e.g. "x86_64, 2 CPUs, no GPU, Linux 6.1, Python 3.11.9"."""
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, {f'{gpus} GPU(s)' if gpus else 'no GPU'}, "
            f"{platform.system()} {platform.release().split('-')[0]}, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}")


def training_seed(config: dict):
    """The seed the model was trained (and its memories initialised) with, or None."""
    seed = (config.get("training") or {}).get("seed")
    return seed if isinstance(seed, int) else None


def prepare(model_dir, data_file, label_column, max_examples, untrained_control=False):
    """Checks that need no TensorFlow: (config, task, examples)."""
    from spartan_tf import artifacts
    from spartan_tf.specialisation import read_labelled_file

    config = artifacts.read_config(model_dir)
    if config["method"].get("name") != "spartan":
        raise SpartanError(f"--model-dir {model_dir}: method {config['method'].get('name')!r} has no parent cells; "
                           "analyze needs a SPARTAN model")
    if untrained_control and training_seed(config) is None:
        raise SpartanError(f"--untrained-control: {model_dir}/config.json records no training seed")
    task = artifacts.task_from_config(config)
    examples = read_labelled_file(data_file, task, label_column)
    if max_examples:
        examples = examples[:max_examples]
    return config, task, examples


def analyse_model(model_dir, examples, args, command: str, output_dir: Path, backbone=None):
    """Record and score one model: (report dict, Recording, backbone). ``backbone``: one already loaded
    (reused when its fingerprint is the one this model was trained on)."""
    import numpy as np

    from spartan_tf import artifacts
    from spartan_tf.metrics import compute_metrics
    from spartan_tf.specialisation import analyse, record

    start = time.perf_counter()
    config = artifacts.read_config(model_dir)
    if backbone is not None and backbone.fingerprint() != config["backbone"].get("fingerprint"):
        backbone = None
    model, config, backbone, task = artifacts.load_trained(model_dir, args.model, backbone=backbone)
    recording = record(model, task, examples, backbone.tokenizer(config["max_seq_length"]), args.batch_size)
    method = config["method"]
    layers = analyse(recording, task.label_names, method["top_k"], args.shuffles, args.seed)
    untrained = None
    if args.untrained_control:
        untrained = untrained_layers(backbone, config, task, examples, args)
    counts = np.bincount(recording.labels, minlength=len(task.label_names))
    report = {
        "model_name": Path(model_dir).resolve().name,
        "model_dir": str(Path(model_dir).resolve()),
        "output_dir": str(output_dir.resolve()),
        "backbone": config["backbone"]["model"],
        "task": task.name,
        "method": method,
        "data": str(Path(args.data).resolve()),
        "label_column": args.label_column,
        "examples": len(examples),
        "label_names": list(task.label_names),
        "label_counts": {name: int(n) for name, n in zip(task.label_names, counts)},
        "metrics": compute_metrics(task, recording.logits, recording.labels),
        "shuffles": args.shuffles,
        "seed": args.seed,
        "command": command,
        "machine": machine(),
        "seconds": time.perf_counter() - start,
        "layers": layers,
        "untrained": untrained,
    }
    return report, recording, backbone


UNTRAINED_KEYS = ("usage_entropy", "effective_parents", "nmi_argmax", "nmi_argmax_shuffled_mean",
                  "nmi_argmax_shuffled_max", "nmi_topk", "nmi_topk_shuffled_mean")


def untrained_layers(backbone, config, task, examples, args) -> dict:
    """The statistics of the model's memories at initialisation (rebuilt with the training seed)."""
    from spartan_tf.methods import method_from_dict
    from spartan_tf.model import build_task_model
    from spartan_tf.specialisation import analyse, record

    seed = training_seed(config)
    method = method_from_dict(config["method"])
    model = build_task_model(backbone, method, task.num_outputs, 0.0, seed, config["head"].get("pooling", "cls"))
    recording = record(model, task, examples, backbone.tokenizer(config["max_seq_length"]), args.batch_size)
    layers = analyse(recording, task.label_names, method.top_k, args.shuffles, args.seed)
    return {"seed": seed, "layers": [{"layer": layer["layer"], **{key: layer[key] for key in UNTRAINED_KEYS}}
                                     for layer in layers]}


def main(argv=None):
    args = build_parser().parse_args(argv)
    for flag, value in [("--batch-size", args.batch_size), ("--max-examples", args.max_examples),
                        ("--shuffles", args.shuffles)]:
        if value is not None and value < 1:
            raise SpartanError(f"{flag} {value}: must be >= 1")
    command = "python -m spartan_tf.analyze " + shlex.join(sys.argv[1:] if argv is None else argv)
    _, task, examples = prepare(args.model_dir, args.data, args.label_column, args.max_examples,
                             args.untrained_control)
    if args.compare:
        try:
            _, other_task, _ = prepare(args.compare, args.data, args.label_column, args.max_examples,
                                       args.untrained_control)
        except SpartanError as err:  # name the flag the user gave
            raise SpartanError(str(err).replace("--model-dir", "--compare", 1)) from None
        if other_task.label_names != task.label_names:
            raise SpartanError(f"--compare {args.compare}: labels {list(other_task.label_names)} differ from "
                               f"--model-dir's {list(task.label_names)}")
    output_dir = Path(args.output_dir or Path(args.model_dir) / "analysis")
    if output_dir.exists() and not output_dir.is_dir():
        raise SpartanError(f"--output-dir {output_dir}: exists and is not a directory")

    from spartan_tf.specialisation_report import REPORT_MD, write_report

    compare, backbone = None, None
    if args.compare:
        compare_dir = output_dir / "compare"
        compare, compare_recording, backbone = analyse_model(args.compare, examples, args, command, compare_dir)
        write_report(compare_dir, compare, compare_recording)
    report, recording, _ = analyse_model(args.model_dir, examples, args, command, output_dir, backbone)
    write_report(output_dir, report, recording, compare)
    for result in [report] + ([compare] if compare else []):
        scores = " ".join(f"{layer['nmi_argmax']:.3f}({layer['nmi_argmax_shuffled_mean']:.3f})"
                          for layer in result["layers"])
        entropies = " ".join(f"{layer['usage_entropy']:.3f}" for layer in result["layers"])
        metrics = ", ".join(f"{name} {value:.4f}" for name, value in result["metrics"].items())
        print(f"{result['model_name']}: {metrics}; NMI argmax per layer (shuffled): {scores}; "
              f"usage entropy: {entropies}")
    print(f"report: {output_dir / REPORT_MD}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
