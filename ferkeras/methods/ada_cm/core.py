"""Ada-CM: adaptive confidence margins and the contrastive term for low-confidence samples.

Li et al., "Towards Semi-Supervised Deep Facial Expression Recognition with An Adaptive
Confidence Margin", CVPR 2022. Plain `keras.ops` functions; `AdaCMTrainer`
(`ferkeras.methods.ada_cm.trainer`) owns the state (`tf.Variable`s) and wires them in:

    sums, counts = margin_statistics(conf_l, labels_l, preds_l, num_classes=K)   # per step
    margins = margins_from_statistics(sums, counts, epoch=t, floor=0.8)          # per epoch
    pseudo, conf = argmax / max of (softmax(weak_a) + softmax(weak_b)) / 2       # unlabelled
    subset_1 = conf >= margins[pseudo]     # trained on `pseudo` through the strong view
    subset_2 = not subset_1                # trained through `contrastive_loss(f_a, f_b)`

The margin of class c is the mean confidence of the labelled samples of class c that the
model predicts correctly, scaled by the schedule `margin_schedule(t) = 0.97 / (1 + e^-t)`
(t = training epoch, 1-based) and floored, as in the authors' code (hangyu94/Ada-CM).
"""

from __future__ import annotations

import math

from keras import ops

PAPER_SCALE = 0.97  # the schedule's ceiling in the authors' code
PAPER_FLOOR = 0.8  # the initial margin and its floor in the authors' code


def margin_schedule(epoch, *, scale: float = PAPER_SCALE) -> float:
    """The margin's ramp over training: scale / (1 + exp(-epoch)).

    Args:
        epoch: the 1-based training epoch t (>= 0).
        scale: the ceiling the ramp approaches (0.97 in the authors' code).

    Returns:
        float in [scale / 2, scale].
    """
    if not epoch >= 0:
        raise ValueError(f"`epoch` must be >= 0. Received: epoch={epoch!r}")
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"`scale` must be in (0, 1]. Received: scale={scale!r}")
    return float(scale) / (1.0 + math.exp(-float(epoch)))


def margin_statistics(confidences, labels, predictions, *, num_classes: int, mask=None):
    """Per-class sum and count of the confidences of CORRECT predictions.

    Args:
        confidences: (B,) float, max softmax probability of each labelled sample.
        labels: (B,) int, the given labels.
        predictions: (B,) int, the predicted classes (argmax).
        num_classes: K.
        mask: optional (B,) 0/1; only rows where it is 1 count (the labelled rows of a
            batch that also holds unlabelled ones).

    Returns:
        sums (K,) float32 and counts (K,) float32; incorrect predictions add nothing.
    """
    confidences = ops.cast(ops.convert_to_tensor(confidences), "float32")
    labels = ops.cast(ops.convert_to_tensor(labels), "int32")
    predictions = ops.cast(ops.convert_to_tensor(predictions), "int32")
    weight = ops.cast(ops.equal(labels, predictions), "float32")
    if mask is not None:
        weight = weight * ops.cast(ops.convert_to_tensor(mask), "float32")
    onehot = ops.one_hot(labels, num_classes, dtype="float32") * weight[:, None]
    return (ops.sum(onehot * confidences[:, None], axis=0), ops.sum(onehot, axis=0))


def margins_from_statistics(sums, counts, *, epoch=None, scale: float = PAPER_SCALE,
                            floor: float = 0.0):
    """Margins T_c = max(floor, schedule(epoch) * sums_c / counts_c); `floor` where count 0.

    Args:
        sums, counts: (K,) float, from `margin_statistics` (summed over an epoch).
        epoch: 1-based epoch for `margin_schedule`; None applies no schedule (plain means).
        scale: the schedule's ceiling.
        floor: the lowest margin, also used for classes with no correct prediction.

    Returns:
        (K,) float32.
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"`floor` must be in [0, 1]. Received: floor={floor!r}")
    sums = ops.cast(ops.convert_to_tensor(sums), "float32")
    counts = ops.cast(ops.convert_to_tensor(counts), "float32")
    means = sums / ops.maximum(counts, 1.0)
    if epoch is not None:
        means = means * margin_schedule(epoch, scale=scale)
    return ops.where(counts > 0, ops.maximum(means, floor), floor)


def adaptive_margins(confidences, labels, predictions, *, num_classes: int, mask=None,
                     epoch=None, scale: float = PAPER_SCALE, floor: float = 0.0):
    """Ada-CM margins from labelled predictions in one call.

    Args:
        confidences: (B,) float, max softmax probability of each labelled sample.
        labels: (B,) int, given labels; predictions: (B,) int, predicted classes.
        num_classes: K.
        mask: optional (B,) 0/1 of the rows to use.
        epoch, scale, floor: see `margins_from_statistics`; with the defaults (no
            schedule, floor 0) a class's margin is exactly the mean confidence of its
            correctly predicted samples, and 0 for a class with none.

    Returns:
        (K,) float32 margins.
    """
    sums, counts = margin_statistics(confidences, labels, predictions,
                                     num_classes=num_classes, mask=mask)
    return margins_from_statistics(sums, counts, epoch=epoch, scale=scale, floor=floor)


def margin_mask(probs, *, margins):
    """Subset I of Ada-CM: pseudo-label = argmax, kept where max prob >= margins[argmax].

    Args:
        probs: (B, K) class probabilities (Ada-CM: the mean over two weak views).
        margins: (K,) float.

    Returns:
        pseudo_labels (B,) int32, confidences (B,) float32 and mask (B,) float32 in {0, 1}
        (1 = subset I, 0 = subset II).
    """
    probs = ops.cast(ops.convert_to_tensor(probs), "float32")
    pseudo = ops.cast(ops.argmax(probs, axis=-1), "int32")
    conf = ops.max(probs, axis=-1, initial=0.0)  # `initial`: an empty batch is fine
    cut = ops.take(ops.cast(ops.convert_to_tensor(margins), "float32"), pseudo, axis=0)
    return pseudo, conf, ops.cast(conf >= cut, "float32")


def contrastive_loss(features_a, features_b, *, temperature: float = 0.07, mask=None):
    """NT-Xent (SimCLR; Ada-CM's feature-level contrastive term) on paired views.

    Row i of `features_a` and row i of `features_b` are two views of one sample (the
    positive pair); the other 2M - 2 views of the M rows in `mask` are the negatives.
    Features are L2-normalised first. Each row's loss is the mean of its two anchors'
    -log softmax of the positive, which is the authors' `SupConLoss` (no labels,
    temperature = base temperature) averaged over the rows in `mask`.

    Args:
        features_a, features_b: (B, D) float, the two views' features.
        temperature: tau > 0 (0.07 in the authors' code).
        mask: optional (B,) 0/1; rows with 0 are left out entirely (neither anchors nor
            negatives) and get loss 0.

    Returns:
        (B,) float32 per-row losses (0 outside `mask`).
    """
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature!r}")
    a = ops.cast(ops.convert_to_tensor(features_a), "float32")
    b = ops.cast(ops.convert_to_tensor(features_b), "float32")
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise ValueError(f"features must have shape (B, D). Received shapes: {a.shape}, "
                         f"{b.shape}")
    n = ops.shape(a)[0]
    keep = (ops.ones((n,), "float32") if mask is None
            else ops.cast(ops.convert_to_tensor(mask), "float32"))
    z = ops.concatenate([a, b], axis=0)
    # the floor sits inside the sqrt: an all-zero feature row (ReLU) gets a zero gradient, not NaN
    z = z / ops.sqrt(ops.maximum(ops.sum(z * z, axis=-1, keepdims=True), 1e-24))
    logits = ops.matmul(z, ops.transpose(z)) / float(temperature)  # (2B, 2B)
    keep2 = ops.concatenate([keep, keep], axis=0)
    eye = ops.eye(2 * n, dtype="float32")
    allowed = (1.0 - eye) * keep2[None, :]  # no self-pairs, no rows outside the mask
    logits = ops.where(allowed > 0, logits, -1e9)
    log_prob = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
    partner = ops.concatenate([ops.arange(n) + n, ops.arange(n)], axis=0)
    positive = ops.sum(log_prob * ops.one_hot(partner, 2 * n, dtype="float32"), axis=1)
    per_anchor = -positive
    per_row = 0.5 * (per_anchor[:n] + per_anchor[n:])
    return ops.where(keep > 0, per_row, 0.0)
