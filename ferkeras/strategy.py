"""Pick a `tf.distribute` strategy and derive per-replica settings from the global batch."""

from __future__ import annotations

import json
import os

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def choose_strategy(name: str = "auto"):
    """auto: MultiWorkerMirrored when TF_CONFIG names a cluster, Mirrored with several GPUs,
    else the default strategy. An explicit name overrides the choice."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}. Valid strategies: {list(STRATEGIES)}")
    if name == "auto":
        name = "default"
        if _tf_config_cluster():
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def _tf_config_cluster() -> bool:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return False
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}") from None
    workers = cfg.get("cluster", {}).get("worker", [])
    return len(workers) > 1 or bool(cfg.get("cluster", {}).get("chief"))


def is_chief(strategy) -> bool:
    """True on the worker that writes run outputs (always true on one machine)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs
    )


def scaling_rule(strategy, *, global_batch: int, learning_rate: float) -> dict:
    """The batch and learning-rate rule, recorded in the run folder.

    Batch sizes in recipes are global. Each replica gets global_batch / replicas; the learning
    rate is defined for the global batch, so it does not change with the replica count.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(
            f"train.batch_size={global_batch} is not divisible by the {replicas} replicas."
        )
    return {
        "strategy": type(strategy).__name__,
        "replicas": replicas,
        "global_batch": global_batch,
        "per_replica_batch": global_batch // replicas,
        "learning_rate": learning_rate,
        "rule": "global batch fixed by the recipe; per-replica batch = global / replicas; "
        "learning rate unchanged (it is defined for the global batch); losses averaged "
        "over the global batch with tf.nn.compute_average_loss",
    }
