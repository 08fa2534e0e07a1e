"""Graph variants of the shared SPARTAN graph: int8 activations, fixed length buckets and task tensors
built in as constants, speed and accuracy against the bundle's graph (dynamic shapes, float activations).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_graph_variants.py --model-dir models/qnli \
        --calibration-samples 100 --eval-samples 1000 --num-texts 200 --output docs/results/graph_variants.json

Today's bundles quantize weights only (dynamic-range int8: int8 weights, float32 activations; XNNPACK
quantizes each fully-connected op's input on the fly). This converts the same shared graph
(spartan_tf.shared_graph.shared_signatures, and the task's fused one-graph form for comparison) with
int8 (or int16) *activations* too, calibrated on a seeded sample of the task's own training data
(the representative dataset: the sample's token arrays at their own lengths, plus the task's float32
tensors, since they are inputs of the shared graph):

    dynamic-range         what the bundle ships: int8 weights, float activations
    full int8             int8 weights and activations wherever TFLite has an int8 kernel, float
                          fallback elsewhere (TFLITE_BUILTINS_INT8 + TFLITE_BUILTINS), float I/O
    16x8                  int16 activations, int8 weights
                          (EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8), float fallback
    float32               no quantization at all (a bundle of ``convert/to_tflite.py --float``)

Fixed length buckets (``--graphs buckets``): the shared graph converted once per length of
``--bucket-lengths`` with a fixed [1, length] input (no shape ops); each text runs on the smallest
bucket that holds it, padded to that length (mask 0), one interpreter per bucket.

Task tensors as constants (``--graphs constant-keys constant-values constant-memories constant-head``,
CONSTANT_GRAPHS): the shared graph with the task's memory keys, memory values, both, or its head built
in as constants (quantized like the backbone's weights: int8 ``FULLY_CONNECTED`` against weights
XNNPACK packs once) while the rest stay inputs, set from a task file of only those. Each finds how much
of what the shared graph costs beyond the fused one (every task tensor a constant) lies in those
tensors; with the float32 variant beside dynamic-range they separate "an input, not a constant" from
"float32, not int8 arithmetic".

Each variant runs through the device client's own SharedGraph (device/spartan_device/shared.py; a
fused graph through its classify signature), batch 1, ai-edge-litert, the variants taking turns in
blocks of 10 texts on the first ``--num-texts`` dev texts at their real lengths. Accuracy: each
variant's argmax agreement with the Keras model and its accuracy on the first ``--eval-samples`` dev
examples, one example at a time at its own length (as the parity check runs them).
"""

import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "device"))

VARIANTS = ("dynamic-range", "full int8", "16x8", "float32")
# a --graphs choice -> the task tensors it builds into the shared graph as constants: those whose name contains a part
CONSTANT_GRAPHS = {"constant-keys": ("_keys",), "constant-values": ("_values",),
                   "constant-memories": ("_keys", "_values"), "constant-head": ("head_pooler_", "head_classifier_")}


def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_graph_variants.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="a trained SPARTAN task (python -m spartan_tf.train)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--graphs", nargs="+", default=["shared", "fused"],
                        choices=["shared", "fused", "buckets", *CONSTANT_GRAPHS])
    parser.add_argument("--bucket-lengths", nargs="+", type=int, default=[16, 32, 48, 64, 96, 128])
    parser.add_argument("--calibration-samples", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--num-texts", type=int, default=200, help="dev texts timed per variant and pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep-dir", help="keep the converted graphs here")
    parser.add_argument("--output", default="benchmarks/results/graph_variants.json")
    return parser


def convert(signatures: dict, variant: str, representative) -> bytes:
    """The signatures as one .tflite, quantized as ``variant`` (see the module docstring)."""
    import tensorflow as tf

    from spartan_tf import export

    if variant in ("dynamic-range", "float32"):
        return export.to_tflite(signatures, "int8" if variant == "dynamic-range" else "float32")
    concrete = {name: function.get_concrete_function() for name, function in signatures.items()}
    holder = tf.Module()
    holder.captured = [variable for function in concrete.values() for variable in function.variables]
    with tempfile.TemporaryDirectory(prefix="spartan-act-") as saved_dir:
        tf.saved_model.save(holder, saved_dir, signatures=concrete)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir, signature_keys=list(concrete))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        if variant == "full int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        else:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS]
        flatbuffer = converter.convert()
    export.check_builtin_only(flatbuffer, variant)
    return flatbuffer


def op_counts(flatbuffer: bytes) -> dict:
    """{operator name: count} over every subgraph, with the tensor type of each op's first input for the
    ops that matter (e.g. FULLY_CONNECTED/INT8)."""
    from tensorflow.lite.python import schema_py_generated as schema

    from spartan_tf.export import operator_names

    names = operator_names(flatbuffer)
    types = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    counts = {}
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            name = names[op.OpcodeIndex()]
            first = op.Inputs(0) if op.InputsLength() else -1
            kind = types.get(graph.Tensors(first).Type(), "?") if first >= 0 else "-"
            counts[f"{name}/{kind}"] = counts.get(f"{name}/{kind}", 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


class Runner:
    """A converted graph run as the device client runs it: a shared graph through SharedGraph with the
    task's int8 tensor file, a fused graph through its classify signature."""

    def __init__(self, path: Path, tensors_path: Path | None, threads: int):
        from spartan_device.runtime import choose_runtime, load_interpreter
        from spartan_device.shared import SharedGraph, TaskTensors

        runtime = choose_runtime()
        self.interpreter = load_interpreter(runtime, path, threads, path.name)
        if tensors_path is not None:
            self.graph = SharedGraph(self.interpreter, path, path.name)
            self.tensors = TaskTensors(tensors_path, "task")
            self.graph.check(self.tensors, "task", tensors_path)
        else:
            self.graph = None
            self.classify = self.interpreter.get_signature_runner("classify")

    def logits(self, ids, mask, types) -> np.ndarray:
        if self.graph is not None:
            return self.graph.run(ids, mask, types, "task", self.tensors)
        return self.classify(input_ids=ids, attention_mask=mask, token_type_ids=types)["logits"]


class BucketRunner:
    """Fixed-length graphs, one interpreter each: a text runs on the smallest that holds it, padded."""

    def __init__(self, paths: dict, tensors_path: Path, threads: int):
        self.runners = {length: Runner(path, tensors_path, threads) for length, path in sorted(paths.items())}

    def logits(self, ids, mask, types) -> np.ndarray:
        length = next((n for n in self.runners if n >= ids.shape[1]), None)
        if length is None:
            raise ValueError(f"{ids.shape[1]} tokens: longer than every bucket {list(self.runners)}")
        widen = lambda array: np.pad(array, ((0, 0), (0, length - array.shape[1])))  # noqa: E731
        return self.runners[length].logits(widen(ids), widen(mask), widen(types))


def as_batches(encoded: dict) -> list:
    return [tuple(np.asarray([row], dtype=np.int32) for row in rows)
            for rows in zip(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"])]


def time_runners(runners: dict, batches: list, repeats: int, block: int = 10) -> dict:
    """{label: {texts_per_s, cpu_ms_per_text, p50_ms}}: the runners take turns in blocks, rotating."""
    from benchmarks.method_runs import take_turns

    wall, cpu, _ = take_turns(runners, len(batches), lambda label, index: runners[label].logits(*batches[index]),
                              repeats, block)
    return {label: {"texts_per_s": round(1000.0 * len(wall[label]) / sum(wall[label]), 1),
                    "cpu_ms_per_text": round(1000.0 * cpu[label] / len(wall[label]), 3),
                    "p50_ms": round(float(np.percentile(wall[label], 50)), 3)} for label in runners}


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from spartan_tf import artifacts, data, export, parity, shared_graph
    from spartan_tf.sources import DataSource, read_split
    from benchmarks.method_runs import cpu_model, machine, write_json

    from spartan_tf.errors import SpartanError

    if min(args.calibration_samples, args.eval_samples, args.num_texts, args.repeats, args.threads) < 1 or \
            min(args.bucket_lengths) < 2:
        sys.exit("error: --calibration-samples, --eval-samples, --num-texts, --repeats and --threads must be >= 1, "
                 "--bucket-lengths >= 2")
    try:
        model, config, backbone, task = artifacts.load_trained(args.model_dir)
    except SpartanError as err:
        sys.exit(f"error: {err}")
    if "buckets" in args.graphs and max(args.bucket_lengths) != config["max_seq_length"]:
        sys.exit(f"error: --bucket-lengths: the largest must be the task's max length {config['max_seq_length']} "
                 f"(every text must fit a bucket), got {max(args.bucket_lengths)}")
    if config["method"]["name"] != "spartan":
        sys.exit(f"error: --model-dir {args.model_dir}: a {config['method']['name']} task; this compares SPARTAN graphs")
    source = DataSource.from_dict(config["task"]["data"])
    tokenizer = backbone.tokenizer(config["max_seq_length"])
    calibration = data.few_shot_sample(read_split(task, source, "train"), args.calibration_samples, args.seed, task)
    dev = read_split(task, source, "dev")[:max(args.eval_samples, args.num_texts)]
    calib_batches = as_batches(data.encode(tokenizer, calibration))
    dev_encoded = data.encode(tokenizer, dev)
    dev_batches = as_batches(dev_encoded)
    labels = [example.label for example in dev]
    tensors = shared_graph.task_tensors(model)
    graph_layout = shared_graph.layout(config)
    max_length = config["max_seq_length"]

    def representative(input_tensors: dict, length: int | None):
        def generate():
            for ids, mask, types in calib_batches:
                if length is not None:  # a fixed-length bucket: the texts it would hold, padded
                    if ids.shape[1] > length:
                        continue
                    ids, mask, types = (np.pad(a, ((0, 0), (0, length - a.shape[1]))) for a in (ids, mask, types))
                inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
                inputs.update(input_tensors)
                yield "classify", inputs
        return generate

    if args.keep_dir:
        scratch = Path(args.keep_dir)
        scratch.mkdir(parents=True, exist_ok=True)
    else:  # the converted graphs (tens of MB each) go when the process ends, however main ends
        scratch = Path(tempfile.mkdtemp(prefix="bench-act-"))
        atexit.register(shutil.rmtree, scratch, True)
    constants = {graph: {name: value for name, value in tensors.items() if any(part in name for part in parts)}
                 for graph, parts in CONSTANT_GRAPHS.items()}
    constants.update(shared={}, buckets={})
    inputs_of = {graph: {name: value for name, value in tensors.items() if name not in built_in}
                 for graph, built_in in constants.items()}  # the task tensors each shared graph takes as inputs
    inputs_of["fused"] = {}
    task_files = {}  # graph -> its task file: the task tensors it takes as inputs, int8 as in a bundle
    for graph in set(args.graphs) - {"fused"}:
        task_files[graph] = scratch / f"task.{graph}.npz"
        with open(task_files[graph], "wb") as handle:
            np.savez(handle, **shared_graph.pack_task_file(inputs_of[graph], "int8"))

    files, ops, convert_s = {}, {}, {}
    jobs = [(graph, variant, None) for graph in args.graphs if graph != "buckets" for variant in args.variants]
    if "buckets" in args.graphs:
        jobs += [("buckets", variant, length) for variant in args.variants for length in args.bucket_lengths]
    for graph, variant, length in jobs:
        label = f"{graph}, {variant}" + (f", {length}" if length else "")
        start = time.perf_counter()
        if graph == "fused":
            signatures = export.fused_signatures(backbone, model, max_length)
        else:
            signatures = shared_graph.shared_signatures(backbone, graph_layout, max_length, length, constants[graph])
        try:
            flatbuffer = convert(signatures, variant, representative(inputs_of[graph], length))
        except Exception as err:  # a variant the converter cannot produce is a result too
            print(f"{label}: conversion failed: {str(err).splitlines()[0][:300]}", flush=True)
            ops[label] = {"conversion_failed": str(err)[:2000]}
            continue
        convert_s[label] = round(time.perf_counter() - start, 1)
        path = scratch / f"{graph}.{variant.replace(' ', '-')}{'.' + str(length) if length else ''}.tflite"
        path.write_bytes(flatbuffer)
        files[label] = path
        ops[label] = op_counts(flatbuffer)
        print(f"{label}: {len(flatbuffer):,} bytes in {convert_s[label]} s; ops {ops[label]}", flush=True)

    runners = {label: Runner(path, task_files.get(label.split(",")[0]), args.threads)
               for label, path in files.items() if not label.startswith("buckets")}
    for variant in args.variants:
        paths = {int(label.rsplit(", ", 1)[1]): path for label, path in files.items()
                 if label.startswith(f"buckets, {variant},")}
        if paths:
            label = f"buckets {'/'.join(map(str, sorted(paths)))}, {variant}"
            runners[label] = BucketRunner(paths, task_files["buckets"], args.threads)
    for label in list(runners):  # a graph the device runtime cannot execute is a result too
        try:
            runners[label].logits(*dev_batches[0])
        except (RuntimeError, ValueError) as err:
            print(f"{label}: the runtime cannot run it: {str(err).splitlines()[0][:300]}", flush=True)
            ops[label] = {**ops.get(label, {}), "runtime_failed": str(err)[:2000]}
            del runners[label]
    load_before = os.getloadavg()
    speed = time_runners(runners, dev_batches[:args.num_texts], args.repeats)
    load_after = os.getloadavg()

    reference = parity.keras_logits(model, task, data.encode(tokenizer, dev[:args.eval_samples]))
    accuracy = {}
    for label, runner in runners.items():
        logits = np.stack([runner.logits(*batch)[0] for batch in dev_batches[:args.eval_samples]])
        row = parity.compare(label, task, reference, logits, labels[:args.eval_samples])
        accuracy[label] = {"agreement_with_keras": round(row.agreement, 4), "max_abs_logit_diff": round(row.max_abs_diff, 4),
                           "metrics": {k: round(v, 4) for k, v in row.metrics.items()}}
    keras_metrics = parity.compute_metrics(task, reference, labels[:args.eval_samples])

    mean_tokens = float(np.mean([b[0].shape[1] for b in dev_batches[:args.num_texts]]))
    print(f"\n{args.num_texts} {task.name} dev texts x {args.repeats} passes at real length (mean {mean_tokens:.1f} "
          f"tokens), batch 1, {args.threads} thread(s), CPU {cpu_model()}; load {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after; accuracy on {args.eval_samples} dev examples (Keras "
          f"{keras_metrics.get('accuracy', float('nan')):.4f})\n")

    def ratio(label, reference):
        return f"{speed[label]['cpu_ms_per_text'] / speed[reference]['cpu_ms_per_text']:.3f}x" \
            if reference in speed else "-"

    print("| graph | texts/s | CPU ms/text | CPU vs the bundle's | CPU vs fused, same variant | bytes | "
          "agreement with Keras | accuracy |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, figures in speed.items():
        acc = accuracy[label]
        print(f"| {label} | {figures['texts_per_s']:.1f} | {figures['cpu_ms_per_text']:.2f} | "
              f"{ratio(label, 'shared, dynamic-range')} | {ratio(label, 'fused, ' + label.rsplit(', ', 1)[-1])} | "
              f"{sum(p.stat().st_size for k, p in files.items() if k == label or label.startswith('buckets') and k.startswith('buckets, ' + label.rsplit(', ', 1)[1])):,} | {100 * acc['agreement_with_keras']:.1f}% | "
              f"{acc['metrics'].get('accuracy', float('nan')):.4f} |")
    write_json(Path(args.output), {
        "benchmark": "graph_variants", "model_dir": str(args.model_dir), "cpu": cpu_model(), "machine": machine(),
        "load_before": load_before, "load_after": load_after, "mean_tokens": round(mean_tokens, 1),
        "setting": {key: value for key, value in vars(args).items() if key != "output"},
        "keras_metrics": keras_metrics, "speed": speed, "accuracy": accuracy, "ops": ops,
        "bytes": {label: path.stat().st_size for label, path in files.items()}, "convert_seconds": convert_s})
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    from benchmarks.method_runs import stop_on_sigterm
    from spartan_tf.errors import run_cli

    signal.signal(signal.SIGTERM, stop_on_sigterm)  # kill acts as Ctrl-C, so the scratch graphs go too
    sys.exit(run_cli(main))
