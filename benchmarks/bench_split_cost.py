"""Where the split form's time goes: the backbone chain alone, with 7 calls that do nothing, and
with the task's memories and head, measured side by side.

    .venv/bin/python benchmarks/bench_split_cost.py --bundle models/bench-bundles/spartan [--task qnli]

A split task adds 7 signature calls per text to the backbone's 7 (6 memories and the head). This
separates what those calls cost as calls from what the memories compute: a stand-in task file with
the same signature names whose memories return ``hidden + 0`` and whose head slices two logits
(built here with TensorFlow) runs in the same chain. All rows run one ``[1, length]`` input, one
thread, through ai-edge-litert's signature runners as the device client calls them, taking turns
call after call for ``--rounds`` rounds; each figure is the median thread CPU time of a row. Prints a
Markdown table and writes JSON (default benchmarks/results/split_cost.json).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.method_runs import machine, print_table, write_json  # noqa: E402


def empty_task_file(hidden_size: int, num_layers: int) -> bytes:
    """A task file of the split layout whose memories add 0 and whose head returns 2 logits."""
    import tensorflow as tf

    from spartan_tf import export

    spec = [tf.TensorSpec([None, None, hidden_size], tf.float32)]
    signatures = {f"memory_{index:02d}": export.signature_function(
        f"memory_{index:02d}", lambda hidden: {"hidden": hidden + 0.0}, spec) for index in range(num_layers)}
    signatures["head"] = export.signature_function("head", lambda hidden: {"logits": hidden[:, 0, :2]}, spec)
    return export.to_tflite(signatures, "float32")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_split_cost.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="models/bench-bundles/spartan", help="a bundle with a split task")
    parser.add_argument("--task", default="qnli")
    parser.add_argument("--length", type=int, default=64, help="tokens per input (default 64)")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--output", default="benchmarks/results/split_cost.json")
    args = parser.parse_args(argv)
    bundle = Path(args.bundle)
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
        info = manifest["tasks"][args.task]
        layers, hidden_size = manifest["backbone"]["num_layers"], manifest["backbone"]["hidden_size"]
    except (OSError, ValueError, KeyError) as err:
        sys.exit(f"error: --bundle {bundle}: no readable manifest.json with task {args.task!r} ({err})")
    if info.get("deployment", "split") != "split":
        sys.exit(f"error: --task {args.task}: deployed {info['deployment']}, not split")
    if not 2 <= args.length <= manifest["backbone"]["max_length"] or args.rounds < 1:
        sys.exit(f"error: --length must be in [2, {manifest['backbone']['max_length']}] and --rounds >= 1")

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    def runners(interpreter, names):
        return [interpreter.get_signature_runner(name) for name in names]

    backbone = Interpreter(model_path=str(bundle / "backbone.tflite"), num_threads=1)
    embed, *layer_runners = runners(backbone, ["embed"] + [f"layer_{i:02d}" for i in range(layers)])
    task_names = [f"memory_{i:02d}" for i in range(layers)] + ["head"]
    task = runners(Interpreter(model_path=str(bundle / info["file"]), num_threads=1), task_names)
    empty = runners(Interpreter(model_content=empty_task_file(hidden_size, layers), num_threads=1), task_names)

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, size=(1, args.length), dtype=np.int32)
    mask, types = np.ones_like(ids), np.zeros_like(ids)

    def chain(task_runners=None):
        hidden = embed(input_ids=ids, token_type_ids=types)["hidden"]
        for index, layer in enumerate(layer_runners):
            hidden = layer(hidden=hidden, attention_mask=mask)["hidden"]
            if task_runners:
                hidden = task_runners[index](hidden=hidden)["hidden"]
        if task_runners:
            task_runners[-1](hidden=hidden)
        return hidden

    layer_outputs = []  # the memories' real inputs, for running them outside the chain
    hidden = embed(input_ids=ids, token_type_ids=types)["hidden"]
    for layer in layer_runners:
        hidden = layer(hidden=hidden, attention_mask=mask)["hidden"]
        layer_outputs.append(hidden)

    def task_alone():
        for memory, hidden in zip(task[:-1], layer_outputs):
            memory(hidden=hidden)
        task[-1](hidden=layer_outputs[-1][:, :1])

    calls = len(task_names)  # the task file's calls per text: memories and head
    base_label = f"backbone chain ({layers + 1} calls)"
    rows = {base_label: chain,
            f"backbone chain + {calls} calls that do nothing": lambda: chain(empty),
            "backbone chain + the task's memories and head (split)": lambda: chain(task),
            f"the task's memories and head alone ({calls} calls)": task_alone}
    times = {label: [] for label in rows}
    for _ in range(args.rounds):
        for label, run in rows.items():
            start = time.thread_time()
            run()
            times[label].append(1000.0 * (time.thread_time() - start))
    medians = {label: statistics.median(values) for label, values in times.items()}
    base = medians[base_label]

    print(f"{bundle} task {args.task}, [1, {args.length}] input, 1 thread; median thread CPU ms of "
          f"{args.rounds} rounds, the rows taking turns\n")
    print_table(["run", "CPU ms per text", "vs backbone chain"],
                [[label, f"{ms:.3f}", f"{ms / base:.3f}x"] for label, ms in medians.items()])
    write_json(args.output, {"benchmark": "split_cost", "machine": machine(),
                             "setting": {"bundle": str(bundle), "task": args.task, "length": args.length,
                                         "rounds": args.rounds},
                             "median_cpu_ms": medians})
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
