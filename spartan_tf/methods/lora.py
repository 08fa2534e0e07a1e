"""LoRA (Hu et al., 2021): low-rank updates of the query and value projections of every encoder
layer's self-attention; the backbone stays frozen.

    q = x W_q + b_q + (alpha / r) x A_q B_q        A: [H, r], B: [r, H], B starts at zero
    v = x W_v + b_v + (alpha / r) x A_v B_v

Deployed two ways: unmerged (the frozen kernels plus the small A, B) or merged (``merged_weights``:
W + (alpha / r) A B folded into the kernels, a plain BERT with no extra cost per token).
"""

from dataclasses import asdict, dataclass

from spartan_tf.errors import SpartanError


@dataclass(frozen=True)
class LoraMethod:
    """Hyperparameters of the low-rank updates.

    Defaults: rank 8 and alpha 16 (scale 2), the LoRA paper's RoBERTa-base GLUE setting; learning
    rate 5e-4, in that paper's range for RoBERTa-base (4e-4 to 5e-4 at batch 16)."""

    rank: int = 8
    alpha: float = 16.0

    name = "lora"
    default_learning_rate = 5e-4
    trains_backbone = False

    def __post_init__(self):
        if self.rank < 1:
            raise SpartanError(f"--lora-rank {self.rank}: must be >= 1")
        if self.alpha <= 0:
            raise SpartanError(f"--lora-alpha {self.alpha}: must be > 0")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group("LoRA (--method lora)")
        group.add_argument("--lora-rank", type=int, help="rank r of the query and value updates (default 8)")
        group.add_argument("--lora-alpha", type=float, help="alpha; the update is scaled by alpha / r (default 16)")

    @classmethod
    def from_args(cls, args):
        given = {"rank": args.lora_rank, "alpha": args.lora_alpha}
        return cls(**{key: value for key, value in given.items() if value is not None})

    @classmethod
    def from_dict(cls, config: dict):
        return cls(**{key: value for key, value in config.items() if key != "name"})

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}

    def layer_modules(self, backbone, seed: int):
        """One LoraDeltas (query and value updates) per encoder layer, each with its own seed."""
        from spartan_tf.methods.lora_layer import LoraDeltas  # TensorFlow loads only once a model is built

        return [LoraDeltas(self.rank, self.scale, seed=seed + 10 * index, name=f"lora_{index:02d}")
                for index in range(backbone.num_layers)]

    def forward_layer(self, backbone, index, hidden, attention_bias, attention_mask, deltas, dropout=False,
                      training=None):
        """Encoder layer ``index`` with updated query and value projections: [B, S, H] -> [B, S, H]."""
        from spartan_tf.bert_layer import encoder_layer

        layer = backbone.bert.encoder.layer[index]
        attention = layer.attention.self_attention
        return encoder_layer(
            layer, hidden, attention_bias,
            query=lambda x: attention.query(x) + deltas(x, target="query"),
            value=lambda x: attention.value(x) + deltas(x, target="value"),
            dropout=dropout,
        )

    def merged_weights(self, backbone, modules) -> dict:
        """The merged kernels W + (alpha / r) A B, float32 [H, H] arrays keyed like
        ``Backbone.named_variables()`` (``encoder/layer_._0/attention/self/query/kernel``, ...).

        Assigned into a copy of the backbone (``merged_backbone``), the plain BERT forward computes
        what the unmerged task model computes; biases and every other weight are unchanged."""
        import numpy as np

        merged, variables = {}, backbone.named_variables()
        for index, deltas in enumerate(modules):
            for target in ("query", "value"):
                path = f"encoder/layer_._{index}/attention/self/{target}/kernel"
                kernel = variables[path].numpy().astype(np.float64)
                merged[path] = (kernel + deltas.merged_delta(target)).astype(np.float32)
        return merged


def merged_backbone(model):
    """A fresh copy of ``model``'s backbone (loaded from the same source) with the LoRA updates of
    ``model`` (a LoRA TaskModel) merged into its kernels. Run it layer by layer (``embed``,
    ``layer(i)``) and finish with ``model.head``: the task's logits, with no LoRA ops. Its
    ``fingerprint()`` is the merged weights', not the pretrained backbone's."""
    from spartan_tf.backbone import Backbone

    if not isinstance(model.method, LoraMethod):
        raise SpartanError(f"merged weights exist for LoRA models only, not for method {model.method.name!r}")
    weights = model.method.merged_weights(model.backbone, model.after_layers)
    copy = Backbone.load(model.backbone.source)
    variables = copy.named_variables()
    for path, value in weights.items():
        variables[path].assign(value)
    copy._fingerprint = None  # identify the merged weights, not the pretrained ones
    copy.fingerprint()
    return copy
