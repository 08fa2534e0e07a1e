"""What one memory costs on the device runtime: a memory_00 signature in two forms, and a bare call.

    .venv/bin/python benchmarks/bench_memory_ops.py --model-dir models/qnli [--length 64] [--repeats 7]

Converts the lowest memory of a trained SPARTAN task (layer 0's, or layer N's with
``--first-memory-layer N``) into int8 TFLite files (one scale per tensor, as
the bundle's task file) in two forms: the Keras layer's own dense path, and
``spartan_tf.export.inference_memory`` (what the bundle ships). A third file holds ``hidden + 1``
alone: the cost of a signature call with no work. Each runs 300 random [1, length, H] inputs
through ai-edge-litert on one thread; the figure is the process CPU time per call, median of
``--repeats`` interleaved passes. Prints a Markdown table and writes JSON
(default benchmarks/results/memory_ops.json).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.method_runs import machine, print_table, write_json  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_memory_ops.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="models/qnli", help="a trained SPARTAN task")
    parser.add_argument("--length", type=int, default=64, help="tokens per input (default 64)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", default="benchmarks/results/memory_ops.json")
    args = parser.parse_args(argv)
    if not (Path(args.model_dir) / "config.json").is_file():
        sys.exit(f"error: --model-dir {args.model_dir}: no trained task (config.json) there")

    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from spartan_tf import artifacts, export
    from spartan_tf.memory import SparseMemory

    model = artifacts.load_trained(args.model_dir)[0]
    if model.method.name != "spartan":
        sys.exit(f"error: --model-dir {args.model_dir}: a {model.method.name} task has no memories")
    layer_index, memory = next((index, memory) for index, memory in enumerate(model.after_layers) if memory is not None)
    hidden_size = memory.parent_keys.shape[-1]
    layer = SparseMemory.from_config({**memory.get_config(), "path": "dense", "balance_loss_weight": 0.0})
    layer.build(tf.TensorShape([None, None, hidden_size]))
    layer.set_weights(memory.get_weights())
    forms = {"call alone (hidden + 1)": lambda hidden: hidden + 1.0,
             "Keras layer, dense path": layer,
             "inference_memory (the bundle's)": export.inference_memory(memory)}

    runners = {}
    spec = tf.TensorSpec([None, None, hidden_size], tf.float32)
    for label, forward in forms.items():
        def run(hidden, forward=forward):
            return {"hidden": forward(hidden)}
        flatbuffer = export.to_tflite({"memory_00": export.signature_function("memory_00", run, [spec])}, "int8", per_channel=False)
        interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
        runners[label] = (interpreter, interpreter.get_signature_runner("memory_00"), len(export.operator_names(flatbuffer)))

    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(1, args.length, hidden_size)).astype(np.float32) for _ in range(300)]
    times = {label: [] for label in runners}
    for _ in range(args.repeats):
        for label, (_, runner, _) in runners.items():
            start = time.process_time()
            for hidden in inputs:
                runner(hidden=hidden)
            times[label].append(1000.0 * (time.process_time() - start) / len(inputs))

    rows = [{"form": label, "op_kinds": runners[label][2], "cpu_ms_per_call": round(statistics.median(t), 4),
             "all_passes": [round(x, 4) for x in t]} for label, t in times.items()]
    print(f"the memory of layer {layer_index} of {args.model_dir}, int8, 1 thread, [1, {args.length}, {hidden_size}] inputs; "
          f"median of {args.repeats} interleaved passes of 300 calls\n")
    print_table(["form", "operator kinds", "CPU ms per call"],
                [[row["form"], row["op_kinds"], f"{row['cpu_ms_per_call']:.3f}"] for row in rows])
    write_json(args.output, {"benchmark": "memory_ops", "machine": machine(),
                             "setting": {"model_dir": args.model_dir, "length": args.length, "repeats": args.repeats},
                             "rows": rows})
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
