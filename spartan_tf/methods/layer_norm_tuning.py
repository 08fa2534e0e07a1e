"""A per-task scale and shift of an encoder layer's two LayerNorms, as a Keras layer (``--tune-layer-norms``).

Houlsby et al. train every LayerNorm's gamma and beta beside their adapters. The backbone here is frozen
and shared by every task, so its LayerNorm weights cannot change; instead the task owns, for each of
the layer's two LayerNorms (the one closing the attention residual and the one closing the feed-forward
residual), a scale and a shift of the LayerNorm's output:

    LayerNorm(x) * (1 + scale) + shift      = the LayerNorm with gamma (1 + scale), beta (1 + scale) + shift

Both start at 0, so an untrained task reads the pretrained LayerNorm exactly.
"""

import tf_keras

SITES = ("attention", "output")  # the LayerNorm after the attention residual, and after the feed-forward one


@tf_keras.utils.register_keras_serializable(package="spartan_tf")
class LayerNormTuning(tf_keras.layers.Layer):
    """Weights ``<site>_scale`` and ``<site>_shift`` [H] for each site of ``SITES``.

    Call: a LayerNorm's output [B, S, H] and its ``site`` -> the tuned output [B, S, H].
    ``hooks()``: the two calls as ``spartan_tf.bert_layer.encoder_layer``'s ``after_attention_norm`` and
    ``after_output_norm``.
    """

    def build(self, input_shape):
        hidden = int(input_shape[-1])
        self.scales, self.shifts = (
            {site: self.add_weight(name=f"{site}_{part}", shape=(hidden,), initializer="zeros") for site in SITES}
            for part in ("scale", "shift"))
        super().build(input_shape)

    def call(self, normed, site="attention"):
        return normed * (1.0 + self.scales[site]) + self.shifts[site]

    def hooks(self) -> dict:
        return {"after_attention_norm": lambda normed: self(normed, site="attention"),
                "after_output_norm": lambda normed: self(normed, site="output")}
