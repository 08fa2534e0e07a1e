"""The Keras training run behind ``python -m spartan_tf.train``: build, fit, evaluate, save."""

import json
import sys
import time

import numpy as np
import tensorflow as tf
import tf_keras

from spartan_tf import artifacts, data, distribute, frozen_prefix, key_init
from spartan_tf.backbone import Backbone
from spartan_tf.evaluation import DevMetrics, example_dataset
from spartan_tf.model import build_task_model
from spartan_tf.schedules import WarmupSchedule
from spartan_tf.resume import StepCheckpoint, StopRequest, TrainingState


class EpochTimer(tf_keras.callbacks.Callback):
    """Wall time of each epoch's training part (placed before callbacks that evaluate)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class EpochCheckpoint(tf_keras.callbacks.ModelCheckpoint):
    """Keras' per-epoch weights checkpoint, skipped for an epoch cut short by a stop request."""

    def on_epoch_end(self, epoch, logs=None):
        if not self.model.stop_training:
            super().on_epoch_end(epoch, logs)


class Progress(tf_keras.callbacks.ProgbarLogger):
    """Keras' progress bar, told the run's total epoch count (training calls fit once per epoch)."""

    def __init__(self, total_epochs: int):
        super().__init__(count_mode="steps")
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params({**params, "epochs": self.total_epochs})


class StepLog(tf_keras.callbacks.Callback):
    """One progress line every ``every`` steps, for a log file (Keras' ``verbose=2`` prints per epoch only):
    ``epoch E/N, step S/T: loss L, X s a step, epoch done in ~M min`` (or ``~S s``), L being the epoch's
    running mean."""

    def __init__(self, epoch: int, epochs: int, first_step: int, every: int, steps_per_epoch: int):
        super().__init__()
        self.epoch, self.epochs, self.first_step = epoch, epochs, first_step
        self.every, self.steps_per_epoch = every, steps_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        step = self.first_step + batch + 1
        if step % self.every or step >= self.steps_per_epoch:  # the epoch's own line follows its last step
            return
        seconds_a_step = (time.perf_counter() - self._start) / (batch + 1)
        left = seconds_a_step * (self.steps_per_epoch - step)
        left_text = f"{left:.0f} s" if left < 90 else f"{left / 60:.0f} min"
        print(f"epoch {self.epoch + 1}/{self.epochs}, step {step}/{self.steps_per_epoch}: loss {logs['loss']:.4f}, "
              f"{seconds_a_step:.2f} s a step, epoch done in ~{left_text}", flush=True)


def make_loss(task):
    if task.problem_type == "regression":
        return tf_keras.losses.MeanSquaredError()
    return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_optimizer(schedule, clip_norm=None, weight_decay=None, not_decayed=()):
    """Adam; with ``clip_norm`` the gradients are first clipped to that global norm (after they are summed
    over replicas), with ``weight_decay`` every variable but ``not_decayed`` shrinks by
    ``learning rate * weight_decay`` of itself each step (decoupled, as AdamW)."""
    optimizer = tf_keras.optimizers.Adam(schedule, global_clipnorm=clip_norm, weight_decay=weight_decay)
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_list=list(not_decayed))
    return optimizer


def count(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def run_frozen_layers_once(model, task, encoded, batch_size, backbone_dropout, replicas):
    """(training features, seconds spent): ``encoded``, or, when the model's lowest layers are frozen
    (``model.frozen_prefix``) and can run once (frozen_prefix.py), their states, computed now."""
    layers = model.frozen_prefix
    if not layers:
        return encoded, 0.0
    named = "frozen layer 0" if layers == 1 else f"frozen layers 0-{layers - 1}"
    size = frozen_prefix.states_bytes(encoded, model.backbone.config.hidden_size)
    reason = frozen_prefix.reason_to_run_every_epoch(backbone_dropout, replicas, size)
    if reason:
        print(f"{named}: run in every epoch, {reason}", flush=True)
        return encoded, 0.0
    start = time.perf_counter()
    states = frozen_prefix.with_prefix_states(model, task, encoded, batch_size)
    seconds = time.perf_counter() - start
    print(f"{named}: run once for the {len(encoded['input_ids']):,} training examples ({size / 2**20:,.0f} MB, "
          f"{seconds:.1f} s) instead of every epoch; each step starts at layer {layers}", flush=True)
    return states, seconds


def train_task(*, task, method, source, model_name, train_examples, dev_examples, out_dir,
               learning_rate, batch_size, per_replica_batch, strategy_name, tpu, epochs, seed,
               max_seq_length, head_dropout, pooling, backbone_dropout, lr_schedule, warmup_ratio, run_info,
               clip_norm=None, weight_decay=None,
               resume=False, checkpoint_every=50):
    """Train and save one task; returns the final dev metrics.

    ``resume`` continues an interrupted run from ``out_dir/resume``; a resume checkpoint is written
    every ``checkpoint_every`` steps, at each epoch's end, and when SIGINT asks training to stop.
    """
    strategy = distribute.make_strategy(strategy_name, tpu)
    replicas = strategy.num_replicas_in_sync
    global_batch = distribute.global_batch_size(batch_size, replicas, per_replica_batch)
    tf_keras.utils.set_random_seed(seed)
    with strategy.scope():
        backbone = Backbone.load(model_name)
        model = build_task_model(backbone, method, task.num_outputs, head_dropout, seed, pooling, backbone_dropout)
        steps_per_epoch = int(np.ceil(len(train_examples) / global_batch))
        total_steps = epochs * steps_per_epoch
        warmup_steps = min(round(warmup_ratio * total_steps), total_steps - 1)  # the last step always trains
        schedule = WarmupSchedule(learning_rate, total_steps, warmup_steps, lr_schedule)
        optimizer = make_optimizer(schedule, clip_norm, weight_decay, not_decayed=model.head.trainable_weights)
        model.compile(optimizer=optimizer, loss=make_loss(task))
    tokenizer = backbone.tokenizer(max_seq_length)
    encoded = data.encode(tokenizer, train_examples)
    key_init_seconds = 0.0
    if getattr(method, "key_init", "random") == "data" and not resume:  # a resumed run restores its keys
        key_init_seconds = key_init.initialize_keys(model, task, encoded, seed)
        print(f"keys set from k-means of each memory's queries ({key_init_seconds:.1f} s)", flush=True)
    encoded, frozen_seconds = run_frozen_layers_once(model, task, encoded, global_batch, backbone_dropout, replicas)
    setup_seconds = key_init_seconds + frozen_seconds  # training time spent before the first step
    labels = [example.label for example in train_examples]
    dev_data = example_dataset(task, dev_examples, tokenizer, global_batch)
    options = tf.data.Options()  # in-memory data: split each global batch between replicas and workers
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dev_data = dev_data.with_options(options)

    def epoch_data(epoch):
        """This epoch's batches, in an order fixed by (seed, epoch) so that a resumed run can skip ahead."""
        batches = data.make_dataset(encoded, labels, global_batch, shuffle=True, seed=seed * 1000 + epoch, task=task)
        return batches.with_options(options)

    trainable_ids = {id(variable) for variable in model.trainable_weights}
    trainable = count(model.trainable_weights)
    frozen = count([variable for variable in backbone.variables if id(variable) not in trainable_ids])
    print(
        f"task {task.name} ({task.problem_type}, {len(train_examples)} train / {len(dev_examples)} dev examples); "
        f"method {method.name}; backbone {backbone.name}\n"
        f"strategy {distribute.describe(strategy)}; global batch {global_batch} "
        f"({global_batch // replicas} per replica); learning rate {learning_rate:g}; {total_steps} steps; "
        f"backbone dropout {'on' if backbone_dropout else 'off'}\n"
        f"parameters: {trainable:,} trainable of {trainable + frozen:,} total "
        f"({100 * trainable / (trainable + frozen):.2f}%; {frozen:,} backbone parameters frozen)",
        flush=True,
    )

    settings = {"task": task.name, "method": method.to_dict(), "model": model_name, "data": source.to_dict(),
                "learning_rate": learning_rate, "lr_schedule": lr_schedule, "warmup_ratio": warmup_ratio,
                "clip_norm": clip_norm, "weight_decay": weight_decay,
                "global_batch_size": global_batch, "epochs": epochs, "seed": seed,
                "max_seq_length": max_seq_length, "head_dropout": head_dropout, "pooling": pooling,
                "backbone_dropout": backbone_dropout,
                "train_examples": len(train_examples), **run_info}
    chief = distribute.is_chief(strategy)
    state = TrainingState(out_dir, model, settings, chief)
    start_epoch, start_step = state.restore() if resume else (0, 0)
    if resume:
        print(f"resuming at epoch {start_epoch + 1}, step {start_step} of {steps_per_epoch}", flush=True)
    timer, dev_metrics = EpochTimer(), DevMetrics(task, dev_data)
    examples_seen = 0
    to_terminal = sys.stdout.isatty()
    with StopRequest() as stop:
        for epoch in range(start_epoch, epochs):
            skip = start_step if epoch == start_epoch else 0
            callbacks = [
                timer,
                StepCheckpoint(state, stop, epoch, skip, checkpoint_every, steps_per_epoch),
                dev_metrics,
                EpochCheckpoint(str(out_dir / "checkpoints" / "epoch-{epoch:02d}"), save_weights_only=True),
                tf_keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs"), profile_batch=0),
                Progress(epochs),
            ]
            if not to_terminal:  # a log file gets a line at each resume checkpoint instead of a live bar
                callbacks.append(StepLog(epoch, epochs, skip, checkpoint_every, steps_per_epoch))
            history = model.fit(epoch_data(epoch).skip(skip), initial_epoch=epoch, epochs=epoch + 1,
                                callbacks=callbacks, verbose=1 if to_terminal else 2)
            if model.stop_training:  # stopped mid-epoch; StepCheckpoint has saved the position
                raise KeyboardInterrupt(
                    f"stopped after step {callbacks[1].step} of epoch {epoch + 1}; checkpoint written to "
                    f"{state.directory}; run the same command with --resume to continue"
                )
            examples_seen += len(train_examples) - min(skip * global_batch, len(train_examples))
            state.finish_epoch(epoch, {**dev_metrics.history[-1], "train_loss": float(history.history["loss"][-1]),
                                       "train_seconds": round(timer.seconds[-1], 2)})
            if stop.requested and epoch + 1 < epochs:
                raise KeyboardInterrupt(
                    f"stopped at the end of epoch {epoch + 1}; checkpoint written to {state.directory}; "
                    f"run the same command with --resume to continue"
                )

    train_seconds = float(sum(timer.seconds)) + setup_seconds  # this process's share of the training
    epochs_record = state.history
    final = {name: value for name, value in epochs_record[-1].items()
             if name not in ("epoch", "train_loss", "train_seconds")}
    metrics = {
        "task": task.name,
        "dev_examples": len(dev_examples),
        "final": final,
        "epochs": epochs_record,
        "train_seconds": round(sum(record["train_seconds"] for record in epochs_record) + setup_seconds, 1),
        "frozen_layers_seconds": round(frozen_seconds, 2),  # part of train_seconds: frozen_prefix.py
        "key_init_seconds": round(key_init_seconds, 2),  # part of train_seconds: key_init.py
        "train_examples_per_second": round(examples_seen / train_seconds, 2) if train_seconds else None,
        "method": method.name,
        "trainable_parameters": trainable,
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
        "head": {"dropout": head_dropout, "pooling": pooling},
        "max_seq_length": max_seq_length,
        "training": {
            "learning_rate": learning_rate, "lr_schedule": lr_schedule, "warmup_ratio": warmup_ratio,
            "clip_norm": clip_norm, "weight_decay": weight_decay,
            "backbone_dropout": backbone_dropout, "global_batch_size": global_batch, "replicas": replicas,
            "strategy": strategy_name, "epochs": epochs, "seed": seed,
            "train_examples": len(train_examples), **run_info,
        },
    }
    if not chief:
        state.remove()
        return final  # other workers of a cluster leave the writing to the chief
    artifacts.save_task(out_dir, model, config, metrics)
    state.remove()  # the finished model replaces the resume point
    print(json.dumps({"task": task.name, "output_dir": str(out_dir), **final,
                      "train_examples_per_second": metrics["train_examples_per_second"]}))
    return final
