"""One BERT encoder layer re-run from its own (frozen) pieces, with the hook points that methods
working INSIDE the layer need (LoRA: the query and value projections; adapters: after the attention
output and feed-forward output projections).

With no hooks, ``encoder_layer`` computes what ``Backbone.layer`` computes (the HF ``TFBertLayer``;
in inference mode every dropout is the identity, with ``dropout=True`` the layer's own dropouts
apply where HF applies them), op for op; tests check the equality. The backbone object itself is
never modified.

    context  = softmax(q k^T / sqrt(d) + bias) v          q = query(x), v = value(x), per head
    h        = after_attention(dense_attn(context))
    a        = after_attention_norm(LayerNorm_attn(h + x))
    f        = after_output(dense_out(gelu(dense_mid(a))))
    returned   after_output_norm(LayerNorm_out(f + a))
"""

import tensorflow as tf
from transformers.tf_utils import stable_softmax


def self_attention(layer, hidden, attention_bias, query=None, value=None, dropout=False):
    """Multi-head self-attention context of HF ``TFBertLayer`` ``layer``: [B, S, H] -> [B, S, H].

    ``query`` / ``value``: optional functions [B, S, H] -> [B, S, H] replacing the layer's own
    projections (default: ``layer``'s query / value Dense layers). ``attention_bias``: [B, 1, 1, S]."""
    attention = layer.attention.self_attention
    batch = tf.shape(hidden)[0]
    query_states = (query or attention.query)(hidden)
    value_states = (value or attention.value)(hidden)
    q = attention.transpose_for_scores(query_states, batch)  # [B, heads, S, d]
    k = attention.transpose_for_scores(attention.key(hidden), batch)
    v = attention.transpose_for_scores(value_states, batch)
    scores = tf.matmul(q, k, transpose_b=True)
    scores = tf.divide(scores, tf.cast(attention.sqrt_att_head_size, scores.dtype))
    probabilities = stable_softmax(tf.add(scores, attention_bias), axis=-1)  # [B, heads, S, S]
    probabilities = attention.dropout(probabilities, training=dropout)
    context = tf.transpose(tf.matmul(probabilities, v), perm=[0, 2, 1, 3])  # [B, S, heads, d]
    return tf.reshape(context, (batch, -1, attention.all_head_size))


def encoder_layer(layer, hidden, attention_bias, query=None, value=None, after_attention=None, after_output=None,
                  after_attention_norm=None, after_output_norm=None, dropout=False):
    """HF ``TFBertLayer`` ``layer`` in inference mode with optional hooks: [B, S, H] -> [B, S, H].

    ``query``/``value``: see ``self_attention``. ``after_attention``/``after_output``: functions
    [B, S, H] -> [B, S, H] applied to the attention-output and feed-forward-output projections,
    inside the residual (before ``LayerNorm(h + input)``). ``after_attention_norm``/``after_output_norm``:
    functions [B, S, H] -> [B, S, H] applied to the two LayerNorms' outputs. ``dropout``: BERT's training-mode dropouts
    (on the attention probabilities and after each output projection, before the hooks)."""
    context = self_attention(layer, hidden, attention_bias, query, value, dropout)
    attention_output = layer.attention.dense_output
    h = attention_output.dropout(attention_output.dense(context), training=dropout)
    if after_attention is not None:
        h = after_attention(h)
    attended = attention_output.LayerNorm(h + hidden)
    if after_attention_norm is not None:
        attended = after_attention_norm(attended)
    feed_forward = layer.bert_output
    h = feed_forward.dropout(feed_forward.dense(layer.intermediate(attended)), training=dropout)
    if after_output is not None:
        h = after_output(h)
    output = feed_forward.LayerNorm(h + attended)
    return output if after_output_norm is None else after_output_norm(output)
