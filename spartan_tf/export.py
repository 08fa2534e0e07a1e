"""Keras -> TFLite: the one-graph (whole) signatures, their pieces, conversion and operator list.

A whole task's file is one graph, signature ``classify(input_ids, attention_mask, token_type_ids)
-> logits``: SPARTAN fused (``fused_signatures``: embed, then each layer and its memory, then the
head) or a method that changes the encoder layers (``whole_signatures``: adapters, LoRA merged or
unmerged, full fine-tuning). The pieces ``fused_signatures`` is built from (``backbone_signatures``:
embed and layer_XX; ``task_signatures``: memory_XX and head) are tf.functions of their own, which
benchmarks also time separately. The shared-backbone graph of a bundle's shared tasks, with the
task tensors as inputs, is spartan_tf/shared_graph.py (docs/bundle-format.md).

Every input has a dynamic batch dimension B and a dynamic length dimension S; hidden is
float32 [B, S, H], ids and masks are int32 [B, S], logits float32 [B, num_outputs].

Weights modes: ``int8`` (dynamic-range quantization: int8 weights, float activations; the
embedding tables too), ``float16`` (float16 weights dequantized at load; what tflite-runtime 2.14
can run) and ``float32``.
"""

import tempfile

import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as tflite_schema

from spartan_tf.errors import SpartanError

WEIGHTS_MODES = ("int8", "float16", "float32")


def _ids_spec(length: int | None):
    """int32 [B, S]; both dynamic, or [1, length] for a fixed-shape graph (benchmarks only)."""
    return tf.TensorSpec([None, None] if length is None else [1, length], tf.int32)


def _hidden_spec(hidden_size: int, length: int | None):
    return tf.TensorSpec([None, None, hidden_size] if length is None else [1, length, hidden_size], tf.float32)


def signature_function(name: str, python_function, input_signature):
    """A tf.function whose signature key is ``name`` (two functions of one name would merge)."""
    python_function.__name__ = name
    return tf.function(python_function, input_signature=input_signature, autograph=False)


# --------------------------------------------------------------------------- the signatures


def backbone_signatures(backbone, max_length: int, length: int | None = None) -> dict:
    """{"embed": ..., "layer_00": ..., ...}: the frozen backbone, one tf.function per piece.

    ``length``: None (the bundle) for dynamic [B, S] inputs; an int gives a fixed [1, length]
    graph, which benchmarks/bench_seq_length.py compares against the dynamic one.

    ``embed`` does the three embedding gathers itself, from the backbone's own variables, instead of
    calling TFBertEmbeddings: that layer starts with ``tf.debugging.assert_less`` on the ids, which
    TFLite has no built-in op for. The numbers are the same (tested against Keras). Only the first
    ``max_length`` position embeddings are kept: longer inputs are never fed.
    """
    embeddings = backbone.bert.embeddings
    if not 2 <= max_length <= backbone.max_positions:
        raise SpartanError(f"max length {max_length}: must be between 2 and {backbone.max_positions}")

    positions = embeddings.position_embeddings.numpy()[:max_length]  # [max_length, H]

    def embed(input_ids, token_type_ids):
        """int32 [B, S] x2 -> hidden [B, S, H] (the same as Backbone.embed)."""
        seq_len = tf.shape(input_ids)[1]
        hidden = (  # summed in TFBertEmbeddings' order: words + positions + token types
            tf.gather(embeddings.weight, input_ids)
            + tf.expand_dims(tf.slice(tf.constant(positions), [0, 0], [seq_len, -1]), 0)
            + tf.gather(embeddings.token_type_embeddings, token_type_ids)
        )
        return {"hidden": embeddings.LayerNorm(hidden)}

    def make_layer(index):
        def layer(hidden, attention_mask):
            """hidden [B, S, H], attention_mask int32 [B, S] (1 = token, 0 = padding) -> hidden [B, S, H]."""
            bias = backbone.attention_bias(attention_mask, hidden.dtype)
            return {"hidden": backbone.layer(index, hidden, bias)}

        return layer

    hidden_spec, ids_spec = _hidden_spec(backbone.hidden_size, length), _ids_spec(length)
    signatures = {"embed": signature_function("embed", embed, [ids_spec, ids_spec])}
    for index in range(backbone.num_layers):
        name = f"layer_{index:02d}"
        signatures[name] = signature_function(name, make_layer(index), [hidden_spec, ids_spec])
    return signatures


def inference_memory(memory):
    """The SparseMemory's forward for export, rewritten for TFLite: hidden [B, S, H] -> hidden + memory.

    The same numbers as the Keras layer (tested to 1e-5 on both its paths), in fewer and cheaper
    TFLite ops. At batch 1 each op of a small graph costs microseconds whatever its size, and
    TOPK_V2 alone cost about 30 us at 64 tokens, more than the memory's two matmuls together
    (benchmarks/bench_memory_ops.py, ai-edge-litert 2.3, XNNPACK, one x86 thread). So:

      logits: one matmul against every key at once, [H, E + C*E] (parents, then the children
          slot-major: column E + c*E + e is parent e's child c; the temperature folded in), split.
          Each key column is stored scaled to max |.| = 1 and its scale multiplied back after the
          split, so the task file's one int8 scale per tensor costs no column its precision. (A
          multiply right after the matmul would be folded back into the kernel by the converter);
      top-k without TOPK_V2: parent e is kept iff fewer than k parents have a larger logit. The
          comparison of all pairs is a [B, S, E, E] tensor of (a_j - a_e) * 1e30 clipped to [0, 1]
          (1 where a_j exceeds a_e by 1e-30 or more, 0 where it does not exceed it), summed over j
          into e's rank;
      parent weights: exp(a - max a) * kept / sum(...);
      child softmax within each parent: per-parent max and sum over the C slot tensors [B, S, E];
      memory = (child weight x parent weight) over [B, S, C*E], one matmul with the values [C*E, H].
      Nothing is reshaped: a reshape with a dynamic length costs shape ops worth more than its data.

    Ties at the k-th largest parent logit keep more than k parents (the layer takes exactly k);
    trained float32 keys make such ties vanishingly rare. ``memory`` None (a layer below
    ``--first-memory-layer``): the identity.
    """
    import numpy as np

    if memory is None:
        return lambda hidden: hidden

    slots, top_k = memory.children_per_parent, memory.top_k
    parents = memory.parent_keys.shape[0]
    child_keys = memory.child_keys.numpy() / memory.temperature  # [E, C, H]
    keys = np.concatenate([memory.parent_keys.numpy().T] + [child_keys[:, slot, :].T for slot in range(slots)], axis=1)
    column_scale = np.abs(keys).max(axis=0)  # [E + C*E]
    column_scale[column_scale == 0] = 1.0
    unit_keys = tf.constant(keys / column_scale)  # [H, E + C*E], every column's max |.| 1
    parent_scale, child_scale = tf.constant(column_scale[:parents]), tf.constant(column_scale[parents:])
    values = tf.constant(np.concatenate([memory.values().numpy()[:, slot, :] for slot in range(slots)]))  # [C*E, H]

    def run(hidden):
        from spartan_tf.shared_graph import memory_forward

        query = memory.query(hidden)  # hidden itself, or its layer norm with query_norm
        parent_logits, child_logits = tf.split(tf.matmul(query, unit_keys), [parents, slots * parents], axis=-1)
        return memory_forward(hidden, parent_logits * parent_scale, child_logits * child_scale,
                              lambda weights: tf.matmul(weights, values), float(top_k), slots)

    return run


class InferenceSublayerMemories:
    """A SublayerMemories' inference form: called with ``site`` as the layer is, each site's memory
    ``inference_memory``'s; ``layer_norms`` (``--tune-layer-norms``) the layer's own LayerNormTuning."""

    def __init__(self, module):
        self.forwards = {site: inference_memory(memory) for site, memory in module.memories.items()}
        self.layer_norms = module.layer_norms

    def __call__(self, hidden, site, attention_mask=None, training=None):
        return self.forwards[site](hidden)

    def layer_norm_hooks(self, input_shape) -> dict:
        return {} if self.layer_norms is None else self.layer_norms.hooks()


def inference_module(module):
    """A layer's SPARTAN module in its inference form, called as the method's ``forward_layer`` calls
    it: ``inference_memory`` of a SparseMemory, or of each of a SublayerMemories' memories (by ``site``)."""
    from spartan_tf.methods.sublayer_memories import SublayerMemories

    if module is None:
        return None
    if isinstance(module, SublayerMemories):
        return InferenceSublayerMemories(module)
    forward = inference_memory(module)
    return lambda hidden, attention_mask=None, training=None: forward(hidden)


def task_signatures(model, length: int | None = None) -> dict:
    """{"memory_00": ..., ..., "head": ...}: one task's own pieces, as tf.functions (``length``:
    as in backbone_signatures)."""
    hidden_spec = _hidden_spec(model.backbone.hidden_size, length)
    signatures = {}
    last = len(model.after_layers) - 1
    for index, memory in enumerate(model.after_layers):
        forward = inference_memory(memory)

        def run_memory(hidden, forward=forward, first_only=index == last and model.head.pooling == "cls"):
            """hidden [B, S, H] -> hidden + memory(hidden) [B, S, H]; with "cls" pooling the last layer's
            memory computes position 0 only, [B, 1, H]: all the head reads, at 1/S of the cost."""
            return {"hidden": forward(hidden[:, :1] if first_only else hidden)}

        name = f"memory_{index:02d}"
        signatures[name] = signature_function(name, run_memory, [hidden_spec])

    def head(hidden, attention_mask):
        """hidden [B, S, H], attention_mask int32 [B, S] -> logits [B, num_outputs] (reads position 0,
        or the mean of the real tokens)."""
        return {"logits": model.head(hidden, attention_mask=attention_mask, training=False)}

    signatures["head"] = signature_function("head", head, [hidden_spec, _ids_spec(length)])
    return signatures


def fused_signatures(backbone, model, max_length: int, length: int | None = None) -> dict:
    """{"classify": ...}: the whole chain in one graph, built from the same pieces as the split files
    (a memory inside its encoder layer, or one whose layer has tuned LayerNorms, runs with its layer
    as the method's ``forward_layer`` instead)."""
    if model.method.site != "layer" or model.method.tune_layer_norms:
        memories = [inference_module(module) for module in model.after_layers]

        def run_layer(index, hidden, bias, attention_mask):
            return model.method.forward_layer(backbone, index, hidden, bias, attention_mask, memories[index])
        return _one_graph(backbone, model, max_length, length, run_layer)
    pieces = {**backbone_signatures(backbone, max_length, length), **task_signatures(model, length)}

    def classify(input_ids, attention_mask, token_type_ids):
        """int32 [B, S] x3 -> logits [B, num_outputs]."""
        hidden = pieces["embed"](input_ids, token_type_ids)["hidden"]
        for index in range(backbone.num_layers):
            hidden = pieces[f"layer_{index:02d}"](hidden, attention_mask)["hidden"]
            hidden = pieces[f"memory_{index:02d}"](hidden)["hidden"]
        return {"logits": pieces["head"](hidden, attention_mask)["logits"]}

    ids_spec = _ids_spec(length)
    return {"classify": signature_function("classify", classify, [ids_spec, ids_spec, ids_spec])}


def whole_signatures(model, max_length: int, lora_merged: bool = True, length: int | None = None) -> dict:
    """{"classify": ...}: a whole-task model (adapters, LoRA or full fine-tuning) in one graph.

    The embeddings are ``backbone_signatures``' (no assert op); each encoder layer runs as the
    method's ``forward_layer`` (adapters inside the layer, LoRA's low-rank updates beside query and
    value, or the fine-tuned layer), then the head. With ``lora_merged`` a LoRA model runs on a copy
    of its backbone with the updates folded into the kernels (``merged_backbone``): plain layers,
    no low-rank ops. ``length``: as in backbone_signatures.
    """
    backbone = model.backbone
    if lora_merged and model.method.name == "lora":
        from spartan_tf.methods.lora import merged_backbone

        backbone = merged_backbone(model)

        def run_layer(index, hidden, bias, attention_mask):
            return backbone.layer(index, hidden, bias)
    else:
        def run_layer(index, hidden, bias, attention_mask):
            return model.method.forward_layer(backbone, index, hidden, bias, attention_mask,
                                              model.after_layers[index])

    return _one_graph(backbone, model, max_length, length, run_layer)


def _one_graph(backbone, model, max_length, length, run_layer) -> dict:
    """{"classify": ...}: embed, ``run_layer(index, hidden, bias, attention_mask)`` for every encoder
    layer, then ``model``'s head."""
    embed = backbone_signatures(backbone, max_length, length)["embed"]

    def classify(input_ids, attention_mask, token_type_ids):
        """int32 [B, S] x3 -> logits [B, num_outputs]."""
        hidden = embed(input_ids, token_type_ids)["hidden"]
        bias = backbone.attention_bias(attention_mask, hidden.dtype)
        for index in range(backbone.num_layers):
            hidden = run_layer(index, hidden, bias, attention_mask)
        return {"logits": model.head(hidden, attention_mask=attention_mask, training=False)}

    ids_spec = _ids_spec(length)
    return {"classify": signature_function("classify", classify, [ids_spec, ids_spec, ids_spec])}


# --------------------------------------------------------------------------- conversion


def to_tflite(signatures: dict, weights: str, per_channel: bool = True) -> bytes:
    """Convert named tf.functions into one multi-signature .tflite (built-in ops only).

    The functions are saved as a SavedModel with explicit signature keys (a temporary directory),
    then converted; ``weights`` picks the quantization (see WEIGHTS_MODES). ``per_channel=False``
    gives int8 weights one scale per tensor instead of one per output channel: each per-channel
    scale costs 12 bytes in the file (float32 scale + int64 zero point), about 37 KB for a
    MiniLM task file, which is what keeps it under 2% of the backbone.
    """
    if weights not in WEIGHTS_MODES:
        raise ValueError(f"weights must be one of {WEIGHTS_MODES}, got {weights!r}")
    concrete = {name: function.get_concrete_function() for name, function in signatures.items()}
    holder = tf.Module()  # a SavedModel must track every variable its functions capture
    holder.captured = [variable for function in concrete.values() for variable in function.variables]
    with tempfile.TemporaryDirectory(prefix="spartan-export-") as saved_dir:
        tf.saved_model.save(holder, saved_dir, signatures=concrete)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir, signature_keys=list(concrete))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if weights != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if weights == "int8" and not per_channel:
            converter._experimental_disable_per_channel = True  # no public switch for this
        if weights == "float16":
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
    check_builtin_only(flatbuffer, "+".join(signatures))
    return flatbuffer


# --------------------------------------------------------------------------- inspection

_BUILTIN_NAMES = {
    code: name for name, code in vars(tflite_schema.BuiltinOperator).items() if not name.startswith("_")
}


def operator_names(flatbuffer: bytes) -> list[str]:
    """The operator codes a .tflite uses: builtin names (e.g. "FULLY_CONNECTED"), or
    "CUSTOM:<code>" for custom ops (Flex ops are custom ops named "Flex...")."""
    model = tflite_schema.Model.GetRootAsModel(flatbuffer, 0)
    names = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == tflite_schema.BuiltinOperator.CUSTOM:
            names.append(f"CUSTOM:{code.CustomCode().decode()}")
        else:
            names.append(_BUILTIN_NAMES.get(builtin, f"UNKNOWN_{builtin}"))
    return names


def check_builtin_only(flatbuffer: bytes, what: str):
    """Raise if the model needs a Flex (SELECT_TF_OPS) or custom op: the device runtime has neither."""
    foreign = [name for name in operator_names(flatbuffer) if name.startswith("CUSTOM:")]
    if foreign:
        raise SpartanError(f"{what}: conversion produced non-built-in ops {sorted(set(foreign))}")
