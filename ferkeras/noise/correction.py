"""Label corrections during training (Keras-free array cores).

Forward loss correction (Patrini et al., "Making Deep Neural Networks Robust to Label Noise:
a Loss Correction Approach", CVPR 2017): the network models the clean posterior p(y | x);
its prediction of the *noisy* label is p(y | x) @ T, with T (K, K),
T[i, j] = P(noisy = j | clean = i) (conventions of `ferkeras.noise.transition`). Training
cross-entropy on the noisy labels against `forward_corrected_log_probs` is minimised where
p(y | x) @ T equals the noisy-label posterior, i.e. (T invertible) where p(y | x) is the clean
posterior. `ferkeras.trainers.forward` applies it inside the Keras step.

Relabelling flagged rows (SELFIE, Song et al., "SELFIE: Refurbishing Unclean Samples for
Robust Deep Learning", ICML 2019): rows the split judged noisy are "refurbished" with the
model's prediction where the prediction can be trusted, and the rest are left out of the
loss. SELFIE trusts a prediction by the entropy of its recent history; here the confidence of
the split's model (the EMA teacher when there is one) stands in for it, as in the
label-correction step of Joint Optimization (Tanaka et al., CVPR 2018) with hard labels.
"""

from __future__ import annotations

import numpy as np

from ferkeras.noise.transition import LOG_PROB_FLOOR, _check_probs, _check_transition, log_probs


def forward_corrected_log_probs(clean_probs, transition, *, from_log: bool = False
                                ) -> np.ndarray:
    """log P(noisy label | x) = log(max(clean_probs @ T, LOG_PROB_FLOOR)), (N, K).

    clean_probs: (N, K) the model's clean-class probabilities, or their natural logs with
      `from_log=True` (computed in log space then, as the Keras step does: logsumexp over
      the clean class of log p + log T).
    transition: T (K, K), rows sum to 1. Identity T gives `log_probs(clean_probs)`.
    The floor is `ferkeras.noise.transition.LOG_PROB_FLOOR`, the one floor under every log
    probability of the package.
    """
    if from_log:
        lp = np.asarray(clean_probs, dtype=np.float64)
        _check_probs(np.exp(lp), "exp(clean_probs)")
        T = _check_transition(transition, lp.shape[1])
        with np.errstate(divide="ignore"):
            log_t = np.log(np.maximum(T, 1e-30))
        s = lp[:, :, None] + log_t[None]  # (N, K clean, K noisy)
        m = s.max(1, keepdims=True)
        out = (m + np.log(np.exp(s - m).sum(1, keepdims=True)))[:, 0]
        return np.maximum(out, np.log(LOG_PROB_FLOOR))
    p = _check_probs(clean_probs, "clean_probs")
    T = _check_transition(transition, p.shape[1])
    return log_probs(p @ T)


def forward_corrected_cross_entropy(labels, clean_probs, transition) -> np.ndarray:
    """(N,) -log P(noisy = labels | x) under forward correction; labels (N,) int in [0, K)."""
    lp = forward_corrected_log_probs(clean_probs, transition)
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (len(lp),) or (y < 0).any() or (y >= lp.shape[1]).any():
        raise ValueError(f"labels must be (N,)={len(lp)} class ids in [0, K). "
                         f"Received: shape={y.shape}")
    return -lp[np.arange(len(y)), y]


def relabel_flagged(probs, labels, labelled_mask, *, threshold: float = 0.9):
    """Relabel the rows judged noisy whose predicted class is confident enough.

    probs: (N, K) the model's probabilities (the EMA teacher's when there is one);
    labels: (N,) int given labels; labelled_mask: (N,) bool, True = judged clean;
    threshold: a flagged row with max(probs) >= threshold takes argmax(probs) as its label.
    Returns (new_labels (N,) int, new_mask (N,) bool, relabelled (N,) bool): `new_mask` is
    the rows that stay in the supervised loss (judged clean, or relabelled); the other
    flagged rows are dropped from it. A relabelled row may keep its given label (the model
    confidently agrees with it): it rejoins the loss all the same.
    """
    p = _check_probs(probs)
    y = np.asarray(labels, dtype=np.int64)
    mask = np.asarray(labelled_mask, dtype=bool)
    if y.shape != (len(p),) or mask.shape != (len(p),):
        raise ValueError(f"labels and labelled_mask must be (N,)={len(p)}. Received: "
                         f"labels shape={y.shape}, labelled_mask shape={mask.shape}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1]. Received: threshold={threshold}")
    pred = p.argmax(1)
    relabelled = ~mask & (p.max(1) >= threshold)
    new_labels = np.where(relabelled, pred, y)
    return new_labels, mask | relabelled, relabelled


def relabel_summary(relabelled, new_labels, given_labels, true_labels=None) -> dict:
    """Counts for a relabelling: rows relabelled, how many changed label, and (where true
    labels are known, -1 = unknown) how many relabels match the true label, against how many
    given labels of the same rows did."""
    relabelled = np.asarray(relabelled, dtype=bool)
    new, given = np.asarray(new_labels), np.asarray(given_labels)
    out = {"relabelled": int(relabelled.sum()),
           "changed": int((relabelled & (new != given)).sum())}
    if true_labels is not None:
        truth = np.asarray(true_labels)
        known = relabelled & (truth >= 0)
        out["relabelled_known"] = int(known.sum())
        out["relabel_correct"] = int((known & (new == truth)).sum())
        out["given_correct"] = int((known & (given == truth)).sum())
    return out
