"""Does the bundle compute what the Keras model computes? Run both on dev examples and compare.

The bundle is run as the device runs it: one example at a time at its own length (no padding),
a shared task as its graph's ``classify`` signature with the task tensors as inputs, a whole task
as its own ``classify`` (ai-edge-litert when installed, else TensorFlow's own interpreter). The
Keras model runs in padded, length-sorted batches, as in evaluation; padding changes nothing
(masked attention, per-position memories and adapters, a head that reads position 0 or the mean
over real tokens).
"""

from dataclasses import dataclass, field

import numpy as np

from spartan_tf import data
from spartan_tf.metrics import compute_metrics

# Above this share of disagreeing examples, a float32 bundle is wrong (a bug, not rounding).
MIN_FLOAT_AGREEMENT = 0.99


def interpreter_class():
    """ai_edge_litert's Interpreter (what the device runs) if installed, else tf.lite.Interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


def runtime_name() -> str:
    Interpreter = interpreter_class()
    if Interpreter.__module__.startswith("ai_edge_litert"):
        from importlib.metadata import version

        return f"ai-edge-litert {version('ai-edge-litert')}"
    import tensorflow as tf

    return f"tf.lite.Interpreter (TensorFlow {tf.__version__})"


class SharedBundle:
    """A shared graph (backbone.<graph>.tflite) with one task's tensors, run as on the device:
    ``logits(ids, mask, types)``. ``tensors``: {name: float32 array}, e.g.
    ``shared_graph.unpack_task_file(np.load(<task>.npz))``."""

    def __init__(self, graph_path, tensors: dict, num_threads: int | None = None):
        self._interpreter = interpreter_class()(model_path=str(graph_path), num_threads=num_threads)
        self.classify = self._interpreter.get_signature_runner("classify")
        self.tensors = tensors

    def logits(self, input_ids, attention_mask, token_type_ids) -> np.ndarray:
        """int32 [B, S] x3 -> logits [B, num_outputs]."""
        return self.classify(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             **self.tensors)["logits"]


class WholeBundle:
    """A whole task's <task>.tflite (one graph, signature ``classify``): ``logits(ids, mask, types)``."""

    def __init__(self, path, num_threads: int | None = None):
        self._interpreter = interpreter_class()(model_path=str(path), num_threads=num_threads)
        self.classify = self._interpreter.get_signature_runner("classify")

    def logits(self, input_ids, attention_mask, token_type_ids) -> np.ndarray:
        return self.classify(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)["logits"]


def run_one_by_one(runner, encoded: dict) -> np.ndarray:
    """Logits [N, num_outputs]: each example alone, [1, its own length], as the device runs it."""
    rows = []
    for ids, mask, types in zip(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]):
        as_batch = lambda values: np.asarray([values], dtype=np.int32)  # noqa: E731
        rows.append(runner.logits(as_batch(ids), as_batch(mask), as_batch(types))[0])
    return np.stack(rows)


def keras_logits(model, task, encoded: dict, batch_size: int = 32) -> np.ndarray:
    """Logits [N, num_outputs] of the Keras model, in the order of ``encoded``."""
    count = len(encoded["input_ids"])
    dataset = data.make_dataset(encoded, [0] * count, batch_size, shuffle=False, seed=0, task=task, order_by_length=True)
    sorted_logits = model.predict(dataset.map(lambda features, _: features), verbose=0)
    logits = np.empty_like(sorted_logits)
    logits[data.length_order(encoded)] = sorted_logits
    return logits


@dataclass
class ParityRow:
    """One bundle path against Keras on the same examples."""

    name: str
    max_abs_diff: float | None
    agreement: float | None  # share of examples with the same prediction as Keras
    metrics: dict = field(default_factory=dict)


def agreement(task, reference: np.ndarray, logits: np.ndarray) -> float:
    """Classification: share of equal argmax. Regression: share of scores within 1% of the
    reference's range (at least 0.01) of the Keras score."""
    if task.is_regression:
        spread = float(np.ptp(reference)) if reference.size else 0.0
        return float(np.mean(np.abs(reference.reshape(-1) - logits.reshape(-1)) <= max(0.01 * spread, 0.01)))
    return float(np.mean(reference.argmax(-1) == logits.argmax(-1)))


def compare(name: str, task, reference: np.ndarray, logits: np.ndarray, labels) -> ParityRow:
    return ParityRow(
        name,
        float(np.max(np.abs(reference - logits))),
        agreement(task, reference, logits),
        compute_metrics(task, logits, labels),
    )


def format_table(task_key: str, task, count: int, rows: list[ParityRow]) -> str:
    """The printed parity table (one line per bundle path)."""
    metric = task.metric_names[0]
    what = "score agreement" if task.is_regression else "argmax agreement"
    lines = [
        f"parity on {count} {task_key} dev examples (TFLite via {runtime_name()}, one example at a time):",
        f"  {'path':<40} {'max |logit diff|':>16} {what:>17} {metric:>10}",
    ]
    for row in rows:
        diff = "-" if row.max_abs_diff is None else f"{row.max_abs_diff:.2e}"
        agree = "-" if row.agreement is None else f"{100 * row.agreement:.2f}%"
        lines.append(f"  {row.name:<40} {diff:>16} {agree:>17} {row.metrics.get(metric, float('nan')):>10.4f}")
    return "\n".join(lines)
