"""Which training labels to trust: loss normalisation, two-component GMM, small-loss rule.

Plain NumPy/scikit-learn functions, no Keras, in the style of `cleanlab.filter`. The cycle
and `ferkeras audit` call one of them between epochs, on the per-sample losses of the current
model (DivideMix):

    result = split_training_set(loss_history, labels, num_classes=K, selector="gmm",
                                window=cfg.loss_window, normalize=cfg.normalize, ...)
    result.labelled, result.clean_prob, result.clean_prior, result.gmm   # (N,), (N,), (K,)

Selectors are entries of `SELECTORS` (`list_selectors()`): a function
`fn(losses, normalized, labels, *, num_classes, seed, **options) -> (labelled, clean_prob, gmm)`.

Conventions: `labels` are given (possibly noisy) int class ids in [0, K); a sample is
*labelled* (trusted) when `clean_prob > p_clean`, as in DivideMix, and *flagged as noisy*
otherwise.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture

NORMALIZE_MODES = ("global", "per_class")  # `normalize_losses(mode=...)`
GMM_SCOPES = ("global", "per_class")  # `clean_probability(gmm_scope=...)`


# ----------------------------------------------------------------------------- checks
def _as_1d_float(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, shape (N,). Received shape: {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr))[:5].tolist()
        raise ValueError(f"`{name}` must be finite. Received non-finite values at indices {bad}")
    return arr


def _as_labels(labels, n, num_classes: int) -> np.ndarray:
    """Check int labels of shape (n,) in [0, num_classes); n=None accepts any length."""
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive int. Received: {num_classes!r}")
    arr = np.asarray(labels)
    n = arr.shape[0] if n is None and arr.ndim == 1 else n
    if arr.shape != (n,) or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(
            f"`labels` must be ints of shape ({n},). Received shape {arr.shape}, dtype {arr.dtype}"
        )
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"`labels` must lie in [0, {num_classes}). Received min={arr.min()}, max={arr.max()}"
        )
    return arr


def _check_int(value, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {value!r}")


def _check_choice(value, name: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}. Received: {value!r}")


# ----------------------------------------------------------------------------- losses
def _min_max(values: np.ndarray) -> np.ndarray:
    lo, hi = values.min(), values.max()
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def normalize_losses(losses, labels, *, num_classes: int, mode: str = "per_class") -> np.ndarray:
    """Min-max scale per-sample losses into [0, 1].

    Args:
        losses: (N,) float, per-sample training losses.
        labels: (N,) int, given labels in [0, K).
        num_classes: K.
        mode: "global" scales all losses together (DivideMix). "per_class" scales each
            given class on its own, so a tail class whose clean losses are all high is not
            flagged as noisy wholesale; every class then spans [0, 1].

    Plain min-max is used (no percentile clipping): the GMM needs the real tails, and the
    lowest-loss sample of each class is a reliable anchor for "clean". A set with no spread
    (constant, or a single sample) maps to 0: no evidence of noise.

    Returns:
        (N,) float64 in [0, 1].
    """
    losses = _as_1d_float(losses, "losses")
    labels = _as_labels(labels, losses.size, num_classes)
    _check_choice(mode, "mode", NORMALIZE_MODES)
    if mode == "global":
        return _min_max(losses) if losses.size else losses
    out = np.empty_like(losses)
    for c in np.unique(labels):
        idx = labels == c
        out[idx] = _min_max(losses[idx])
    return out


def average_loss_history(history, *, window: int) -> np.ndarray:
    """Mean of the last `window` loss evaluations, per sample (DivideMix's loss averaging).

    Args:
        history: (T, N) float, one row per evaluation, oldest first; a (N,) array counts as
            T=1.
        window: number of most recent rows to average, >= 1; all T rows when window > T.

    Returns:
        (N,) float64.
    """
    _check_int(window, "window", 1)
    arr = np.asarray(history, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"`history` must have shape (T>=1, N). Received shape: {arr.shape}")
    return arr[-window:].mean(axis=0)


# ----------------------------------------------------------------------------- GMM
def fit_gmm(losses, *, seed: int = 0, reg_covar: float = 5e-4, max_iter: int = 20,
            tol: float = 1e-2) -> GaussianMixture | None:
    """The fitted 2-component 1-D `GaussianMixture` of (N,) losses, or None when there is
    nothing to split on (N < 2, or all losses equal). Arguments as `fit_two_component_gmm`."""
    losses = _as_1d_float(losses, "losses")
    if losses.size < 2 or np.ptp(losses) <= 1e-12 * max(1.0, np.abs(losses).max()):
        return None
    gmm = GaussianMixture(
        n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(losses.reshape(-1, 1))
    return gmm


def gmm_clean_probability(gmm: GaussianMixture | None, losses, *, monotone: bool = True
                          ) -> np.ndarray:
    """(N,) posterior of the lower-mean component of a fitted `gmm` (1.0 for gmm=None)."""
    losses = _as_1d_float(losses, "losses")
    if gmm is None:
        return np.ones_like(losses)
    x = losses.reshape(-1, 1)
    means = gmm.means_.ravel()
    clean, noisy = int(means.argmin()), int(means.argmax())
    prob = gmm.predict_proba(x)[:, clean]
    if monotone and clean != noisy:
        at_means = gmm.predict_proba(means[[clean, noisy]].reshape(-1, 1))[:, clean]
        low, high = losses <= means[clean], losses >= means[noisy]
        prob[low] = np.maximum(prob[low], at_means[0])
        prob[high] = np.minimum(prob[high], at_means[1])
    return np.clip(prob, 0.0, 1.0)


def fit_two_component_gmm(
    losses,
    *,
    seed: int = 0,
    reg_covar: float = 5e-4,
    max_iter: int = 20,
    tol: float = 1e-2,
    monotone: bool = True,
) -> np.ndarray:
    """Clean probability of each sample from a 2-component 1-D GMM on its loss (DivideMix).

    Args:
        losses: (N,) float, usually normalised to [0, 1] (`normalize_losses`); the default
            `reg_covar` assumes that scale.
        seed: random state of the GMM initialisation.
        reg_covar, max_iter, tol: passed to `sklearn.mixture.GaussianMixture`. DivideMix
            stops EM early on purpose, so sklearn's ConvergenceWarning is silenced here.
        monotone: a 1-D GMM posterior is not monotone in the tails when the two variances
            differ (a wide clean component "wins" back very high losses). If True, losses
            below the clean mean get at least the posterior at that mean and losses above
            the noisy mean at most the posterior at that mean. False is DivideMix as-is.

    Returns:
        (N,) float64 in [0, 1]: posterior of the component with the lower mean. With no
        information to split on (N < 2, or all losses equal) every sample gets 1.0: no
        evidence of noise, so nothing is thrown away.
    """
    gmm = fit_gmm(losses, seed=seed, reg_covar=reg_covar, max_iter=max_iter, tol=tol)
    return gmm_clean_probability(gmm, losses, monotone=monotone)


def _rank_clean_prob(losses: np.ndarray) -> np.ndarray:
    """1 - mid-rank percentile within the set: n=1 -> 0.5; n=2 -> 0.75, 0.25."""
    ranks = scipy.stats.rankdata(losses, method="average") - 1.0
    return 1.0 - (ranks + 0.5) / losses.size


def clean_probability(
    losses,
    labels,
    *,
    num_classes: int,
    normalize: str = "per_class",
    gmm_scope: str = "global",
    min_class_samples: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """Normalise losses, then fit one GMM on all samples or one per given class.

    Args:
        losses: (N,) float, per-sample losses (averaged over a window if wanted).
        labels: (N,) int, given labels in [0, K).
        num_classes: K.
        normalize: "global" or "per_class", see `normalize_losses`.
        gmm_scope: "global" fits one GMM on all normalised losses (every sample uses it,
            whatever its class size); "per_class" fits one GMM per given class. A GMM always
            finds two components, so per class it also splits a nearly clean class: prefer
            "global" unless every class has real noise.
        min_class_samples: with gmm_scope="per_class", a class with fewer samples gets no GMM
            but the rank rule clean_prob = 1 - (mid-rank percentile of its loss in the class),
            which flags roughly its higher-loss half at p_clean=0.5.
        seed: GMM random state (the same for every class).

    Returns:
        (N,) float64 clean probability in [0, 1].
    """
    normed = normalize_losses(losses, labels, num_classes=num_classes, mode=normalize)
    prob, _ = _gmm_clean_prob(normed, np.asarray(labels, dtype=np.int64), gmm_scope=gmm_scope,
                              min_class_samples=min_class_samples, seed=seed)
    return prob


def _gmm_clean_prob(normed, labels, *, gmm_scope, min_class_samples, seed):
    """(clean_prob (N,), fitted GMMs {None: global} or {class id: GMM or None})."""
    _check_choice(gmm_scope, "gmm_scope", GMM_SCOPES)
    _check_int(min_class_samples, "min_class_samples", 1)
    if gmm_scope == "global":
        gmm = fit_gmm(normed, seed=seed)
        return gmm_clean_probability(gmm, normed), {None: gmm}
    out, models = np.empty_like(normed), {}
    for c in np.unique(labels):
        idx = labels == c
        if idx.sum() < min_class_samples:
            out[idx], models[int(c)] = _rank_clean_prob(normed[idx]), None
        else:
            models[int(c)] = fit_gmm(normed[idx], seed=seed)
            out[idx] = gmm_clean_probability(models[int(c)], normed[idx])
    return out, models


# ----------------------------------------------------------------------------- splits
def small_loss_selection(
    losses, labels, *, num_classes: int, keep_ratio: float, per_class: bool = True
) -> np.ndarray:
    """Keep the smallest losses as clean (Co-teaching's small-loss trick).

    Args:
        losses: (N,) float.
        labels: (N,) int, given labels in [0, K).
        num_classes: K.
        keep_ratio: share kept, in (0, 1]. Each set keeps max(1, floor(keep_ratio * n))
            samples, ties broken by position (stable sort).
        per_class: keep that share within every given class (a tail class with high losses
            keeps its share) instead of over all samples.

    Returns:
        (N,) bool, True = kept as clean.
    """
    losses = _as_1d_float(losses, "losses")
    labels = _as_labels(labels, losses.size, num_classes)
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"`keep_ratio` must be in (0, 1]. Received: {keep_ratio!r}")
    keep = np.zeros(losses.size, dtype=bool)
    groups = (
        [np.flatnonzero(labels == c) for c in np.unique(labels)]
        if per_class
        else [np.arange(losses.size)]
    )
    for idx in groups:
        if idx.size == 0:
            continue
        k = max(1, int(np.floor(keep_ratio * idx.size + 1e-9)))
        keep[idx[np.argsort(losses[idx], kind="stable")[:k]]] = True
    return keep


def split_by_threshold(
    clean_prob, labels, *, p_clean: float, num_classes: int, min_per_class: int = 1
) -> np.ndarray:
    """Labelled mask `clean_prob > p_clean`, never leaving a present class empty.

    Args:
        clean_prob: (N,) float in [0, 1].
        labels: (N,) int, given labels in [0, K).
        p_clean: threshold in [0, 1]; strictly greater is labelled (DivideMix).
        num_classes: K.
        min_per_class: every class present in `labels` keeps at least
            min(min_per_class, class size) labelled samples; when the threshold leaves fewer,
            its highest-clean_prob samples are added. Keeps class priors defined.

    Returns:
        (N,) bool, True = labelled (trusted); False = goes to the unlabelled set.
    """
    clean_prob = _as_1d_float(clean_prob, "clean_prob")
    labels = _as_labels(labels, clean_prob.size, num_classes)
    if not 0.0 <= p_clean <= 1.0:
        raise ValueError(f"`p_clean` must be in [0, 1]. Received: {p_clean!r}")
    _check_int(min_per_class, "min_per_class", 0)
    mask = clean_prob > p_clean
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(min_per_class, idx.size)
        if mask[idx].sum() < k:
            mask[idx[np.argsort(-clean_prob[idx], kind="stable")[:k]]] = True
    return mask


def estimate_clean_prior(
    labels, labelled_mask, *, num_classes: int, smoothing: float = 1.0, pred_probs=None
) -> np.ndarray:
    """Class prior from the samples judged clean, not from the raw noisy counts.

    Args:
        labels: (N,) int, given labels in [0, K).
        labelled_mask: (N,) bool, True = judged clean.
        num_classes: K.
        smoothing: Laplace pseudo-count added to every class, >= 0.
        pred_probs: optional (N, K) model probabilities. If given, each unlabelled sample
            adds its predicted distribution instead of being dropped.

    Without `pred_probs` this is the class mix of the correctly labelled samples: it equals
    the true prior when noise rates are equal across classes (noise flattens raw counts, the
    clean subset does not), but it under-weights classes with much higher noise rates (FER2013
    fear: ~86%). Pass `pred_probs` to count the flagged samples by the model's belief.

    Returns:
        (K,) float64, sums to 1.
    """
    labels = _as_labels(labels, None, num_classes)
    labelled_mask = np.asarray(labelled_mask)
    if labelled_mask.shape != labels.shape or labelled_mask.dtype != bool:
        raise ValueError(
            f"`labelled_mask` must be bool of shape {labels.shape}. Received shape "
            f"{labelled_mask.shape}, dtype {labelled_mask.dtype}"
        )
    if not smoothing >= 0:
        raise ValueError(f"`smoothing` must be >= 0. Received: {smoothing!r}")
    counts = np.bincount(labels[labelled_mask], minlength=num_classes).astype(np.float64)
    if pred_probs is not None:
        pred_probs = np.asarray(pred_probs, dtype=np.float64)
        if pred_probs.shape != (labels.size, num_classes):
            raise ValueError(
                f"`pred_probs` must have shape ({labels.size}, {num_classes}). "
                f"Received shape: {pred_probs.shape}"
            )
        counts += pred_probs[~labelled_mask].sum(axis=0)
    counts += smoothing
    if counts.sum() <= 0:
        raise ValueError("No labelled samples and `smoothing` is 0: the prior is undefined.")
    return counts / counts.sum()


# ----------------------------------------------------------------------------- reporting
def _detection_scores(clean_prob, is_clean, p_clean, flagged=None) -> dict:
    n = int(is_clean.size)
    flagged = ~(clean_prob > p_clean) if flagged is None else flagged
    noisy = ~is_clean
    hits = int((flagged & noisy).sum())
    two_kinds = 0 < noisy.sum() < n
    return {
        "n": n,
        "noise_rate": float(noisy.mean()) if n else None,
        "auc": float(roc_auc_score(is_clean, clean_prob)) if two_kinds else None,
        "precision": hits / int(flagged.sum()) if flagged.any() else None,
        "recall": hits / int(noisy.sum()) if noisy.any() else None,
    }


def score_noise_detection(
    clean_prob, is_clean, *, labels=None, num_classes=None, p_clean: float = 0.5,
    labelled=None,
) -> dict:
    """How well clean_prob finds the wrong labels, overall and per given class.

    Args:
        clean_prob: (N,) float in [0, 1].
        is_clean: (N,) bool, True where the given label equals the true label.
        labels: optional (N,) int given labels, for the per-class breakdown.
        num_classes: K for the breakdown; defaults to labels.max() + 1.
        p_clean: a sample is flagged noisy when NOT clean_prob > p_clean, the complement of
            `split_by_threshold`'s labelled mask.
        labelled: optional (N,) bool, the mask the split really trains with; when given,
            precision and recall describe its complement instead of the `p_clean` rule (the
            small-loss selector keeps a per-class share, not `clean_prob > p_clean`).

    Returns:
        dict with "n", "noise_rate" (share truly noisy), "auc" (ROC AUC of clean_prob for
        is_clean), "precision" and "recall" of the noise flags (positive = noisy), and
        "per_class": a list of the same dicts plus "class", one per class (empty list when
        `labels` is None). A value that is undefined (one kind only, nothing flagged, empty
        class) is None.
    """
    clean_prob = _as_1d_float(clean_prob, "clean_prob")
    is_clean = np.asarray(is_clean)
    if is_clean.shape != clean_prob.shape or is_clean.dtype != bool:
        raise ValueError(
            f"`is_clean` must be bool of shape {clean_prob.shape}. Received shape "
            f"{is_clean.shape}, dtype {is_clean.dtype}"
        )
    flagged = None
    if labelled is not None:
        labelled = np.asarray(labelled)
        if labelled.shape != clean_prob.shape or labelled.dtype != bool:
            raise ValueError(f"`labelled` must be bool of shape {clean_prob.shape}. Received "
                             f"shape {labelled.shape}, dtype {labelled.dtype}")
        flagged = ~labelled
    report = _detection_scores(clean_prob, is_clean, p_clean, flagged)
    report["per_class"] = []
    if labels is not None:
        if num_classes is None:
            num_classes = int(np.max(labels)) + 1 if np.size(labels) else 1
        labels = _as_labels(labels, clean_prob.size, num_classes)
        for c in range(num_classes):
            idx = labels == c
            part = None if flagged is None else flagged[idx]
            row = {"class": c, **_detection_scores(clean_prob[idx], is_clean[idx], p_clean,
                                                   part)}
            report["per_class"].append(row)
    return report


def rank_label_issues(clean_prob, losses) -> np.ndarray:
    """Indices ordered most suspect first: lowest clean_prob, ties by highest loss.

    Args:
        clean_prob: (N,) float.
        losses: (N,) float.

    Returns:
        (N,) int64 indices into the training set.
    """
    clean_prob = _as_1d_float(clean_prob, "clean_prob")
    losses = _as_1d_float(losses, "losses")
    if losses.shape != clean_prob.shape:
        raise ValueError(
            f"`losses` must match clean_prob's shape {clean_prob.shape}. Received: {losses.shape}"
        )
    return np.lexsort((-losses, clean_prob)).astype(np.int64)


# ----------------------------------------------------------------------------- the split
@dataclasses.dataclass
class SplitResult:
    """One split of the training set, as `split_training_set` returns it.

    Attributes:
        labelled: (N,) bool, True = trusted (supervised); False = unlabelled (FixMatch).
        clean_prob: (N,) float64 in [0, 1], the selector's clean probability.
        clean_prior: (K,) float64, class prior estimated from the split (sums to 1).
        clean_counts: (K,) int64, labelled samples per given class.
        losses: (N,) float64, the window-averaged losses the split was made on.
        normalized: (N,) float64, `losses` normalised (what the selector saw).
        gmm: the fitted GMMs: {None: model} (global) or {class id: model or None}
            (per class; None = rank rule or nothing to fit); None for non-GMM selectors.
        selector: the selector's name.
        scores: `score_noise_detection` of this split against known true labels, or None.
        p_ood: (N,) float, probability that each sample is out-of-distribution noise (PNP's
            noise-type head, `ferkeras.methods.pnp.core`), or None for selectors without one.
    """

    labelled: np.ndarray
    clean_prob: np.ndarray
    clean_prior: np.ndarray
    clean_counts: np.ndarray
    losses: np.ndarray
    normalized: np.ndarray
    gmm: dict | None
    selector: str
    scores: dict | None = None
    p_ood: np.ndarray | None = None


def _select_gmm(losses, normalized, labels, *, num_classes, seed, p_clean=0.5,
                gmm_scope="global", min_class_samples=20, **_):
    clean_prob, models = _gmm_clean_prob(normalized, labels, gmm_scope=gmm_scope,
                                         min_class_samples=min_class_samples, seed=seed)
    labelled = split_by_threshold(clean_prob, labels, p_clean=p_clean, num_classes=num_classes)
    return labelled, clean_prob, models


def _select_small_loss(losses, normalized, labels, *, num_classes, seed, keep_ratio=0.7, **_):
    labelled = small_loss_selection(losses, labels, num_classes=num_classes,
                                    keep_ratio=keep_ratio)
    return labelled, 1.0 - normalized, None


def _select_h2e(losses, normalized, labels, *, num_classes, seed, features=None, init=None,
                p_clean=0.5, h2e_rounds=2, h2e_penalty=1.0, **_):
    """H2E (Yi et al., ECCV 2022; `ferkeras.noise.h2e`): needs `features` (N, D), the network's
    penultimate features; `init` optionally the network's (kernel, bias) of its logits layer."""
    from ferkeras.noise import h2e

    if features is None:
        raise ValueError("The h2e selector needs per-sample `features` (N, D), the network's "
                         "penultimate features. Received: features=None")
    found = h2e.identify_noise(features, labels, num_classes=num_classes, rounds=h2e_rounds,
                               penalty_weight=h2e_penalty, init=init)
    labelled = split_by_threshold(found.clean_prob, labels, p_clean=p_clean,
                                  num_classes=num_classes)
    return labelled, found.clean_prob, None


def _select_pnp(losses, normalized, labels, *, num_classes, seed, type_probs=None, **_):
    """PNP (Sun et al., CVPR 2022; `ferkeras.methods.pnp.core`): the split of the trainer's
    noise-type
    head, `type_probs` (N, 3): labelled where its most probable type is clean."""
    from ferkeras.methods.pnp import core as pnp

    if type_probs is None:
        raise ValueError("The pnp selector needs `type_probs` (N, 3), the noise-type head's "
                         "probabilities (PNPTrainer). Received: type_probs=None")
    labelled, clean_prob = pnp.split_from_noise_types(type_probs, labels,
                                                      num_classes=num_classes)
    return labelled, clean_prob, None


def _select_trusted(losses, normalized, labels, *, num_classes, seed, trusted_inputs=None,
                    out=None, **_):
    """The trusted split (`ferkeras.noise.trusted_split.trusted_split`): needs `trusted_inputs`, a
    dict with train_probs (N, K), trusted_probs (M, K), trusted_labels (M,), trusted_given
    (M,), and optionally folds and forced_clean (N,) bool (rows kept labelled whatever their
    score: the trusted rows that joined the training set). `out`, a dict, receives the
    `TrustedSplit` under 'trusted_split'."""
    from ferkeras.noise.trusted_split import trusted_split

    if trusted_inputs is None:
        raise ValueError("The trusted selector needs `trusted_inputs` (the model's "
                         "probabilities of the training and trusted rows and the trusted "
                         "labels). Received: trusted_inputs=None")
    i = trusted_inputs
    found = trusted_split(i["train_probs"], labels, i["trusted_probs"], i["trusted_labels"],
                          i["trusted_given"], num_classes=num_classes, seed=seed,
                          folds=i.get("folds", 5))
    labelled, clean_prob = found.labelled.copy(), found.clean_prob.copy()
    forced = i.get("forced_clean")
    if forced is not None:
        labelled[forced], clean_prob[forced] = True, 1.0
    if out is not None:
        out["trusted_split"] = found
    return labelled, clean_prob, None


# name -> fn(losses, normalized, labels, *, num_classes, seed, **options)
#         -> (labelled (N,) bool, clean_prob (N,) float, fitted GMMs or None)
SELECTORS = {"gmm": _select_gmm, "small_loss": _select_small_loss, "h2e": _select_h2e,
             "pnp": _select_pnp, "trusted": _select_trusted}


def list_selectors() -> list[str]:
    """Names of the registered selectors (`cycle.selector`)."""
    return sorted(SELECTORS)


def split_training_set(
    loss_history,
    labels,
    *,
    num_classes: int,
    selector: str = "gmm",
    window: int = 1,
    normalize: str = "per_class",
    pred_probs=None,
    true_labels=None,
    seed: int = 0,
    **options,
) -> SplitResult:
    """Split the training set into labelled (trusted) and unlabelled samples.

    Args:
        loss_history: (T, N) or (N,) float, per-sample losses, oldest evaluation first.
        labels: (N,) int, given labels in [0, K).
        num_classes: K.
        selector: a name from `list_selectors()`.
        window: average each sample's loss over the last `window` rows.
        normalize: "global" or "per_class" (`normalize_losses`).
        pred_probs: optional (N, K) model probabilities for `estimate_clean_prior`.
        true_labels: optional (N,) int true labels, -1 unknown: adds detection `scores`
            (precision and recall of the mask the split returns).
        seed: GMM random state.
        **options: the selector's options: p_clean, gmm_scope, min_class_samples (gmm);
            keep_ratio (small_loss); features (N, D), init, h2e_rounds, h2e_penalty, p_clean
            (h2e); type_probs (N, 3) (pnp).

    Returns:
        `SplitResult`.
    """
    _check_choice(selector, "selector", list_selectors())
    labels = _as_labels(labels, None, num_classes)
    losses = average_loss_history(loss_history, window=window)
    normalized = normalize_losses(losses, labels, num_classes=num_classes, mode=normalize)
    labelled, clean_prob, gmm = SELECTORS[selector](
        losses, normalized, labels, num_classes=num_classes, seed=seed, **options)
    result = SplitResult(
        labelled=labelled, clean_prob=np.asarray(clean_prob, np.float64),
        clean_prior=estimate_clean_prior(labels, labelled, num_classes=num_classes,
                                         pred_probs=pred_probs),
        clean_counts=np.bincount(labels[labelled], minlength=num_classes),
        losses=losses, normalized=normalized, gmm=gmm, selector=selector)
    if true_labels is not None:
        result.scores = score_split_result(result, labels, true_labels, num_classes=num_classes,
                                           p_clean=options.get("p_clean", 0.5))
    return result


def score_split_result(result: SplitResult, labels, true_labels, *, num_classes: int,
                       p_clean: float = 0.5) -> dict | None:
    """`score_noise_detection` of `result` on the rows whose true label is known (>= 0);
    None when none is known. Precision and recall describe `result.labelled`."""
    true_labels = np.asarray(true_labels)
    known = true_labels >= 0
    if not known.any():
        return None
    labels = np.asarray(labels)
    return score_noise_detection(
        result.clean_prob[known], (true_labels == labels)[known], labels=labels[known],
        num_classes=num_classes, p_clean=p_clean, labelled=result.labelled[known])


def gmm_density(gmm: dict | None, grid, labels) -> np.ndarray | None:
    """Density on `grid` (G,) of the fitted GMM(s) of a `SplitResult`, over all samples.

    Global: the model's density. Per class: each class's density weighted by its share of
    the samples; classes with no model (rank rule, nothing to fit) add nothing. None when no
    model was fitted at all.
    """
    if not gmm or all(m is None for m in gmm.values()):
        return None
    grid = np.asarray(grid, np.float64).reshape(-1, 1)
    if None in gmm:
        return np.exp(gmm[None].score_samples(grid))
    labels = np.asarray(labels)
    total = np.zeros(grid.shape[0])
    for c, model in gmm.items():
        if model is not None:
            total += float(np.mean(labels == c)) * np.exp(model.score_samples(grid))
    return total


def split_warnings(labelled, labels, pred_probs, *, num_classes: int, class_names=None,
                   chance_margin: float = 0.05, extreme_high: float = 0.9,
                   extreme_low: float = 0.02) -> list[str]:
    """Reasons a split is not credible, as one-line warnings (empty when it looks sound).

    labelled: (N,) bool, the split's clean mask; labels: (N,) given labels; pred_probs: (N, K)
    the probabilities the split was made from.
    - The model is near chance on the given labels (accuracy within `chance_margin` of
      always predicting the largest class): its losses cannot tell clean from noisy rows.
    - A class is flagged almost wholesale (>= `extreme_high`) or almost not at all
      (<= `extreme_low`) while the median class is in between.
    """
    labelled = np.asarray(labelled, dtype=bool)
    labels = np.asarray(labels)
    probs = np.asarray(pred_probs)
    names = list(class_names) if class_names is not None else [str(k) for k in
                                                               range(num_classes)]
    out = []
    counts = np.bincount(labels, minlength=num_classes)
    majority = counts.max() / max(len(labels), 1)
    accuracy = float((probs.argmax(1) == labels).mean()) if len(labels) else 0.0
    if accuracy < majority + chance_margin:
        out.append(f"split not credible: the model's accuracy on the given labels is "
                   f"{accuracy:.3f}, near the {majority:.3f} of always predicting the largest "
                   "class; train longer before splitting (cycle.warmup_epochs).")
    present = np.flatnonzero(counts > 0)
    flagged = np.array([(~labelled[labels == k]).mean() for k in present])
    if len(present) >= 3:
        median = float(np.median(flagged))
        if extreme_low < median < extreme_high:
            for k, f in zip(present, flagged, strict=True):
                if f >= extreme_high or f <= extreme_low:
                    out.append(f"split not credible for class {names[k]!r}: {100 * f:.0f}% of "
                               f"its rows flagged noisy while the median class has "
                               f"{100 * median:.0f}%; check the class (or use trusted rows).")
    return out
