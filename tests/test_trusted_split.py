"""The trusted split's array functions on injected structured noise with known truth."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ferkeras.noise import trusted_split as ts

K = 4
# structured, class-dependent noise (row = clean label, column = given label): class 2 is
# mostly given as 3 (like FER2013's fear -> sad), class 0 almost clean
T_TRUE = np.array([[0.95, 0.03, 0.01, 0.01],
                   [0.10, 0.80, 0.05, 0.05],
                   [0.05, 0.05, 0.35, 0.55],
                   [0.02, 0.08, 0.10, 0.80]])
PRIOR = np.array([0.45, 0.3, 0.15, 0.10])  # long-tailed


def _world(n, seed):
    """(true labels, given labels, clean posterior, a noisy-trained model's probabilities)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(K, size=n, p=PRIOR)
    given = np.array([rng.choice(K, p=T_TRUE[c]) for c in y])
    logits = 2.5 * np.eye(K)[y] + rng.normal(0, 1.0, (n, K))
    clean = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    noisy = clean @ T_TRUE  # what a model fitted to the given labels estimates
    return y, given, clean, noisy


def test_label_posterior_is_bayes_rule():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    T = np.array([[0.8, 0.2], [0.4, 0.6]])
    post = ts.label_posterior(p, np.array([0, 1]), T)
    # row 0, given 0: (0.5*0.8, 0.5*0.4) / 0.6 ; row 1, given 1: (0.9*0.2, 0.1*0.6) / 0.24
    np.testing.assert_allclose(post, [[0.4 / 0.6, 0.2 / 0.6], [0.18 / 0.24, 0.06 / 0.24]])


def test_label_posterior_rejects_bad_shapes():
    with pytest.raises(ValueError, match="transition must be"):
        ts.label_posterior(np.full((2, 3), 1 / 3), np.array([0, 1]), np.eye(2))
    with pytest.raises(ValueError, match="given must lie"):
        ts.label_posterior(np.full((2, 2), 0.5), np.array([0, 2]), np.eye(2))


def test_thresholds_separate_each_class_and_fall_back_when_small():
    rng = np.random.default_rng(0)
    given = np.repeat([0, 1, 2], [60, 60, 5])
    is_clean = rng.random(len(given)) < 0.6
    # class 0 separable at 0.7, class 1 at 0.3; class 2 too small -> default
    score = np.where(given == 0, np.where(is_clean, 0.8, 0.6), np.where(is_clean, 0.4, 0.2))
    th = ts.calibrate_class_thresholds(score, is_clean, given, num_classes=3, default=0.5)
    assert 0.6 < th[0] <= 0.8 and 0.2 < th[1] <= 0.4 and th[2] == 0.5


def test_cross_fit_is_out_of_fold():
    y, _, _, noisy = _world(400, 1)
    oof = ts.cross_fit_clean_probs(noisy, y, folds=5, seed=0)
    assert oof.shape == noisy.shape
    np.testing.assert_allclose(oof.sum(1), 1.0, atol=1e-6)
    # labels that carry no signal: a fit scored on its own rows looks better than chance,
    # the out-of-fold one does not
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(K), size=200)
    labels = rng.integers(0, K, 200)
    in_sample = ts.tr.apply_recalibration(probs, *ts.tr.fit_recalibration(probs, labels, c=100))
    oof = ts.cross_fit_clean_probs(probs, labels, folds=5, seed=0, c=100)
    acc = lambda p: (p.argmax(1) == labels).mean()  # noqa: E731
    assert acc(oof) < acc(in_sample) - 0.03


def test_trusted_split_finds_injected_flips_better_than_the_given_label_probability():
    y, given, _, noisy = _world(6000, 2)
    ty, tgiven, _, tnoisy = _world(600, 3)
    out = ts.trusted_split(noisy, given, tnoisy, ty, tgiven, num_classes=K, seed=0)
    is_clean = y == given
    auc = roc_auc_score(is_clean, out.clean_prob)
    baseline = roc_auc_score(is_clean, noisy[np.arange(len(y)), given])
    assert auc > 0.85 and auc > baseline + 0.03
    # the class whose label is mostly wrong (given 3 holds many true 2s) is flagged more
    flagged = lambda c: (~out.labelled[given == c]).mean()  # noqa: E731
    assert flagged(3) > flagged(0)
    # the split keeps clean rows: precision of the kept set well above the base rate
    assert is_clean[out.labelled].mean() > is_clean.mean() + 0.05
    # T recovered from the trusted counts; the trusted rows' own AUC is reported
    assert np.abs(out.transition - T_TRUE).max() < 0.2
    assert out.trusted_auc is not None and out.trusted_auc > 0.8
    # the corrected targets put more mass on the true class than the given labels do
    assert (out.posterior.argmax(1) == y).mean() > (given == y).mean()
