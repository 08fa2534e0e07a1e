"""An encoder layer's SPARTAN memories, by site, as a Keras layer.

``--memory-site attention+feed-forward``: one SparseMemory on the layer's attention-output projection
and one on its feed-forward-output projection, each inside its residual (before ``LayerNorm(h +
input)``, see ``spartan_tf.bert_layer``), where Houlsby adapters sit. The two share their
hyperparameters, not their weights.
With ``tune_layer_norms`` (``--tune-layer-norms``) the layer also owns the encoder layer's
LayerNormTuning (``layer_norms``): a per-task scale and shift of its two LayerNorms' outputs; a single
memory a layer (site "layer" or "feed-forward") with tuned LayerNorms is this layer with its "output"
memory only.
"""

import tensorflow as tf
import tf_keras

from spartan_tf.memory import SparseMemory
from spartan_tf.methods.layer_norm_tuning import LayerNormTuning

SITES = ("attention", "output")  # after the attention-output projection; after the feed-forward-output one (or the layer)


@tf_keras.utils.register_keras_serializable(package="spartan_tf")
class SublayerMemories(tf_keras.layers.Layer):
    """``site``'s memory of one encoder layer: hidden [B, S, H] -> hidden + memory(hidden) [B, S, H].

    Args:
        memory: the SparseMemory config every memory is built from (``SparseMemory.get_config()``
            keys, without ``name``); the memory of ``SITES[i]`` is seeded ``seed + 5 * i``.
        sites: which of ``SITES`` have a memory (default both).
        tune_layer_norms: also own a LayerNormTuning, ``layer_norms`` (weights ``<this layer>/layer_norms/...``).

    Sub-layers ``attention`` and/or ``output`` (SparseMemory): their weights are
    ``<this layer>/attention/parent_keys`` and so on.
    Call: hidden [B, S, H], ``site`` one of ``SITES``, ``attention_mask`` and ``training`` as SparseMemory's.
    """

    def __init__(self, memory: dict, sites=SITES, tune_layer_norms: bool = False, **kwargs):
        super().__init__(**kwargs)
        unknown = [site for site in sites if site not in SITES]
        if unknown or not sites:
            raise ValueError(f"sites {list(sites)}: expected some of {SITES}")
        self.sites = tuple(site for site in SITES if site in sites)
        self.tune_layer_norms = tune_layer_norms
        self.memory = dict(memory)
        seed = self.memory.get("seed")
        self.memories = {
            site: SparseMemory(**{**self.memory, "seed": None if seed is None else seed + 5 * SITES.index(site)},
                               name=site)
            for site in self.sites
        }
        self.layer_norms = LayerNormTuning(name="layer_norms") if tune_layer_norms else None

    def build(self, input_shape):
        for site, memory in self.memories.items():
            with tf.name_scope(site):  # the weights' names: <this layer>/<site>/<weight>
                memory.build(input_shape)
        if self.layer_norms is not None:
            with tf.name_scope("layer_norms"):
                self.layer_norms.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, site="attention", attention_mask=None, training=None):
        return self.memories[site](inputs, attention_mask=attention_mask, training=training)

    def layer_norm_hooks(self, input_shape) -> dict:
        """``encoder_layer``'s LayerNorm hooks of ``layer_norms`` (empty without ``tune_layer_norms``).
        Builds this layer first if no memory has run yet (with site "layer" the LayerNorms run before
        the memory), under its own name, as Keras would."""
        if self.layer_norms is None:
            return {}
        if not self.built:
            with tf.name_scope(self.name):
                self.build(input_shape)
        return self.layer_norms.hooks()

    def get_config(self):
        config = super().get_config()
        config.update(memory=self.memory, sites=list(self.sites), tune_layer_norms=self.tune_layer_norms)
        return config
