"""The two Houlsby bottleneck adapters of one encoder layer, as a Keras layer."""

import tensorflow as tf
import tf_keras

from spartan_tf.methods.layer_norm_tuning import LayerNormTuning

SITES = ("attention", "output")  # after the attention-output and the feed-forward-output projection


@tf_keras.utils.register_keras_serializable(package="spartan_tf")
class LayerAdapters(tf_keras.layers.Layer):
    """``h + up(gelu(down(h)))`` for each site of one encoder layer.

    Args:
        adapter_size: bottleneck size m.
        initializer_range: standard deviation of the truncated-normal down-projection; the
            up-projection and both biases start at zero (an untrained adapter is the identity).
        seed: seed of the initialisers; give every layer its own.
        tune_layer_norms: also own a LayerNormTuning, ``layer_norms`` (``--tune-layer-norms``: Houlsby
            et al. train the LayerNorms too).

    Weights per site s: ``s_down_kernel`` [H, m], ``s_down_bias`` [m], ``s_up_kernel`` [m, H], ``s_up_bias`` [H].
    Call: hidden [B, S, H], ``site`` one of ``SITES`` -> [B, S, H].
    """

    def __init__(self, adapter_size=64, initializer_range=0.02, seed=None, tune_layer_norms=False, **kwargs):
        super().__init__(**kwargs)
        self.adapter_size = adapter_size
        self.initializer_range = initializer_range
        self.seed = seed
        self.tune_layer_norms = tune_layer_norms
        self.layer_norms = LayerNormTuning(name="layer_norms") if tune_layer_norms else None

    def build(self, input_shape):
        hidden = int(input_shape[-1])
        self.sites = {}
        for offset, site in enumerate(SITES):
            seed = None if self.seed is None else self.seed + offset
            down = tf_keras.initializers.TruncatedNormal(stddev=self.initializer_range, seed=seed)
            self.sites[site] = (
                self.add_weight(name=f"{site}_down_kernel", shape=(hidden, self.adapter_size), initializer=down),
                self.add_weight(name=f"{site}_down_bias", shape=(self.adapter_size,), initializer="zeros"),
                self.add_weight(name=f"{site}_up_kernel", shape=(self.adapter_size, hidden), initializer="zeros"),
                self.add_weight(name=f"{site}_up_bias", shape=(hidden,), initializer="zeros"),
            )
        if self.layer_norms is not None:
            with tf.name_scope("layer_norms"):
                self.layer_norms.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, site="attention"):
        down_kernel, down_bias, up_kernel, up_bias = self.sites[site]
        bottleneck = tf.nn.gelu(tf.matmul(inputs, down_kernel) + down_bias, approximate=False)  # [B, S, m]
        return inputs + tf.matmul(bottleneck, up_kernel) + up_bias

    def get_config(self):
        config = super().get_config()
        config.update(adapter_size=self.adapter_size, initializer_range=self.initializer_range, seed=self.seed,
                      tune_layer_norms=self.tune_layer_norms)
        return config
