"""Supervised losses for long-tailed labels, written with `keras.ops`.

Every loss returns PER-EXAMPLE values of shape (B,) in float32, so a trainer can weight them
and reduce with `tf.nn.compute_average_loss(per_example, global_batch_size=...)`. They run
eagerly on NumPy arrays and inside a traced `train_step` alike.

Labels are int class ids of shape (B,) or soft targets of shape (B, K) (rows summing to 1,
e.g. FERPlus vote distributions or mixed targets); the two are told apart by rank. Logits
may be float16/bfloat16 (mixed precision): they are cast to float32 first.

`class_balanced_weights` and `log_prior_from_counts` are NumPy helpers computed once from
class counts; pass their results (or a `tf.Variable` holding them, if the prior is
re-estimated each cycle) as `weights` / `log_prior`.
"""

from __future__ import annotations

import numpy as np
from keras import ops


# ----------------------------------------------------------------------------- helpers
def _targets(labels, num_classes: int, label_smoothing: float):
    """(B,) int or (B, K) soft labels -> (B, K) float32 targets, smoothed toward uniform."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1). Received: {label_smoothing!r}")
    rank = len(labels.shape)
    if rank == 1:
        targets = ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")
    elif rank == 2:
        if labels.shape[-1] is not None and labels.shape[-1] != num_classes:
            raise ValueError(
                f"Soft `labels` must have {num_classes} columns. Received shape: {labels.shape}"
            )
        targets = ops.cast(labels, "float32")
    else:
        raise ValueError(f"`labels` must have shape (B,) or (B, K). Received: {labels.shape}")
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return targets


def _num_classes(logits, num_classes):
    k = logits.shape[-1]
    if num_classes is None:
        if k is None:
            raise ValueError("`num_classes` is required when the logits' last axis is unknown.")
        return int(k)
    if k is not None and k != num_classes:
        raise ValueError(
            f"`num_classes` must match the logits' last axis ({k}). Received: {num_classes!r}"
        )
    return int(num_classes)


def _soft_cross_entropy(targets, logits):
    return -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)


def _logits_and_targets(labels, logits, num_classes, label_smoothing):
    labels = ops.convert_to_tensor(labels)
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    k = _num_classes(logits, num_classes)
    return logits, _targets(labels, k, label_smoothing), k


def _check_vector(values, name: str, k: int):
    values = ops.cast(ops.convert_to_tensor(values), "float32")
    if tuple(values.shape) != (k,):
        raise ValueError(f"`{name}` must have shape ({k},). Received shape: {values.shape}")
    return values


def _as_counts(class_counts) -> np.ndarray:
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"`class_counts` must have shape (K,). Received shape: {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        bad = int(np.flatnonzero(~(counts >= 0) | ~np.isfinite(counts))[0])
        raise ValueError(
            f"`class_counts` must be finite and >= 0. Received: {counts[bad]} for class {bad}"
        )
    return counts


# ----------------------------------------------------------------------------- losses
def cross_entropy(labels, logits, *, label_smoothing: float = 0.0, num_classes=None):
    """Softmax cross-entropy per example.

    Args:
        labels: (B,) int class ids, or (B, K) float soft targets.
        logits: (B, K) float.
        label_smoothing: in [0, 1); targets become (1 - s) * y + s / K.
        num_classes: K; inferred from the logits when None, checked against them otherwise.

    Returns:
        (B,) float32.
    """
    logits, targets, _ = _logits_and_targets(labels, logits, num_classes, label_smoothing)
    return _soft_cross_entropy(targets, logits)


def logit_adjusted_cross_entropy(
    labels, logits, *, log_prior, tau: float = 1.0, label_smoothing: float = 0.0
):
    """Logit-adjusted loss (Menon et al. 2021): CE on `logits + tau * log_prior`.

    The adjustment is applied in training only; predict with the raw logits. This makes
    the training loss Fisher-consistent for the balanced error. tau=0 or a uniform log prior
    gives plain cross-entropy.

    Args:
        labels: (B,) int or (B, K) float soft targets.
        logits: (B, K) float.
        log_prior: (K,) float, log class prior (`log_prior_from_counts`).
        tau: adjustment strength, >= 0.
        label_smoothing: as in `cross_entropy`.

    Returns:
        (B,) float32.
    """
    if not tau >= 0:
        raise ValueError(f"`tau` must be >= 0. Received: {tau!r}")
    logits, targets, k = _logits_and_targets(labels, logits, None, label_smoothing)
    adjusted = logits + float(tau) * _check_vector(log_prior, "log_prior", k)
    return _soft_cross_entropy(targets, adjusted)


def balanced_softmax_cross_entropy(labels, logits, *, log_prior, label_smoothing: float = 0.0):
    """Balanced Softmax (Ren et al. 2020): CE on `logits + log_prior`.

    Identical to `logit_adjusted_cross_entropy` with tau=1: softmax(z + log pi) is
    pi_j exp(z_j) / sum_k pi_k exp(z_k), the Balanced Softmax.

    Args:
        labels: (B,) int or (B, K) float soft targets.
        logits: (B, K) float.
        log_prior: (K,) float log class prior.
        label_smoothing: as in `cross_entropy`.

    Returns:
        (B,) float32.
    """
    return logit_adjusted_cross_entropy(
        labels, logits, log_prior=log_prior, tau=1.0, label_smoothing=label_smoothing
    )


def class_balanced_cross_entropy(labels, logits, *, weights, label_smoothing: float = 0.0):
    """Cross-entropy scaled by a per-class weight (Cui et al. 2019).

    Each example is weighted by its label's class: w[y] for int labels, sum_k y_k w_k (the
    expected weight) for soft targets. Smoothing does not change the weight.

    Args:
        labels: (B,) int or (B, K) float soft targets.
        logits: (B, K) float.
        weights: (K,) float, e.g. `class_balanced_weights(counts, beta=0.999)`.
        label_smoothing: as in `cross_entropy`.

    Returns:
        (B,) float32.
    """
    logits, targets, k = _logits_and_targets(labels, logits, None, label_smoothing)
    weights = _check_vector(weights, "weights", k)
    per_example = ops.sum(_targets(ops.convert_to_tensor(labels), k, 0.0) * weights, axis=-1)
    return per_example * _soft_cross_entropy(targets, logits)


# ----------------------------------------------------------------------------- priors
def class_balanced_weights(class_counts, *, beta: float) -> np.ndarray:
    """Inverse effective-number weights (Cui et al. 2019), normalised to sum to K.

    E_c = (1 - beta^n_c) / (1 - beta); w_c = K * (1 / E_c) / sum_j (1 / E_j). beta=0 gives
    uniform weights, beta -> 1 gives inverse class frequency.

    Args:
        class_counts: (K,) training samples per class, all > 0.
        beta: in [0, 1]; the recipe default is 0.999 (`train.cb_beta`).

    Returns:
        (K,) float64, sums to K.
    """
    counts = _as_counts(class_counts)
    if counts.min() == 0:
        raise ValueError(
            "`class_counts` must be > 0 for class-balanced weights. Received: 0 for class "
            f"{int(np.argmin(counts))}"
        )
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"`beta` must be in [0, 1]. Received: {beta!r}")
    if beta == 0.0:
        effective = np.ones_like(counts)
    elif beta == 1.0:
        effective = counts
    else:  # -expm1(n log beta) = 1 - beta^n, accurate for beta close to 1
        effective = -np.expm1(counts * np.log(beta)) / (1.0 - beta)
    inv = 1.0 / effective
    return inv * counts.size / inv.sum()


def log_prior_from_counts(class_counts, *, smoothing: float = 1.0) -> np.ndarray:
    """Log class prior log((n_c + s) / sum_j (n_j + s)).

    Args:
        class_counts: (K,) samples per class (ints or fractional, e.g. from clean_prob).
        smoothing: Laplace pseudo-count s >= 0; with s=0 every count must be > 0.

    Returns:
        (K,) float64; exp of it sums to 1.
    """
    counts = _as_counts(class_counts)
    if not smoothing >= 0:
        raise ValueError(f"`smoothing` must be >= 0. Received: {smoothing!r}")
    counts = counts + smoothing
    if counts.min() <= 0:
        raise ValueError(
            "`class_counts` must be > 0 when smoothing is 0. Received: 0 for class "
            f"{int(np.argmin(counts))}"
        )
    return np.log(counts) - np.log(counts.sum())


# ----------------------------------------------------------------------------- Loss objects
# `keras.losses.Loss` subclasses over the functions above, for `model.compile(loss=...)` and
# for the ferkeras trainers. Predictions are LOGITS (no softmax in the model). Without
# `class_counts` the prior-based losses only work inside a ferkeras trainer, which sets the
# prior from the training labels (and, in the cycle, re-estimates it from the clean set).
def _loss_base():
    import keras

    return keras.losses.Loss


def _register(cls):
    import keras

    return keras.saving.register_keras_serializable(package="ferkeras")(cls)


def _sparse(y_true, logits):
    """Keras hands int labels over as float (B,) or (B, 1); soft targets stay (B, K)."""
    y_true = ops.convert_to_tensor(y_true)
    k = logits.shape[-1]
    if len(y_true.shape) == 2 and y_true.shape[-1] == 1 and k != 1:
        y_true = ops.squeeze(y_true, axis=-1)
    if len(y_true.shape) == 1:
        y_true = ops.cast(y_true, "int32")
    return y_true


def _counts_or_none(class_counts):
    if class_counts is None:
        return None
    return [float(c) for c in _as_counts(class_counts)]


class _FerLoss(_loss_base()):
    """Shared plumbing: `kind` names the trainer's per-example loss."""

    kind = "ce"

    def __init__(self, *, label_smoothing=0.0, class_counts=None, name=None,
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name or self.kind, reduction=reduction, dtype=dtype)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(
                f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.class_counts = _counts_or_none(class_counts)

    def _prior(self):
        if self.class_counts is None:
            raise ValueError(
                f"{type(self).__name__} needs class_counts=(K,) outside a ferkeras trainer "
                "(a trainer sets the prior from its training labels). Received: "
                "class_counts=None")
        return log_prior_from_counts(self.class_counts).astype("float32")

    def get_config(self):
        config = super().get_config()
        config.update(label_smoothing=self.label_smoothing, class_counts=self.class_counts)
        return config


@_register
class CrossEntropy(_FerLoss):
    """Softmax cross-entropy on logits; int labels (B,) or soft targets (B, K)."""

    kind = "ce"

    def __init__(self, *, label_smoothing=0.0, name=None, reduction="sum_over_batch_size",
                 dtype=None, class_counts=None):
        super().__init__(label_smoothing=label_smoothing, class_counts=class_counts, name=name,
                         reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return cross_entropy(_sparse(y_true, y_pred), y_pred,
                             label_smoothing=self.label_smoothing)


@_register
class LogitAdjusted(_FerLoss):
    """Logit-adjusted cross-entropy (Menon et al. 2021): CE on `logits + tau * log prior`.

    Args:
        tau: adjustment strength, >= 0 (1 is Balanced Softmax).
        class_counts: (K,) training samples per class; needed outside a ferkeras trainer.
        label_smoothing: in [0, 1).
    """

    kind = "logit_adjusted"

    def __init__(self, tau=1.0, *, class_counts=None, label_smoothing=0.0, name=None,
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(label_smoothing=label_smoothing, class_counts=class_counts, name=name,
                         reduction=reduction, dtype=dtype)
        if not float(tau) >= 0:
            raise ValueError(f"tau must be >= 0. Received: tau={tau!r}")
        self.tau = float(tau)

    def call(self, y_true, y_pred):
        return logit_adjusted_cross_entropy(_sparse(y_true, y_pred), y_pred,
                                            log_prior=self._prior(), tau=self.tau,
                                            label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "tau": self.tau}


@_register
class BalancedSoftmax(_FerLoss):
    """Balanced Softmax (Ren et al. 2020): CE on `logits + log prior`.

    Args:
        class_counts: (K,) training samples per class; needed outside a ferkeras trainer.
        label_smoothing: in [0, 1).
    """

    kind = "balanced_softmax"

    def call(self, y_true, y_pred):
        return balanced_softmax_cross_entropy(_sparse(y_true, y_pred), y_pred,
                                              log_prior=self._prior(),
                                              label_smoothing=self.label_smoothing)


@_register
class ClassBalanced(_FerLoss):
    """Class-balanced cross-entropy (Cui et al. 2019): CE weighted by inverse effective number.

    Args:
        beta: in [0, 1]; 0 is plain CE, 1 inverse class frequency.
        class_counts: (K,) training samples per class; needed outside a ferkeras trainer.
        label_smoothing: in [0, 1).
    """

    kind = "class_balanced"

    def __init__(self, beta=0.999, *, class_counts=None, label_smoothing=0.0, name=None,
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(label_smoothing=label_smoothing, class_counts=class_counts, name=name,
                         reduction=reduction, dtype=dtype)
        if not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"beta must be in [0, 1]. Received: beta={beta!r}")
        self.beta = float(beta)

    def call(self, y_true, y_pred):
        if self.class_counts is None:
            self._prior()  # raises the explanatory error
        weights = class_balanced_weights(self.class_counts, beta=self.beta).astype("float32")
        return class_balanced_cross_entropy(_sparse(y_true, y_pred), y_pred, weights=weights,
                                            label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


LOSSES = {cls.kind: cls for cls in (CrossEntropy, LogitAdjusted, BalancedSoftmax, ClassBalanced)}


def get_loss(identifier):
    """A Loss object from a name ('ce', 'logit_adjusted', ...), a config dict or a Loss."""
    if isinstance(identifier, _FerLoss):
        return identifier
    if isinstance(identifier, dict):
        import keras

        return keras.losses.deserialize(identifier)
    if identifier not in LOSSES:
        raise ValueError(f"Unknown loss. Valid: {sorted(LOSSES)} or a ferkeras.losses Loss. "
                         f"Received: loss={identifier!r}")
    return LOSSES[identifier]()
