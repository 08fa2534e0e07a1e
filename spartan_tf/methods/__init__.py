"""Parameter-efficient methods, one strategy per module. Each decides what trains on the frozen backbone.

A method is a small dataclass with:
    name                           the CLI name (``--method``)
    default_learning_rate          used when ``--learning-rate`` is not given
    add_arguments(parser)          its hyperparameter flags
    from_args(args) / from_dict(d) build it from flags or from a saved config
    to_dict()                      its hyperparameters, saved in the task config
    layer_modules(backbone, seed)  one trainable Keras layer per encoder layer (the task model tracks them)
    forward_layer(backbone, index, hidden, attention_bias, attention_mask, module) -> hidden [B, S, H]:
                                   how encoder layer ``index`` runs together with its module
"""

from spartan_tf.errors import SpartanError
from spartan_tf.methods.spartan import SpartanMethod

METHODS = {SpartanMethod.name: SpartanMethod}


def get_method(name: str):
    """The method class called ``name``."""
    if name not in METHODS:
        raise SpartanError(f"unknown method {name!r}; expected one of: {', '.join(METHODS)}")
    return METHODS[name]


def method_from_dict(config: dict):
    """Rebuild a method from the ``method`` block of a task config."""
    return get_method(config.get("name", "")).from_dict(config)
