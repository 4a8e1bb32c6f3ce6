"""DivideMix co-divide (ferkeras.codivide, ferkeras.trainers.codivide): each network's split
comes from the other network's losses; label co-refinement and co-guessing on hand-made
arrays; the trainer under 2 replicas vs 1; resume with both networks; the recipe path; the
exported ensemble."""

import numpy as np
import pytest

from ferkeras import selection
from ferkeras.codivide import co_divide_masks, co_divide_splits, co_guess, co_refine, sharpen

K = 4


# ----------------------------------------------------------------------------- array core
def _noisy_losses(n=400, noise=0.3, seed=0):
    """Given labels with `noise` of them flipped (known truth), and two networks' losses:
    A's losses separate clean from noisy; B has memorised half of the noisy samples (low
    loss on them), so B's losses call those clean. Returns labels, truth, losses_a, losses_b,
    memorised (N,) bool."""
    r = np.random.default_rng(seed)
    truth = r.integers(0, K, n)
    noisy = r.random(n) < noise
    labels = np.where(noisy, (truth + r.integers(1, K, n)) % K, truth)
    losses_a = np.where(noisy, r.normal(3.0, 0.3, n), r.normal(0.3, 0.1, n)).clip(0.01)
    memorised = noisy & (r.random(n) < 0.5)
    losses_b = np.where(noisy & ~memorised, r.normal(3.0, 0.3, n),
                        r.normal(0.3, 0.1, n)).clip(0.01)
    return labels, truth, losses_a, losses_b, noisy, memorised


def test_each_network_is_labelled_by_the_other_networks_losses():
    labels, truth, losses_a, losses_b, noisy, memorised = _noisy_losses()
    opts = dict(num_classes=K, selector="gmm", normalize="per_class", p_clean=0.5, seed=1)
    mask_a, mask_b, prob_a, prob_b = co_divide_masks(losses_a, losses_b, labels, **opts)
    from_a = selection.split_training_set(losses_a, labels, **opts)
    from_b = selection.split_training_set(losses_b, labels, **opts)
    # A's labelled set is the selection computed from B's losses, and the reverse.
    np.testing.assert_array_equal(mask_a, from_b.labelled)
    np.testing.assert_array_equal(mask_b, from_a.labelled)
    np.testing.assert_allclose(prob_a, from_b.clean_prob)
    np.testing.assert_allclose(prob_b, from_a.clean_prob)
    # The two selections differ, so unswapped masks would fail the checks above: B's losses
    # call B's memorised noisy samples clean, A's do not.
    assert not np.array_equal(from_a.labelled, from_b.labelled)
    assert mask_a[memorised].mean() > 0.9  # A trains on what B memorised...
    assert mask_b[memorised].mean() < 0.1  # ...B does not: A's losses flag them
    assert not mask_b[noisy].any() and mask_b[~noisy].mean() > 0.95  # A's losses: the truth


def test_co_divide_splits_scores_and_priors_come_from_the_deciding_network():
    labels, truth, losses_a, losses_b, noisy, _ = _noisy_losses()
    r = np.random.default_rng(2)
    probs_a, probs_b = r.dirichlet(np.ones(K), len(labels)), r.dirichlet(np.ones(K), len(labels))
    for_a, for_b = co_divide_splits(np.stack([losses_a, losses_a]), losses_b, labels,
                                    num_classes=K, pred_probs_a=probs_a, pred_probs_b=probs_b,
                                    true_labels=truth, window=2)
    ref_a = selection.split_training_set(losses_b, labels, num_classes=K, pred_probs=probs_b)
    np.testing.assert_allclose(for_a.clean_prior, ref_a.clean_prior)
    assert for_b.scores["auc"] > 0.99  # A's losses separate the injected noise


def test_co_refine_mixes_label_and_own_prediction_by_the_other_networks_clean_prob():
    labels = np.array([0, 1, 2])
    views = np.array([[[0.1, 0.7, 0.1, 0.1], [0.2, 0.2, 0.2, 0.4], [0.25] * 4],
                      [[0.3, 0.5, 0.1, 0.1], [0.2, 0.2, 0.2, 0.4], [0.25] * 4]])  # (V=2, 3, 4)
    w = np.array([1.0, 0.0, 0.5])
    got = np.asarray(co_refine(labels, views, w, num_classes=K, temperature=1.0))
    mean = views.mean(0)
    np.testing.assert_allclose(got[0], [1, 0, 0, 0], atol=1e-6)  # clean: the label
    np.testing.assert_allclose(got[1], mean[1], atol=1e-6)  # noisy: the own prediction
    np.testing.assert_allclose(got[2], 0.5 * np.eye(K)[2] + 0.5 * mean[2], atol=1e-6)
    # T = 0.5 squares and renormalises.
    sharp = np.asarray(co_refine(labels, views, w, num_classes=K, temperature=0.5))
    raw = 0.5 * np.eye(K)[2] + 0.5 * mean[2]
    np.testing.assert_allclose(sharp[2], raw ** 2 / (raw ** 2).sum(), atol=1e-6)


def test_co_guess_sharpens_the_mean_of_both_networks():
    pa = np.array([[[0.6, 0.2, 0.1, 0.1]], [[0.4, 0.4, 0.1, 0.1]]])  # (V=2, B=1, K)
    pb = np.array([[0.1, 0.7, 0.1, 0.1]])  # (B=1, K): one view
    got = np.asarray(co_guess(pa, pb, temperature=0.5))
    mean = 0.5 * (pa.mean(0) + pb)
    np.testing.assert_allclose(got, mean ** 2 / (mean ** 2).sum(-1, keepdims=True), atol=1e-6)
    # Both networks count: B's vote moves the guess from A's class 0 to class 1.
    assert got.argmax(-1)[0] == 1 and pa.mean(0).argmax(-1)[0] == 0
    np.testing.assert_allclose(np.asarray(sharpen(mean, temperature=1.0)), mean, atol=1e-6)
    with pytest.raises(ValueError, match="Received: temperature=0"):
        sharpen(mean, temperature=0)
