"""Noise transition matrices, clean priors and prior-aware decision rules (Keras-free).

Conventions (as in Patrini et al. 2017 and Hendrycks et al. 2018):
  T (K, K): T[i, j] = P(noisy label = j | clean label = i); rows sum to 1.
  pred_probs (N, K): a model's softmax. Trained on noisy labels it estimates
    P(noisy | x) = P(clean | x) @ T.
  prior (K,): class distribution, sums to 1.

Trust-free:  `estimate_transition_anchors` (anchor points, Patrini et al., CVPR 2017) from the
  noisy model's probabilities; `clean_prior_from_transition` inverts the noisy label prior.
Trusted:     `estimate_transition_trusted` (gold-loss correction's estimate, Hendrycks et al.,
  NeurIPS 2018) from the noisy model's probabilities on rows with clean labels, or
  `estimate_transition_counts` when those rows also carry their noisy label.
Decisions:   `shift_prior` (Saerens et al. 2002: re-weight a posterior from the prior it was
  trained under to a target prior); `correct_posteriors` (backward correction of noisy-label
  probabilities into clean ones); `label_clean_probability` (the posterior that a row's given
  label is its clean label: a noise detector).
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12
# The floor under probabilities before their log, in fitting and in applying a recalibration
# alike (and in the exported `ferkeras.noise.trusted` layer), so a rule sees the features it was
# fitted on.
LOG_PROB_FLOOR = 1e-6


def log_probs(pred_probs) -> np.ndarray:
    """log(max(p, LOG_PROB_FLOOR)): the recalibration's input features, (N, K)."""
    return np.log(np.maximum(np.asarray(pred_probs, dtype=np.float64), LOG_PROB_FLOOR))


def _check_probs(pred_probs, name="pred_probs") -> np.ndarray:
    p = np.asarray(pred_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"{name} must be (N, K) with K >= 2. Received: shape={p.shape}")
    if (p < -1e-6).any() or not np.allclose(p.sum(1), 1.0, atol=1e-3):
        raise ValueError(f"{name} rows must be probability vectors (non-negative, sum 1).")
    return p


def _check_transition(T, k: int | None = None) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.ndim != 2 or T.shape[0] != T.shape[1] or (k is not None and T.shape[0] != k):
        raise ValueError(f"T must be (K, K) with K={k}. Received: shape={T.shape}")
    if (T < -1e-9).any() or not np.allclose(T.sum(1), 1.0, atol=1e-6):
        raise ValueError("T rows must be probability vectors: T[i, j] = P(noisy=j | clean=i).")
    return T


def _check_prior(prior, k: int, name: str) -> np.ndarray:
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != (k,) or (prior < 0).any() or prior.sum() <= 0:
        raise ValueError(f"{name} must be (K,)={k} non-negative weights. Received: {prior}")
    return prior / prior.sum()


def estimate_transition_anchors(pred_probs, *, quantile: float = 0.97) -> np.ndarray:
    """Trust-free T from anchor points (Patrini et al. 2017, their robust 97th-percentile rule).

    For each class i the anchor is the sample at the `quantile` of P(noisy=i | x) among the
    rows predicted as i (all rows if none): it is taken as almost surely clean class i, so its
    probability vector estimates row i of T. Restricting to rows predicted as i keeps a rare
    class that many others leak into (FER2013's fear) from taking its anchor from them.
    pred_probs: (N, K) noisy-label probabilities, ideally out-of-sample. Returns T (K, K).
    """
    p = _check_probs(pred_probs)
    if not 0.5 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0.5, 1]. Received: quantile={quantile}")
    k = p.shape[1]
    T = np.zeros((k, k))
    for i in range(k):
        rows = np.flatnonzero(p.argmax(1) == i)
        if not len(rows):
            rows = np.arange(len(p))
        col = p[rows, i]
        target = np.quantile(col, quantile, method="lower")
        T[i] = p[rows[int(np.flatnonzero(col == target)[0])]]
    return T / T.sum(1, keepdims=True)


def estimate_transition_trusted(pred_probs, clean_labels, *, num_classes: int) -> np.ndarray:
    """GLC's estimate: T[i] = mean noisy-label probabilities over trusted rows of clean class i.

    pred_probs: (M, K) probabilities of a model trained on the noisy labels, on the trusted
    rows; clean_labels: (M,) their clean labels (-1 = unknown, ignored). A class with no
    trusted row gets the identity row. Returns T (K, K).
    """
    p = _check_probs(pred_probs)
    y = np.asarray(clean_labels)
    if len(y) != len(p):
        raise ValueError(f"clean_labels has {len(y)} rows, pred_probs {len(p)}.")
    T = np.eye(num_classes)
    for i in range(num_classes):
        rows = y == i
        if rows.any():
            T[i] = p[rows].mean(0)
    return T / T.sum(1, keepdims=True)


def estimate_transition_counts(noisy_labels, clean_labels, *, num_classes: int,
                               smoothing: float = 0.5) -> np.ndarray:
    """Empirical T from rows that carry both labels (add-`smoothing` counts per cell).

    noisy_labels, clean_labels: (M,) ints; rows where either is -1 are ignored.
    """
    noisy = np.asarray(noisy_labels)
    clean = np.asarray(clean_labels)
    if noisy.shape != clean.shape:
        raise ValueError(f"label arrays differ in shape: {noisy.shape} vs {clean.shape}")
    keep = (noisy >= 0) & (clean >= 0)
    counts = np.full((num_classes, num_classes), float(smoothing))
    np.add.at(counts, (clean[keep], noisy[keep]), 1.0)
    return counts / counts.sum(1, keepdims=True)


def clean_prior_from_transition(noisy_prior, T) -> np.ndarray:
    """The clean prior pi with pi @ T = noisy_prior (non-negative least squares, renormalised).

    noisy_prior: (K,) distribution of the given labels; T: (K, K). Returns (K,).
    """
    from scipy.optimize import nnls

    T = _check_transition(T)
    rho = _check_prior(noisy_prior, T.shape[0], "noisy_prior")
    # pi @ T = rho  <=>  T.T @ pi = rho; a row of ones pins sum(pi) = 1.
    a = np.vstack([T.T, 10.0 * np.ones((1, len(rho)))])
    b = np.concatenate([rho, [10.0]])
    pi, _ = nnls(a, b)
    pi = np.maximum(pi, _EPS)
    return pi / pi.sum()


def shift_prior(pred_probs, *, source_prior, target_prior, power: float = 1.0) -> np.ndarray:
    """Prior-aware decision rule: p'(y|x) proportional to p(y|x) * (target(y) / source(y))**power.

    A posterior learnt under `source_prior` becomes the Bayes posterior under `target_prior`
    (Saerens et al. 2002); with a uniform target and power tau this is post-hoc logit
    adjustment (Menon et al. 2021). Returns (N, K).
    """
    p = _check_probs(pred_probs)
    k = p.shape[1]
    src = _check_prior(source_prior, k, "source_prior")
    tgt = _check_prior(target_prior, k, "target_prior")
    w = (np.maximum(tgt, _EPS) / np.maximum(src, _EPS)) ** float(power)
    out = p * w
    return out / out.sum(1, keepdims=True)


def prior_shift_bias(*, source_prior, target_prior, power: float = 1.0) -> np.ndarray:
    """The same rule as a logit bias (K,): add it to the logits before the softmax."""
    k = len(np.asarray(source_prior))
    src = _check_prior(source_prior, k, "source_prior")
    tgt = _check_prior(target_prior, k, "target_prior")
    return (float(power) * (np.log(np.maximum(tgt, _EPS)) - np.log(np.maximum(src, _EPS))))


def correct_posteriors(pred_probs, T) -> np.ndarray:
    """Backward correction: clean probabilities p with p @ T ~= pred_probs, clipped to >= 0.

    pred_probs: (N, K) noisy-label probabilities; T: (K, K). Returns (N, K).
    """
    p = _check_probs(pred_probs)
    T = _check_transition(T, p.shape[1])
    clean = p @ np.linalg.pinv(T)
    clean = np.maximum(clean, 0.0) + _EPS
    return clean / clean.sum(1, keepdims=True)


def label_clean_probability(clean_probs, labels, T) -> np.ndarray:
    """P(clean label == given label | x, given label): a per-row noise detector.

    Bayes: p(j|x) T[j, j] / sum_i p(i|x) T[i, j] for given label j. clean_probs: (N, K) clean
    posteriors; labels: (N,) given labels; T: (K, K). Returns (N,) in [0, 1].
    """
    p = _check_probs(clean_probs, "clean_probs")
    T = _check_transition(T, p.shape[1])
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (len(p),) or (y < 0).any() or (y >= p.shape[1]).any():
        raise ValueError("labels must be (N,) class ids in [0, K).")
    num = p[np.arange(len(y)), y] * T[y, y]
    den = p @ T
    return num / np.maximum(den[np.arange(len(y)), y], _EPS)


def fit_recalibration(pred_probs, clean_labels, *, c: float = 1.0, seed: int = 0,
                      class_weight=None):
    """Trusted recalibration: multinomial logistic regression from log noisy-label
    probabilities to clean labels, fitted on trusted rows (a learnt, full-matrix
    generalisation of the prior shift). Returns (W (K, K), b (K,)); apply with
    `apply_recalibration`. Rows with label -1 are ignored. class_weight: None (every row
    counts once: fitted for accuracy) or 'balanced' (rows weighted by the inverse frequency
    of their class: fitted for balanced accuracy).
    """
    from sklearn.linear_model import LogisticRegression

    p = _check_probs(pred_probs)
    y = np.asarray(clean_labels)
    keep = y >= 0
    k = p.shape[1]
    present = np.unique(y[keep])
    if len(present) < 2:
        raise ValueError("fit_recalibration needs trusted rows of at least 2 classes.")
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed, class_weight=class_weight)
    model.fit(log_probs(p[keep]), y[keep])
    W = np.zeros((k, k))
    b = np.full(k, -30.0)  # classes without trusted rows are never predicted
    W[:, present] = model.coef_.T if len(present) > 2 else np.stack(
        [-model.coef_[0] / 2, model.coef_[0] / 2], 1)
    b[present] = model.intercept_ if len(present) > 2 else [-model.intercept_[0] / 2,
                                                             model.intercept_[0] / 2]
    return W, b


def apply_recalibration(pred_probs, W, b) -> np.ndarray:
    """Clean probabilities from `fit_recalibration`'s (W, b). Returns (N, K)."""
    p = _check_probs(pred_probs)
    z = log_probs(p) @ np.asarray(W) + np.asarray(b)
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)
