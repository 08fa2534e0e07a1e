"""The shared-backbone graph: one TFLite signature that runs a whole text for any task of a method.

    classify(input_ids, attention_mask, token_type_ids, <task tensors>) -> logits

embed -> every encoder layer with the method's module (SPARTAN: the memory after the layer; adapters:
two bottlenecks inside it; LoRA: low-rank updates beside query and value) -> the head, in ONE
interpreter invocation. The backbone's weights are constants of the graph (int8 in an int8 bundle)
and held once whatever the number of tasks; every per-task weight is a graph input (a "task
tensor"), so a task is nothing but its task tensors (``task_tensors``), stored in ``<task>.npz``
(``pack_task_file``, docs/bundle-format.md).

Why inputs and not resource variables assigned by a ``load_task`` signature: both work, but reading
a variable copies it into the arena at every invocation, and was slower here (1.135x against
1.10x the CPU time of the fused SPARTAN graph, real QNLI lengths, one thread, AMD EPYC AVX2). An
input's data does not survive the re-allocation that a new text length triggers, so the client sets
the task tensors again after each re-allocation (about 0.05 ms for a MiniLM SPARTAN task) and only
then. The graph-level layout of every task tensor is chosen so that no op transposes it at run
time: a matmul against a task tensor is ``BATCH_MATMUL`` with ``adj_y``, the tensor stored [out, in].

A graph is specific to a "layout": the method's structural hyperparameters (SPARTAN: parents,
children per parent, query norm, the memory's site, tuned LayerNorms; adapters: tuned LayerNorms; LoRA:
none; adapter sizes and LoRA ranks are dynamic dimensions) and
the head's pooling. Every task of one layout shares one graph file; ``graph_key`` names it.

Shapes: B batch, S length (both dynamic), H hidden, E parents, C children per parent, m adapter size,
r LoRA rank, N outputs (dynamic: one graph serves tasks with different label counts).
"""

import numpy as np

from spartan_tf.errors import SpartanError

SHARED_METHODS = ("spartan", "adapters", "lora")
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def layout(config: dict) -> dict:
    """What fixes a task's shared graph: {"method": {...structural hyperparameters}, "pooling": ...}."""
    method = config["method"]
    name = method["name"]
    tuned = {"tune_layer_norms": True} if method.get("tune_layer_norms") else {}  # layouts without it unchanged
    if name == "spartan":
        structure = {"name": name, "num_parents": method["num_parents"],
                     "children_per_parent": method["children_per_parent"],
                     "query_norm": bool(method.get("query_norm", False)), "site": method.get("site", "layer"), **tuned}
    elif name == "adapters":
        structure = {"name": name, **tuned}
    elif name == "lora":
        structure = {"name": name}
    else:
        raise SpartanError(f"method {name!r} has no shared form (only {', '.join(SHARED_METHODS)})")
    return {"method": structure, "pooling": config.get("head", {}).get("pooling", "cls")}


SITE_SUFFIXES = {"layer": "", "feed-forward": "f", "attention+feed-forward": "af"}  # of a SPARTAN graph key


def graph_key(graph_layout: dict) -> str:
    """The layout's name in a bundle, e.g. ``spartan-16x3-cls`` or ``adapters-mean``."""
    method = graph_layout["method"]
    parts = [method["name"]]
    if method["name"] == "spartan":
        parts.append(f"{method['num_parents']}x{method['children_per_parent']}" + ("q" if method["query_norm"] else "")
                     + SITE_SUFFIXES[method.get("site", "layer")] + ("n" if method.get("tune_layer_norms") else ""))
    elif method.get("tune_layer_norms"):
        parts.append("n")
    return "-".join(parts + [graph_layout["pooling"]])


# --------------------------------------------------------------------------- the task tensors


def task_tensors(model) -> dict:
    """{graph input name: float32 array} of one trained TaskModel (SPARTAN, adapters or unmerged LoRA)."""
    tensors = {}
    for index, module in enumerate(model.after_layers):
        prefix = f"layer_{index:02d}"
        name = model.method.name
        if name == "spartan":
            for memory_prefix, memory in layer_memories(prefix, module, model.method.site):
                tensors.update(identity_memory_tensors(memory_prefix, model.method, model.backbone.hidden_size)
                               if memory is None else memory_tensors(memory_prefix, memory))
        elif name == "adapters":
            for site, (down, down_bias, up, up_bias) in module.sites.items():
                tensors[f"{prefix}_{site}_down"] = down.numpy().T  # [m, H]
                tensors[f"{prefix}_{site}_down_bias"] = down_bias.numpy()  # [m]
                tensors[f"{prefix}_{site}_up"] = up.numpy().T  # [H, m]
                tensors[f"{prefix}_{site}_up_bias"] = up_bias.numpy()  # [H]
        elif name == "lora":
            for target, (a, b) in module.targets.items():
                tensors[f"{prefix}_{target}_a"] = a.numpy().T  # [r, H]
                tensors[f"{prefix}_{target}_b"] = (module.scale * b.numpy()).T  # [H, r], the scale folded in
        else:
            raise SpartanError(f"method {name!r} has no shared form")
        if getattr(model.method, "tune_layer_norms", False):
            tensors.update(layer_norm_tensors(prefix, None if module is None else module.layer_norms,
                                              model.backbone.hidden_size))
    head = model.head
    tensors["head_pooler_kernel"] = head.pooler_kernel.numpy().T  # [H, H] (out, in)
    tensors["head_pooler_bias"] = head.pooler_bias.numpy()  # [H]
    tensors["head_classifier_kernel"] = head.classifier_kernel.numpy().T  # [N, H]
    tensors["head_classifier_bias"] = head.classifier_bias.numpy()  # [N]
    return {name: np.array(value, dtype=np.float32, order="C") for name, value in tensors.items()}


def layer_memories(prefix: str, module, site: str) -> list:
    """[(task-tensor prefix, SparseMemory or None)] of one layer's SPARTAN module (None: no memory):
    ``[("layer_00", memory)]`` (the module itself, or a SublayerMemories' one memory with
    ``--tune-layer-norms``), or with site "attention+feed-forward" ``[("layer_00_attention", ...),
    ("layer_00_output", ...)]``, its two memories named as the adapters' tensors are."""
    if site != "attention+feed-forward":
        return [(prefix, module.memories["output"] if hasattr(module, "memories") else module)]
    from spartan_tf.methods.sublayer_memories import SITES

    return [(f"{prefix}_{name}", None if module is None else module.memories[name]) for name in SITES]


def memory_tensors(prefix: str, memory) -> dict:
    """One SparseMemory's task tensors: ``<prefix>_keys`` [E + C*E, H], ``_values`` [H, C*E], ``_top_k`` [1]."""
    slots = memory.children_per_parent
    child_keys = memory.child_keys.numpy() / memory.temperature  # [E, C, H]; the temperature folded in
    values = memory.values().numpy()  # [E, C, H]
    return {
        # rows: the E parents, then the children slot-major (row E + c*E + e is parent e's child c)
        f"{prefix}_keys": np.concatenate([memory.parent_keys.numpy()]
                                         + [child_keys[:, slot, :] for slot in range(slots)]),
        f"{prefix}_values": np.concatenate([values[:, slot, :] for slot in range(slots)]).T,
        f"{prefix}_top_k": np.array([memory.top_k], dtype=np.float32),  # [1]: see tensor_specs
    }


def identity_memory_tensors(prefix: str, method, hidden_size: int) -> dict:
    """The task tensors of a layer without a memory: zero keys and values, so the shared graph's memory
    there adds exactly 0 to the hidden states (every child weighs alike, and every value is 0)."""
    parents, children = method.num_parents, method.num_parents * method.children_per_parent
    return {f"{prefix}_keys": np.zeros([parents + children, hidden_size], np.float32),
            f"{prefix}_values": np.zeros([hidden_size, children], np.float32),
            f"{prefix}_top_k": np.array([method.top_k], dtype=np.float32)}


def layer_norm_tensors(prefix: str, layer_norms, hidden_size: int) -> dict:
    """A layer's LayerNormTuning (``--tune-layer-norms``) as ``<prefix>_<site>_norm_multiplier`` [H]
    (1 + its scale) and ``_norm_shift`` [H] per site; 1 and 0 (the pretrained LayerNorm) for
    ``layer_norms`` None (a SPARTAN layer below ``--first-memory-layer``)."""
    from spartan_tf.methods.layer_norm_tuning import SITES

    tensors = {}
    for site in SITES:
        scale, shift = ((np.zeros(hidden_size), np.zeros(hidden_size)) if layer_norms is None
                        else (layer_norms.scales[site].numpy(), layer_norms.shifts[site].numpy()))
        tensors[f"{prefix}_{site}_norm_multiplier"] = 1.0 + scale
        tensors[f"{prefix}_{site}_norm_shift"] = shift
    return tensors


def tensor_specs(graph_layout: dict, num_layers: int, hidden_size: int) -> dict:
    """{task tensor name: tf.TensorSpec}: the graph's task inputs (None: a dimension set per task)."""
    import tensorflow as tf

    from spartan_tf.methods.layer_norm_tuning import SITES as NORM_SITES

    method, H = graph_layout["method"], hidden_size
    specs = {}
    for index in range(num_layers):
        prefix = f"layer_{index:02d}"
        if method["name"] == "spartan":
            E, C = method["num_parents"], method["children_per_parent"]
            for memory_prefix, _ in layer_memories(prefix, None, method.get("site", "layer")):
                specs[f"{memory_prefix}_keys"] = [E + C * E, H]
                specs[f"{memory_prefix}_values"] = [H, C * E]
                specs[f"{memory_prefix}_top_k"] = [1]  # not a 0-d input: ai-edge-litert 2.3 crashes on one on aarch64
        elif method["name"] == "adapters":
            for site in ("attention", "output"):
                specs.update({f"{prefix}_{site}_down": [None, H], f"{prefix}_{site}_down_bias": [None],
                              f"{prefix}_{site}_up": [H, None], f"{prefix}_{site}_up_bias": [H]})
        else:
            for target in ("query", "value"):
                specs.update({f"{prefix}_{target}_a": [None, H], f"{prefix}_{target}_b": [H, None]})
        if method.get("tune_layer_norms"):
            for site in NORM_SITES:
                specs.update({f"{prefix}_{site}_norm_multiplier": [H], f"{prefix}_{site}_norm_shift": [H]})
    specs.update({"head_pooler_kernel": [H, H], "head_pooler_bias": [H],
                  "head_classifier_kernel": [None, H], "head_classifier_bias": [None]})
    return {name: tf.TensorSpec(shape, tf.float32, name=name) for name, shape in specs.items()}


def pack_task_file(tensors: dict, weights: str) -> dict:
    """The arrays of ``<task>.npz`` for a bundle's weights mode (docs/bundle-format.md):

    int8: every 2-D tensor as int8 ``name`` [rows, cols] plus float32 ``name.scale`` [rows], one
        symmetric scale per row (the value is int8 * scale); 0-D and 1-D tensors float16;
    float16: every tensor float16; float32: as they are.
    """
    packed = {}
    for name, value in tensors.items():
        if weights == "float32":
            packed[name] = value
        elif value.ndim != 2 or weights == "float16":
            packed[name] = value.astype(np.float16)
        else:
            scale = np.abs(value).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            packed[name] = np.clip(np.round(value / scale[:, None]), -127, 127).astype(np.int8)
            packed[f"{name}.scale"] = scale.astype(np.float32)
    return packed


def unpack_task_file(packed: dict) -> dict:
    """``pack_task_file``'s inverse: {name: float32 array} (what the device client computes too)."""
    tensors = {}
    for name, value in packed.items():
        if name.endswith(".scale"):
            continue
        if value.dtype == np.int8:
            value = value.astype(np.float32) * packed[f"{name}.scale"][:, None]
        tensors[name] = np.asarray(value, dtype=np.float32)
    return tensors


# --------------------------------------------------------------------------- the graph


def memory_forward(hidden, parent_logits, child_logits, values, top_k, slots: int):
    """The SPARTAN memory from its key logits: hidden + memory, [B, S, H].

    ``parent_logits`` [B, S, E] and ``child_logits`` [B, S, C*E] (slot-major, temperature applied):
    the query against every key; ``values(weights [B, S, C*E]) -> [B, S, H]``; ``top_k`` a float
    (a scalar, or a [1] tensor). Written for TFLite (spartan_tf.export.inference_memory explains each choice): top-k by
    rank instead of TOPK_V2, softmax within each parent over C slot tensors, no reshape.
    """
    import tensorflow as tf

    slot_logits = tf.split(child_logits, slots, axis=-1)  # C x [B, S, E]
    child_max = slot_logits[0]
    for slot in slot_logits[1:]:
        child_max = tf.maximum(child_max, slot)
    child_exp = tf.exp(child_logits - tf.concat([child_max] * slots, axis=-1))  # [B, S, C*E]
    child_sum = tf.add_n(tf.split(child_exp, slots, axis=-1))  # [B, S, E]
    pairs = tf.expand_dims(parent_logits, -2) - tf.expand_dims(parent_logits, -1)  # [B, S, e, j]: a_j - a_e
    rank = tf.reduce_sum(tf.clip_by_value(pairs * 1e30, 0.0, 1.0), axis=-1)  # parents above e
    kept = tf.clip_by_value(top_k - rank, 0.0, 1.0)  # [B, S, E]: 1 for the top k, else 0
    parent_exp = tf.exp(parent_logits - tf.reduce_max(parent_logits, axis=-1, keepdims=True)) * kept
    scale = parent_exp / (tf.reduce_sum(parent_exp, axis=-1, keepdims=True) * child_sum)  # [B, S, E]
    weights = child_exp * tf.concat([scale] * slots, axis=-1)  # [B, S, C*E]
    return hidden + values(weights)


def shared_signatures(backbone, graph_layout: dict, max_length: int, length: int | None = None,
                      constants: dict | None = None) -> dict:
    """{"classify": tf.function}: the shared graph of ``graph_layout`` over ``backbone``.

    Inputs: int32 [B, S] ``input_ids``, ``attention_mask``, ``token_type_ids`` and the float32 task
    tensors of ``tensor_specs``; output ``logits`` float32 [B, N]. With "cls" pooling the last
    SPARTAN memory computes position 0 only (all the head reads). ``length``: None (the bundle) for
    dynamic [B, S] token inputs; an int gives fixed [1, length] ones. ``constants``: {task tensor
    name: array} built into the graph as constants instead of inputs (the converter quantizes them
    as it does the backbone's weights). The bundle uses neither; benchmarks/bench_graph_variants.py
    compares such fixed-length buckets and partly task-specific graphs against the bundle's graph.
    """
    import tensorflow as tf

    from spartan_tf.bert_layer import encoder_layer
    from spartan_tf.export import _ids_spec, backbone_signatures, signature_function
    from spartan_tf.heads import masked_mean
    from spartan_tf.memory import normalized_query
    from spartan_tf.methods.layer_norm_tuning import SITES as NORM_SITES

    method, pooling = graph_layout["method"], graph_layout["pooling"]
    specs = tensor_specs(graph_layout, backbone.num_layers, backbone.hidden_size)
    embed = backbone_signatures(backbone, max_length, length)["embed"]
    last = backbone.num_layers - 1

    def times(x, kernel):
        """x [B, S, in] @ kernel.T, kernel [out, in] -> [B, S, out] (BATCH_MATMUL, adj_y: no transpose)."""
        return tf.matmul(x, kernel, transpose_b=True)

    def query_of(hidden):
        return normalized_query(hidden) if method.get("query_norm") else hidden

    def tuned_norms(prefix, tensors) -> dict:
        """encoder_layer's LayerNorm hooks of a layout with ``tune_layer_norms``: LayerNorm(x) * multiplier + shift."""
        if not method.get("tune_layer_norms"):
            return {}

        def tuned(site):
            return lambda normed: normed * tensors[f"{prefix}_{site}_norm_multiplier"] + tensors[f"{prefix}_{site}_norm_shift"]
        return {f"after_{site}_norm": tuned(site) for site in NORM_SITES}

    def layer(index, hidden, bias, tensors):
        prefix = f"layer_{index:02d}"
        encoder = backbone.bert.encoder.layer[index]
        if method["name"] == "spartan":
            parents, slots = method["num_parents"], method["children_per_parent"]

            def memory(h, prefix=prefix):
                parent_logits, child_logits = tf.split(times(query_of(h), tensors[f"{prefix}_keys"]),
                                                       [parents, slots * parents], axis=-1)
                return memory_forward(h, parent_logits, child_logits,
                                      lambda weights: times(weights, tensors[f"{prefix}_values"]),
                                      tensors[f"{prefix}_top_k"], slots)
            norms = tuned_norms(prefix, tensors)
            if method.get("site") == "attention+feed-forward":
                return encoder_layer(encoder, hidden, bias, after_attention=lambda h: memory(h, f"{prefix}_attention"),
                                     after_output=lambda h: memory(h, f"{prefix}_output"), **norms)
            if method.get("site") == "feed-forward":
                return encoder_layer(encoder, hidden, bias, after_output=memory, **norms)
            hidden = encoder_layer(encoder, hidden, bias, **norms) if norms else backbone.layer(index, hidden, bias)
            return memory(hidden[:, :1] if index == last and pooling == "cls" else hidden)
        if method["name"] == "adapters":
            def adapter(site):
                def run(h):
                    down = times(h, tensors[f"{prefix}_{site}_down"]) + tensors[f"{prefix}_{site}_down_bias"]
                    return h + times(tf.nn.gelu(down, approximate=False), tensors[f"{prefix}_{site}_up"]) \
                        + tensors[f"{prefix}_{site}_up_bias"]
                return run
            return encoder_layer(encoder, hidden, bias, after_attention=adapter("attention"),
                                 after_output=adapter("output"), **tuned_norms(prefix, tensors))
        attention = encoder.attention.self_attention

        def lora(target, projection):
            return lambda x: projection(x) + times(times(x, tensors[f"{prefix}_{target}_a"]),
                                                   tensors[f"{prefix}_{target}_b"])
        return encoder_layer(encoder, hidden, bias, query=lora("query", attention.query),
                             value=lora("value", attention.value))

    def classify(input_ids, attention_mask, token_type_ids, **tensors):
        hidden = embed(input_ids, token_type_ids)["hidden"]
        bias = backbone.attention_bias(attention_mask, hidden.dtype)
        for index in range(backbone.num_layers):
            hidden = layer(index, hidden, bias, tensors)
        if pooling == "cls":
            read = hidden[:, :1]  # [B, 1, H]
        else:
            read = tf.expand_dims(masked_mean(hidden, attention_mask), 1)  # [B, 1, H]
        pooled = tf.tanh(times(read, tensors["head_pooler_kernel"]) + tensors["head_pooler_bias"])
        logits = times(pooled, tensors["head_classifier_kernel"]) + tensors["head_classifier_bias"]  # [B, 1, N]
        return {"logits": logits[:, 0]}

    constants = constants or {}
    unknown = sorted(set(constants) - set(specs))
    if unknown:
        raise ValueError(f"constants: {unknown} are not task tensors of this graph (expected some of {list(specs)})")
    names = [name for name in specs if name not in constants]

    def run(input_ids, attention_mask, token_type_ids, *task):
        """int32 [B, S] x3 and the task tensors not in ``constants`` -> logits [B, N]."""
        tensors = {name: tf.constant(value, tf.float32) for name, value in constants.items()}
        tensors.update(zip(names, task))
        return classify(input_ids, attention_mask, token_type_ids, **tensors)

    ids_spec = _ids_spec(length)
    return {"classify": signature_function("classify", run, [ids_spec] * 3 + [specs[name] for name in names])}
