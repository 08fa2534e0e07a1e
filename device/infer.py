#!/usr/bin/env python3
"""Run a spartan-tf bundle on a device: classify texts with its TFLite tasks (shared or whole).

    python device/infer.py --bundle models/tflite --task qnli --text "Who wrote Hamlet?" \\
        --text-pair "Hamlet was written by Shakespeare."
    python device/infer.py --bundle models/tflite --task sst2 --input dev.tsv --output preds.jsonl
    python device/infer.py --bundle models/tflite --input mixed.jsonl          # a "task" per line
    python device/infer.py --bundle models/tflite --list
    python device/infer.py --bundle models/tflite --task qnli --benchmark --threads 1 --json

Each task runs as deployed: a shared task (SPARTAN, adapters, unmerged LoRA) as one invocation of
its shared backbone graph with the task's tensors set into it (switching tasks never reloads the
backbone), a whole task (full fine-tuning, merged LoRA, anything converted --whole) as its one file.
Needs numpy, tokenizers and a TFLite runtime (pip install -r device/requirements.txt); imports
neither TensorFlow (unless --runtime tensorflow) nor transformers nor spartan_tf.
Exit codes: 0 all inputs answered; 1 some input lines failed (each reported on stderr with its
line number; every other line is still answered); 2 nothing could run (bad bundle, options, file).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # spartan_device/, however this file is run

from spartan_device.errors import DeviceError  # noqa: E402

DEFAULT_BUNDLE = "models/tflite"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python device/infer.py", description=__doc__.split("\n\n")[0],
        epilog="Input files: JSON lines (text, optional text_pair, id, task) or a GLUE-layout TSV "
               "(see device/spartan_device/inputs.py for the column rule). Output: JSON lines with "
               "id, task, label, scores (softmax probabilities by label, or the score for regression), logits.")
    what = parser.add_argument_group("what to run")
    what.add_argument("--bundle", default=DEFAULT_BUNDLE, help=f"bundle directory (default: {DEFAULT_BUNDLE})")
    what.add_argument("--task", help="task name; default: a line's own task, or the bundle's only task")
    what.add_argument("--text", help="one text to classify")
    what.add_argument("--text-pair", help="its second text, for pair tasks (QNLI, RTE, MRPC...)")
    what.add_argument("--input", help="JSON lines or TSV file to classify; - reads stdin (streaming)")
    what.add_argument("--list", action="store_true", help="show the bundle's tasks, sizes and labels, and check files")
    what.add_argument("--benchmark", action="store_true",
                      help="measure latency, throughput and memory on --input or on the task's reference inputs")
    io = parser.add_argument_group("input and output")
    io.add_argument("--output", help="write JSON lines here (atomically) instead of stdout")
    io.add_argument("--force", action="store_true", help="replace an existing --output file")
    io.add_argument("--format", choices=("auto", "jsonl", "tsv"), default="auto",
                    help="input format (default: by file suffix, else by the first line)")
    io.add_argument("--columns", help="TSV text column(s), e.g. question,sentence (default: see --help epilog)")
    io.add_argument("--json", action="store_true", help="JSON output for --text, --list and --benchmark")
    io.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar on stderr (default: for files, when stderr is a terminal)")
    io.add_argument("--verbose", action="store_true", help="report runtime and file loads on stderr")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--threads", type=int, default=None,
                       help="interpreter threads (default: the number of CPUs, at most 4)")
    speed.add_argument("--batch-size", type=int, default=8, help="texts per call (default: 8)")
    speed.add_argument("--runtime", choices=("ai_edge_litert", "tflite_runtime", "tensorflow"),
                       help="force a TFLite runtime (default: the first installed, in this order)")
    speed.add_argument("--num-texts", type=int, help="--benchmark: number of texts (default: all of --input, or 200)")
    speed.add_argument("--warmup", type=int, default=3, help="--benchmark: untimed batches first (default: 3)")
    speed.add_argument("--seq-length", type=int,
                       help="--benchmark: truncate and pad every input to exactly this many tokens "
                            "(default: each batch at its longest text's length)")
    return parser


def check_args(args):
    modes = [name for name, on in (("--list", args.list), ("--text", args.text is not None),
                                   ("--input", args.input is not None and not args.benchmark),
                                   ("--benchmark", args.benchmark)) if on]
    if len(modes) != 1:
        raise DeviceError("give exactly one of --text, --input, --list, --benchmark"
                          + (f" (got {', '.join(modes)})" if modes else ""))
    if args.text_pair is not None and args.text is None:
        raise DeviceError("--text-pair needs --text")
    for name in ("threads", "batch_size", "num_texts"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DeviceError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.warmup < 0:
        raise DeviceError(f"--warmup must be >= 0, got {args.warmup}")
    if args.seq_length is not None and (args.seq_length < 2 or not args.benchmark):
        raise DeviceError(f"--seq-length {args.seq_length}: goes with --benchmark and must be >= 2 ([CLS] and [SEP])")
    if args.output and not args.input:
        raise DeviceError("--output goes with --input")
    if args.threads is None:
        args.threads = max(1, min(4, os.cpu_count() or 1))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    from spartan_device import commands  # numpy/tokenizers imported from here on

    return commands.dispatch(args)


def _terminate(signum, frame):
    """SIGTERM or SIGHUP: remove a half-written --output's temporary file, say so, exit 128 + signum at
    once (unwinding through the runtimes' threads can abort the process instead)."""
    outputs = sys.modules.get("spartan_device.outputs")
    if outputs is not None:
        outputs.remove_open_temporaries()
    try:
        sys.stderr.write("terminated\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


def cli(argv=None) -> int:
    """``main`` with every failure turned into one ``error: ...`` line (no tracebacks)."""
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _terminate)
    try:
        return main(argv)
    except DeviceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `... | head`: the reader left; not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except ImportError as err:
        print(f"error: missing dependency ({err}); install with `pip install -r device/requirements.txt`",
              file=sys.stderr)
        return 2
    except Exception as err:  # a bug: still one line; SPARTAN_DEVICE_DEBUG=1 shows the traceback
        if os.environ.get("SPARTAN_DEVICE_DEBUG"):
            raise
        print(f"error: unexpected {type(err).__name__}: {err} (set SPARTAN_DEVICE_DEBUG=1 for details)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(cli())
