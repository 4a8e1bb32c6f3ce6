"""PNP: per-sample noise types and what each one trains on (Sun et al., CVPR 2022).

Sun, Shen, Huang, Wang, Shu, Yao, Tang, "PNP: Robust Learning From Noisy Labels by
Probabilistic Noise Prediction", CVPR 2022. A noise-type head next to the classifier predicts,
for every sample, the probabilities of three types: clean, in-distribution noise (ID: a face of
another class) and out-of-distribution noise (OOD: no usable face). Each type trains on its own
target, weighted by its probability:

    clean -> cross-entropy of the weak view on the (smoothed) given label;
    ID    -> cross-entropy of the strong view on the relabelled target, the sharpened mean of
             the model's predictions and the given label (the model's prediction wins when it
             is confident);
    OOD   -> cross-entropy of the strong view on the flattened mean (close to uniform): the
             sample teaches no class; weight 0 drops it;

plus a consistency term between two weak views for clean and ID samples. The head is trained on
pseudo-targets from the classifier: p(clean) toward 1 - JS(p, given label) and p(OOD) toward
eta * JS(p, p') + (1 - eta) * H(p) / log K (p, p' the predictions of two views), with an MAE
loss, as in the authors' code.

Functions written with `keras.ops` (NumPy inputs work too), for use inside `train_step`
(`ferkeras.methods.pnp.trainer.PNPTrainer`) and in tests:

    smoothed = smoothed_labels(labels, num_classes=K, epsilon=0.6)
    clean_t, ood_t = noise_type_targets(probs_w, probs_w2, smoothed, eta=0.5)
    relabel, flat = type_targets(probs_w, probs_w2, smoothed, temperature=0.1)
    weights = type_weights(type_probs)            # (B, 3), stop-gradient of the head

Reductions (said where they apply): one shared backbone for both heads (the authors' code
does the same); the second weak view is a weak augmentation of the stream's weak view, drawn
in the step; the type probabilities are a plain
softmax of the head (the authors' code squashes the head's outputs with a sigmoid first, which
caps every type probability at e / (e + 2) = 0.58) and weigh the losses with stop-gradient
(the head learns from its pseudo-targets only).

Measured on tiny from-scratch CNNs (tests/test_pnp.py): the OOD pseudo-target is built from the
prediction's entropy, and the authors' OOD loss (a near-uniform target weighted by p(OOD), which
starts at 1/3 for every row) and view consistency (symmetric KL, no stop-gradient) both lower
the model's confidence; with few classes and a weak model this feeds back (higher entropy ->
higher OOD targets for every row) and the relabelled targets lose to the given labels. With
`ood_weight` 0 (OOD rows dropped) and `consistency_weight` 0 the head separates OOD rows and the
ID-noisy rows' targets point to their true class. The head rarely predicts the ID type there:
its share is what the clean and OOD targets leave, and they sum to more than 1 unless the model
is confident.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

TYPES = ("clean", "id", "ood")  # the noise-type head's outputs, in this order
_EPS = 1e-7


def _probs(probs, name="probs"):
    probs = ops.cast(ops.convert_to_tensor(probs), "float32")
    if len(probs.shape) != 2:
        raise ValueError(f"`{name}` must have shape (B, K). Received shape: {probs.shape}")
    return probs


def smoothed_labels(labels, *, num_classes: int, epsilon: float):
    """(B, K) float32: 1 - epsilon on the given label, epsilon / (K - 1) on every other class
    (the authors' smoothing of the given labels)."""
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"`epsilon` must be in [0, 1). Received: epsilon={epsilon!r}")
    onehot = ops.one_hot(ops.cast(ops.convert_to_tensor(labels), "int32"), num_classes)
    off = epsilon / (num_classes - 1)
    return onehot * (1.0 - epsilon - off) + off


def entropy(probs):
    """(B,) Shannon entropy in nats."""
    probs = _probs(probs)
    return -ops.sum(probs * ops.log(ops.clip(probs, _EPS, 1.0)), axis=-1)


def js_divergence(p, q):
    """(B,) Jensen-Shannon divergence in bits (in [0, 1]) between rows of (B, K) p and q."""
    p, q = _probs(p, "p"), _probs(q, "q")
    m = 0.5 * (p + q)

    def kl(a, b):
        return ops.sum(a * (ops.log(ops.clip(a, _EPS, 1.0)) - ops.log(ops.clip(b, _EPS, 1.0))),
                       axis=-1)

    return ops.clip((0.5 * kl(p, m) + 0.5 * kl(q, m)) / math.log(2.0), 0.0, 1.0)


def noise_type_targets(probs, probs_other, smoothed, *, eta: float = 0.5):
    """The noise-type head's pseudo-targets (the authors' auxiliary targets).

    Args:
        probs: (B, K) the classifier's probabilities on the (weak) view.
        probs_other: (B, K) its probabilities on a second view of the same samples.
        smoothed: (B, K) smoothed given labels (`smoothed_labels`).
        eta: weight of the view disagreement against the normalised entropy in the OOD target.

    Returns:
        (clean_target (B,), ood_target (B,)), both in [0, 1]: 1 - JS(probs, smoothed), and
        eta * JS(probs, probs_other) + (1 - eta) * H(probs) / log K.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"`eta` must be in [0, 1]. Received: eta={eta!r}")
    probs = _probs(probs)
    k = probs.shape[-1]
    clean = 1.0 - js_divergence(probs, smoothed)
    ood = eta * js_divergence(probs, probs_other) + (1.0 - eta) * entropy(probs) / math.log(k)
    return clean, ood


def noise_type_loss(type_probs, clean_target, ood_target):
    """(B,) MAE of the head's clean and OOD probabilities against their pseudo-targets (the
    ID probability is what is left, as in the authors' code)."""
    type_probs = _probs(type_probs, "type_probs")
    return (ops.abs(type_probs[:, 0] - ops.stop_gradient(clean_target)) +
            ops.abs(type_probs[:, 2] - ops.stop_gradient(ood_target)))


def type_targets(probs, probs_other, smoothed, *, temperature: float = 0.1):
    """Targets of the ID and OOD types (stop-gradient).

    Args:
        probs, probs_other: (B, K) the classifier's probabilities on two views.
        smoothed: (B, K) smoothed given labels.
        temperature: T in (0, 1]: the mean m = (probs + probs_other + smoothed) / 3 becomes
            softmax(m / T) (sharpened: the relabelled target) and softmax(m * T) (flattened).

    Returns:
        (relabel (B, K), flattened (B, K)).
    """
    if not 0.0 < temperature <= 1.0:
        raise ValueError(f"`temperature` must be in (0, 1]. Received: temperature={temperature!r}")
    mean = ops.stop_gradient((_probs(probs) + _probs(probs_other, "probs_other") + smoothed) / 3.0)
    return ops.softmax(mean / temperature, axis=-1), ops.softmax(mean * temperature, axis=-1)


def type_weights(type_probs):
    """(B, 3) the head's type probabilities as loss weights (stop-gradient)."""
    return ops.stop_gradient(_probs(type_probs, "type_probs"))


def soft_cross_entropy(targets, logits):
    """(B,) cross-entropy of (B, K) logits against (B, K) target distributions."""
    logits = ops.cast(logits, "float32")
    return -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)


def symmetric_kl(p, q):
    """(B,) KL(p || q) + KL(q || p) in bits (the authors' consistency term)."""
    p, q = _probs(p, "p"), _probs(q, "q")
    lp, lq = ops.log(ops.clip(p, _EPS, 1.0)), ops.log(ops.clip(q, _EPS, 1.0))
    return ops.sum((p - q) * (lp - lq), axis=-1) / math.log(2.0)


def per_example_loss(logits_w, logits_w2, logits_s, labels, type_probs, *, num_classes: int,
                     epsilon: float = 0.6, temperature: float = 0.1, eta: float = 0.5,
                     ood_weight: float = 1.0, aux_weight: float = 1.0,
                     consistency_weight: float = 1.0) -> dict:
    """PNP's per-example loss of one batch (the authors' soft weighting).

    Args:
        logits_w, logits_w2: (B, K) classifier logits of two weak views.
        logits_s: (B, K) classifier logits of the strong view.
        labels: (B,) int given labels.
        type_probs: (B, 3) the noise-type head's probabilities (clean, ID, OOD) on the first
            weak view, with gradient (the auxiliary loss trains the head through them).
        num_classes: K.
        epsilon: label smoothing of the given labels.
        temperature, eta: `type_targets`, `noise_type_targets`.
        ood_weight: beta, weight of the OOD type's flattened-target loss (0 drops OOD samples).
        aux_weight: gamma, weight of the head's auxiliary loss.
        consistency_weight: omega, weight of the weak views' consistency for clean and ID
            samples.

    Returns:
        dict of (B,) tensors: "loss" (the total), "classification", "aux", "consistency",
        and "relabel" (B, K), the ID samples' target.
    """
    probs_w = ops.softmax(ops.cast(logits_w, "float32"), axis=-1)
    probs_w2 = ops.softmax(ops.cast(logits_w2, "float32"), axis=-1)
    smoothed = smoothed_labels(labels, num_classes=num_classes, epsilon=epsilon)
    sw, sw2 = ops.stop_gradient(probs_w), ops.stop_gradient(probs_w2)
    relabel, flat = type_targets(sw, sw2, smoothed, temperature=temperature)
    clean_t, ood_t = noise_type_targets(sw, sw2, smoothed, eta=eta)
    w = type_weights(type_probs)
    clean_loss = 0.5 * (soft_cross_entropy(smoothed, logits_w) +
                        soft_cross_entropy(smoothed, logits_w2))
    classification = (w[:, 0] * clean_loss + w[:, 1] * soft_cross_entropy(relabel, logits_s) +
                      ood_weight * w[:, 2] * soft_cross_entropy(flat, logits_s))
    consistency = symmetric_kl(probs_w, probs_w2) * (w[:, 0] + w[:, 1])
    aux = noise_type_loss(type_probs, clean_t, ood_t)
    total = classification + aux_weight * aux + consistency_weight * consistency
    return {"loss": total, "classification": classification, "aux": aux,
            "consistency": consistency, "relabel": relabel}


def split_from_noise_types(type_probs, labels, *, num_classes: int):
    """The split a noise-type head makes (host side, NumPy).

    Args:
        type_probs: (N, 3) the head's probabilities (clean, ID, OOD).
        labels: (N,) int given labels in [0, K).
        num_classes: K.

    Returns:
        (labelled (N,) bool: the most probable type is clean, every present class keeping at
        least its most-clean sample; clean_prob (N,) float: p(clean)).
    """
    type_probs = np.asarray(type_probs, np.float64)
    labels = np.asarray(labels)
    if type_probs.ndim != 2 or type_probs.shape != (labels.size, 3):
        raise ValueError(f"`type_probs` must have shape ({labels.size}, 3). Received shape: "
                         f"{type_probs.shape}")
    labelled = type_probs.argmax(axis=1) == 0
    clean_prob = type_probs[:, 0]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if not labelled[idx].any():
            labelled[idx[np.argmax(clean_prob[idx])]] = True
    return labelled, clean_prob
