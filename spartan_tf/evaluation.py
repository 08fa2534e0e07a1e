"""Predict and score a task model on examples; the per-epoch dev-metric callback."""

import sys

import numpy as np
import tf_keras

from spartan_tf import data
from spartan_tf.metrics import compute_metrics


def example_dataset(task, examples, tokenizer, batch_size, shuffle=False, seed=0):
    """tf.data of (features, labels), each batch padded to its own longest sequence.

    Unshuffled (evaluation) datasets batch examples of similar length together: less padding.
    """
    encoded = data.encode(tokenizer, examples)
    labels = [example.label for example in examples]
    return data.make_dataset(
        encoded, labels, batch_size, shuffle=shuffle, seed=seed, task=task, order_by_length=not shuffle
    )


def predict_logits(model, dataset):
    """(logits [N, num_outputs], labels [N]) over a dataset of (features, labels), in dataset order."""
    labels = np.concatenate([batch_labels.numpy() for _, batch_labels in dataset])
    logits = model.predict(dataset.map(_features_only), verbose=0)
    return logits, labels


def _features_only(features, labels):
    return features


def evaluate(model, task, dataset) -> dict:
    """The task's GLUE metrics (e.g. {"accuracy": 0.81}) on a dataset of (features, labels)."""
    logits, labels = predict_logits(model, dataset)
    return compute_metrics(task, logits, labels)


class DevMetrics(tf_keras.callbacks.Callback):
    """After each epoch: the task's metrics on the dev set, into the logs (``dev_<metric>``) and a history."""

    def __init__(self, task, dataset):
        super().__init__()
        self.task = task
        self.dataset = dataset
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:  # an epoch cut short by a stop request is not scored
            return
        metrics = evaluate(self.model, self.task, self.dataset)
        self.history.append({"epoch": epoch + 1, **metrics})
        if logs is not None:
            logs.update({f"dev_{name}": value for name, value in metrics.items()})
        shown = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        print(f"epoch {epoch + 1} dev: {shown}", file=sys.stderr, flush=True)
