"""The frozen layers below a method's first trained one, run once per training example.

With ``--first-memory-layer N`` nothing in the embeddings or encoder layers 0..N-1 trains, and with
the backbone's dropout off nothing there is random: what they give an example is the same in every
epoch. Training then runs them once per example (``prefix_states``) and every epoch's batches carry
those hidden states (``FROZEN_STATES``) instead of the token ids, so each step starts at layer N.
Padding does not change a real token's states (attention ignores padded keys), so the model computes
what it computes from the tokens, up to float rounding. With N = 2, few-shot training (200 examples
x 10 epochs) went from about 1.3x to 1.4-1.7x adapters' speed (docs/results.md, "Choosing the epoch;
the frozen layers run once").
"""

import numpy as np
import tensorflow as tf

from spartan_tf import data
from spartan_tf.model import FROZEN_STATES

MAX_BYTES = 1 << 30  # held in memory; a larger training set runs the frozen layers every epoch as before


def reason_to_run_every_epoch(backbone_dropout: bool, replicas: int, size: int) -> str | None:
    """Why the frozen layers cannot run once here (a clause for the run's log), or None if they can.
    ``size``: what their states would take in memory (``states_bytes``)."""
    if backbone_dropout:
        return "as --backbone-dropout draws new dropout masks in them every time"
    if replicas > 1:
        return f"as their states would travel to each of the {replicas} replicas with every batch"
    if size > MAX_BYTES:
        return (f"as their states for these examples would take {size / 2**20:,.0f} MB "
                f"(more than {MAX_BYTES / 2**20:,.0f} MB)")
    return None


def states_bytes(encoded: dict, hidden_size: int) -> int:
    """Memory the float32 states of every token of ``encoded`` take."""
    return sum(len(ids) for ids in encoded["input_ids"]) * hidden_size * 4


def prefix_states(model, task, encoded: dict, batch_size: int) -> list:
    """Each example's hidden states after encoder layer ``model.frozen_prefix - 1``, real tokens only:
    N float32 arrays [L_i, H], in the order of ``encoded``'s examples."""
    encode = tf.function(lambda inputs: model.encode(inputs, training=False, stop=model.frozen_prefix),
                         reduce_retracing=True)
    # Batches of similar lengths (little padding); element k is example length_order(encoded)[k].
    batches = data.make_dataset(encoded, [0] * len(encoded["attention_mask"]), batch_size, shuffle=False, seed=0,
                                task=task, order_by_length=True)
    rows = []
    for features, _ in batches:
        hidden, lengths = encode(features).numpy(), features["attention_mask"].numpy().sum(axis=1)
        rows.extend(states[:length] for states, length in zip(hidden, lengths))
    states = [None] * len(rows)
    for row, example in zip(rows, data.length_order(encoded)):
        states[example] = row
    return states


def with_prefix_states(model, task, encoded: dict, batch_size: int) -> dict:
    """The training features that skip the frozen layers: {FROZEN_STATES: N arrays [L_i, H], attention_mask}."""
    return {FROZEN_STATES: prefix_states(model, task, encoded, batch_size), "attention_mask": encoded["attention_mask"]}
