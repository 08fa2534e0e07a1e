"""What one matmul against weights that arrive at run time costs on the device runtime, form by form.

    .venv/bin/python benchmarks/bench_runtime_matmul.py [--length 51] [--repeats 5]

The shared graph takes a task's memory keys and values as graph inputs, so its memories run as
float32 matmuls, where the fused graph's keys and values are int8 constants (docs/results.md,
"Where the shared graph's extra cost lies"). This benchmark converts the memory's two matmuls,
keys ([1, L, H] x [H, keys]) and values ([1, L, children] x [children, H]), and the head's pooler
([1, 1, H] x [H, H]), each alone into a .tflite file in six forms, and times them through ai-edge-litert on one thread:

- float32 BATCH_MATMUL, weights a graph input (what the shared graph runs today);
- float32 FULLY_CONNECTED, weights a graph input (the same product written 2-D);
- hybrid int8 FULLY_CONNECTED, weights constant (what the fused graph runs);
- int8 FULLY_CONNECTED and int8 BATCH_MATMUL with static scales, weights a graph input: the
  full-integer converter, calibrated on random inputs of the timed distribution; activations and
  weights are quantized by QUANTIZE ops at every call and the product dequantized;
- int8 FULLY_CONNECTED with static scales and int8 inputs: the same with no QUANTIZE op inside (the
  benchmark quantizes the inputs beforehand, untimed), as a graph would run whose task weights
  arrive as int8 and whose activation is quantized by the op before.

The figures are the median wall time and the process CPU time of one ``invoke()``, the forms
taking turns 100 invocations at a time (``--repeats`` passes of 1,000 each), with the inputs set
beforehand: inside a graph the operands come from the ops before, so copying them in and out of
Python (which costs more than these products) is not counted. The error is the largest absolute
difference from the float64 product over the largest absolute product, on 20 random inputs. Prints
a Markdown table and writes JSON (default benchmarks/results/runtime_matmul.json).
"""

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.method_runs import machine, print_table, take_turns, write_json  # noqa: E402

CALLS = 1000  # invocations per form and pass
FORMS = ("float32 BATCH_MATMUL, weights an input", "float32 FULLY_CONNECTED, weights an input",
         "hybrid int8 FULLY_CONNECTED, weights constant", "int8 FULLY_CONNECTED, static scales, weights an input",
         "int8 BATCH_MATMUL, static scales, weights an input",
         "int8 FULLY_CONNECTED, static scales, int8 inputs")


def convert(function, specs, quantization: str, calibration=None) -> bytes:
    """A function of ``specs`` -> .tflite bytes. ``quantization``: "none", "dynamic-range" (int8 constant
    weights), "full-integer" (int8 everywhere, scales from ``calibration``; float32 inputs and outputs)
    or "full-integer-inputs" (the same with int8 inputs: no QUANTIZE op inside)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([tf.function(function).get_concrete_function(*specs)])
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization.startswith("full-integer"):
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if quantization == "full-integer-inputs":
        converter.inference_input_type = tf.int8
    return converter.convert()


def matmul_forms(rows: int, inner: int, columns: int, weights, activations, seed: int) -> dict:
    """{form: (.tflite bytes, 2-D?, constant weights or None)} for [1, rows, inner] x [inner, columns].

    ``weights(rng)`` -> [inner, columns] and ``activations(rng)`` -> [1, rows, inner] draw the
    inputs. Weights given as an input are stored [columns, inner], as the shared graph stores a task
    tensor (``BATCH_MATMUL`` with ``adj_y``) and as ``FULLY_CONNECTED`` does; 2-D forms take the
    activation as [rows, inner]."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    batch_specs = [tf.TensorSpec([1, rows, inner], tf.float32), tf.TensorSpec([columns, inner], tf.float32)]
    flat_specs = [tf.TensorSpec([rows, inner], tf.float32), tf.TensorSpec([columns, inner], tf.float32)]

    def calibration(two_d: bool):
        def inputs():
            for _ in range(50):
                x, w = activations(rng), weights(rng)
                yield [x[0] if two_d else x, w.T]
        return inputs

    def product(x, w_transposed):
        return tf.matmul(x, w_transposed, transpose_b=True)

    constant = weights(np.random.default_rng(seed + 1))
    return {
        FORMS[0]: (convert(product, batch_specs, "none"), False, None),
        FORMS[1]: (convert(product, flat_specs, "none"), True, None),
        FORMS[2]: (convert(lambda x: tf.matmul(x, tf.constant(constant)), batch_specs[:1], "dynamic-range"), False, constant),
        FORMS[3]: (convert(product, flat_specs, "full-integer", calibration(two_d=True)), True, None),
        FORMS[4]: (convert(product, batch_specs, "full-integer", calibration(two_d=False)), False, None),
        FORMS[5]: (convert(product, flat_specs, "full-integer-inputs", calibration(two_d=True)), True, None),
    }


def as_input(array, detail):
    """``array`` as the interpreter input ``detail`` takes it: unchanged, or quantized with its scale."""
    import numpy as np

    if detail["dtype"] != np.int8:
        return array
    scale, zero_point = detail["quantization"]
    return np.clip(np.round(array / scale) + zero_point, -128, 127).astype(np.int8)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_runtime_matmul.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=51, help="tokens per input (default 51: QNLI dev's mean)")
    parser.add_argument("--hidden", type=int, default=384, help="hidden size H (default 384: the shipped backbone's)")
    parser.add_argument("--keys", type=int, default=64, help="parent plus child keys (default 16 + 48)")
    parser.add_argument("--children", type=int, default=48, help="value vectors (default 48)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default="benchmarks/results/runtime_matmul.json")
    args = parser.parse_args(argv)
    for name in ("length", "hidden", "keys", "children", "repeats"):
        if getattr(args, name) < 1:
            sys.exit(f"error: --{name} {getattr(args, name)}: must be >= 1")

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    normal = lambda rng, shape, scale=1.0: rng.normal(scale=scale, size=shape).astype(np.float32)  # noqa: E731
    products = {  # name: (rows, inner, columns, weights(rng), activations(rng))
        # layer-normed hidden states against keys of the trained memories' scale
        "keys": (args.length, args.hidden, args.keys, lambda rng: normal(rng, (args.hidden, args.keys), 0.05),
                 lambda rng: normal(rng, (1, args.length, args.hidden))),
        # the children's softmax weights (rows summing to 1) against value vectors
        "values": (args.length, args.children, args.hidden, lambda rng: normal(rng, (args.children, args.hidden), 0.05),
                   lambda rng: rng.dirichlet(np.full(args.children, 0.2), size=(1, args.length)).astype(np.float32)),
        # the head's pooler: the text's one pooled vector against [H, H]
        "head": (1, args.hidden, args.hidden, lambda rng: normal(rng, (args.hidden, args.hidden), 0.05),
                 lambda rng: normal(rng, (1, 1, args.hidden))),
    }
    rows = []
    for product, (length, inner, columns, weights, activations) in products.items():
        forms = matmul_forms(length, inner, columns, weights, activations, seed=0)
        rng = np.random.default_rng(1)
        inputs = [activations(rng) for _ in range(20)]
        run_weights = weights(rng)
        invokes, errors = {}, {}
        for form, (flatbuffer, two_d, constant) in forms.items():
            interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
            interpreter.allocate_tensors()
            inputs_by_name = {d["name"]: d for d in interpreter.get_input_details()}  # the functions' argument names
            activation = inputs_by_name.pop("x")
            weight_input = list(inputs_by_name.values())
            if weight_input:
                interpreter.set_tensor(weight_input[0]["index"], as_input(run_weights.T.copy(), weight_input[0]))
            used_weights = run_weights if constant is None else constant
            worst = 0.0
            for x in inputs:
                interpreter.set_tensor(activation["index"], as_input(x[0] if two_d else x, activation))
                interpreter.invoke()
                got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).reshape(length, -1)
                exact = x[0].astype(np.float64) @ used_weights.astype(np.float64)
                worst = max(worst, float(np.abs(got - exact).max() / np.abs(exact).max()))
            errors[form], invokes[form] = worst, interpreter.invoke
        latencies, cpu_seconds, _ = take_turns(list(invokes), CALLS, lambda form, _: invokes[form](),
                                               repeats=args.repeats, block=100)
        for form in invokes:
            rows.append({"product": product, "shape": f"[1, {length}, {inner}] x [{inner}, {columns}]", "form": form,
                         "median_us_per_call": round(1000 * statistics.median(latencies[form]), 2),
                         "cpu_us_per_call": round(1e6 * cpu_seconds[form] / (args.repeats * CALLS), 2),
                         "relative_error": round(errors[form], 5)})

    print(f"1 thread, ai-edge-litert (XNNPACK on), {args.repeats} passes of {CALLS} invocations a form, "
          f"taking turns 100 at a time\n")
    print_table(["product", "form", "median us per call", "CPU us per call", "error / max |product|"],
                [[f"{row['product']} {row['shape']}", row["form"], f"{row['median_us_per_call']:.1f}",
                  f"{row['cpu_us_per_call']:.1f}", f"{row['relative_error']:.4f}"] for row in rows])
    write_json(args.output, {"benchmark": "runtime_matmul", "machine": machine(), "setting": vars(args), "rows": rows})
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
