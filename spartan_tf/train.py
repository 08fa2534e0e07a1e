"""Train a task: a method's weights (SPARTAN memories by default; adapters, LoRA or the full backbone) and a head.

    python -m spartan_tf.train --task qnli --data-dir ../shared/data/glue
    python -m spartan_tf.train --task qnli --data-dir ../shared/data/glue --method adapters
    python -m spartan_tf.train --task custom --train-file train.tsv --eval-file dev.tsv
"""

import argparse
import sys
from pathlib import Path

from spartan_tf import artifacts, data, tasks
from spartan_tf.backbone import DEFAULT_MODEL
from spartan_tf.distribute import STRATEGIES
from spartan_tf.errors import SpartanError, run_cli
from spartan_tf.methods import METHODS, get_method
from spartan_tf.methods.spartan import PRESETS
from spartan_tf.sources import read_split, source_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m spartan_tf.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, help=f"one of {', '.join(tasks.GLUE_TASK_NAMES)}, or custom")
    parser.add_argument("--method", default="spartan", choices=sorted(METHODS), help="default: spartan")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"backbone: local directory or hub name (default {DEFAULT_MODEL}, shipped offline)")
    data_group = parser.add_argument_group("data")
    data_group.add_argument("--data-dir", help="folder in GLUE's TSV layout (e.g. ../shared/data/glue); default: tensorflow-datasets glue/<task>")
    data_group.add_argument("--train-file", help="custom task: TSV, CSV or JSONL with text[, text_pair], label")
    data_group.add_argument("--eval-file", help="evaluate on this file (the task's layout) instead of the dev split")
    data_group.add_argument("--problem-type", choices=("classification", "regression"), default="classification", help="custom task only")
    data_group.add_argument("--max-train-samples", type=int, help="seeded, class-balanced few-shot sample of the training set")
    data_group.add_argument("--max-eval-samples", type=int, help="evaluate on the first N dev examples only")
    data_group.add_argument("--max-seq-length", type=int, default=128, help="truncate longer inputs (default 128)")
    train_group = parser.add_argument_group("training")
    defaults = ", ".join(f"{name} {method.default_learning_rate:g}" for name, method in METHODS.items())
    train_group.add_argument("--preset", choices=sorted(PRESETS),
                             help="SPARTAN only: a named recipe; 'reference' is the paper's reference code's, "
                                  "'short-budget' learns faster in runs of a few hundred steps, "
                                  "'few-shot' trains faster on about 200 examples "
                                  "(flags given explicitly still win)")
    train_group.add_argument("--learning-rate", type=float, help=f"default: the method's ({defaults})")
    train_group.add_argument("--lr-schedule", choices=("linear", "constant"), default="linear",
                             help="after the warm-up: linear decay to 0 (default) or constant")
    train_group.add_argument("--warmup-ratio", type=float, default=0.0,
                             help="fraction of the steps spent warming up linearly from 0 (default 0)")
    train_group.add_argument("--clip-norm", type=float,
                             help="clip the gradients to this global norm before each step (default: no clipping)")
    train_group.add_argument("--weight-decay", type=float,
                             help="decoupled weight decay (AdamW) of the method's weights, not the head's: each step "
                                  "shrinks them by the learning rate times this (default: none)")
    train_group.add_argument("--batch-size", type=int, default=16,
                             help="examples per replica and step (default 16); see --per-replica-batch")
    train_group.add_argument("--epochs", type=int, default=3)
    train_group.add_argument("--seed", type=int, default=42)
    train_group.add_argument("--head-dropout", type=float, default=0.1)
    train_group.add_argument("--backbone-dropout", action=argparse.BooleanOptionalAction, default=False,
                             help="run the frozen backbone's own dropouts while training (default: off)")
    train_group.add_argument("--tune-layer-norms", action=argparse.BooleanOptionalAction, default=False,
                             help="also learn, per task, a scale and shift of every LayerNorm's output in the "
                                  "layers the method works in, as Houlsby et al. train the LayerNorms: adapters and "
                                  "SPARTAN (default: off)")
    train_group.add_argument("--pooling", choices=("cls", "mean"), default="mean",
                             help="what the head reads: the mean of the real tokens (default; how the shipped "
                                  "backbone was trained) or the first token (cls, BERT's pooler)")
    scale_group = parser.add_argument_group("distributed training (docs/distributed.md)")
    scale_group.add_argument("--strategy", choices=STRATEGIES, default="auto",
                             help="auto (default: every local GPU if several), mirrored, multiworker (TF_CONFIG), tpu")
    scale_group.add_argument("--tpu", help="TPU name or grpc://host:port, for --strategy tpu")
    scale_group.add_argument("--per-replica-batch", action=argparse.BooleanOptionalAction, default=True,
                             help="--batch-size is per replica, global batch = batch size x replicas (default); "
                                  "--no-per-replica-batch makes --batch-size the global batch")
    parser.add_argument("--output-dir", help="default: models/<task>")
    parser.add_argument("--overwrite", action="store_true", help="replace a model (or an interrupted run) in --output-dir")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --output-dir (same command otherwise)")
    parser.add_argument("--checkpoint-every", type=int, default=50,
                        help="steps between resume checkpoints (default 50; also at each epoch end and on Ctrl-C); "
                             "when output goes to a file, a progress line at each")
    parser.set_defaults(method_flags={})
    for method in METHODS.values():
        before = len(parser._actions)
        method.add_arguments(parser)
        parser.get_default("method_flags")[method.name] = parser._actions[before:]
    return parser


def check_method_flags(parser, args, argv):
    """A flag of another method than ``--method`` is refused, not silently ignored."""
    unset = object()
    probe = argparse.Namespace(**{action.dest: unset for actions in args.method_flags.values() for action in actions})
    parser.parse_args(argv, namespace=probe)  # argparse leaves attributes already present untouched
    for name, actions in args.method_flags.items():
        given = [action.option_strings[0] for action in actions if getattr(probe, action.dest) is not unset]
        if name != args.method and given:
            raise SpartanError(f"{given[0]} is a flag of --method {name}, not of --method {args.method}")


def check_numbers(args):
    for flag, value, low in [
        ("--batch-size", args.batch_size, 1), ("--epochs", args.epochs, 1),
        ("--max-train-samples", args.max_train_samples, 1), ("--max-eval-samples", args.max_eval_samples, 1),
        ("--checkpoint-every", args.checkpoint_every, 1),
    ]:
        if value is not None and value < low:
            raise SpartanError(f"{flag} {value}: must be >= {low}")
    if args.tpu and args.strategy != "tpu":
        raise SpartanError("--tpu is only for --strategy tpu")
    if not 0 <= args.warmup_ratio < 1:
        raise SpartanError(f"--warmup-ratio {args.warmup_ratio}: must be in [0, 1)")
    for flag, value in (("--learning-rate", args.learning_rate), ("--clip-norm", args.clip_norm),
                        ("--weight-decay", args.weight_decay)):
        if value is not None and value <= 0:
            raise SpartanError(f"{flag} {value}: must be > 0")
    if not 0 <= args.head_dropout < 1:
        raise SpartanError(f"--head-dropout {args.head_dropout}: must be in [0, 1)")


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, checked; a ``--preset`` supplies the defaults of the flags not given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset:
        if args.method != "spartan":
            raise SpartanError(f"--preset {args.preset} is a SPARTAN recipe, not one for --method {args.method}")
        parser.set_defaults(**PRESETS[args.preset])
        args = parser.parse_args(argv)
    check_numbers(args)
    check_method_flags(parser, args, argv)
    if args.tune_layer_norms and not hasattr(get_method(args.method), "tune_layer_norms"):
        tuning = [name for name, method in METHODS.items() if hasattr(method, "tune_layer_norms")]
        raise SpartanError(f"--tune-layer-norms is for --method {' and '.join(tuning)}, not --method {args.method}")
    return args


def main(argv=None):
    args = parse_args(argv)
    # Everything that can fail on the user's input is checked before the backbone loads.
    method = get_method(args.method).from_args(args)
    source = source_from_args(args.task, args.data_dir, args.train_file, args.eval_file)
    if args.task == "custom":
        train_examples, label_names = data.read_custom_file(source.train_file, None, args.problem_type)
        task = tasks.custom_task(label_names, args.problem_type)
    else:
        task = tasks.get_task(args.task)
        train_examples = read_split(task, source, "train")
    out_dir = Path(args.output_dir or Path("models") / task.name)

    artifacts.check_output_dir(out_dir, task.name, args.overwrite, args.resume)
    dev_examples = read_split(task, source, "dev")
    if args.max_train_samples:
        train_examples = data.few_shot_sample(train_examples, args.max_train_samples, args.seed, task)
    if args.max_eval_samples:
        dev_examples = dev_examples[: args.max_eval_samples]
    if not train_examples:
        raise SpartanError("the training set is empty")
    if not dev_examples:
        raise SpartanError("the evaluation set is empty")

    from spartan_tf.training import train_task  # imports TensorFlow

    train_task(
        task=task, method=method, source=source, model_name=args.model,
        train_examples=train_examples, dev_examples=dev_examples, out_dir=out_dir,
        learning_rate=args.learning_rate or method.default_learning_rate,
        batch_size=args.batch_size, per_replica_batch=args.per_replica_batch,
        strategy_name=args.strategy, tpu=args.tpu, epochs=args.epochs, seed=args.seed,
        max_seq_length=args.max_seq_length, head_dropout=args.head_dropout, pooling=args.pooling,
        backbone_dropout=args.backbone_dropout,
        lr_schedule=args.lr_schedule, warmup_ratio=args.warmup_ratio,
        clip_norm=args.clip_norm, weight_decay=args.weight_decay,
        run_info={"max_train_samples": args.max_train_samples, "max_eval_samples": args.max_eval_samples},
        resume=args.resume, checkpoint_every=args.checkpoint_every,
    )


if __name__ == "__main__":
    sys.exit(run_cli(main))
