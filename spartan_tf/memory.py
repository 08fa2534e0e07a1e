"""The SPARTAN two-level sparse memory (Deshpande et al., 2022) as a Keras layer.

For every position's hidden vector ``h`` (size H), with E parents of C children each:

    parent logits   a = h @ P^T                      P: [E, H]
    keep the top-k of a; p = softmax over those k    (the other E - k parents weigh exactly 0)
    child logits    c_e = (h @ K_e^T) / T            K: [E, C, H]
    child weights   q_e = softmax(c_e)               (inside each parent)
    memory output   m = sum_e p_e * (q_e @ V_e)      V: [E, C, H]
    returned        h + m                            (residual)

Options beyond the paper's formulas (training recipes; see docs/results.md for what they do):
- ``query_norm``: the key lookups read ``layer_norm(h)`` (zero mean, unit variance over H, no learned
  gain or bias) instead of ``h``, as product-key memories normalise their queries; the residual
  still adds ``m`` to ``h`` itself;
- ``key_initializer_range`` / ``value_initializer_range``: separate initial scales of the keys and
  the values (a value range of 0 starts the values at zero: the memory starts as the identity);
- ``value_scale``: the values are stored divided by this constant and multiplied back when read
  (``values()``). Under Adam, whose steps have a size set by the learning rate whatever the
  gradient's, this multiplies the values' learning rate by ``value_scale`` and nothing else: the
  values must grow to the size of the hidden vectors, the keys only turn;
- ``output_gain``: a learned gain per hidden unit [H] (starting at 1) on the memory's output, so the
  output can grow or shrink as a whole; it folds into the values (``values()``) for export;
- ``center_values``: the memory reads its stored values minus their mean over all E * C children.
  Since the weights of every position sum to 1, the output is the uncentered one minus that mean: the
  memory can add one vector to every token (a bias) only by routing every token alike, not through a
  shortcut that all children learn together. The gradient of each stored
  value is then ``(w_j - mean_i w_i) * g`` instead of ``w_j * g``: while the routing is still near
  uniform, the common part of the gradient (what every child would learn alike), which Adam would
  otherwise amplify to full-size steps, is gone. It folds into the values for export;
- ``dropout``: dropout on the memory's output ``m`` in training (the residual ``h`` is kept whole), as
  a Transformer drops a sublayer's output before its residual; nothing changes at inference.

Two paths compute the same numbers:
- ``"sparse"`` gathers only the k chosen parents' children: [B, S, k, C, H] work;
- ``"dense"`` computes every child with two matmuls and lets the zero parent weights mask them:
  [B, S, E, C] work. Which is faster depends on E * C, k and the runtime; measure.
"""

import tensorflow as tf
import tf_keras

PATHS = ("dense", "sparse")
NORM_EPSILON = 1e-6  # of the query's layer norm


def normalized_query(hidden):
    """``query_norm``'s query: layer_norm(hidden) over H with no learned gain or bias. [B, S, H]"""
    mean, variance = tf.nn.moments(hidden, axes=[-1], keepdims=True)
    return (hidden - mean) * tf.math.rsqrt(variance + NORM_EPSILON)


@tf_keras.utils.register_keras_serializable(package="spartan_tf")
class SparseMemory(tf_keras.layers.Layer):
    """Two-level sparse memory with a residual connection.

    Args:
        num_parents: E, the number of parent cells.
        children_per_parent: C, the number of children under each parent.
        top_k: how many parents each position reads from (1 <= top_k <= num_parents).
        temperature: T, divides the child logits.
        balance_loss_weight: if > 0, adds ``weight * sum_e mean_tokens(p_e)^2`` via ``add_loss``
            (the load-balancing loss; the model passes ``scale / num_layers`` so the total is the
            average over layers times the scale). Padding tokens are excluded from the mean.
        path: ``"dense"`` or ``"sparse"`` (same numbers, different cost).
        query_norm: look the keys up with layer_norm(h) (no learned parameters) instead of h.
        key_initializer_range: standard deviation of the truncated-normal initial keys.
        value_initializer_range: the same for the values (as read, after ``value_scale``); 0 starts them at zero.
        value_scale: the constant the stored values are multiplied by when read (see above).
        output_gain: learn a gain per hidden unit on the memory's output (see above).
        center_values: read the values minus their mean over all children (see above).
        dropout: rate of the dropout on the memory's output in training (see above).
        seed: seed of the initialisers; give every layer its own.

    Call:
        inputs: hidden states [B, S, H].
        attention_mask: optional [B, S], 1 for real tokens; used only by the balance loss.
        training: whether the dropout runs.
    Returns:
        [B, S, H]: ``inputs + memory_output``.
    """

    def __init__(
        self,
        num_parents=16,
        children_per_parent=3,
        top_k=8,
        temperature=1.6,
        balance_loss_weight=0.0,
        path="dense",
        query_norm=False,
        key_initializer_range=0.02,
        value_initializer_range=0.02,
        value_scale=1.0,
        output_gain=False,
        center_values=False,
        dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 1 <= top_k <= num_parents:
            raise ValueError(f"top_k must be in [1, num_parents={num_parents}], got {top_k}")
        if children_per_parent < 1:
            raise ValueError(f"children_per_parent must be >= 1, got {children_per_parent}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if key_initializer_range <= 0 or value_initializer_range < 0:
            raise ValueError("key_initializer_range must be > 0 and value_initializer_range >= 0")
        if value_scale <= 0:
            raise ValueError(f"value_scale must be > 0, got {value_scale}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        self.num_parents = num_parents
        self.children_per_parent = children_per_parent
        self.top_k = top_k
        self.temperature = temperature
        self.balance_loss_weight = balance_loss_weight
        self.path = path
        self.query_norm = query_norm
        self.key_initializer_range = key_initializer_range
        self.value_initializer_range = value_initializer_range
        self.value_scale = value_scale
        self.output_gain = output_gain
        self.center_values = center_values
        self.dropout = dropout
        self.seed = seed
        self.output_dropout = tf_keras.layers.Dropout(dropout, seed=None if seed is None else seed + 3)

    def _initializer(self, offset, stddev):
        if stddev == 0:
            return "zeros"
        seed = None if self.seed is None else self.seed + offset
        return tf_keras.initializers.TruncatedNormal(stddev=stddev, seed=seed)

    def build(self, input_shape):
        hidden = int(input_shape[-1])
        parents, children = self.num_parents, self.children_per_parent
        self.parent_keys = self.add_weight(
            name="parent_keys", shape=(parents, hidden),
            initializer=self._initializer(0, self.key_initializer_range)
        )
        self.child_keys = self.add_weight(
            name="child_keys", shape=(parents, children, hidden),
            initializer=self._initializer(1, self.key_initializer_range)
        )
        self.child_values = self.add_weight(
            name="child_values", shape=(parents, children, hidden),
            initializer=self._initializer(2, self.value_initializer_range / self.value_scale)
        )
        if self.output_gain:
            self.gain = self.add_weight(name="output_gain", shape=(hidden,), initializer="ones")
        super().build(input_shape)

    def values(self):
        """The child values as the memory reads them: the stored ones (minus their mean over the E * C
        children, with ``center_values``) times ``value_scale`` (and times the output gain, if any). [E, C, H]"""
        values = self.child_values
        if self.center_values:
            values = values - tf.reduce_mean(values, axis=[0, 1], keepdims=True)
        if self.value_scale != 1.0:
            values = values * self.value_scale
        if self.output_gain:
            values = values * self.gain
        return values

    def query(self, hidden):
        """What the keys are matched against: ``hidden``, or its layer norm with ``query_norm``. [B, S, H]"""
        return normalized_query(hidden) if self.query_norm else hidden

    def select_parents(self, query):
        """Top-k parents per position of ``query`` [B, S, H] (see ``query``): (weights [B, S, k]
        summing to 1, indices [B, S, k])."""
        parent_logits = tf.einsum("bsh,eh->bse", query, self.parent_keys)
        top_logits, top_indices = tf.math.top_k(parent_logits, k=self.top_k, sorted=False)
        return tf.nn.softmax(top_logits, axis=-1), top_indices

    def parent_weights(self, hidden):
        """Parent weights over all E parents [B, S, E]; exactly 0 outside the top-k."""
        top_weights, top_indices = self.select_parents(self.query(hidden))
        chosen = tf.one_hot(top_indices, self.num_parents, dtype=hidden.dtype)  # [B, S, k, E]
        return tf.einsum("bsk,bske->bse", top_weights, chosen)

    def call(self, inputs, attention_mask=None, training=None):
        # tf.expand_dims rather than [..., None] below: TFLite has no built-in op for a slice that adds axes.
        hidden = inputs
        query = self.query(hidden)
        top_weights, top_indices = self.select_parents(query)
        if self.path == "sparse":
            keys = tf.gather(self.child_keys, top_indices)  # [B, S, k, C, H]
            values = tf.gather(self.values(), top_indices)  # [B, S, k, C, H]
            child_logits = tf.einsum("bsh,bskch->bskc", query, keys) / self.temperature
            weights = tf.expand_dims(top_weights, -1) * tf.nn.softmax(child_logits, axis=-1)
            memory = tf.einsum("bskc,bskch->bsh", weights, values)
            if self.balance_loss_weight > 0:
                chosen = tf.one_hot(top_indices, self.num_parents, dtype=hidden.dtype)
                self._add_balance_loss(tf.einsum("bsk,bske->bse", top_weights, chosen), attention_mask)
        else:
            chosen = tf.one_hot(top_indices, self.num_parents, dtype=hidden.dtype)
            parent_weights = tf.einsum("bsk,bske->bse", top_weights, chosen)  # [B, S, E]
            child_logits = tf.einsum("bsh,ech->bsec", query, self.child_keys) / self.temperature
            weights = tf.expand_dims(parent_weights, -1) * tf.nn.softmax(child_logits, axis=-1)
            memory = tf.einsum("bsec,ech->bsh", weights, self.values())
            if self.balance_loss_weight > 0:
                self._add_balance_loss(parent_weights, attention_mask)
        if self.dropout > 0:
            memory = self.output_dropout(memory, training=training)
        return hidden + memory

    def _add_balance_loss(self, parent_weights, attention_mask):
        """Adds weight * sum_e (mean over real tokens of p_e)^2.

        Under a tf.distribute strategy the mean is over the GLOBAL batch (the per-replica sums are
        all-reduced), so several replicas give the same loss as one device on the same batch.
        """
        if attention_mask is None:
            mask = tf.ones_like(parent_weights[..., :1])
        else:
            mask = tf.cast(attention_mask, parent_weights.dtype)[..., None]  # [B, S, 1]
        usage_sum = tf.reduce_sum(parent_weights * mask, axis=[0, 1])  # [E]
        tokens = tf.reduce_sum(mask)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            # Every replica now holds the global loss; Keras scales each replica's added losses by
            # 1 / num_replicas before the gradients are summed, so it counts exactly once.
            usage_sum, tokens = replica.all_reduce(tf.distribute.ReduceOp.SUM, [usage_sum, tokens])
        usage = usage_sum / tf.maximum(tokens, 1.0)
        self.add_loss(self.balance_loss_weight * tf.reduce_sum(tf.square(usage)))

    def get_config(self):
        config = super().get_config()
        config.update(
            num_parents=self.num_parents,
            children_per_parent=self.children_per_parent,
            top_k=self.top_k,
            temperature=self.temperature,
            balance_loss_weight=self.balance_loss_weight,
            path=self.path,
            query_norm=self.query_norm,
            key_initializer_range=self.key_initializer_range,
            value_initializer_range=self.value_initializer_range,
            value_scale=self.value_scale,
            output_gain=self.output_gain,
            center_values=self.center_values,
            dropout=self.dropout,
            seed=self.seed,
        )
        return config
