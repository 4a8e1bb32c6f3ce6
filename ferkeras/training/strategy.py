"""Pick a `tf.distribute` strategy, derive per-replica settings from the global batch, and
keep the workers of a multi-worker run in agreement.

- `choose_strategy("auto")`: MultiWorkerMirroredStrategy when `TF_CONFIG` names a cluster of
  two or more tasks, MirroredStrategy when several GPUs are visible, else the default
  strategy. MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs in the
  process, and only once per process: it is created first thing and cached.
- `is_chief`: the one worker that writes run outputs.
- `broadcast_from_chief`: the chief's host-side arrays on every worker (a sum all-reduce to
  which only the chief contributes non-zeros; adding zeros is exact).
- `sync_trainer_from_chief`: every variable of a trainer (weights, EMA, optimizer, split
  tables, RNG states) set to the chief's values; used after a resume, when only the chief
  read the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
DETERMINISM_ENV = "FERKERAS_DETERMINISTIC"

_MULTIWORKER = None  # the process's MultiWorkerMirroredStrategy, created at most once
_MIRRORED: dict = {}  # device names -> the process's MirroredStrategy over them


def choose_strategy(name: str = "auto"):
    """auto: MultiWorkerMirrored when TF_CONFIG names a cluster, Mirrored with several GPUs,
    else the default strategy. An explicit name overrides the choice.

    With the environment variable FERKERAS_DETERMINISTIC=1, TensorFlow's op determinism is
    switched on first (slower; used by the resume and multi-worker tests).
    """
    global _MULTIWORKER
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}. Valid strategies: {list(STRATEGIES)}")
    if name == "auto":
        name = "multiworker" if _tf_config_cluster() else None
    import tensorflow as tf

    if os.environ.get(DETERMINISM_ENV, "") not in ("", "0"):
        tf.config.experimental.enable_op_determinism()
    if name == "multiworker":
        # Before anything touches the TF context (device listing included): collective ops
        # are configured at context creation, and TF raises if the context exists.
        if _MULTIWORKER is None:
            _MULTIWORKER = tf.distribute.MultiWorkerMirroredStrategy()
        return _MULTIWORKER
    if name is None:
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = tuple(d.name for d in gpus) or tuple(
            d.name for d in tf.config.list_logical_devices("CPU"))
        # One per device set and process: two MirroredStrategy objects over the same devices
        # number their collective ops alike, and TF then mixes them up ("Shape mismatch in
        # the collective instance") when they train differently shaped models.
        if devices not in _MIRRORED:
            _MIRRORED[devices] = tf.distribute.MirroredStrategy(devices=list(devices))
        return _MIRRORED[devices]
    return tf.distribute.get_strategy()


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU computes bfloat16 natively (AVX-512 BF16 or AMX), from
    /proc/cpuinfo (or the text given); False where that file does not exist."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str) -> str:
    """'auto' -> 'mixed_bfloat16' where the hardware computes bfloat16 natively (every
    visible GPU of compute capability >= 8.0, or, without GPUs, a CPU with AVX-512 BF16 or
    AMX), else 'float32'. Other values are returned as given, after validation."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision. Valid: {list(PRECISIONS)}. "
                         f"Received: precision={precision!r}")
    if precision != "auto":
        return precision
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        caps = [tuple(tf.config.experimental.get_device_details(g).get("compute_capability")
                      or (0, 0)) for g in gpus]
        return "mixed_bfloat16" if min(caps) >= (8, 0) else "float32"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


@contextlib.contextmanager
def precision_policy(precision: str):
    """Build layers, trainer and optimizer under Keras dtype policy `precision`.

    'float32', 'mixed_bfloat16' (bfloat16 compute with float32 variables) or 'auto'
    (`resolve_precision`). Networks keep a float32 head (`ferkeras.models`), so logits,
    softmax outputs, losses, the EMA copy and the per-sample tables stay float32. The
    previous global policy is restored on exit: layers keep the policy they were built
    with, and nothing built later is affected. Yields the resolved policy name.
    """
    resolved = resolve_precision(precision)
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(resolved)
    try:
        yield resolved
    finally:
        keras.config.set_dtype_policy(previous)


def _tf_config_cluster() -> bool:
    """True when TF_CONFIG describes a cluster of two or more tasks."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return False
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}") from None
    cluster = cfg.get("cluster", {}) if isinstance(cfg, dict) else {}
    if not isinstance(cluster, dict):
        raise ValueError(f"TF_CONFIG 'cluster' must be a mapping. Received: {cluster!r}")
    tasks = sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
    return tasks > 1


def is_multiworker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """True on the worker that writes run outputs (always true on one machine)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs
    )


def task_name(strategy) -> str:
    """'worker1', 'chief0', ... for a multi-worker task; 'local' otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return "local"
    return f"{resolver.task_type}{resolver.task_id or 0}"


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
        "strategy": ("MultiWorkerMirroredStrategy" if is_multiworker(strategy)
                     else type(strategy).__name__),
        "replicas": replicas,
        "workers": _num_workers(strategy),
        "global_batch": global_batch,
        "per_replica_batch": global_batch // replicas,
        "learning_rate": learning_rate,
        "rule": "global batch fixed by the recipe; per-replica batch = global / replicas; "
        "learning rate unchanged (it is defined for the global batch); losses averaged "
        "over the global batch with tf.nn.compute_average_loss",
    }


def _num_workers(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return sum(len(jobs.get(job, [])) for job in ("chief", "worker")) or 1


# ----------------------------------------------------------------------------- agreement
def broadcast_from_chief(strategy, arrays):
    """The chief's value of each array in `arrays`, on every worker.

    arrays: list of numpy arrays, the same shapes and dtypes on every worker (bool, int or
    float; ints up to 2**53 travel exactly as float64). Outside a multi-worker run the
    arrays are returned unchanged. Every worker must call this at the same point.
    """
    import numpy as np

    arrays = [np.asarray(a) for a in arrays]
    if not is_multiworker(strategy) or not arrays:
        return arrays
    import tensorflow as tf

    flat = np.concatenate([a.astype(np.float64).ravel() for a in arrays])
    value = tf.constant(flat if is_chief(strategy) else np.zeros_like(flat))

    @tf.function
    def _sum():
        def _replica():
            ctx = tf.distribute.get_replica_context()
            keep = tf.cast(tf.equal(ctx.replica_id_in_sync_group, 0), tf.float64)
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value * keep)

        return strategy.run(_replica)

    total = strategy.experimental_local_results(_sum())[0].numpy()
    out, start = [], 0
    for a in arrays:
        part = total[start:start + a.size].reshape(a.shape)
        out.append(part.astype(a.dtype) if a.dtype != bool else part > 0.5)
        start += a.size
    return out


def trainer_variables(trainer) -> list:
    """Every variable of a trainer and its optimizer, once each, in a stable order."""
    seen, out = set(), []
    optimizer = getattr(trainer, "optimizer", None)
    teacher_optimizer = getattr(trainer, "teacher_optimizer", None)  # Meta Pseudo Labels
    for v in (list(trainer.variables) + list(getattr(optimizer, "variables", [])) +
              list(getattr(teacher_optimizer, "variables", []))):
        key = id(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def sync_trainer_from_chief(strategy, trainer, epoch: int) -> int:
    """Set every trainer variable to the chief's value; returns the chief's `epoch`."""
    if not is_multiworker(strategy):
        return int(epoch)
    import numpy as np

    variables = trainer_variables(trainer)
    values = broadcast_from_chief(
        strategy, [np.asarray(int(epoch))] + [np.asarray(v.numpy()) for v in variables])
    for v, value in zip(variables, values[1:], strict=True):
        v.assign(value)
    return int(values[0])


def any_worker(strategy, flag: bool) -> bool:
    """True if `flag` is true on any worker (every worker must call this at the same point).

    Lets a failure on one worker stop them all: without it, a worker whose peer stopped
    early would wait forever in the next collective. Outside multi-worker runs: `flag`.
    """
    if not is_multiworker(strategy):
        return bool(flag)
    import tensorflow as tf

    value = tf.constant([1.0 if flag else 0.0])

    @tf.function
    def _count():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, value))

    return bool(strategy.experimental_local_results(_count())[0].numpy()[0] > 0)


def patch_keras_for_distribution(trainer, strategy) -> None:
    """Work around Keras 3 `fit` under tf.distribute strategies. A no-op for the default one.

    1. (Mirrored and MultiWorkerMirrored) Before training, `fit` pulls one batch from a fresh
       iterator of the training data to build the model symbolically, then starts a second
       iterator. A `tf.data` pipeline that reshuffles or re-draws its augmentation seeds on
       each iteration then gives the first epoch of every `fit` call its *second*
       iteration's order and augmentations: a distributed run no longer sees the batches a
       single-device run sees, and a resumed run not those of the uninterrupted one. Here
       the build uses the dataset's element spec instead, and pulls nothing.
    2. (MultiWorkerMirrored) That pull also fails outright: the batch is reduced with
       `strategy.reduce("MEAN", ...)`, which MultiWorkerMirroredStrategy cannot do eagerly
       ("Attempt to convert a value (PerReplica...)"; keras-team/keras#20585).
    3. (MultiWorkerMirrored) The step's logs are reduced with `strategy.reduce("MEAN", v,
       axis=0)`, which fails on scalar metric results ("Invalid reduction dimension 0 for
       input with 0 dimensions"; tensorflow/tensorflow#72388). Reduced with `axis=None` they
       are the mean over replicas, as Keras computes for MirroredStrategy.
    """
    import tensorflow as tf

    if not isinstance(strategy, (tf.distribute.MirroredStrategy,
                                 tf.distribute.MultiWorkerMirroredStrategy)):
        return

    def _symbolic_spec(spec):
        return tf.TensorSpec([None, *spec.shape[1:]], spec.dtype)

    def _maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            data_batch = tf.nest.map_structure(
                _symbolic_spec, iterator.data_adapter.get_tf_dataset().element_spec)
        with strategy.scope():
            trainer._symbolic_build(data_batch=data_batch)

    object.__setattr__(trainer, "_maybe_symbolic_build", _maybe_symbolic_build)
    if is_multiworker(strategy):
        _patch_reduce_per_replica()


def _patch_reduce_per_replica() -> None:
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    original = keras_tf_trainer.reduce_per_replica
    if getattr(original, "_ferkeras_patched", False):
        return
    import tensorflow as tf

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and is_multiworker(strategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None),
                                         values)
        return original(values, strategy, reduction)

    reduce_per_replica._ferkeras_patched = True
    keras_tf_trainer.reduce_per_replica = reduce_per_replica
