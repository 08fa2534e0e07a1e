"""Task metrics from model outputs: the GLUE metrics, computed with scikit-learn and scipy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from spartan_tf.tasks import TaskSpec


def compute_metrics(task: TaskSpec, predictions: np.ndarray, labels: Sequence[int | float]) -> dict[str, float]:
    """``{metric name: value}`` for each of ``task.metric_names`` (the first is the primary metric).

    predictions: logits [N, num_outputs] for classification (the class is the argmax), scores [N] or
    [N, 1] for regression. labels: [N] class indexes or scores. "f1" is binary F1 of class 1
    (e.g. MRPC "equivalent"), "f1_macro" the unweighted mean over classes.
    """
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if task.is_regression:
        expected = "[N] or [N, 1]"
        fits = predictions.ndim == 1 or (predictions.ndim == 2 and predictions.shape[1] == 1)
    else:
        expected = f"[N, {task.num_outputs}]"
        fits = predictions.ndim == 2 and predictions.shape[1] == task.num_outputs
    if not fits or len(predictions) != len(labels):
        raise ValueError(f"predictions of shape {predictions.shape} for {len(labels)} labels; expected {expected}")
    predictions = predictions.reshape(-1) if task.is_regression else predictions.argmax(axis=-1)
    return {name: float(_METRICS[name](labels, predictions, task)) for name in task.metric_names}


_METRICS = {
    "accuracy": lambda y, p, task: accuracy_score(y, p),
    "f1": lambda y, p, task: f1_score(y, p, pos_label=1, zero_division=0),
    "f1_macro": lambda y, p, task: f1_score(y, p, labels=list(range(task.num_outputs)), average="macro",
                                            zero_division=0),
    "matthews_corrcoef": lambda y, p, task: matthews_corrcoef(y, p),
    "pearson": lambda y, p, task: pearsonr(p, y).statistic,
    "spearmanr": lambda y, p, task: spearmanr(p, y).statistic,
}
