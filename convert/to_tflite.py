"""Convert trained tasks into a device bundle: one shared int8 backbone + one small file per task.

    python convert/to_tflite.py                          every task under models/ -> models/tflite/
    python convert/to_tflite.py --model-dir models/qnli --model-dir models/sst2 --output-dir bundle/

SPARTAN, adapter and unmerged LoRA tasks are shared: a task file holds only the task's tensors, run
on one shared backbone graph (backbone.<graph>.tflite) in one invocation per text; full fine-tuning
and merged LoRA (the default for LoRA) change the backbone, so each such task is a whole model in
one graph, as is every task with --whole (docs/bundle-format.md).

The bundle format is docs/bundle-format.md. Bad input exits with code 2 and one ``error: ...``
line; a float32 bundle that disagrees with Keras in the parity check exits with code 1.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spartan_tf.conversion import DEFAULT_MODELS_DIR, DEFAULT_OUTPUT_DIR, Options, ParityFailure  # noqa: E402
from spartan_tf.errors import run_cli  # noqa: E402

COMPAT_WEIGHTS = {"tflite-runtime-2.14": "float16"}


def check_samples(value: str):
    """--check-samples: a count >= 0 (0 skips the check) or "all"."""
    if value == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a count >= 0 or 'all'")
    return count


def build_parser():
    parser = argparse.ArgumentParser(prog="python convert/to_tflite.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", action="append", help=f"a trained task (repeatable; default: every task under {DEFAULT_MODELS_DIR}/)")
    parser.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_DIR), help=f"the bundle (default {DEFAULT_OUTPUT_DIR})")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--float", action="store_true", help="float32 weights (4x larger; no quantization)")
    weights.add_argument(
        "--compat", choices=sorted(COMPAT_WEIGHTS),
        help="write what an older runtime can run: tflite-runtime-2.14 gets float16 weights "
             "(it cannot read the int8 ops TF 2.21 writes)",
    )
    parser.add_argument("--whole", action="store_true",
                        help="deploy every task as its own one-graph model (SPARTAN fused, adapters and LoRA in the "
                             "graph) instead of as task tensors on a shared backbone graph")
    parser.add_argument("--lora-unmerged", action="store_true",
                        help="keep LoRA's low-rank updates apart from the kernels: a shared task (default: merged "
                             "into the kernels, a whole task)")
    parser.add_argument("--check-samples", type=check_samples, default=200,
                        help="dev examples for the parity check (default 200; 'all'; 0 skips it)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from spartan_tf.conversion import convert_bundle, discover_model_dirs

    weights = "float32" if args.float else COMPAT_WEIGHTS[args.compat] if args.compat else "int8"
    model_dirs = args.model_dir or discover_model_dirs(DEFAULT_MODELS_DIR, args.output_dir)
    options = Options(output_dir=Path(args.output_dir), weights=weights, whole=args.whole,
                      lora_merged=not args.lora_unmerged,
                      check_samples=args.check_samples)
    convert_bundle(model_dirs, options)


def cli(argv=None) -> int:
    try:
        return run_cli(main, argv)
    except ParityFailure as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())

