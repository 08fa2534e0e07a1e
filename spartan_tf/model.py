"""The task model: frozen backbone, a method's layers after each encoder layer, and a task head."""

import numpy as np
import tensorflow as tf
import tf_keras

from spartan_tf.heads import ClassificationHead

FROZEN_STATES = "frozen_states"  # an input key: the hidden states after the frozen layers (frozen_prefix.py)


class TaskModel(tf_keras.Model):
    """embed -> (encoder layer i with the method's module i)* -> head.

    How module i joins encoder layer i is the method's ``forward_layer`` (SPARTAN: the layer, then
    its memory, or with ``--memory-site feed-forward`` the memory inside it; adapters and LoRA: inside
    the layer). ``after_layers`` holds the modules, one per
    encoder layer (None for a layer the method leaves alone: SPARTAN's below ``--first-memory-layer``).

    Inputs: dict of int32 [B, S] tensors ``input_ids``, ``attention_mask``, ``token_type_ids``; or, in
    training, ``FROZEN_STATES`` float32 [B, S, H] and ``attention_mask`` (see ``encode``).
    Output: logits [B, num_outputs].

    The backbone is NOT tracked by Keras unless the method trains it (``method.trains_backbone``,
    full fine-tuning): a frozen backbone is shared by every task, so ``model.weights``,
    ``save_weights`` and checkpoints hold only the task's own (small) state. A method that trains the
    backbone makes it part of that state: it is unfrozen, tracked (so Keras trains and checkpoints
    it) and saved under ``backbone/...`` names; such a model owns its Backbone object and must not
    share it with other tasks.
    """

    def __init__(self, backbone, method, after_layers, head, backbone_dropout=False, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "backbone", backbone)  # bypass Keras tracking, see above
        self.method = method
        self.backbone_dropout = backbone_dropout
        self.after_layers = list(after_layers)
        self.head = head
        if getattr(method, "trains_backbone", False):
            backbone.unfreeze()
            self.trained_backbone = backbone.bert  # tracked: its weights train, checkpoint and save

    def encode(self, inputs, training=None, stop=None):
        """Hidden states after the last encoder layer and its memory (after layer ``stop - 1`` if given):
        [B, S, H]. In training, with ``backbone_dropout``, the frozen backbone runs its own dropouts
        (BERT's training mode). Inputs with ``FROZEN_STATES`` [B, S, H] (the states after the first
        ``frozen_prefix`` layers, see frozen_prefix.py) and ``attention_mask`` start above those layers."""
        dropout = bool(training) and self.backbone_dropout
        mask = inputs["attention_mask"]
        if FROZEN_STATES in inputs:
            hidden, start = inputs[FROZEN_STATES], self.frozen_prefix
        else:
            hidden, start = self.backbone.embed(inputs["input_ids"], inputs["token_type_ids"], dropout), 0
        bias = self.backbone.attention_bias(mask, hidden.dtype)
        for index in range(start, len(self.after_layers) if stop is None else stop):
            hidden = self.method.forward_layer(self.backbone, index, hidden, bias, mask, self.after_layers[index],
                                               dropout, training)
        return hidden

    @property
    def frozen_prefix(self) -> int:
        """How many encoder layers from the bottom have no module of the method and train nothing (SPARTAN's
        below ``--first-memory-layer``; 0 for a method that trains the backbone)."""
        if getattr(self.method, "trains_backbone", False):
            return 0
        modules = [module is not None for module in self.after_layers]
        return modules.index(True) if True in modules else len(modules)

    def call(self, inputs, training=None):
        return self.head(self.encode(inputs, training), attention_mask=inputs["attention_mask"], training=training)

    def named_task_weights(self) -> dict:
        """The task's variables under stable names: ``<module name>/<weight>`` (e.g. ``memory_00/parent_keys``,
        ``adapter_00/attention_down_kernel``, ``head/pooler_kernel``) and, when the method trains the
        backbone, ``backbone/<path inside BERT>`` for its trainable weights. Each variable is named once."""
        named, seen = {}, set()
        if getattr(self.method, "trains_backbone", False):
            trainable = {id(variable) for variable in self.backbone.bert.trainable_weights}  # not the pooler
            for path, variable in self.backbone.named_variables().items():
                if id(variable) in trainable:
                    named[f"backbone/{path}"] = variable
                    seen.add(id(variable))
        for layer in [*self.after_layers, self.head]:
            if layer is None:
                continue
            for variable in layer.weights:
                if id(variable) in seen:
                    continue  # a backbone weight (full fine-tuning's modules are the encoder layers)
                key = f"{layer.name}/{path_inside(variable, layer.name)}"
                if key in named:
                    raise RuntimeError(f"two task weights share the name {key}")
                named[key] = variable
                seen.add(id(variable))
        return named


def path_inside(variable, layer_name: str) -> str:
    """``variable``'s name below the layer called ``layer_name``: ``parent_keys`` for a memory's own
    weight, ``attention/parent_keys`` for one of a sub-layer (SublayerMemories)."""
    parts = variable.name.split(":")[0].split("/")
    if layer_name not in parts[:-1]:
        return parts[-1]
    return "/".join(parts[len(parts) - parts[::-1].index(layer_name):])


def dummy_inputs(length: int = 8) -> dict:
    """A one-example batch that builds every variable of a TaskModel."""
    ids = tf.constant(np.full((1, length), 101, dtype=np.int32))
    return {"input_ids": ids, "attention_mask": tf.ones_like(ids), "token_type_ids": tf.zeros_like(ids)}


def build_task_model(backbone, method, num_outputs: int, head_dropout: float, seed: int,
                     pooling: str = "cls", backbone_dropout: bool = False) -> TaskModel:
    """A built TaskModel: memories freshly initialised, head pooler copied from the backbone's.
    ``pooling``: what the head reads (see ClassificationHead); ``backbone_dropout``: see TaskModel.encode."""
    head = ClassificationHead(
        num_outputs, pooling=pooling, dropout=head_dropout, initializer_range=backbone.config.initializer_range,
        seed=seed + 1000, name="head",
    )
    model = TaskModel(backbone, method, method.layer_modules(backbone, seed), head, backbone_dropout,
                      name="task_model")
    model(dummy_inputs(), training=False)
    head.set_pooler(*backbone.pooler_weights())
    return model
