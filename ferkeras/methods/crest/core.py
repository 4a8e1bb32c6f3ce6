"""CReST: class-rebalancing self-training, with CReST+'s progressive distribution alignment.

Wei et al., "CReST: A Class-Rebalancing Self-Training Framework for Imbalanced
Semi-Supervised Learning", CVPR 2021. Plain NumPy functions; the cycle wires them in
(`cycle.crest`, `ferkeras.callbacks.noise_split`): every cycle is a generation, and at its
split the pseudo-labelled unlabelled rows predicted as class l join the labelled set (with
their pseudo-label) at the rate mu_l, minority classes more often:

    rates = crest_sampling_rates(labelled_class_counts, alpha=1/3)     # (K,)
    added = crest_select(pseudo_labels, confidences, rates, rng=rng, candidates=unlabelled)
    t = progressive_alignment_temperature(g, G, t_min=0.5)  # the DA target becomes p^t / sum
"""

from __future__ import annotations

import numpy as np


def crest_sampling_rates(class_counts, *, alpha: float) -> np.ndarray:
    """Per-class inclusion rates mu_l = (N_{K+1-l} / N_1)^alpha.

    Classes are ranked by labelled count, descending (N_1 >= ... >= N_K, ties by class
    index); the class of rank l gets the count ratio of rank K+1-l: the rarest class gets
    1, the most frequent (N_K / N_1)^alpha.

    Args:
        class_counts: (K,) labelled-set size of each class, >= 0, not all 0.
        alpha: >= 0; 0 gives every class rate 1 (no rebalancing); the paper uses 1/3 or
            1/2 on CIFAR-LT.

    Returns:
        (K,) float64 rates in [0, 1].
    """
    counts = np.asarray(class_counts, np.float64)
    if counts.ndim != 1 or counts.size < 1 or (counts < 0).any() or counts.max() <= 0:
        raise ValueError(f"`class_counts` must be (K,) counts >= 0, not all 0. "
                         f"Received: {class_counts!r}")
    if not alpha >= 0:
        raise ValueError(f"`alpha` must be >= 0. Received: alpha={alpha!r}")
    order = np.argsort(-counts, kind="stable")  # rank -> class, most frequent first
    ranked = counts[order]
    rates = np.empty_like(counts)
    rates[order] = (ranked[::-1] / ranked[0]) ** float(alpha)
    return rates


def crest_select(pseudo_labels, confidences, rates, *, rng, candidates=None) -> np.ndarray:
    """Pick pseudo-labelled rows to add to the labelled set, class l at rate mu_l.

    Among the n_l candidate rows pseudo-labelled l, k_l ~ Binomial(n_l, mu_l) are picked,
    the k_l most confident ones: each class's expected share is exactly its rate (the
    paper's "included with probability mu_l"), and the rows it takes are the most
    confident (as the reference implementations do, which take floor(mu_l n_l)).

    Args:
        pseudo_labels: (N,) int predicted classes.
        confidences: (N,) float, the prediction's probability (ties keep the row order).
        rates: (K,) float in [0, 1], from `crest_sampling_rates`.
        rng: a `numpy.random.Generator`.
        candidates: optional (N,) bool, the rows that may be picked (the unlabelled ones).

    Returns:
        (N,) bool, True for a picked row.
    """
    pseudo = np.asarray(pseudo_labels)
    conf = np.asarray(confidences, np.float64)
    rates = np.asarray(rates, np.float64)
    if pseudo.shape != conf.shape or pseudo.ndim != 1:
        raise ValueError(f"`pseudo_labels` and `confidences` must both be (N,). Received "
                         f"shapes: {pseudo.shape}, {conf.shape}")
    if ((rates < 0) | (rates > 1)).any():
        raise ValueError(f"`rates` must lie in [0, 1]. Received: {rates!r}")
    if pseudo.size and (pseudo.min() < 0 or pseudo.max() >= rates.size):
        raise ValueError(f"`pseudo_labels` must lie in [0, {rates.size}). Received "
                         f"min={pseudo.min()}, max={pseudo.max()}")
    pool = (np.ones(pseudo.shape, bool) if candidates is None
            else np.asarray(candidates, bool))
    picked = np.zeros(pseudo.shape, bool)
    for cls, rate in enumerate(rates):
        rows = np.flatnonzero(pool & (pseudo == cls))
        take = int(rng.binomial(rows.size, rate)) if rows.size else 0
        if take:
            picked[rows[np.argsort(-conf[rows], kind="stable")[:take]]] = True
    return picked


def progressive_alignment_temperature(generation, generations, *, t_min: float) -> float:
    """CReST+'s schedule t = (1 - g/G) * 1 + (g/G) * t_min of the alignment temperature.

    Args:
        generation: g in [0, generations].
        generations: G >= 1.
        t_min: the temperature reached at g = G, in [0, 1] (the paper's CReST+ uses 0.5).

    Returns:
        float t: 1 at g = 0, t_min at g = G.
    """
    if not generations >= 1:
        raise ValueError(f"`generations` must be >= 1. Received: generations={generations!r}")
    if not 0 <= generation <= generations:
        raise ValueError(f"`generation` must be in [0, {generations}]. "
                         f"Received: generation={generation!r}")
    if not 0.0 <= t_min <= 1.0:
        raise ValueError(f"`t_min` must be in [0, 1]. Received: t_min={t_min!r}")
    frac = float(generation) / float(generations)
    return (1.0 - frac) * 1.0 + frac * float(t_min)


def temper_prior(prior, *, temperature: float) -> np.ndarray:
    """The CReST+ target prior p^t / sum(p^t) (t=1 keeps it, t=0 is uniform); the same
    transform `pseudo_labels.align_distribution(temperature=t)` applies in the step."""
    p = np.asarray(prior, np.float64) ** float(temperature)
    return p / p.sum()
