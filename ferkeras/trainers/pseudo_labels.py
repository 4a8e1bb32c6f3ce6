"""Pseudo-labels for the unlabelled (flagged noisy) set, written with `keras.ops`.

Pure functions on the weak-view probabilities `probs` (B, K), for use inside `train_step`;
the trainer owns the state (`tf.Variable`s) and passes it in and assigns what comes back:

    probs = ops.softmax(model(weak, training=False))                  # (B, K) float32
    model_prior = update_model_prior(model_prior, probs, mask=unlab)  # raw probs, before DA
    selected = update_selected_labels(selected, index, probs, threshold=0.95, mask=unlab)
    probs = align_distribution(probs, target_prior=prior, model_prior=model_prior)
    effect, unused = count_learning_effect(selected, num_classes=K)
    thresholds = class_adaptive_thresholds(effect, threshold=0.95, num_unused=unused)
    pseudo, mask = adaptive_threshold_mask(probs, thresholds=thresholds)
    loss_u = mask * cross_entropy(pseudo, model(strong, training=True))  # (B,)

Pseudo-labels come back as int32 (B,), masks as float32 (B,) of 0/1 to multiply losses by.
`CycleTrainer` calls exactly these functions in its `train_step`, with `mask` = the batch's
unlabelled samples.
"""

from __future__ import annotations

from keras import ops


def _probs(probs):
    probs = ops.cast(ops.convert_to_tensor(probs), "float32")
    if len(probs.shape) != 2:
        raise ValueError(f"`probs` must have shape (B, K). Received shape: {probs.shape}")
    return probs


def _check_unit(value, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1]. Received: {value!r}")
    return float(value)


def _vector(values, name: str, k):
    values = ops.cast(ops.convert_to_tensor(values), "float32")
    if len(values.shape) != 1 or (k is not None and values.shape[0] not in (None, k)):
        raise ValueError(f"`{name}` must have shape ({k},). Received shape: {values.shape}")
    return values


# ----------------------------------------------------------------------------- masks
def fixed_threshold_mask(probs, *, threshold: float):
    """FixMatch: pseudo-label = argmax, kept where max prob >= threshold.

    Args:
        probs: (B, K) weak-view class probabilities.
        threshold: confidence threshold in [0, 1] (`cycle.threshold`).

    Returns:
        pseudo_labels (B,) int32 and mask (B,) float32 in {0, 1}.
    """
    probs = _probs(probs)
    threshold = _check_unit(threshold, "threshold")
    pseudo = ops.cast(ops.argmax(probs, axis=-1), "int32")
    return pseudo, ops.cast(ops.max(probs, axis=-1) >= threshold, "float32")


def adaptive_threshold_mask(probs, *, thresholds):
    """Per-class thresholds: keep a sample where max prob >= thresholds[argmax].

    Args:
        probs: (B, K) weak-view class probabilities.
        thresholds: (K,) float, e.g. from `class_adaptive_thresholds`.

    Returns:
        pseudo_labels (B,) int32 and mask (B,) float32 in {0, 1}.
    """
    probs = _probs(probs)
    thresholds = _vector(thresholds, "thresholds", probs.shape[-1])
    pseudo = ops.cast(ops.argmax(probs, axis=-1), "int32")
    cut = ops.take(thresholds, pseudo, axis=0)
    return pseudo, ops.cast(ops.max(probs, axis=-1) >= cut, "float32")


def class_adaptive_thresholds(
    learning_effect, *, threshold: float, num_unused=0, warmup: bool = True
):
    """FlexMatch curriculum thresholds T_c = threshold * M(beta_c), M(x) = x / (2 - x).

    beta_c = sigma_c / max(max_j sigma_j, N_unused) with warm-up, else sigma_c / max_j
    sigma_j, where sigma_c counts unlabelled samples whose latest confident prediction is c
    (`count_learning_effect`). The convex M keeps thresholds low for classes the model has
    not learned yet (Ada-CM and FlexMatch both lower them for hard, often tail, classes) and
    reaches `threshold` for the best-learned class. With nothing learned yet (all sigma = 0)
    every threshold is 0, as in FlexMatch: early pseudo-labels all pass.

    Args:
        learning_effect: (K,) float or int, sigma_c.
        threshold: the FixMatch threshold tau in [0, 1] reached by the best-learned class.
        num_unused: scalar, unlabelled samples with no confident prediction yet.
        warmup: FlexMatch's threshold warm-up (normalise by N_unused while it dominates).

    Returns:
        (K,) float32 thresholds in [0, threshold].
    """
    threshold = _check_unit(threshold, "threshold")
    sigma = _vector(learning_effect, "learning_effect", None)
    denom = ops.max(sigma)
    if warmup:
        denom = ops.maximum(denom, ops.cast(num_unused, "float32"))
    beta = sigma / ops.maximum(denom, 1e-12)
    return threshold * beta / (2.0 - beta)


# ----------------------------------------------------------------------------- learning effect
def update_selected_labels(selected_labels, indices, probs, *, threshold: float, mask=None):
    """Record each sample's latest confident prediction (FlexMatch's `selected_label`).

    Args:
        selected_labels: (N,) int32, one entry per unlabelled-pool sample, -1 = none yet.
        indices: (B,) int, the batch's positions in `selected_labels` (distinct).
        probs: (B, K) weak-view class probabilities.
        threshold: a prediction is confident when its max prob >= threshold (FlexMatch).
        mask: optional (B,) bool/float; only rows where it is true (> 0.5) are recorded
            (the unlabelled samples when the batch also holds labelled ones).

    Returns:
        (N,) int32: the batch entries set to argmax where confident, others unchanged.
    """
    probs = _probs(probs)
    threshold = _check_unit(threshold, "threshold")
    selected_labels = ops.cast(ops.convert_to_tensor(selected_labels), "int32")
    indices = ops.cast(ops.convert_to_tensor(indices), "int32")
    old = ops.take(selected_labels, indices, axis=0)
    pred = ops.cast(ops.argmax(probs, axis=-1), "int32")
    confident = ops.max(probs, axis=-1) >= threshold
    if mask is not None:
        confident = ops.logical_and(confident, ops.cast(mask, "float32") > 0.5)
    new = ops.where(confident, pred, old)
    return ops.scatter_update(selected_labels, ops.expand_dims(indices, -1), new)


def count_learning_effect(selected_labels, *, num_classes: int, pool_mask=None):
    """sigma_c and N_unused from the selected labels.

    Args:
        selected_labels: (N,) int, -1 = no confident prediction yet.
        num_classes: K.
        pool_mask: optional (N,) bool/float; only entries where it is true count (use it
            when `selected_labels` spans the whole training set, not just the unlabelled
            pool).

    Returns:
        learning_effect (K,) float32 and num_unused () float32.
    """
    selected_labels = ops.cast(ops.convert_to_tensor(selected_labels), "int32")
    bins = ops.where(selected_labels < 0, num_classes, selected_labels)
    weights = None if pool_mask is None else ops.cast(pool_mask, "float32")
    counts = ops.cast(ops.bincount(bins, weights=weights, minlength=num_classes + 1), "float32")
    return counts[:num_classes], counts[num_classes]


# ----------------------------------------------------------------------------- alignment
def align_distribution(probs, *, target_prior, model_prior, temperature: float = 1.0):
    """Distribution alignment: probs * target / model_prior, rows renormalised to 1.

    ReMixMatch aligns to the labelled class prior; here the target is the estimated clean
    prior (`selection.estimate_clean_prior`). `temperature` t follows CReST+: the target
    becomes target^t / sum(target^t), so t=1 keeps it, t<1 flattens it toward uniform
    (t=0 is uniform).

    Args:
        probs: (B, K) weak-view class probabilities.
        target_prior: (K,) float, the class distribution pseudo-labels should follow.
        model_prior: (K,) float, running mean of the model's predictions
            (`update_model_prior`); floored at 1e-6 to avoid division by zero.
        temperature: t >= 0.

    Returns:
        (B, K) float32, rows sum to 1.
    """
    if not temperature >= 0:
        raise ValueError(f"`temperature` must be >= 0. Received: {temperature!r}")
    probs = _probs(probs)
    k = probs.shape[-1]
    target = ops.power(_vector(target_prior, "target_prior", k), float(temperature))
    target = target / ops.sum(target)
    model_prior = ops.maximum(_vector(model_prior, "model_prior", k), 1e-6)
    aligned = probs * target / model_prior
    return aligned / ops.maximum(ops.sum(aligned, axis=-1, keepdims=True), 1e-12)


def update_model_prior(model_prior, probs, *, momentum: float = 0.999, mask=None):
    """EMA of the batch-mean prediction: momentum * old + (1 - momentum) * mean(probs).

    Start from a uniform (K,) prior; feed the raw weak-view probabilities (before alignment).

    Args:
        model_prior: (K,) float.
        probs: (B, K) class probabilities.
        momentum: in [0, 1].
        mask: optional (B,) 0/1 weights; the mean then runs over the rows where it is 1
            (the unlabelled samples), and a batch with none leaves the prior unchanged.

    Returns:
        (K,) float32.
    """
    momentum = _check_unit(momentum, "momentum")
    probs = _probs(probs)
    model_prior = _vector(model_prior, "model_prior", probs.shape[-1])
    if mask is None:
        return momentum * model_prior + (1.0 - momentum) * ops.mean(probs, axis=0)
    mask = ops.cast(ops.convert_to_tensor(mask), "float32")
    count = ops.sum(mask)
    mean = ops.sum(probs * mask[:, None], axis=0) / ops.maximum(count, 1.0)
    momentum = ops.where(count > 0, momentum, 1.0)
    return momentum * model_prior + (1.0 - momentum) * mean
