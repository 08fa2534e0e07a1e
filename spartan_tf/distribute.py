"""Choosing a tf.distribute strategy for training (``--strategy``), and who writes the outputs.

TensorFlow does the distributing; this module only picks the strategy the flags ask for:
    auto         MirroredStrategy over every local GPU when there are two or more, else the default
    mirrored     MirroredStrategy over the local devices (GPUs, else the CPU)
    multiworker  MultiWorkerMirroredStrategy, cluster from the standard TF_CONFIG variable
    tpu          TPUStrategy on the TPU at --tpu ADDRESS
"""

import json
import os

from spartan_tf.errors import SpartanError

STRATEGIES = ("auto", "mirrored", "multiworker", "tpu")


def make_strategy(name: str, tpu: str | None = None):
    """The tf.distribute strategy called ``name``; create it before other TensorFlow work (multiworker needs that)."""
    import tensorflow as tf  # this module's names stay importable by the CLI without TensorFlow

    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        cluster = _tf_config_cluster()
        if cluster is None:
            raise SpartanError("--strategy multiworker: set TF_CONFIG (cluster and task) on every worker; see docs/distributed.md")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        if not tpu:
            raise SpartanError("--strategy tpu needs --tpu ADDRESS (a TPU name, or grpc://host:port)")
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as err:
            raise SpartanError(f"--tpu {tpu}: cannot connect ({str(err).splitlines()[0]})") from None
        return tf.distribute.TPUStrategy(resolver)
    raise SpartanError(f"--strategy {name!r}: expected one of {', '.join(STRATEGIES)}")


def _tf_config_cluster():
    """The ``cluster`` of TF_CONFIG, or None when unset; SpartanError when it is not valid JSON."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except ValueError:
        raise SpartanError("TF_CONFIG is not valid JSON") from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise SpartanError('TF_CONFIG needs "cluster" and "task" entries')
    return config["cluster"]


def global_batch_size(batch_size: int, replicas: int, per_replica: bool) -> int:
    """The batch one training step sees over all replicas (the learning rate is never rescaled)."""
    if per_replica:
        return batch_size * replicas
    if batch_size % replicas:
        raise SpartanError(f"--batch-size {batch_size} (global) is not divisible by {replicas} replicas")
    return batch_size


def is_chief(strategy) -> bool:
    """Whether this process writes the final model (always, except on non-chief workers of a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


# TensorFlow's class names for the public strategy names a user asked for.
_PUBLIC_NAMES = {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy", "_DefaultDistributionStrategy": "default"}


def describe(strategy) -> str:
    """E.g. "MirroredStrategy (2 replicas)"."""
    name = _PUBLIC_NAMES.get(type(strategy).__name__, type(strategy).__name__)
    replicas = strategy.num_replicas_in_sync
    return f"{name} ({replicas} replica{'s' if replicas > 1 else ''})"
