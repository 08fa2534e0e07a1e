"""The Keras training run behind ``python -m spartan_tf.train``: build, fit, evaluate, save."""

import json
import sys
import time

import numpy as np
import tensorflow as tf
import tf_keras

from spartan_tf import artifacts, distribute
from spartan_tf.backbone import Backbone
from spartan_tf.evaluation import DevMetrics, example_dataset
from spartan_tf.model import build_task_model


class EpochTimer(tf_keras.callbacks.Callback):
    """Wall time of each epoch's training part (placed before callbacks that evaluate)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def make_loss(task):
    if task.problem_type == "regression":
        return tf_keras.losses.MeanSquaredError()
    return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def count(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def train_task(*, task, method, source, model_name, train_examples, dev_examples, out_dir,
               learning_rate, batch_size, per_replica_batch, strategy_name, tpu, epochs, seed,
               max_seq_length, head_dropout, run_info):
    """Train and save one task; returns the final dev metrics."""
    strategy = distribute.make_strategy(strategy_name, tpu)
    replicas = strategy.num_replicas_in_sync
    global_batch = distribute.global_batch_size(batch_size, replicas, per_replica_batch)
    tf_keras.utils.set_random_seed(seed)
    with strategy.scope():
        backbone = Backbone.load(model_name)
        model = build_task_model(backbone, method, task.num_outputs, head_dropout, seed)
        steps = epochs * int(np.ceil(len(train_examples) / global_batch))
        schedule = tf_keras.optimizers.schedules.PolynomialDecay(learning_rate, steps, end_learning_rate=0.0)
        model.compile(optimizer=tf_keras.optimizers.Adam(schedule), loss=make_loss(task))
    tokenizer = backbone.tokenizer(max_seq_length)
    train_data = example_dataset(task, train_examples, tokenizer, global_batch, shuffle=True, seed=seed)
    dev_data = example_dataset(task, dev_examples, tokenizer, global_batch)
    if replicas > 1:  # in-memory data: split each global batch between replicas and workers
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_data, dev_data = train_data.with_options(options), dev_data.with_options(options)

    trainable, frozen = count(model.trainable_weights), backbone.count_params()
    print(
        f"task {task.name} ({task.problem_type}, {len(train_examples)} train / {len(dev_examples)} dev examples); "
        f"method {method.name}; backbone {backbone.name}\n"
        f"strategy {distribute.describe(strategy)}; global batch {global_batch} "
        f"({global_batch // replicas} per replica); learning rate {learning_rate:g}\n"
        f"parameters: {trainable:,} trainable of {trainable + frozen:,} total "
        f"({100 * trainable / (trainable + frozen):.2f}%; backbone {frozen:,} frozen)",
        flush=True,
    )

    timer, dev_metrics = EpochTimer(), DevMetrics(task, dev_data)
    callbacks = [
        timer,
        dev_metrics,
        tf_keras.callbacks.ModelCheckpoint(str(out_dir / "checkpoints" / "epoch-{epoch:02d}"), save_weights_only=True),
        tf_keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs"), profile_batch=0),
    ]
    history = model.fit(
        train_data, epochs=epochs, callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2
    )

    train_seconds = float(sum(timer.seconds))
    final = {name: value for name, value in dev_metrics.history[-1].items() if name != "epoch"}
    metrics = {
        "task": task.name,
        "dev_examples": len(dev_examples),
        "final": final,
        "epochs": [
            {**epoch, "train_loss": float(loss)} for epoch, loss in zip(dev_metrics.history, history.history["loss"])
        ],
        "train_seconds": round(train_seconds, 1),
        "train_examples_per_second": round(epochs * len(train_examples) / train_seconds, 2),
    }
    config = {
        "task": {
            "name": task.name,
            "problem_type": task.problem_type,
            "label_names": list(task.label_names),
            "metric_names": list(task.metric_names),
            "data": source.to_dict(),
        },
        "backbone": backbone.describe(),
        "method": method.to_dict(),
        "head": {"dropout": head_dropout},
        "max_seq_length": max_seq_length,
        "training": {
            "learning_rate": learning_rate, "global_batch_size": global_batch, "replicas": replicas,
            "strategy": strategy_name, "epochs": epochs, "seed": seed,
            "train_examples": len(train_examples), **run_info,
        },
    }
    if not distribute.is_chief(strategy):
        return final  # other workers of a cluster leave the writing to the chief
    artifacts.save_task(out_dir, model, config, metrics)
    print(json.dumps({"task": task.name, "output_dir": str(out_dir), **final,
                      "train_examples_per_second": metrics["train_examples_per_second"]}))
    return final
