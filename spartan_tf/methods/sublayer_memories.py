"""Two SPARTAN memories in one encoder layer, where Houlsby adapters sit, as a Keras layer.

``--memory-site attention+feed-forward``: one SparseMemory on the layer's attention-output projection
and one on its feed-forward-output projection, each inside its residual (before ``LayerNorm(h +
input)``, see ``spartan_tf.bert_layer``). The two share their hyperparameters, not their weights.
"""

import tensorflow as tf
import tf_keras

from spartan_tf.memory import SparseMemory

SITES = ("attention", "output")  # after the attention-output and the feed-forward-output projection


@tf_keras.utils.register_keras_serializable(package="spartan_tf")
class SublayerMemories(tf_keras.layers.Layer):
    """``site``'s memory of one encoder layer: hidden [B, S, H] -> hidden + memory(hidden) [B, S, H].

    Args:
        memory: the SparseMemory config both memories are built from (``SparseMemory.get_config()``
            keys, without ``name``); the memory of site i is seeded ``seed + 5 * i``.

    Sub-layers ``attention`` and ``output`` (SparseMemory): their weights are
    ``<this layer>/attention/parent_keys`` and so on.
    Call: hidden [B, S, H], ``site`` one of ``SITES``, ``attention_mask`` and ``training`` as SparseMemory's.
    """

    def __init__(self, memory: dict, **kwargs):
        super().__init__(**kwargs)
        self.memory = dict(memory)
        seed = self.memory.get("seed")
        self.memories = {
            site: SparseMemory(**{**self.memory, "seed": None if seed is None else seed + 5 * offset}, name=site)
            for offset, site in enumerate(SITES)
        }

    def build(self, input_shape):
        for site, memory in self.memories.items():
            with tf.name_scope(site):  # the weights' names: <this layer>/<site>/<weight>
                memory.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, site="attention", attention_mask=None, training=None):
        return self.memories[site](inputs, attention_mask=attention_mask, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(memory=self.memory)
        return config
