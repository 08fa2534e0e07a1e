"""Evaluate a trained task; prints its metrics as one JSON object.

    python -m spartan_tf.evaluate --model-dir models/qnli [--eval-file FILE]
"""

import argparse
import json
import sys

from spartan_tf.errors import SpartanError, run_cli


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m spartan_tf.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="a directory written by spartan_tf.train")
    parser.add_argument("--eval-file", help="a file in the task's layout (default: the dev data used in training)")
    parser.add_argument("--model", help="backbone location, if it moved since training (fingerprint must match)")
    parser.add_argument("--max-eval-samples", type=int, help="the first N examples only")
    parser.add_argument("--batch-size", type=int, default=32)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or (args.max_eval_samples is not None and args.max_eval_samples < 1):
        raise SpartanError("--batch-size and --max-eval-samples must be >= 1")
    from dataclasses import replace
    from pathlib import Path

    from spartan_tf import artifacts
    from spartan_tf.sources import DataSource, read_split

    config = artifacts.read_config(args.model_dir)
    task = artifacts.task_from_config(config)
    source = DataSource.from_dict(config["task"]["data"])
    if args.eval_file:
        if not Path(args.eval_file).is_file():
            raise SpartanError(f"--eval-file {args.eval_file}: no such file")
        source = replace(source, eval_file=str(Path(args.eval_file).resolve()))
    examples = read_split(task, source, "dev")
    if args.max_eval_samples:
        examples = examples[: args.max_eval_samples]
    if not examples:
        raise SpartanError("the evaluation set is empty")

    from spartan_tf.evaluation import evaluate, example_dataset

    model, config, backbone, task = artifacts.load_trained(args.model_dir, args.model)
    dataset = example_dataset(task, examples, backbone.tokenizer(config["max_seq_length"]), args.batch_size)
    metrics = evaluate(model, task, dataset)
    print(json.dumps({"task": task.name, "examples": len(examples), **metrics}))


if __name__ == "__main__":
    sys.exit(run_cli(main))
