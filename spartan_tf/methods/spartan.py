"""SPARTAN: a two-level sparse memory after every encoder layer; the backbone stays frozen."""

from dataclasses import asdict, dataclass

from spartan_tf.errors import SpartanError

PATHS = ("dense", "sparse")  # see spartan_tf.memory


@dataclass(frozen=True)
class SpartanMethod:
    """Hyperparameters of the memories (defaults: the public reference code's)."""

    num_parents: int = 16
    children_per_parent: int = 3
    top_k: int = 8
    temperature: float = 1.6
    balance_loss_scale: float = 0.0
    path: str = "dense"

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
        if self.path not in PATHS:
            raise SpartanError(f"--memory-path {self.path!r}: expected one of {PATHS}")

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
        )

    @classmethod
    def from_dict(cls, config: dict):
        fields = {key: value for key, value in config.items() if key != "name"}
        return cls(**fields)

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}

    def forward_layer(self, backbone, index, hidden, attention_bias, attention_mask, memory):
        """Encoder layer ``index``, then its memory on the layer's output: [B, S, H] -> [B, S, H]."""
        return memory(backbone.layer(index, hidden, attention_bias), attention_mask=attention_mask)

    def layer_modules(self, backbone, seed: int):
        """One SparseMemory per encoder layer, each with its own initialiser seed."""
        from spartan_tf.memory import SparseMemory  # TensorFlow loads only once a model is built

        return [
            SparseMemory(
                num_parents=self.num_parents,
                children_per_parent=self.children_per_parent,
                top_k=self.top_k,
                temperature=self.temperature,
                balance_loss_weight=self.balance_loss_scale / backbone.num_layers,
                path=self.path,
                initializer_range=backbone.config.initializer_range,
                seed=seed + 10 * index,
                name=f"memory_{index:02d}",
            )
            for index in range(backbone.num_layers)
        ]
