"""Find label errors: cleanlab-compatible functions, a loss-based variant, and K-fold
out-of-sample probabilities for any Keras model factory.

    probs = out_of_sample_probs(make_model, x, y, folds=5)            # (N, K)
    issues = find_label_issues(y, probs)                              # (N,) bool
    ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    scores = label_quality_scores(y, probs)                           # (N,), low = suspect
    aum = area_under_margin(margins)                   # (N,) from (N, epochs) training margins
    issues = find_label_issues_by_aum(y, aum, probs)   # (N,) bool, ranked by aum if asked

`area_under_margin` (Pleiss et al., NeurIPS 2020) ranks from training dynamics: the mean over
epochs of each row's margin, p(given label) minus the largest other probability. On FER2013
vs FERPlus it ranks label errors ahead of cleanlab's self-confidence on the same CE runs
(bench/results/audit_dynamics.md); it is `ferkeras audit`'s default score.

`find_label_issues` and `label_quality_scores` follow `cleanlab.filter.find_label_issues`
and `cleanlab.rank.get_label_quality_scores` (confident learning, Northcutt et al. 2021):
same argument names, same `filter_by` and `method` choices, same return types. NumPy only.
"""

from __future__ import annotations

import numpy as np

FILTER_BY = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
             "predicted_neq_given", "low_normalized_margin", "low_self_confidence")
RANK_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


def _check(labels, pred_probs):
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    if pred_probs.ndim != 2 or pred_probs.shape[1] < 2:
        raise ValueError(f"pred_probs must have shape (N, K), K >= 2. Received shape: "
                         f"{pred_probs.shape}")
    labels = np.asarray(labels)
    n, k = pred_probs.shape
    if labels.shape != (n,) or (n and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"labels must be ints of shape ({n},). Received shape {labels.shape}, "
                         f"dtype {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}). Received min={labels.min()}, "
                         f"max={labels.max()}")
    if not np.all(np.isfinite(pred_probs)) or pred_probs.min() < 0:
        raise ValueError("pred_probs must be finite and >= 0.")
    return labels.astype(np.int64), pred_probs


# ----------------------------------------------------------------------------- scores
def label_quality_scores(labels, pred_probs, *, method: str = "self_confidence",
                         adjust_pred_probs: bool = False) -> np.ndarray:
    """Per-sample label quality in [0, 1]; lower means more likely mislabelled.

    Args:
        labels: (N,) int given labels in [0, K).
        pred_probs: (N, K) out-of-sample predicted probabilities.
        method: 'self_confidence' (p[y]), 'normalized_margin' ((p[y] - max_{k != y} p[k] +
            1) / 2) or 'confidence_weighted_entropy'.
        adjust_pred_probs: subtract each class's average self-confidence first (cleanlab's
            option; accounts for class imbalance).

    Returns:
        (N,) float64.
    """
    labels, pred_probs = _check(labels, pred_probs)
    if method not in RANK_METHODS:
        raise ValueError(f"Unknown method. Valid: {list(RANK_METHODS)}. Received: "
                         f"method={method!r}")
    if adjust_pred_probs:
        pred_probs = _adjust(labels, pred_probs)
    rows = np.arange(len(labels))
    self_conf = pred_probs[rows, labels]
    if method == "self_confidence":
        return self_conf
    if method == "normalized_margin":
        other = pred_probs.copy()
        other[rows, labels] = -np.inf
        return (self_conf - other.max(axis=1) + 1.0) / 2.0
    k = pred_probs.shape[1]
    clipped = np.clip(pred_probs, 1e-6, None)
    entropy = -np.sum(clipped * np.log(clipped), axis=1) / np.log(k)
    score = entropy / np.clip(self_conf, 1e-6, None)
    return np.log(score + 1.0) / np.clip(score, 1e-6, None)


def _adjust(labels, pred_probs):
    thresholds = _class_thresholds(labels, pred_probs)
    adjusted = pred_probs - thresholds[None, :]
    adjusted += thresholds.max()
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def _class_thresholds(labels, pred_probs):
    """(K,) average self-confidence of each class: p[k] over the samples labelled k."""
    k = pred_probs.shape[1]
    out = np.empty(k)
    for c in range(k):
        idx = labels == c
        out[c] = pred_probs[idx, c].mean() if idx.any() else 1.0
    return out


# ----------------------------------------------------------------------------- confident joint
def confident_joint(labels, pred_probs, *, calibrate: bool = True) -> np.ndarray:
    """(K, K) counts C[i, j] of samples labelled i whose true label is confidently j.

    A sample counts for j when p[j] >= t_j (t_j: the mean p[j] over samples labelled j), the
    largest such p if several. With `calibrate`, each row is rescaled to the number of
    samples labelled i and the whole matrix to N (cleanlab's calibration).
    """
    labels, pred_probs = _check(labels, pred_probs)
    k = pred_probs.shape[1]
    thresholds = _class_thresholds(labels, pred_probs)
    above = pred_probs >= thresholds[None, :] - 1e-6
    masked = np.where(above, pred_probs, -np.inf)
    has = above.any(axis=1)
    guess = masked.argmax(axis=1)
    joint = np.zeros((k, k), dtype=np.float64)
    np.add.at(joint, (labels[has], guess[has]), 1.0)
    if calibrate:
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        row = joint.sum(axis=1, keepdims=True)
        joint = np.where(row > 0, joint / np.maximum(row, 1e-12) * counts[:, None], 0.0)
        total = joint.sum()
        if total > 0:
            joint = joint / total * len(labels)
    return joint


def find_label_issues(labels, pred_probs, *, filter_by: str = "prune_by_noise_rate",
                      return_indices_ranked_by: str | None = None, frac_noise: float = 1.0,
                      num_to_remove_per_class=None, min_examples_per_class: int = 1
                      ) -> np.ndarray:
    """Which given labels are likely wrong, from out-of-sample probabilities.

    Args:
        labels: (N,) int given labels in [0, K).
        pred_probs: (N, K) out-of-sample probabilities (see `out_of_sample_probs`).
        filter_by: 'prune_by_noise_rate' (default: for each pair (i, j), flag the C[i, j]
            samples labelled i with the largest margin p[j] - p[i]), 'prune_by_class' (per
            class, the off-diagonal count of C with the lowest p[i]), 'both',
            'confident_learning' (the off-diagonal samples of the confident joint),
            'predicted_neq_given', 'low_normalized_margin', 'low_self_confidence'.
        return_indices_ranked_by: None returns a (N,) bool mask; a `label_quality_scores`
            method name returns the flagged indices, most suspect first.
        frac_noise: flag only this share of the estimated issues (0, 1].
        num_to_remove_per_class: (K,) explicit counts for the 'prune_by_*' and 'low_*'
            methods instead of the estimate.
        min_examples_per_class: never leave a class with fewer unflagged samples.

    Returns:
        (N,) bool mask, or int indices when `return_indices_ranked_by` is set.
    """
    labels, pred_probs = _check(labels, pred_probs)
    if filter_by not in FILTER_BY:
        raise ValueError(f"Unknown filter_by. Valid: {list(FILTER_BY)}. Received: "
                         f"filter_by={filter_by!r}")
    if not 0.0 < frac_noise <= 1.0:
        raise ValueError(f"frac_noise must be in (0, 1]. Received: frac_noise={frac_noise!r}")
    if return_indices_ranked_by is not None and return_indices_ranked_by not in RANK_METHODS:
        raise ValueError(f"return_indices_ranked_by must be None or one of "
                         f"{list(RANK_METHODS)}. Received: {return_indices_ranked_by!r}")
    n, k = pred_probs.shape
    counts = np.bincount(labels, minlength=k)
    pred = pred_probs.argmax(axis=1)
    rows = np.arange(n)
    joint = confident_joint(labels, pred_probs)
    if num_to_remove_per_class is not None:
        per_class = np.asarray(num_to_remove_per_class, dtype=np.int64)
        if per_class.shape != (k,):
            raise ValueError(f"num_to_remove_per_class must have shape ({k},). Received "
                             f"shape: {per_class.shape}")
    else:
        per_class = np.round((joint.sum(axis=1) - np.diag(joint)) * frac_noise).astype(int)
    per_class = np.minimum(per_class, np.maximum(counts - min_examples_per_class, 0))
    if filter_by == "predicted_neq_given":
        mask = pred != labels
    elif filter_by == "confident_learning":
        mask = _confident_off_diagonal(labels, pred_probs)
    elif filter_by in ("low_normalized_margin", "low_self_confidence"):
        method = filter_by[4:]
        scores = label_quality_scores(labels, pred_probs, method=method)
        mask = _lowest_per_class(labels, scores, per_class)
    else:
        by_class = _lowest_per_class(labels, pred_probs[rows, labels], per_class)
        by_rate = _prune_by_noise_rate(labels, pred_probs, joint, frac_noise, counts,
                                       min_examples_per_class)
        mask = {"prune_by_class": by_class, "prune_by_noise_rate": by_rate,
                "both": by_class & by_rate}[filter_by]
        mask &= pred != labels  # a label the model predicts is never flagged (as cleanlab)
    if return_indices_ranked_by is None:
        return mask
    scores = label_quality_scores(labels, pred_probs, method=return_indices_ranked_by)
    flagged = np.flatnonzero(mask)
    return flagged[np.argsort(scores[flagged], kind="stable")]


def _confident_off_diagonal(labels, pred_probs):
    thresholds = _class_thresholds(labels, pred_probs)
    above = pred_probs >= thresholds[None, :] - 1e-6
    guess = np.where(above, pred_probs, -np.inf).argmax(axis=1)
    return above.any(axis=1) & (guess != labels)


def _lowest_per_class(labels, scores, per_class):
    mask = np.zeros(len(labels), dtype=bool)
    for c, m in enumerate(per_class):
        idx = np.flatnonzero(labels == c)
        if m > 0 and idx.size:
            mask[idx[np.argsort(scores[idx], kind="stable")[:m]]] = True
    return mask


def _prune_by_noise_rate(labels, pred_probs, joint, frac_noise, counts, min_keep):
    mask = np.zeros(len(labels), dtype=bool)
    k = pred_probs.shape[1]
    for i in range(k):
        idx = np.flatnonzero(labels == i)
        budget = max(int(counts[i]) - min_keep, 0)
        for j in range(k):
            if j == i:
                continue
            m = min(int(round(joint[i, j] * frac_noise)), budget)
            if m <= 0:
                continue
            free = idx[~mask[idx]]
            margin = pred_probs[free, j] - pred_probs[free, i]
            take = free[np.argsort(-margin, kind="stable")[:m]]
            mask[take] = True
            budget -= len(take)
    return mask


# ----------------------------------------------------------------------------- training dynamics
def given_label_margins(labels, pred_probs) -> np.ndarray:
    """(N,) margin of each row: p(given label) - max over the other classes (in [-1, 1]).
    labels: (N,) ints; pred_probs: (N, K) probabilities of one epoch's model."""
    labels, pred_probs = _check(labels, pred_probs)
    given = pred_probs[np.arange(len(labels)), labels]
    other = pred_probs.copy()
    other[np.arange(len(labels)), labels] = -np.inf
    return given - other.max(axis=1)


def area_under_margin(margins) -> np.ndarray:
    """AUM (Pleiss et al., NeurIPS 2020): (N,) mean over epochs of each row's given-label
    margin. margins: (N, E) one column per epoch (`given_label_margins`), or (N,) for one
    epoch. Low AUM = the model kept preferring another class = a likely label error."""
    m = np.asarray(margins, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2 or not m.shape[1]:
        raise ValueError(f"margins must be (N, epochs) with at least one epoch. Received: "
                         f"shape={np.shape(margins)}")
    if not np.isfinite(m).all():
        raise ValueError("margins must be finite.")
    return m.mean(axis=1)


def find_label_issues_by_aum(labels, aum, pred_probs, *, return_indices_ranked: bool = False,
                             min_examples_per_class: int = 1) -> np.ndarray:
    """Label issues ranked by area under the margin.

    How many rows of each given class are wrong comes from the calibrated confident joint of
    `pred_probs` (cleanlab's count, `confident_joint`); which ones, from the lowest AUM in
    that class. labels: (N,) ints; aum: (N,) `area_under_margin`; pred_probs: (N, K), e.g.
    the last epoch's probabilities. Returns an (N,) bool mask, or the flagged indices,
    lowest AUM first (`return_indices_ranked`)."""
    labels, pred_probs = _check(labels, pred_probs)
    aum = np.asarray(aum, dtype=np.float64)
    if aum.shape != labels.shape:
        raise ValueError(f"aum has shape {aum.shape}, labels {labels.shape}.")
    k = pred_probs.shape[1]
    joint = confident_joint(labels, pred_probs)
    counts = np.bincount(labels, minlength=k)
    per_class = [min(int(round(joint[c].sum() - joint[c, c])),
                     max(int(counts[c]) - min_examples_per_class, 0)) for c in range(k)]
    mask = _lowest_per_class(labels, aum, per_class)
    if not return_indices_ranked:
        return mask
    flagged = np.flatnonzero(mask)
    return flagged[np.argsort(aum[flagged], kind="stable")]


# ----------------------------------------------------------------------------- losses
def find_label_issues_by_loss(labels, losses, *, num_classes: int, normalize="per_class",
                              selector="gmm", seed: int = 0, return_indices_ranked=False,
                              **options) -> np.ndarray:
    """Label issues from per-sample losses (N,), the way the ferkeras cycle splits.

    Losses are normalised (per class by default, so a hard tail class is not flagged
    wholesale), then `selection.split_training_set` keeps the clean ones (a two-component
    GMM, or the small-loss rule with `selector='small_loss'`); the rest are issues.

    Args:
        labels: (N,) int given labels.
        losses: (N,) float per-sample losses, or (T, N) several evaluations (averaged over
            `window` rows when `window=` is passed).
        num_classes: K.
        normalize: 'per_class' or 'global'.
        selector: 'gmm' or 'small_loss'.
        return_indices_ranked: return flagged indices, most suspect first, not a mask.
        **options: p_clean, gmm_scope, min_class_samples (gmm); keep_ratio (small_loss);
            window.

    Returns:
        (N,) bool mask (True = likely wrong label), or ranked int indices.
    """
    from ferkeras.noise import selection

    result = selection.split_training_set(losses, labels, num_classes=num_classes,
                                          selector=selector, normalize=normalize, seed=seed,
                                          **options)
    mask = ~result.labelled
    if not return_indices_ranked:
        return mask
    order = selection.rank_label_issues(result.clean_prob, result.losses)
    return order[mask[order]]


# ----------------------------------------------------------------------------- K-fold
def out_of_sample_probs(make_model, x, y, *, folds: int = 5, epochs: int = 1,
                        batch_size: int = 32, seed: int = 0, from_logits=None, verbose=0,
                        **fit_kwargs) -> np.ndarray:
    """K-fold cross-validated predicted probabilities: each sample predicted by a model that
    never saw it (what `find_label_issues` needs).

    Args:
        make_model: a function returning a fresh, compiled Keras model (or ferkeras trainer)
            for each fold.
        x: (N, ...) inputs. y: (N,) int labels.
        folds: K >= 2; folds are stratified by label and seeded.
        epochs, batch_size, verbose, **fit_kwargs: passed to each fold's `fit`.
        from_logits: whether the model outputs logits; None decides per fold (outputs that
            are not rows of probabilities are passed through a softmax).

    Returns:
        (N, K) float32 out-of-sample probabilities.
    """
    x, y = np.asarray(x), np.asarray(y)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an int >= 2. Received: folds={folds!r}")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length. Received: {len(x)} and {len(y)}")
    fold_of = stratified_folds(y, folds=folds, seed=seed)
    out = None
    for f in range(folds):
        held = fold_of == f
        model = make_model()
        model.fit(x[~held], y[~held], epochs=epochs, batch_size=batch_size, verbose=verbose,
                  **fit_kwargs)
        pred = np.asarray(model.predict(x[held], batch_size=batch_size, verbose=0),
                          dtype=np.float64)
        if out is None:
            out = np.zeros((len(y), pred.shape[1]), np.float32)
        out[held] = _as_probs(pred, from_logits)
    return out


def _as_probs(pred, from_logits):
    is_probs = pred.min() >= 0 and np.allclose(pred.sum(axis=1), 1.0, atol=1e-3)
    if from_logits or (from_logits is None and not is_probs):
        pred = np.exp(pred - pred.max(axis=1, keepdims=True))
        pred /= pred.sum(axis=1, keepdims=True)
    return pred


def stratified_folds(labels, *, folds: int, seed: int = 0) -> np.ndarray:
    """(N,) fold id of each sample; every class is dealt round-robin after a seeded shuffle."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold_of[idx] = (np.arange(idx.size) + start) % folds
        start += idx.size
    return fold_of
