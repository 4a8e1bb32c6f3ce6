"""H2E: a noise identifier invariant to the class distribution (Yi et al., ECCV 2022).

Yi, Tang, Hua, Lim, Zhang, "Identifying Hard Noise in Long-Tailed Sample Distribution"
(ECCV 2022, "Hard-to-Easy"). In long-tailed data a classifier is biased toward the head, so
the *clean* samples of a tail class already have high losses and its noisy samples hide among
them ("hard" noise). H2E learns the noise identifier so that it is invariant to the class
distribution: a classifier on the (frozen) backbone features, trained across environments that
differ only in their class mix (the original long-tailed one, a class-balanced one and a
reversed one) with the IRM penalty, and read out with the logit adjustment of the mix it was
trained on. A sample is noisy when this identifier does not predict its given label; removing
the noise and re-fitting makes the identifier more invariant still, so hard noise becomes easy.

Plain NumPy functions, no Keras:

    result = identify_noise(features, labels, num_classes=K, rounds=2)
    result.clean_prob, result.predicted          # (N,), (N,)

The selector `h2e` (`ferkeras.noise.selection.SELECTORS`, `cycle.selector: h2e`) calls
`identify_noise` on the penultimate features of the current network at each split.

Reductions of the paper, made to fit one split of the noise cycle:
- The backbone is the cycle's network, frozen for the split; only the identifier (a linear
  softmax classifier, warm-started from the network's own logits layer when given) is fitted,
  full batch, with Adam. The paper fits the same kind of classifier on frozen features.
- Environments differ in their class distribution only. The paper's context environments
  (other augmentations per environment) need image passes; the split has one un-augmented pass.
- The identifier is trained on `sum_e R_e + penalty_weight * ||grad_s R_e(s * logits)||^2`
  (IRMv1 with a per-class dummy scale s, as in the authors' code) and predicts with its logits
  minus log of the class mix it was trained on (the paper subtracts a learnt `log prior^tau`).
- Stage 2 (re-weighted training of the classifier) is the cycle itself: samples the identifier
  keeps are labelled, the rest go to the unlabelled (FixMatch) set. The paper's "iterate" is
  `rounds` re-fits within the split (each without the samples flagged before) plus the next
  split of the cycle with the re-trained backbone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ferkeras.config import field


@dataclasses.dataclass
class H2EConfig:
    """cycle.selector h2e (Yi et al., ECCV 2022): the recipe section `cycle.h2e`."""

    rounds: int = field(
        2, "Fits of the noise identifier per split; each later fit leaves out the rows the "
        "previous one flagged (hard noise made easy).", min=1, max=10)
    penalty: float = field(
        1.0, "Weight of the IRM penalty (per-class dummy scale, IRMv1) across the class "
        "environments; 0 is multi-environment ERM.", min=0.0, max=1e4)

ENVIRONMENTS = ("original", "balanced", "reversed")


# ----------------------------------------------------------------------------- checks
def _check_labels(labels, n, num_classes) -> np.ndarray:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 2:
        raise ValueError(
            f"`num_classes` must be an int >= 2. Received: num_classes={num_classes!r}")
    arr = np.asarray(labels)
    if arr.shape != (n,) or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"`labels` must be ints of shape ({n},). Received shape {arr.shape}, "
                         f"dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"`labels` must lie in [0, {num_classes}). Received: min={arr.min()}, "
                         f"max={arr.max()}")
    return arr.astype(np.int64)


def _check_features(features) -> np.ndarray:
    arr = np.asarray(features, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"`features` must have shape (N>0, D). Received shape: {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("`features` must be finite. Received non-finite values.")
    return arr


# ----------------------------------------------------------------------------- environments
def environment_weights(labels, *, num_classes: int, mask=None) -> np.ndarray:
    """Per-sample weights of the three class-distribution environments.

    Args:
        labels: (N,) int given labels in [0, K).
        num_classes: K.
        mask: optional (N,) bool, samples that take part (the rest get weight 0).

    Returns:
        (3, N) float64, one row per `ENVIRONMENTS` entry, each summing to 1: "original" weighs
        every sample alike (the long-tailed class mix), "balanced" gives every present class
        the same total weight, "reversed" gives class c a total weight proportional to
        n_max / n_c (the class sizes reversed, as the authors' reversed sampler).
    """
    labels = np.asarray(labels)
    n = labels.size
    mask = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
    counts = np.bincount(labels[mask], minlength=num_classes).astype(np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("No sample takes part: `mask` is all False.")
    per_class = np.zeros((3, num_classes))
    per_class[0, present] = 1.0
    per_class[1, present] = 1.0 / counts[present]
    per_class[2, present] = (counts.max() / counts[present]) / counts[present]
    weights = per_class[:, labels] * mask[None, :]
    return weights / weights.sum(axis=1, keepdims=True)


def environment_class_mix(labels, *, num_classes: int, mask=None) -> np.ndarray:
    """(K,) class distribution of the three environments pooled with equal weight: the prior
    the identifier is trained on, removed again at prediction (`identifier_probs`)."""
    labels = np.asarray(labels)
    weights = environment_weights(labels, num_classes=num_classes, mask=mask)
    mix = np.stack([np.bincount(labels, weights=w, minlength=num_classes) for w in weights])
    return mix.mean(axis=0)


# ----------------------------------------------------------------------------- the objective
def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def irm_objective(logits, onehot, weights, *, penalty_weight: float):
    """Value and gradient (w.r.t. `logits`) of sum_e [R_e + penalty_weight * P_e].

    Args:
        logits: (N, K) float, the identifier's logits a.
        onehot: (N, K) float, one-hot given labels.
        weights: (E, N) float, each environment's sample weights (rows sum to 1).
        penalty_weight: lambda >= 0.

    R_e = sum_i w_ei CE(a_i, y_i); P_e = sum_k (dR_e(s * a)/ds_k at s = 1)^2 (IRMv1 with one
    dummy scale per class). With G_ek = sum_i w_ei (p_ik - y_ik) a_ik, the gradient of P_e is
    dP_e/da_jm = 2 w_ej [G_em (a_jm p_jm + p_jm - y_jm) - p_jm sum_k G_ek a_jk p_jk].

    Returns:
        (value float, grad (N, K) float64).
    """
    probs = _softmax(logits)
    resid = probs - onehot
    logp = np.log(np.clip((probs * onehot).sum(axis=1), 1e-300, None))
    value, grad = 0.0, np.zeros_like(logits)
    for w in weights:
        value -= float(w @ logp)
        grad += w[:, None] * resid
        if penalty_weight > 0:
            g = (w[:, None] * resid * logits).sum(axis=0)  # (K,)
            value += penalty_weight * float(g @ g)
            inner = (logits * probs * g[None, :]).sum(axis=1, keepdims=True)
            grad += penalty_weight * 2.0 * w[:, None] * (
                g[None, :] * (logits * probs + resid) - probs * inner)
    return value, grad


def fit_invariant_classifier(features, labels, *, num_classes: int, mask=None,
                             penalty_weight: float = 1.0, steps: int = 300,
                             learning_rate: float = 0.05, l2: float = 1e-3, init=None,
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Fit the linear noise identifier on frozen features across the class environments.

    Args:
        features: (N, D) float, per-sample features (the backbone's penultimate layer).
        labels: (N,) int given labels in [0, K).
        num_classes: K.
        mask: optional (N,) bool, the samples it is fitted on (default: all).
        penalty_weight: weight lambda of the IRM penalty; 0 is plain multi-environment ERM.
        steps, learning_rate: full-batch Adam.
        l2: weight decay on the kernel (on standardised features).
        init: optional (kernel (D, K), bias (K,)) to start from, e.g. the network's own logits
            layer (the authors start from the trained classifier too).

    Returns:
        (kernel (D, K), bias (K,)) on the raw features: logits = features @ kernel + bias.
    """
    features = _check_features(features)
    labels = _check_labels(labels, features.shape[0], num_classes)
    if not penalty_weight >= 0:
        raise ValueError(
            f"`penalty_weight` must be >= 0. Received: penalty_weight={penalty_weight!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"`steps` must be an int >= 1. Received: steps={steps!r}")
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    x = (features - mean) / std
    d = x.shape[1]
    if init is None:
        kernel, bias = np.zeros((d, num_classes)), np.zeros(num_classes)
    else:
        k0, b0 = (np.asarray(v, np.float64) for v in init)
        if k0.shape != (d, num_classes) or b0.shape != (num_classes,):
            raise ValueError(f"`init` must be (kernel ({d}, {num_classes}), bias "
                             f"({num_classes},)). Received shapes: {k0.shape}, {b0.shape}")
        kernel, bias = std[:, None] * k0, b0 + mean @ k0  # same logits on standardised x
    weights = environment_weights(labels, num_classes=num_classes, mask=mask)
    onehot = np.eye(num_classes)[labels]
    params = [kernel, bias]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    b1, b2 = 0.9, 0.999
    for t in range(1, steps + 1):
        _, g_logits = irm_objective(x @ kernel + bias, onehot, weights,
                                    penalty_weight=penalty_weight)
        grads = [x.T @ g_logits + l2 * kernel, g_logits.sum(axis=0)]
        for p, g, m in zip(params, grads, moments, strict=True):
            m[0] = b1 * m[0] + (1 - b1) * g
            m[1] = b2 * m[1] + (1 - b2) * g * g
            p -= learning_rate * (m[0] / (1 - b1 ** t)) / (np.sqrt(m[1] / (1 - b2 ** t)) + 1e-8)
    return kernel / std[:, None], bias - (mean / std) @ kernel


def identifier_probs(features, kernel, bias, class_mix) -> np.ndarray:
    """(N, K) class-balanced posterior of the identifier: softmax(logits - log class_mix)."""
    logits = _check_features(features) @ kernel + bias
    return _softmax(logits - np.log(np.clip(np.asarray(class_mix, np.float64), 1e-12, None)))


def clean_probability_from_identifier(probs, labels) -> np.ndarray:
    """The paper's rule as a score: a sample is clean when the identifier predicts its given
    label. (N,) float: 0.5 + 0.5 * q_y where argmax q == y, else 0.5 * q_y (q_y < 1), so
    `> 0.5` is exactly the paper's rule and the order within each side follows q_y."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels)
    q_y = probs[np.arange(labels.size), labels]
    agree = probs.argmax(axis=1) == labels
    return np.where(agree, 0.5 + 0.5 * q_y, 0.5 * np.minimum(q_y, 1.0 - 1e-9))


@dataclasses.dataclass
class H2EResult:
    """`identify_noise`'s output.

    Attributes:
        clean_prob: (N,) float in [0, 1]; > 0.5 exactly where the last identifier predicts
            the given label (`clean_probability_from_identifier`).
        predicted: (N,) int, the last identifier's class-balanced prediction.
        probs: (N, K) float, its class-balanced posterior.
        kept: list of (N,) bool, the samples each round fitted on (round 0: all).
    """

    clean_prob: np.ndarray
    predicted: np.ndarray
    probs: np.ndarray
    kept: list


def identify_noise(features, labels, *, num_classes: int, rounds: int = 2,
                   penalty_weight: float = 1.0, steps: int = 300, learning_rate: float = 0.05,
                   l2: float = 1e-3, init=None) -> H2EResult:
    """H2E's hard-to-easy loop: fit the invariant identifier, drop what it flags, re-fit.

    Args:
        features: (N, D) float, frozen per-sample features.
        labels: (N,) int given labels in [0, K).
        num_classes: K.
        rounds: fits of the identifier, >= 1; round r > 0 is fitted without the samples
            round r - 1 flagged as noisy (every round scores all N samples).
        penalty_weight, steps, learning_rate, l2, init: `fit_invariant_classifier`.

    Returns:
        `H2EResult`.
    """
    features = _check_features(features)
    labels = _check_labels(labels, features.shape[0], num_classes)
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"`rounds` must be an int >= 1. Received: rounds={rounds!r}")
    mask = np.ones(labels.size, bool)
    kept, probs = [], None
    for _ in range(rounds):
        kept.append(mask.copy())
        kernel, bias = fit_invariant_classifier(
            features, labels, num_classes=num_classes, mask=mask, penalty_weight=penalty_weight,
            steps=steps, learning_rate=learning_rate, l2=l2, init=init)
        mix = environment_class_mix(labels, num_classes=num_classes, mask=mask)
        probs = identifier_probs(features, kernel, bias, mix)
        new_mask = probs.argmax(axis=1) == labels
        # a class the identifier flags wholesale keeps its samples for the next fit
        for c in np.unique(labels):
            if not new_mask[labels == c].any():
                new_mask[labels == c] = True
        mask = new_mask
    return H2EResult(clean_prob=clean_probability_from_identifier(probs, labels),
                     predicted=probs.argmax(axis=1), probs=probs, kept=kept)
