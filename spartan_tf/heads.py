"""The per-task head: BERT-style pooler on the first token (or the mean of the real tokens), dropout, classifier."""

import tensorflow as tf
import tf_keras


POOLINGS = ("cls", "mean")


def masked_mean(hidden, attention_mask):
    """The mean of ``hidden`` [B, S, H] over the real tokens of ``attention_mask`` [B, S]: [B, H]."""
    real = tf.expand_dims(tf.cast(attention_mask, hidden.dtype), -1)  # [B, S, 1]
    return tf.reduce_sum(hidden * real, axis=1) / tf.maximum(tf.reduce_sum(real, axis=1), 1.0)


@tf_keras.utils.register_keras_serializable(package="spartan_tf")
class ClassificationHead(tf_keras.layers.Layer):
    """pooled = tanh(r @ W_p + b_p); logits = dropout(pooled) @ W_c + b_c, where r is what the head
    reads: h[:, 0] (``pooling="cls"``, BERT's pooler) or the mean of h over the real tokens
    (``"mean"``, how sentence encoders such as all-MiniLM-L6-v2 were trained).

    Args:
        num_outputs: number of classes, or 1 for regression (STS-B).
        pooling: ``"cls"`` or ``"mean"``.
        dropout: dropout rate before the classifier.
        initializer_range: standard deviation of the truncated-normal initial weights.
        seed: seed of the initialisers and dropout.

    Call: hidden states [B, S, H] (and, for mean pooling, ``attention_mask`` [B, S]) -> logits [B, num_outputs].
    The pooler starts from the backbone's pretrained pooler via ``set_pooler``.
    """

    def __init__(self, num_outputs, pooling="cls", dropout=0.1, initializer_range=0.02, seed=None, **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.num_outputs = num_outputs
        self.pooling = pooling
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.seed = seed
        self.dropout_layer = tf_keras.layers.Dropout(dropout, seed=seed)

    def _initializer(self, offset):
        seed = None if self.seed is None else self.seed + offset
        return tf_keras.initializers.TruncatedNormal(stddev=self.initializer_range, seed=seed)

    def build(self, input_shape):
        hidden = int(input_shape[-1])
        self.pooler_kernel = self.add_weight(
            name="pooler_kernel", shape=(hidden, hidden), initializer=self._initializer(0)
        )
        self.pooler_bias = self.add_weight(name="pooler_bias", shape=(hidden,), initializer="zeros")
        self.classifier_kernel = self.add_weight(
            name="classifier_kernel", shape=(hidden, self.num_outputs), initializer=self._initializer(1)
        )
        self.classifier_bias = self.add_weight(
            name="classifier_bias", shape=(self.num_outputs,), initializer="zeros"
        )
        super().build(input_shape)

    def set_pooler(self, kernel, bias):
        """Start the pooler from pretrained weights (kernel [H, H], bias [H])."""
        self.pooler_kernel.assign(kernel)
        self.pooler_bias.assign(bias)

    def read(self, hidden, attention_mask=None):
        """What the pooler reads: [B, S, H] -> [B, H]."""
        if self.pooling == "cls":
            return hidden[:, 0]
        if attention_mask is None:
            return tf.reduce_mean(hidden, axis=1)
        return masked_mean(hidden, attention_mask)

    def call(self, inputs, attention_mask=None, training=None):
        pooled = tf.tanh(tf.matmul(self.read(inputs, attention_mask), self.pooler_kernel) + self.pooler_bias)
        pooled = self.dropout_layer(pooled, training=training)
        return tf.matmul(pooled, self.classifier_kernel) + self.classifier_bias

    def get_config(self):
        config = super().get_config()
        config.update(
            num_outputs=self.num_outputs,
            pooling=self.pooling,
            dropout=self.dropout,
            initializer_range=self.initializer_range,
            seed=self.seed,
        )
        return config
