"""The low-rank updates of one encoder layer's query and value projections, as a Keras layer."""

import math

import tensorflow as tf
import tf_keras

TARGETS = ("query", "value")


@tf_keras.utils.register_keras_serializable(package="spartan_tf")
class LoraDeltas(tf_keras.layers.Layer):
    """``scale * (x A) B`` for the query and the value projection of one encoder layer.

    Args:
        rank: r.
        scale: alpha / r.
        seed: seed of the initialisers; give every layer its own.

    A starts uniform in +-1/sqrt(H) (PEFT's Kaiming-uniform with a=sqrt(5)), B at zero, so the
    untrained update is exactly zero. Weights per target t: ``t_a`` [H, r], ``t_b`` [r, H].
    Call: hidden [B, S, H], ``target`` one of ``TARGETS`` -> the update [B, S, H] (added to x W + b).
    """

    def __init__(self, rank=8, scale=2.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rank = rank
        self.scale = scale
        self.seed = seed

    def build(self, input_shape):
        hidden = int(input_shape[-1])
        bound = 1.0 / math.sqrt(hidden)
        self.targets = {}
        for offset, target in enumerate(TARGETS):
            seed = None if self.seed is None else self.seed + offset
            self.targets[target] = (
                self.add_weight(name=f"{target}_a", shape=(hidden, self.rank),
                                initializer=tf_keras.initializers.RandomUniform(-bound, bound, seed=seed)),
                self.add_weight(name=f"{target}_b", shape=(self.rank, hidden), initializer="zeros"),
            )
        super().build(input_shape)

    def call(self, inputs, target="query"):
        a, b = self.targets[target]
        return self.scale * tf.matmul(tf.matmul(inputs, a), b)

    def merged_delta(self, target):
        """The update folded into a kernel: ``scale * A B`` [H, H] (numpy)."""
        a, b = self.targets[target]
        return self.scale * (a.numpy().astype("float64") @ b.numpy().astype("float64"))

    def get_config(self):
        config = super().get_config()
        config.update(rank=self.rank, scale=self.scale, seed=self.seed)
        return config
