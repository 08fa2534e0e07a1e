"""Run by tests/test_distribute.py in a fresh process: this machine's CPU as 2 logical devices.

Trains the same tiny task model a few steps on one device and under MirroredStrategy over the two
logical CPUs, on the same global batches, and prints a JSON report of how far the weights differ,
plus whether checkpoints cross between the two. Usage: distributed_check.py TINY_MODEL_DIR CKPT_DIR
"""

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import tf_keras  # noqa: E402

from spartan_tf.backbone import Backbone  # noqa: E402
from spartan_tf.data import Example, encode, make_dataset  # noqa: E402
from spartan_tf.methods.spartan import SpartanMethod  # noqa: E402
from spartan_tf.model import build_task_model  # noqa: E402
from spartan_tf.tasks import get_task  # noqa: E402

model_dir, ckpt_dir = sys.argv[1], sys.argv[2]
task = get_task("qnli")
texts = [("Who wrote Hamlet?", "Shakespeare wrote Hamlet."), ("Where is Paris?", "Paris is in France."),
         ("a question", "an unrelated and rather longer sentence about something"), ("why", "because"),
         ("How tall is the tower?", "It is 330 metres tall."), ("When did it rain?", "Yesterday."),
         ("Which river?", "The Rhine flows through Basel and Cologne."), ("Who won?", "Nobody knows.")]
# Each global batch of 8 holds 8 different pairs, so the two replicas see different halves.
examples = [Example(q, s, i % 2) for i, (q, s) in enumerate(texts * 2)]
GLOBAL_BATCH = 8


def train(strategy):
    """Task weights after 4 steps (2 epochs x 2 global batches) under ``strategy``."""
    tf_keras.utils.set_random_seed(0)
    with strategy.scope():
        backbone = Backbone.load(model_dir)
        # Uncentered values: centering cancels most of each value's gradient, and Adam's per-weight
        # normalisation (at 1e-2, values at 10x) blows the replicas' different summation order of those
        # near-zero remainders up to ~1e-4 in 4 steps; what this check is about (the all-reduced balance
        # loss, gradients and checkpoints across replicas) does not depend on it.
        method = SpartanMethod(num_parents=4, children_per_parent=2, top_k=2, balance_loss_scale=0.5,
                               center_values=False)
        model = build_task_model(backbone, method, 2, head_dropout=0.0, seed=0)
        model.compile(optimizer=tf_keras.optimizers.Adam(1e-2),
                      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = make_dataset(encode(backbone.tokenizer(32), examples), [e.label for e in examples],
                        GLOBAL_BATCH, shuffle=False, seed=0, task=task)
    history = model.fit(data, epochs=2, verbose=0)
    return model, {name: v.numpy() for name, v in model.named_task_weights().items()}, history.history["loss"]


single_model, single, single_loss = train(tf.distribute.get_strategy())
mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
mirrored_model, mirrored, mirrored_loss = train(mirrored_strategy)
initial = build_task_model(Backbone.load(model_dir),
                           SpartanMethod(num_parents=4, children_per_parent=2, top_k=2, center_values=False),
                           2, head_dropout=0.0, seed=0)

moved = {name: float(np.abs(single[name] - v.numpy()).max()) for name, v in initial.named_task_weights().items()}

# Checkpoints: written under the strategy, read without it, and the reverse.
mirrored_model.save_weights(os.path.join(ckpt_dir, "mirrored"))
initial.load_weights(os.path.join(ckpt_dir, "mirrored"))
from_mirrored = max(float(np.abs(v.numpy() - mirrored[n]).max()) for n, v in initial.named_task_weights().items())
single_model.save_weights(os.path.join(ckpt_dir, "single"))
with mirrored_strategy.scope():
    mirrored_model.load_weights(os.path.join(ckpt_dir, "single"))
into_mirrored = max(float(np.abs(v.numpy() - single[n]).max()) for n, v in mirrored_model.named_task_weights().items())

print(json.dumps({
    "replicas": mirrored_strategy.num_replicas_in_sync,
    "max_abs_diff": {name: float(np.abs(single[name] - mirrored[name]).max()) for name in single},
    "max_abs_moved": moved,
    "loss_single": single_loss, "loss_mirrored": mirrored_loss,
    "checkpoint_mirrored_to_single": from_mirrored, "checkpoint_single_to_mirrored": into_mirrored,
}))
