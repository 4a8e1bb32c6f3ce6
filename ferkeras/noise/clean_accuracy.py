"""Checkpoint and method selection without trusted labels (Keras-free).

Accuracy on a noisy validation set pays a model for agreeing with the noise: on FER2013 a
model that predicts "fear" where the annotator wrote fear and the crowd sees neutral is paid
for it. When the noise is class-conditional (T[i, j] = P(noisy = j | clean = i)) and drawn
independently of the prediction given the clean class, the joint of (prediction, noisy
label) is the joint of (prediction, clean label) times T:

    C[c, j] = P(pred = c, noisy = j) = sum_i J[c, i] T[i, j],   i.e.  C = J T,

so J = C T^-1 is an unbiased estimate of the clean joint, and its trace an unbiased estimate
of clean accuracy (the unbiased-estimator argument of Natarajan et al., NeurIPS 2013,
applied to a confusion matrix). `debiased_scores` returns that accuracy and the balanced
accuracy of J; `rank_correlation` measures a signal against the truth it should rank by.

The transition matrix must not come from the checkpoints being ranked (they would each bend
it toward themselves): estimate it once, e.g. with `transition.estimate_transition_anchors`
on a reference model's out-of-sample probabilities, and score every checkpoint under it.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from ferkeras.noise.transition import _check_transition


def noisy_joint(pred_labels, noisy_labels, *, num_classes: int) -> np.ndarray:
    """C (K, K): the empirical joint of (prediction c, noisy label j); sums to 1.
    pred_labels, noisy_labels: (N,) ints in [0, K); N >= 1."""
    pred, noisy = np.asarray(pred_labels), np.asarray(noisy_labels)
    if pred.shape != noisy.shape or pred.ndim != 1 or not len(pred):
        raise ValueError(f"pred_labels and noisy_labels must be equal-length (N,) arrays. "
                         f"Received: shapes {pred.shape} and {noisy.shape}")
    for name, a in (("pred_labels", pred), ("noisy_labels", noisy)):
        if a.min() < 0 or a.max() >= num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes}). Received: "
                             f"[{a.min()}, {a.max()}]")
    C = np.zeros((num_classes, num_classes))
    np.add.at(C, (pred, noisy), 1.0)
    return C / len(pred)


def debiased_joint(pred_labels, noisy_labels, T) -> np.ndarray:
    """J (K, K) = C T^-1: the estimated joint of (prediction c, CLEAN label i). Unbiased under
    class-conditional noise; entries can be slightly negative on finite samples (kept, so the
    estimate stays unbiased). T: (K, K), rows sum to 1, invertible."""
    T = _check_transition(T)
    C = noisy_joint(pred_labels, noisy_labels, num_classes=T.shape[0])
    cond = np.linalg.cond(T)
    if not np.isfinite(cond) or cond > 1e6:
        raise ValueError(f"T is (nearly) singular (condition number {cond:.3g}): the noise "
                         "cannot be inverted. Estimate T with fewer confusions, e.g. a higher "
                         "anchor quantile.")
    return np.linalg.solve(T.T, C.T).T  # J T = C


def debiased_scores(pred_labels, noisy_labels, T) -> dict:
    """{"accuracy", "balanced_accuracy", "noisy_accuracy"} of predictions scored against noisy
    labels under the transition matrix T (see the module docstring). The balanced accuracy is
    the mean over classes of J[i, i] / P(clean = i), with the clean prior read off J (classes
    whose estimated prior is not positive are left out)."""
    J = debiased_joint(pred_labels, noisy_labels, T)
    prior = J.sum(0)
    present = prior > 1e-9
    return {"accuracy": float(np.trace(J)),
            "balanced_accuracy": float(np.mean(np.diag(J)[present] / prior[present])),
            "noisy_accuracy": float(np.mean(np.asarray(pred_labels) ==
                                            np.asarray(noisy_labels)))}


def rank_correlation(signal, truth) -> float:
    """Spearman's rho of two (N,) score arrays (average ranks for ties); NaN for N < 2 or a
    constant array."""
    a, b = np.asarray(signal, np.float64), np.asarray(truth, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"signal and truth must be equal-length (N,) arrays. Received: "
                         f"{a.shape} and {b.shape}")
    if len(a) < 2:
        return float("nan")
    ra = scipy.stats.rankdata(a, method="average")
    rb = scipy.stats.rankdata(b, method="average")
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
