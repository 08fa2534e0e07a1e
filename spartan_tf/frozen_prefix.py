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


def cacheable_layers(model, backbone_dropout: bool, replicas: int) -> int:
    """How many encoder layers from the bottom training may run once per example: ``model.frozen_prefix``,
    or 0 with the backbone's dropout (then those layers draw random numbers every epoch) or several
    replicas (the states would travel to every replica with each batch)."""
    return 0 if backbone_dropout or replicas > 1 else model.frozen_prefix


def states_bytes(encoded: dict, hidden_size: int) -> int:
    """Memory the float32 states of every token of ``encoded`` take."""
    return sum(len(ids) for ids in encoded["input_ids"]) * hidden_size * 4


def prefix_states(model, encoded: dict, batch_size: int) -> list:
    """Each example's hidden states after encoder layer ``model.frozen_prefix - 1``, real tokens only:
    N float32 arrays [L_i, H], in the order of ``encoded``'s examples."""
    encode = tf.function(lambda inputs: model.encode(inputs, training=False, stop=model.frozen_prefix),
                         reduce_retracing=True)
    order = data.length_order(encoded)  # batches of similar lengths: little padding
    states = [None] * len(order)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        length = max(len(encoded["input_ids"][i]) for i in batch)
        inputs = {name: np.array([row + [0] * (length - len(row)) for row in (encoded[name][i] for i in batch)],
                                 dtype=np.int32) for name in data.FEATURE_NAMES}
        hidden = encode(inputs).numpy()
        for row, i in enumerate(batch):
            states[i] = hidden[row, :len(encoded["input_ids"][i])]
    return states


def with_prefix_states(model, encoded: dict, batch_size: int) -> dict:
    """The training features that skip the frozen layers: {FROZEN_STATES: N arrays [L_i, H], attention_mask}."""
    return {FROZEN_STATES: prefix_states(model, encoded, batch_size), "attention_mask": encoded["attention_mask"]}
