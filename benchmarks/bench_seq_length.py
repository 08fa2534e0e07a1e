"""How should the bundle handle sequence length? Dynamic [B, S] graphs vs fixed-length graphs.

    .venv/bin/python benchmarks/bench_seq_length.py --model-dir models/qnli [--examples 300] [--threads 1]

Converts one trained task several ways (int8 weights, as the bundle) into its one-graph (fused)
form and runs the first N dev examples one at a time, batch 1:

    dynamic        one graph with dynamic [B, S] inputs, each example at its own length
    fixed <L>      a fixed [1, L] graph, every example padded to L = the task's max length
    buckets a/b/c  fixed graphs of a few lengths, each example padded to the smallest that fits

Prints a table and writes JSON (default benchmarks/results/seq_length.json). Every variant's
logits are compared with the dynamic one's (int8 quantizes activations per call, so padding can
move them slightly). Wall time and CPU time per text are reported; on a shared machine compare CPU time.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spartan_tf.errors import SpartanError, run_cli  # noqa: E402
from spartan_tf.artifacts import atomic_write_json  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_seq_length.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="models/qnli", help="a trained task (default models/qnli)")
    parser.add_argument("--examples", type=int, default=300, help="first N dev examples (default 300)")
    parser.add_argument("--buckets", default="32,64,128", help="bucket lengths, comma-separated (default 32,64,128)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1, as on a busy Pi)")
    parser.add_argument("--output", default="benchmarks/results/seq_length.json")
    return parser


class FixedChain:
    """Fixed [1, L] graphs: pads each example to its bucket, then runs it."""

    def __init__(self, chains_by_length: dict):
        self.chains = dict(sorted(chains_by_length.items()))

    def logits(self, input_ids, attention_mask, token_type_ids):
        length = input_ids.shape[1]
        bucket = next(size for size in self.chains if size >= length)
        pad = lambda array: np.pad(array, ((0, 0), (0, bucket - length)))  # noqa: E731
        return self.chains[bucket].logits(pad(input_ids), pad(attention_mask), pad(token_type_ids))


def timed(runner, inputs):
    """(logits [N, C], wall seconds [N], CPU seconds [N]) running ``inputs`` one at a time, after a warm-up.

    CPU time (this process, all threads) is the steadier figure on a machine shared with other work.
    """
    runner.logits(*inputs[0])
    logits, wall, cpu = [], [], []
    for example in inputs:
        start, start_cpu = time.perf_counter(), time.process_time()
        logits.append(runner.logits(*example)[0])
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return np.stack(logits), np.array(wall), np.array(cpu)


def main(argv=None):
    args = build_parser().parse_args(argv)
    buckets = sorted({int(size) for size in args.buckets.split(",") if size.strip()})
    if args.examples < 1 or args.threads < 1 or not buckets:
        raise SpartanError("--examples and --threads must be >= 1 and --buckets non-empty")

    from spartan_tf import artifacts, data, export, parity
    from spartan_tf.conversion import dev_examples_for

    model, config, backbone, _ = artifacts.load_trained(args.model_dir)
    max_length = config["max_seq_length"]
    if buckets[-1] < max_length:
        buckets.append(max_length)
    examples = dev_examples_for(config, args.examples)
    encoded = data.encode(backbone.tokenizer(max_length), examples)
    inputs = [tuple(np.asarray([encoded[name][i]], dtype=np.int32)
                    for name in ("input_ids", "attention_mask", "token_type_ids")) for i in range(len(examples))]
    lengths = np.array([example[0].shape[1] for example in inputs])

    variants = {}
    with tempfile.TemporaryDirectory(prefix="bench-seq-") as scratch:
        def convert(name, signatures):
            path = Path(scratch) / name
            start = time.perf_counter()
            path.write_bytes(export.to_tflite(signatures, "int8"))
            print(f"converted {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            return path

        def fused(length):
            suffix = "dynamic" if length is None else str(length)
            return parity.WholeBundle(
                convert(f"fused-{suffix}.tflite", export.fused_signatures(backbone, model, max_length, length)),
                num_threads=args.threads,
            )

        variants["dynamic"] = fused(None)
        fixed = {length: fused(length) for length in buckets}
        variants[f"fixed {max_length}"] = FixedChain({max_length: fixed[max_length]})
        variants["buckets " + "/".join(map(str, buckets))] = FixedChain(fixed)

        results, reference = [], None
        for name, runner in variants.items():
            logits, seconds, cpu = timed(runner, inputs)
            reference = logits if reference is None else reference
            results.append({
                "variant": name,
                "texts_per_second": round(len(inputs) / seconds.sum(), 1),
                "mean_ms": round(1000 * seconds.mean(), 2),
                "p90_ms": round(1000 * float(np.percentile(seconds, 90)), 2),
                "cpu_ms_per_text": round(1000 * cpu.mean(), 2),
                "max_abs_logit_diff_vs_dynamic": float(np.abs(logits - reference).max()),
            })

    base = results[0]["cpu_ms_per_text"]
    print(f"{len(inputs)} {config['task']['name']} dev examples, tokens mean {lengths.mean():.0f} "
          f"(max {lengths.max()}), batch 1, {args.threads} thread(s), int8, {parity.runtime_name()}")
    print(f"{'variant':<22} {'texts/s':>8} {'mean ms':>8} {'p90 ms':>8} {'CPU ms':>8} {'CPU vs dynamic':>15} "
          f"{'max |diff|':>10}")
    for row in results:
        print(f"{row['variant']:<22} {row['texts_per_second']:>8} {row['mean_ms']:>8} {row['p90_ms']:>8} "
              f"{row['cpu_ms_per_text']:>8} {row['cpu_ms_per_text'] / base:>14.2f}x "
              f"{row['max_abs_logit_diff_vs_dynamic']:>10.1e}")

    report = {
        "command": "python benchmarks/bench_seq_length.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model_dir": str(args.model_dir),
        "examples": len(inputs),
        "mean_tokens": round(float(lengths.mean()), 1),
        "threads": args.threads,
        "runtime": parity.runtime_name(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
        "results": results,
    }
    atomic_write_json(args.output, report)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
