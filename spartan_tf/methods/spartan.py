"""SPARTAN: a two-level sparse memory after every encoder layer (or every layer from
``--first-memory-layer`` on); the backbone stays frozen."""

import argparse
from dataclasses import asdict, dataclass

from spartan_tf.errors import SpartanError

PATHS = ("dense", "sparse")  # see spartan_tf.memory
# Where each memory reads and writes: after the encoder layer (the paper); on the feed-forward
# output inside it, before the layer's residual and LayerNorm (where an adapter sits); or two memories,
# on the attention output and on the feed-forward output (where Houlsby's two adapters sit).
SITES = ("layer", "feed-forward", "attention+feed-forward")
KEY_INITS = ("random", "data")  # see spartan_tf.key_init

# Memory hyperparameters added after the first models were saved, with the values those models used.
SAVED_BEFORE = {"query_norm": False, "key_init_std": 0.02, "value_init_std": 0.02, "value_scale": 1.0,
                "output_gain": False, "center_values": False, "site": "layer", "first_layer": 0,
                "memory_dropout": 0.0, "key_init": "random", "tune_layer_norms": False}

# Named recipes: defaults of ``python -m spartan_tf.train`` flags (argparse dests) that ``--preset``
# puts in place; flags given explicitly still win. "reference" is the public reference code's setting;
# "short-budget" is the recipe that learns faster in runs of a few hundred steps and slower in longer
# ones (docs/results.md: five tasks at 189 steps, few-shot at 130, QNLI at 644); "few-shot" is it on
# layers 2-5 only with keys started from the data, for runs of about 200 examples (faster to train).
SHORT_BUDGET = {"memory_site": "feed-forward", "query_norm": True, "learning_rate": 2e-3, "warmup_ratio": 0.1}
PRESETS = {
    "short-budget": SHORT_BUDGET,
    "few-shot": {**SHORT_BUDGET, "first_memory_layer": 2, "key_init": "data"},  # docs/results.md, "Keys started from the data"
    "reference": {
        "learning_rate": 1e-3, "lr_schedule": "linear", "warmup_ratio": 0.0, "pooling": "cls",
        "backbone_dropout": False, "num_parents": 16, "children": 48, "top_k": 8, "temperature": 1.6,
        "balance_loss_scale": 0.0, "query_norm": False, "key_init_std": 0.02, "value_init_std": 0.02,
        "value_scale": 1.0, "output_gain": False, "center_values": False, "memory_site": "layer",
        "first_memory_layer": 0, "memory_dropout": 0.0, "key_init": "random", "tune_layer_norms": False,
    },
}


@dataclass(frozen=True)
class SpartanMethod:
    """Hyperparameters of the memories (defaults: the reference code's, except ``value_scale``, which
    is 10 here and 1 there, and ``center_values``, on here and absent there: see docs/results.md, "Why
    SPARTAN learned slowly")."""

    num_parents: int = 16
    children_per_parent: int = 3
    top_k: int = 8
    temperature: float = 1.6
    balance_loss_scale: float = 0.0
    path: str = "dense"
    query_norm: bool = False
    key_init_std: float = 0.02
    value_init_std: float = 0.02
    value_scale: float = 10.0
    output_gain: bool = False
    center_values: bool = True
    site: str = "layer"
    first_layer: int = 0
    memory_dropout: float = 0.0
    key_init: str = "random"
    tune_layer_norms: bool = False

    name = "spartan"
    default_learning_rate = 1e-3
    trains_backbone = False

    def __post_init__(self):
        if self.num_parents < 1 or self.children_per_parent < 1:
            raise SpartanError("--num-parents and --children-per-parent must be >= 1")
        if not 1 <= self.top_k <= self.num_parents:
            raise SpartanError(f"--top-k {self.top_k}: must be between 1 and --num-parents ({self.num_parents})")
        if self.temperature <= 0:
            raise SpartanError(f"--temperature {self.temperature}: must be > 0")
        if self.balance_loss_scale < 0:
            raise SpartanError(f"--balance-loss-scale {self.balance_loss_scale}: must be >= 0")
        if self.key_init_std <= 0:
            raise SpartanError(f"--key-init-std {self.key_init_std}: must be > 0")
        if self.value_init_std < 0:
            raise SpartanError(f"--value-init-std {self.value_init_std}: must be >= 0")
        if self.value_scale <= 0:
            raise SpartanError(f"--value-scale {self.value_scale}: must be > 0")
        if self.path not in PATHS:
            raise SpartanError(f"--memory-path {self.path!r}: expected one of {PATHS}")
        if self.site not in SITES:
            raise SpartanError(f"--memory-site {self.site!r}: expected one of {SITES}")
        if self.first_layer < 0:
            raise SpartanError(f"--first-memory-layer {self.first_layer}: must be >= 0")
        if not 0 <= self.memory_dropout < 1:
            raise SpartanError(f"--memory-dropout {self.memory_dropout}: must be in [0, 1)")
        if self.key_init not in KEY_INITS:
            raise SpartanError(f"--key-init {self.key_init!r}: expected one of {KEY_INITS}")

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group("SPARTAN memory (--method spartan)")
        group.add_argument("--num-parents", type=int, default=16, help="parent cells E (default 16)")
        group.add_argument("--children", type=int, default=48, help="children in all, E * C (default 48)")
        group.add_argument("--top-k", type=int, default=8, help="parents each position reads (default 8)")
        group.add_argument("--temperature", type=float, default=1.6, help="child softmax temperature (default 1.6)")
        group.add_argument(
            "--balance-loss-scale", type=float, default=0.0,
            help="scale of the load-balancing loss; 0 (default) turns it off",
        )
        group.add_argument(
            "--memory-path", choices=PATHS, default="dense",
            help="compute all children and mask (dense, default) or gather the top-k parents' (sparse)",
        )
        group.add_argument("--query-norm", action=argparse.BooleanOptionalAction, default=False,
                           help="match the keys against layer_norm(h) instead of h (default: off)")
        group.add_argument("--key-init-std", type=float, default=0.02, help="initial std of the keys (default 0.02)")
        group.add_argument("--value-init-std", type=float, default=0.02,
                           help="initial std of the values; 0 starts the memory as the identity (default 0.02)")
        group.add_argument("--value-scale", type=float, default=10.0,
                           help="values are stored divided by this and multiplied back: under Adam, their "
                                "learning rate times this (default 10; the reference code's is 1)")
        group.add_argument("--output-gain", action=argparse.BooleanOptionalAction, default=False,
                           help="learn a gain per hidden unit on each memory's output (default: off)")
        group.add_argument("--center-values", action=argparse.BooleanOptionalAction, default=True,
                           help="read the values minus their mean over all children, so that the memory "
                                "has no bias channel (default: on; the reference code's is off)")
        group.add_argument("--memory-dropout", type=float, default=0.0,
                           help="dropout on each memory's output while training (default 0: none)")
        group.add_argument("--key-init", choices=KEY_INITS, default="random",
                           help="start the keys at random (random, default) or from k-means of each memory's "
                                "queries over 64 training texts (data; spartan_tf/key_init.py)")
        group.add_argument("--memory-site", choices=SITES, default="layer",
                           help="after each encoder layer (layer, default, the paper's), on the layer's "
                                "feed-forward output before its residual and LayerNorm (feed-forward), or "
                                "two memories per layer, on its attention and feed-forward outputs, where "
                                "adapters sit (attention+feed-forward)")
        group.add_argument("--first-memory-layer", type=int, default=0,
                           help="memories on encoder layers N, N+1, ... only (0-based; default 0: every "
                                "layer). Training then runs no backward pass below layer N, so it is faster")

    @classmethod
    def from_args(cls, args):
        if args.num_parents < 1 or args.children % args.num_parents:
            raise SpartanError(
                f"--children {args.children}: must be a positive multiple of --num-parents ({args.num_parents})"
            )
        return cls(
            num_parents=args.num_parents,
            children_per_parent=args.children // args.num_parents,
            top_k=args.top_k,
            temperature=args.temperature,
            balance_loss_scale=args.balance_loss_scale,
            path=args.memory_path,
            query_norm=args.query_norm,
            key_init_std=args.key_init_std,
            value_init_std=args.value_init_std,
            value_scale=args.value_scale,
            output_gain=args.output_gain,
            center_values=args.center_values,
            site=args.memory_site,
            first_layer=args.first_memory_layer,
            memory_dropout=args.memory_dropout,
            key_init=args.key_init,
            tune_layer_norms=args.tune_layer_norms,
        )

    @classmethod
    def from_dict(cls, config: dict):
        """From a task config's ``method`` block; a key the config predates takes the value its model was
        trained with (``SAVED_BEFORE``), not today's default."""
        fields = {key: value for key, value in config.items() if key != "name"}
        return cls(**{**SAVED_BEFORE, **fields})

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}

    @property
    def sublayer_modules(self) -> bool:
        """Whether each layer's module is a SublayerMemories (called with a ``site``) rather than a bare
        SparseMemory: with two memories a layer, or with ``tune_layer_norms`` (the module owns the tuning)."""
        return self.site == "attention+feed-forward" or self.tune_layer_norms

    def forward_layer(self, backbone, index, hidden, attention_bias, attention_mask, memory, dropout=False,
                      training=None):
        """Encoder layer ``index`` and its memory (on the layer's output; on its feed-forward output with
        site "feed-forward"; on its attention and feed-forward outputs with "attention+feed-forward"),
        with ``tune_layer_norms`` the layer's two LayerNorms tuned by ``memory.layer_norms``; none below
        ``first_layer``, where ``memory`` is None: [B, S, H] -> [B, S, H]. ``dropout``: the backbone's own
        dropouts; ``training``: the memory's (``memory_dropout``)."""
        from spartan_tf.bert_layer import encoder_layer

        if memory is None:
            return backbone.layer(index, hidden, attention_bias, dropout)

        def at(site):
            """The memory of ``site`` ("attention" or "output"; a bare SparseMemory is the layer's only one)."""
            sited = {"site": site} if self.sublayer_modules else {}
            return lambda h: memory(h, **sited, attention_mask=attention_mask, training=training)

        norms = memory.layer_norm_hooks(hidden.shape) if self.tune_layer_norms else {}
        layer = backbone.bert.encoder.layer[index]
        if self.site == "attention+feed-forward":
            return encoder_layer(layer, hidden, attention_bias, after_attention=at("attention"),
                                 after_output=at("output"), **norms, dropout=dropout)
        if self.site == "feed-forward":
            return encoder_layer(layer, hidden, attention_bias, after_output=at("output"), **norms, dropout=dropout)
        output = (encoder_layer(layer, hidden, attention_bias, **norms, dropout=dropout) if norms
                  else backbone.layer(index, hidden, attention_bias, dropout))
        return at("output")(output)

    def layer_modules(self, backbone, seed: int):
        """One SparseMemory per encoder layer from ``first_layer`` on, each with its own initialiser seed
        (a SublayerMemories with ``sublayer_modules``: two memories with site "attention+feed-forward",
        else its "output" memory only, seeded as the pair's feed-forward memory is); None for the layers
        below ``first_layer``."""
        from spartan_tf.memory import SparseMemory  # TensorFlow loads only once a model is built
        from spartan_tf.methods.sublayer_memories import SITES as SUBLAYER_SITES, SublayerMemories

        if self.first_layer >= backbone.num_layers:
            raise SpartanError(f"--first-memory-layer {self.first_layer}: the backbone has layers 0 to "
                               f"{backbone.num_layers - 1}")

        def memory_config(index):
            return dict(
                num_parents=self.num_parents,
                children_per_parent=self.children_per_parent,
                top_k=self.top_k,
                temperature=self.temperature,
                balance_loss_weight=self.balance_loss_scale / (backbone.num_layers - self.first_layer),
                path=self.path,
                query_norm=self.query_norm,
                key_initializer_range=self.key_init_std,
                value_initializer_range=self.value_init_std,
                value_scale=self.value_scale,
                output_gain=self.output_gain,
                center_values=self.center_values,
                dropout=self.memory_dropout,
                seed=seed + 10 * index,
            )

        def module(index):
            if index < self.first_layer:
                return None
            if self.sublayer_modules:
                sites = SUBLAYER_SITES if self.site == "attention+feed-forward" else ("output",)
                return SublayerMemories(memory_config(index), sites=sites, tune_layer_norms=self.tune_layer_norms,
                                        name=f"memory_{index:02d}")
            return SparseMemory(**memory_config(index), name=f"memory_{index:02d}")

        return [module(index) for index in range(backbone.num_layers)]
