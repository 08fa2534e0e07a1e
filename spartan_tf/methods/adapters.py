"""Adapters (Houlsby et al., 2019): a bottleneck after the attention output and after the feed-forward
output of every encoder layer; the backbone stays frozen.

Inside encoder layer i (see ``spartan_tf.bert_layer``), for both sub-layers:

    h = dense(x)                          the frozen output projection
    h = h + up(gelu(down(h)))             the adapter: down [H, m], up [m, H], with biases
    out = LayerNorm(h + input)            the frozen residual and LayerNorm, as BERT does

The up-projection starts at zero, so an untrained adapter is the identity and the model starts
as the pretrained backbone. Houlsby et al. also train the LayerNorms per task; here the backbone's
stay frozen and shared, and ``--tune-layer-norms`` trains a per-task scale and shift of their outputs
instead (spartan_tf.methods.layer_norm_tuning); by default only the adapters and the head train.
"""

from dataclasses import asdict, dataclass

from spartan_tf.errors import SpartanError


@dataclass(frozen=True)
class AdapterMethod:
    """Hyperparameters of the bottleneck adapters.

    Default learning rate 1e-3: the top of Houlsby et al.'s sweep {3e-5, 1e-4, 3e-4, 1e-3}, which
    suits the short (3-epoch) budget and matches SPARTAN's, so the two compare on equal terms."""

    adapter_size: int = 64
    tune_layer_norms: bool = False

    name = "adapters"
    default_learning_rate = 1e-3
    trains_backbone = False

    def __post_init__(self):
        if self.adapter_size < 1:
            raise SpartanError(f"--adapter-size {self.adapter_size}: must be >= 1")

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group("adapters (--method adapters)")
        group.add_argument("--adapter-size", type=int, help="bottleneck size m of every adapter (default 64)")

    @classmethod
    def from_args(cls, args):
        sizes = {} if args.adapter_size is None else {"adapter_size": args.adapter_size}
        return cls(**sizes, tune_layer_norms=args.tune_layer_norms)

    @classmethod
    def from_dict(cls, config: dict):
        return cls(**{key: value for key, value in config.items() if key != "name"})

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}

    def layer_modules(self, backbone, seed: int):
        """One LayerAdapters (two bottlenecks) per encoder layer, each with its own initialiser seed."""
        from spartan_tf.methods.adapter_layer import LayerAdapters  # TensorFlow loads only once a model is built

        return [
            LayerAdapters(self.adapter_size, backbone.config.initializer_range, seed=seed + 10 * index,
                          tune_layer_norms=self.tune_layer_norms, name=f"adapter_{index:02d}")
            for index in range(backbone.num_layers)
        ]

    def forward_layer(self, backbone, index, hidden, attention_bias, attention_mask, adapters, dropout=False,
                      training=None):
        """Encoder layer ``index`` with its two adapters inside (and its tuned LayerNorms with
        ``tune_layer_norms``): [B, S, H] -> [B, S, H]."""
        from spartan_tf.bert_layer import encoder_layer

        return encoder_layer(backbone.bert.encoder.layer[index], hidden, attention_bias,
                             after_attention=lambda h: adapters(h, site="attention"),
                             after_output=lambda h: adapters(h, site="output"),
                             **(adapters.layer_norms.hooks() if self.tune_layer_norms else {}), dropout=dropout)
