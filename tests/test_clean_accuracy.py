"""De-biased validation accuracy and rank correlation (ferkeras.noise.clean_accuracy), on
injected class-conditional noise with known truth."""

import numpy as np
import pytest

from ferkeras.noise.clean_accuracy import (
    debiased_joint,
    debiased_scores,
    noisy_joint,
    rank_correlation,
)

K = 4
# class 0 (say neutral) is written as class 1 (say fear) 40 % of the time; class 2 as 3 20 %
T = np.eye(K)
T[0] = [0.6, 0.4, 0.0, 0.0]
T[2] = [0.0, 0.0, 0.8, 0.2]


def _noisy(clean, rng):
    return np.array([rng.choice(K, p=T[c]) for c in clean])


def _predict(clean, rng, *, acc):
    """Predictions with clean accuracy ~acc, errors spread uniformly over the other classes."""
    pred = clean.copy()
    wrong = rng.random(len(clean)) < 1 - acc
    target = (clean + rng.integers(1, K, len(clean))) % K
    pred[wrong] = target[wrong]
    return pred


def _memorise(clean, rng):
    """A model that learnt the noise: it writes class 0 as 1 (45 %) and 2 as 3 (40 %), as
    the annotators do, and is right elsewhere (clean accuracy ~0.79)."""
    pred = clean.copy()
    pred[(clean == 0) & (rng.random(len(clean)) < 0.45)] = 1
    pred[(clean == 2) & (rng.random(len(clean)) < 0.40)] = 3
    return pred


def test_noisy_accuracy_ranks_wrongly_and_the_debiased_signal_ranks_right():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, K, 20000)
    noisy = _noisy(clean, rng)
    honest = _predict(clean, rng, acc=0.85)
    memoriser = _memorise(clean, rng)  # less accurate on the clean labels
    acc = {n: float((p == clean).mean()) for n, p in (("h", honest), ("m", memoriser))}
    assert acc["h"] > acc["m"] + 0.03
    s_h, s_m = debiased_scores(honest, noisy, T), debiased_scores(memoriser, noisy, T)
    assert s_m["noisy_accuracy"] > s_h["noisy_accuracy"]  # the noisy signal is fooled
    assert s_h["accuracy"] > s_m["accuracy"]  # the de-biased one is not
    for got, p in ((s_h, honest), (s_m, memoriser)):
        assert got["accuracy"] == pytest.approx((p == clean).mean(), abs=0.015)
        bal = np.mean([(p[clean == c] == c).mean() for c in range(K)])
        assert got["balanced_accuracy"] == pytest.approx(bal, abs=0.02)


def test_debiased_joint_recovers_the_clean_joint():
    rng = np.random.default_rng(1)
    clean = rng.choice(K, 50000, p=[0.4, 0.1, 0.3, 0.2])  # imbalanced
    noisy = _noisy(clean, rng)
    pred = _predict(clean, rng, acc=0.7)
    J = debiased_joint(pred, noisy, T)
    truth = noisy_joint(pred, clean, num_classes=K)
    np.testing.assert_allclose(J, truth, atol=0.01)
    assert J.sum() == pytest.approx(1.0)


def test_identity_transition_gives_plain_accuracy():
    rng = np.random.default_rng(2)
    y = rng.integers(0, K, 300)
    pred = np.where(rng.random(300) < 0.6, y, (y + 1) % K)
    s = debiased_scores(pred, y, np.eye(K))
    assert s["accuracy"] == pytest.approx((pred == y).mean())
    assert s["accuracy"] == pytest.approx(s["noisy_accuracy"])


def test_bad_inputs_name_the_problem():
    y = np.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match="singular"):
        debiased_scores(y, y, np.full((K, K), 1 / K))
    with pytest.raises(ValueError, match="rows must be probability vectors"):
        debiased_scores(y, y, np.eye(K) * 2)
    with pytest.raises(ValueError, match=r"noisy_labels must lie in \[0, 4\)"):
        debiased_scores(y, np.array([0, 1, 2, 9]), np.eye(K))
    with pytest.raises(ValueError, match="equal-length"):
        debiased_scores(y, y[:3], np.eye(K))


def test_rank_correlation_matches_spearman():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    a = rng.normal(size=40)
    b = a + rng.normal(scale=0.8, size=40)
    b[:5] = b[5]  # ties
    assert rank_correlation(a, b) == pytest.approx(scipy_stats.spearmanr(a, b)[0])
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation([1.0], [2.0]))
    assert np.isnan(rank_correlation([1.0, 1.0], [2.0, 3.0]))
