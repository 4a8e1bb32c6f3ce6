"""The trusted split: which given labels are clean, judged with a small set of clean labels.

Plain array functions, Keras-free (the cycle's `NoiseSplit` wires them in through
`cycle.selector: trusted`):

- `cross_fit_clean_probs`: clean-label probabilities of the trusted rows themselves, each
  from a recalibration (`transition.fit_recalibration`) fitted on the OTHER folds, so the
  thresholds calibrated on them are not fitted in-sample.
- `label_posterior`: p(y | x, given) proportional to p_clean(y | x) * T[y, given], the
  corrected (soft) target of a row whose given label may be wrong.
- `calibrate_class_thresholds`: one threshold per given class on the trusted rows' clean
  probabilities (Youden's J: the threshold that best separates clean from noisy rows of
  that class), instead of one global GMM.
- `trusted_split`: all of it for one split of the training set.

Shapes: N training rows, M trusted rows, K classes. T is (K, K), row = clean label,
column = given label (`transition.estimate_transition_counts`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ferkeras.noise import transition as tr

__all__ = ["TrustedSplit", "calibrate_class_thresholds", "cross_fit_clean_probs",
           "label_posterior", "trusted_split"]


def _check_labels(labels, n: int, k: int, name: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be ({n},) int class ids. Received: shape {y.shape}, "
                         f"dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"{name} must lie in [0, {k}). Received: min {y.min()}, max {y.max()}")
    return y.astype(np.int64)


def label_posterior(clean_probs, given, transition) -> np.ndarray:
    """p(y | x, given) for every row: clean_probs (N, K) p_clean(y | x), given (N,) labels,
    transition (K, K) T[y, given] = p(given | clean y). Returns (N, K), rows sum to 1.

    Column `given[i]` of row i is the probability that row i's given label is clean
    (`transition.label_clean_probability`)."""
    p = np.asarray(clean_probs, np.float64)
    if p.ndim != 2:
        raise ValueError(f"clean_probs must be (N, K). Received: shape {p.shape}")
    n, k = p.shape
    T = np.asarray(transition, np.float64)
    if T.shape != (k, k) or (T < 0).any():
        raise ValueError(f"transition must be ({k}, {k}) and non-negative. Received: shape "
                         f"{T.shape}")
    y = _check_labels(given, n, k, "given")
    post = p * T[:, y].T  # (N, K): p(y|x) * T[y, given_i]
    total = post.sum(1, keepdims=True)
    flat = total[:, 0] <= 0  # no class can produce this given label: keep p(y|x)
    post[flat] = p[flat]
    total[flat] = p[flat].sum(1, keepdims=True)
    return post / np.maximum(total, 1e-300)


def cross_fit_clean_probs(probs, labels, *, folds: int = 5, seed: int = 0,
                          c: float = 1.0) -> np.ndarray:
    """Out-of-fold clean probabilities of the trusted rows. probs: (M, K) the model's
    (noisy-label) probabilities of the trusted rows; labels: (M,) their clean labels. Each
    fold is recalibrated (`transition.fit_recalibration`) on the other folds, stratified by
    label and seeded. Returns (M, K)."""
    from sklearn.model_selection import StratifiedKFold

    p = np.asarray(probs, np.float64)
    y = _check_labels(labels, len(p), p.shape[1], "labels")
    if folds < 2:
        raise ValueError(f"folds must be >= 2. Received: folds={folds}")
    counts = np.bincount(y, minlength=p.shape[1])
    # classes too small to stratify go to random folds; their rows still get a prediction
    strata = np.where(counts[y] >= folds, y, -1)
    out = np.zeros_like(p)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_rows, held in splitter.split(p, strata):
        W, b = tr.fit_recalibration(p[fit_rows], y[fit_rows], c=c, seed=seed)
        out[held] = tr.apply_recalibration(p[held], W, b)
    return out


def calibrate_class_thresholds(clean_prob, is_clean, given, *, num_classes: int,
                               min_rows: int = 20, min_each: int = 3,
                               default: float = 0.5) -> np.ndarray:
    """Per given class, the threshold on clean_prob that best separates the class's clean
    rows from its noisy ones on trusted rows (max TPR - FPR, positive = clean, kept when
    clean_prob >= threshold). clean_prob: (M,) in [0, 1]; is_clean: (M,) bool (trusted label
    == given label); given: (M,) given labels. A class with fewer than `min_rows` trusted
    rows, or fewer than `min_each` clean or noisy ones, gets `default`. Returns (K,)."""
    from sklearn.metrics import roc_curve

    s = np.asarray(clean_prob, np.float64)
    ok = np.asarray(is_clean)
    if ok.shape != s.shape or ok.dtype != bool:
        raise ValueError(f"is_clean must be bool of shape {s.shape}. Received: shape "
                         f"{ok.shape}, dtype {ok.dtype}")
    y = _check_labels(given, len(s), num_classes, "given")
    out = np.full(num_classes, float(default))
    for k in range(num_classes):
        rows = y == k
        n_clean, n_noisy = int(ok[rows].sum()), int((~ok[rows]).sum())
        if rows.sum() < min_rows or min(n_clean, n_noisy) < min_each:
            continue
        fpr, tpr, thr = roc_curve(ok[rows], s[rows])
        best = int(np.argmax(tpr - fpr))
        out[k] = float(np.clip(thr[best], 0.0, 1.0))
    return out


@dataclasses.dataclass
class TrustedSplit:
    """One trusted split.

    labelled: (N,) bool, clean_prob >= its given class's threshold.
    clean_prob: (N,) p(given label is clean | x, given).
    posterior: (N, K) p(y | x, given), the corrected soft targets.
    clean_probs: (N, K) p_clean(y | x), the recalibrated model.
    thresholds: (K,) per given class. transition: (K, K) T from the trusted rows' counts.
    trusted_auc: ROC-AUC of the out-of-fold clean_prob on the trusted rows (None when they
      are all clean or all noisy): a detection estimate that needs no truth on the training
      rows.
    """

    labelled: np.ndarray
    clean_prob: np.ndarray
    posterior: np.ndarray
    clean_probs: np.ndarray
    thresholds: np.ndarray
    transition: np.ndarray
    trusted_auc: float | None


def trusted_split(train_probs, given, trusted_probs, trusted_labels, trusted_given, *,
                  num_classes: int, folds: int = 5, seed: int = 0, smoothing: float = 1.0,
                  min_rows: int = 20) -> TrustedSplit:
    """Split the training set with the trusted rows.

    train_probs: (N, K) the current model's probabilities of the training rows; given: (N,)
    their given labels; trusted_probs: (M, K) the model's probabilities of the trusted rows;
    trusted_labels: (M,) their clean labels; trusted_given: (M,) their given labels.

    T = counts of (clean, given) on the trusted rows (+ `smoothing`); p_clean(y|x) = the
    model recalibrated on all trusted rows; clean_prob = column `given` of `label_posterior`;
    thresholds per given class from the trusted rows' OUT-OF-FOLD clean_prob.
    """
    from sklearn.metrics import roc_auc_score

    k = int(num_classes)
    p = np.asarray(train_probs, np.float64)
    q = np.asarray(trusted_probs, np.float64)
    if p.ndim != 2 or p.shape[1] != k or q.ndim != 2 or q.shape[1] != k:
        raise ValueError(f"train_probs and trusted_probs must be (., {k}). Received: shapes "
                         f"{p.shape} and {q.shape}")
    y = _check_labels(given, len(p), k, "given")
    ty = _check_labels(trusted_labels, len(q), k, "trusted_labels")
    tg = _check_labels(trusted_given, len(q), k, "trusted_given")
    T = tr.estimate_transition_counts(tg, ty, num_classes=k, smoothing=smoothing)
    W, b = tr.fit_recalibration(q, ty, seed=seed)
    clean_probs = tr.apply_recalibration(p, W, b)
    posterior = label_posterior(clean_probs, y, T)
    clean_prob = posterior[np.arange(len(y)), y]
    oof = cross_fit_clean_probs(q, ty, folds=folds, seed=seed)
    oof_clean = label_posterior(oof, tg, T)[np.arange(len(tg)), tg]
    ok = ty == tg
    thresholds = calibrate_class_thresholds(oof_clean, ok, tg, num_classes=k,
                                            min_rows=min_rows)
    auc = float(roc_auc_score(ok, oof_clean)) if 0 < ok.sum() < len(ok) else None
    return TrustedSplit(labelled=clean_prob >= thresholds[y], clean_prob=clean_prob,
                        posterior=posterior, clean_probs=clean_probs, thresholds=thresholds,
                        transition=T, trusted_auc=auc)
