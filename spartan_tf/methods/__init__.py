"""Parameter-efficient methods, one strategy per module. Each decides what trains on the frozen backbone.

A method is a small frozen dataclass with:
    name                           the CLI name (``--method``)
    default_learning_rate          used when ``--learning-rate`` is not given
    trains_backbone                True if the backbone's own weights train (full fine-tuning): the task
                                   model then unfreezes, tracks and saves them (see spartan_tf.model)
    add_arguments(parser)          its hyperparameter flags (every method's go on one parser: no clashes)
    from_args(args) / from_dict(d) build it from flags or from a saved config
    to_dict()                      its hyperparameters, saved in the task config
    layer_modules(backbone, seed)  one trainable Keras layer per encoder layer (the task model tracks them)
    forward_layer(backbone, index, hidden, attention_bias, attention_mask, module, dropout, training)
                                   -> hidden [B, S, H]: how encoder layer ``index`` runs together with
                                   its module (``dropout``: the backbone's; ``training``: the module's)

    spartan   memories between the layers (spartan.py)        adapters  bottlenecks inside them (adapters.py)
    lora      low-rank query/value updates (lora.py)          full      the whole backbone trains (full.py)
"""

from spartan_tf.errors import SpartanError
from spartan_tf.methods.adapters import AdapterMethod
from spartan_tf.methods.full import FullFineTuning
from spartan_tf.methods.lora import LoraMethod
from spartan_tf.methods.spartan import SpartanMethod

METHODS = {method.name: method for method in (SpartanMethod, AdapterMethod, LoraMethod, FullFineTuning)}


def get_method(name: str):
    """The method class called ``name``."""
    if name not in METHODS:
        raise SpartanError(f"unknown method {name!r}; expected one of: {', '.join(METHODS)}")
    return METHODS[name]


def method_from_dict(config: dict):
    """Rebuild a method from the ``method`` block of a task config."""
    method = get_method(config.get("name", ""))
    try:
        return method.from_dict(config)
    except TypeError as err:
        raise SpartanError(f"method {method.name!r}: bad hyperparameters in the task config ({err})") from None
