"""The same int8 graphs through ai-edge-litert's two Python APIs: the Interpreter, which the device
client drives, and CompiledModel, LiteRT's newer API, whose CPU options include XNNPACK's flags.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_runtime_api.py --models-dir /tmp/benchmodels \
        --bundles-dir /tmp/benchbundles --num-texts 200 --repeats 2 --output docs/results/runtime_api.json

Issue 14 asks for anything the runtime rewards. CompiledModel takes each input as a TensorBuffer that
outlives a resize, so a shared task's tensors are written once per task, never again when the length
changes (the Interpreter loses them at every re-allocation: device/spartan_device/shared.py), and it
accepts XNNPACK flags the Interpreter's Python API does not expose. Three graphs of the benchmark
bundles (benchmarks/method_bundles.py): SPARTAN shared (task tensors as inputs), SPARTAN fused (one
graph per task) and the fixed-128 one-graph model, each run by the client's Engine ("Interpreter")
and by CompiledModel with its default CPU options and with each ``--xnnpack-flags`` value. Batch 1,
the first ``--num-texts`` QNLI dev pairs at their real lengths (fixed-128: padded to 128), tokenized
by the client; the rows take turns in blocks of 10 texts (method_runs.take_turns). Before timing,
each CompiledModel row's logits are compared with the Interpreter's on the first 20 texts. Prints a
Markdown table, writes JSON (default benchmarks/results/runtime_api.json).
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "device"))

from benchmarks.bench_device import DEFAULT_INPUT, FIXED, TASK, read_pairs  # noqa: E402
from benchmarks.method_bundles import ensure_bundles  # noqa: E402
from benchmarks.method_runs import cpu_model, machine, print_table, take_turns, write_json  # noqa: E402
from spartan_device.shared import TOKEN_INPUTS  # noqa: E402

GRAPHS = {"SPARTAN shared": "spartan", "SPARTAN fused": "spartan-whole", "fixed-128 one graph": "fixed-128"}
CHECKED_TEXTS = 20


class CompiledRunner:
    """A loaded bundle task run through CompiledModel: the same .tflite file the Engine's Interpreter
    runs. ``runner(batch)`` -> float32 logits [1, num_outputs] of one padded batch of one text."""

    def __init__(self, engine, task, threads: int, xnnpack_flags: int | None):
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.options import Options
        from spartan_device.runtime import captured_stderr

        options = Options()
        options.cpu_options.num_threads = threads
        if xnnpack_flags is not None:
            options.cpu_options.xnnpack_flags = xnnpack_flags
        entry = engine.bundle.graphs[task.info.graph].entry if task.graph is not None else task.info.entry
        with captured_stderr():  # the runtime logs every accelerator and vendor plugin it probes
            self.model = CompiledModel.from_file(str(engine.bundle.path(entry)), options=options)
        self.fixed = task.fixed_shape is not None
        self.num_outputs = task.info.num_outputs
        task_tensors = task.tensors.float32_into({}) if task.tensors is not None else {}
        for name, value in task_tensors.items():  # a task tensor's input takes the task's shape once
            self.model.resize_input_tensor_by_name("classify", name, list(value.shape))
        self.buffers = {}
        for name, value in task_tensors.items():
            self.buffers[name] = self.model.create_input_buffer_by_name("classify", name)
            self.buffers[name].write(value)
        self.shape = None  # the [1, length] the token buffers hold

    def __call__(self, batch) -> np.ndarray:
        from ai_edge_litert.tensor_buffer import TensorBuffer

        shape = batch.input_ids.shape
        if shape != self.shape:  # a new length: new token buffers; the task's buffers stay as they are
            for name in TOKEN_INPUTS:
                if not self.fixed:
                    self.model.resize_input_tensor_by_name("classify", name, list(shape))
                self.buffers[name] = self.model.create_input_buffer_by_name("classify", name)
            self.shape = shape
        for name in TOKEN_INPUTS:
            self.buffers[name].write(np.ascontiguousarray(getattr(batch, name), dtype=np.int32))
        # The output's size is known only to the caller: a dynamic graph's buffer would keep its placeholder shape.
        output = TensorBuffer.create_from_host_memory(np.zeros((shape[0], self.num_outputs), np.float32))
        self.model.run_by_name("classify", self.buffers, {"logits": output})
        return output.read(shape[0] * self.num_outputs, np.float32).reshape(shape[0], self.num_outputs)


def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_runtime_api.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", required=True, help="one trained QNLI model per method (method_bundles.py)")
    parser.add_argument("--bundles-dir", default="models/bench-bundles")
    parser.add_argument("--input", default=str(DEFAULT_INPUT), help="QNLI dev TSV (default: ../shared/data)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--xnnpack-flags", nargs="*", default=["0x4b"],
                        help="CompiledModel rows beside the default options, one per value (default 0x4b: QS8, QU8, "
                             "dynamic fully-connected, latest operators; XNNPACK's xnnpack_delegate.h)")
    parser.add_argument("--num-texts", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2, help="passes over the texts (default 2)")
    parser.add_argument("--output", default="benchmarks/results/runtime_api.json")
    return parser


def parse_flags(values: list) -> list:
    """``--xnnpack-flags`` values as ints (decimal or 0x hex); exits naming a value that is neither."""
    flags = []
    for value in values:
        try:
            flags.append(int(value, 0))
        except ValueError:
            sys.exit(f"error: --xnnpack-flags {value}: expected an integer, decimal or 0x hex (e.g. 0x4b)")
        if flags[-1] < 0:
            sys.exit(f"error: --xnnpack-flags {value}: must be >= 0")
    return flags


def load_rows(bundles: dict, threads: int, flags: list) -> dict:
    """{(graph label, API label): (engine, callable(batch) -> logits)}; exits with the client's message
    if a bundle cannot be used."""
    from spartan_device.bundle import read_bundle
    from spartan_device.engine import Engine
    from spartan_device.errors import DeviceError
    from spartan_device.runtime import choose_runtime

    rows = {}
    try:
        for graph, form in GRAPHS.items():
            engine = Engine(read_bundle(bundles[form]), choose_runtime(), threads=threads)
            task = engine.task(TASK)
            rows[graph, "Interpreter (the client)"] = (engine, lambda batch, e=engine, t=task: e.logits(t, batch))
            rows[graph, "CompiledModel"] = (engine, CompiledRunner(engine, task, threads, None))
            for value in flags:
                runner = CompiledRunner(engine, task, threads, value)
                rows[graph, f"CompiledModel, XNNPACK flags {value:#x}"] = (engine, runner)
    except DeviceError as err:
        sys.exit(f"error: {err}")
    return rows


def main(argv=None):
    args = build_parser().parse_args(argv)
    flags = parse_flags(args.xnnpack_flags)
    if min(args.threads, args.num_texts, args.repeats) < 1:
        sys.exit("error: --threads, --num-texts and --repeats must be >= 1")
    if not Path(args.input).is_file():
        sys.exit(f"error: --input {args.input}: no such file (QNLI dev TSV expected)")
    bundles = ensure_bundles(args.models_dir, args.bundles_dir, sorted(set(GRAPHS.values())))
    pairs = read_pairs(args.input, args.num_texts)
    rows = load_rows(bundles, args.threads, flags)

    from spartan_device.engine import pad

    batches, client_logits = {}, {}  # graph label -> one padded batch per text; the client's logits of the first ones
    for graph in GRAPHS:
        engine, client = rows[graph, "Interpreter (the client)"]
        encoded = engine.encode(engine.task(TASK).info, pairs)
        batches[graph] = [pad([encoding], FIXED.get(graph)) for encoding in encoded]  # fixed-128: padded to 128
        client_logits[graph] = [np.asarray(client(b)) for b in batches[graph][:CHECKED_TEXTS]]

    agreement = {}
    for (graph, api), (_, run) in rows.items():
        checked = batches[graph][:CHECKED_TEXTS]
        pairs_checked = list(zip((np.asarray(run(b)) for b in checked), client_logits[graph]))
        agreement[graph, api] = {
            "max_abs_logit_difference": float(max(np.abs(g - w).max() for g, w in pairs_checked)),
            "same_argmax": int(sum((g.argmax(-1) == w.argmax(-1)).all() for g, w in pairs_checked)),
            "texts": len(checked)}

    labels = list(rows)
    load_before = os.getloadavg()
    latencies, cpu_seconds, _ = take_turns(labels, len(pairs), lambda label, i: rows[label][1](batches[label[0]][i]),
                                           args.repeats, block=10)
    load_after = os.getloadavg()
    cells = []
    for graph, api in labels:
        lat = np.asarray(latencies[graph, api])
        cells.append({"graph": graph, "api": api, "texts_per_s": round(1000.0 * len(lat) / lat.sum(), 2),
                      "p50_ms": round(float(np.percentile(lat, 50)), 3),
                      "cpu_ms_per_text": round(1000.0 * cpu_seconds[graph, api] / len(lat), 3),
                      **agreement[graph, api]})
    by_key = {(c["graph"], c["api"]): c for c in cells}

    print(f"\n{len(pairs)} QNLI dev pairs x {args.repeats} passes, batch 1, {args.threads} thread(s), int8 bundles, "
          f"CPU {cpu_model()}; rows interleaved in blocks of 10 texts; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after\n")
    print_table(["graph", "API", "texts/s", "p50 ms", "CPU ms/text", "CPU vs the client's", "texts/s vs fixed-128",
                 f"max |logit difference| (first {CHECKED_TEXTS})", "same class"],
                [[c["graph"], c["api"], f"{c['texts_per_s']:.1f}", f"{c['p50_ms']:.2f}", f"{c['cpu_ms_per_text']:.2f}",
                  f"{c['cpu_ms_per_text'] / by_key[c['graph'], 'Interpreter (the client)']['cpu_ms_per_text']:.3f}x",
                  f"{c['texts_per_s'] / by_key['fixed-128 one graph', c['api']]['texts_per_s']:.2f}x",
                  f"{c['max_abs_logit_difference']:.2g}", f"{c['same_argmax']} of {c['texts']}"] for c in cells])
    write_json(args.output, {"benchmark": "runtime_api",
                             "machine": {**machine(), "load_before": load_before, "load_after": load_after},
                             "setting": {"threads": args.threads, "num_texts": len(pairs), "repeats": args.repeats,
                                         "block": 10, "input": args.input, "batch_size": 1,
                                         "xnnpack_flags": [f"{value:#x}" for value in flags]},
                             "bundles": {form: str(path) for form, path in bundles.items()}, "cells": cells})
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
