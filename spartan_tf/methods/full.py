"""Full fine-tuning: every backbone weight trains with the head (embeddings and encoder layers;
the pooler is not run, the head has its own copy). The baseline the parameter-efficient methods
are measured against; each task carries a whole backbone.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class FullFineTuning:
    """No hyperparameters of its own. Default learning rate 2e-5 (BERT's usual fine-tuning rate).

    ``trains_backbone``: the TaskModel unfreezes the backbone, tracks it, and saves its weights
    with the task (``backbone/...``); the config still records the PRETRAINED backbone's fingerprint,
    which loading checks before the saved weights replace the pretrained ones."""

    name = "full"
    default_learning_rate = 2e-5
    trains_backbone = True

    @staticmethod
    def add_arguments(parser):
        """No flags of its own."""

    @classmethod
    def from_args(cls, args):
        return cls()

    @classmethod
    def from_dict(cls, config: dict):
        return cls(**{key: value for key, value in config.items() if key != "name"})

    def to_dict(self) -> dict:
        return {"name": self.name}

    def layer_modules(self, backbone, seed: int):
        """The backbone's own encoder layers: they hold what trains in each layer."""
        return list(backbone.bert.encoder.layer)

    def forward_layer(self, backbone, index, hidden, attention_bias, attention_mask, layer, dropout=False,
                      training=None):
        """Encoder layer ``index`` as pretrained (its weights training): [B, S, H] -> [B, S, H]."""
        return backbone.layer(index, hidden, attention_bias, dropout)
