"""Transition matrices, clean priors and prior-aware decisions on injected structured noise."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ferkeras.noise import transition as tr

K = 4
# Structured, FER2013-like noise: class 0 ("neutral") leaks into 1 and 2, class 3 into 2;
# the diagonal stays the largest entry of each row.
T_TRUE = np.array([
    [0.55, 0.25, 0.15, 0.05],
    [0.05, 0.85, 0.05, 0.05],
    [0.02, 0.08, 0.85, 0.05],
    [0.03, 0.02, 0.30, 0.65],
])
PI_CLEAN = np.array([0.45, 0.25, 0.05, 0.25])


def _world(n=6000, seed=0, sharp=6.0):
    """Clean labels from PI_CLEAN, clean posteriors from a softmax over noisy class scores,
    noisy labels drawn through T_TRUE. Returns clean, noisy, clean_probs, noisy_probs."""
    rng = np.random.default_rng(seed)
    clean = rng.choice(K, size=n, p=PI_CLEAN)
    scores = rng.normal(size=(n, K)) + sharp * np.eye(K)[clean] * rng.uniform(0.2, 1.5, (n, 1))
    lik = np.exp(scores - scores.max(1, keepdims=True))
    post = lik * PI_CLEAN
    post /= post.sum(1, keepdims=True)
    noisy = np.array([rng.choice(K, p=T_TRUE[c]) for c in clean])
    return clean, noisy, post, post @ T_TRUE


def test_anchor_points_recover_the_transition_matrix():
    _, _, _, noisy_probs = _world()
    T = tr.estimate_transition_anchors(noisy_probs)
    assert np.abs(T - T_TRUE).max() < 0.06
    # the identity (what "no noise" would say) is far worse
    assert np.abs(np.eye(K) - T_TRUE).max() > 0.3


def test_trusted_estimates_recover_the_transition_matrix():
    clean, noisy, _, noisy_probs = _world(seed=1, sharp=14.0)
    trusted = np.arange(800)
    T_glc = tr.estimate_transition_trusted(noisy_probs[trusted], clean[trusted], num_classes=K)
    T_cnt = tr.estimate_transition_counts(noisy[trusted], clean[trusted], num_classes=K)
    # GLC averages posteriors: exact up to the posteriors' own blur (small when sharp)
    assert np.abs(T_glc - T_TRUE).max() < 0.08
    assert np.abs(T_cnt - T_TRUE).max() < 0.1
    assert np.allclose(T_cnt.sum(1), 1)


def test_clean_prior_inverts_the_noisy_prior():
    rho = PI_CLEAN @ T_TRUE
    assert np.abs(rho - PI_CLEAN).max() > 0.1  # the noise really moves the prior
    pi = tr.clean_prior_from_transition(rho, T_TRUE)
    assert np.allclose(pi, PI_CLEAN, atol=1e-6)


def test_prior_shift_raises_accuracy_under_the_target_prior():
    # ambiguous faces (weak evidence), where the prior decides many rows; with sharp evidence
    # the shift can over-correct and backward correction is the right tool (next test)
    clean, noisy, clean_probs, noisy_probs = _world(seed=2, sharp=1.0)
    rho = np.bincount(noisy, minlength=K) / len(noisy)
    shifted = tr.shift_prior(noisy_probs, source_prior=rho, target_prior=PI_CLEAN)
    base_acc = (noisy_probs.argmax(1) == clean).mean()
    shifted_acc = (shifted.argmax(1) == clean).mean()
    assert shifted_acc > base_acc + 0.02
    # the logit-bias form is the same rule
    bias = tr.prior_shift_bias(source_prior=rho, target_prior=PI_CLEAN)
    z = np.log(noisy_probs) + bias
    assert (z.argmax(1) == shifted.argmax(1)).all()


def test_backward_correction_recovers_clean_posteriors():
    clean, _, clean_probs, noisy_probs = _world(seed=3, sharp=2.0)
    corrected = tr.correct_posteriors(noisy_probs, T_TRUE)
    assert np.abs(corrected - clean_probs).max() < 1e-6
    assert (corrected.argmax(1) == clean).mean() > (noisy_probs.argmax(1) == clean).mean()


def test_label_clean_probability_detects_wrong_labels():
    clean, noisy, clean_probs, noisy_probs = _world(seed=4)
    is_clean = noisy == clean
    score = tr.label_clean_probability(clean_probs, noisy, T_TRUE)
    naive = noisy_probs[np.arange(len(noisy)), noisy]  # small-loss score
    auc, naive_auc = roc_auc_score(is_clean, score), roc_auc_score(is_clean, naive)
    assert auc > 0.85 and auc > naive_auc
    # calibrated: the mean score matches the clean rate
    assert abs(score.mean() - is_clean.mean()) < 0.03


def test_recalibration_learns_the_clean_decision_on_trusted_rows():
    clean, _, _, noisy_probs = _world(seed=5, sharp=1.0)
    W, b = tr.fit_recalibration(noisy_probs[:1500], clean[:1500], c=10.0)
    probs = tr.apply_recalibration(noisy_probs[1500:], W, b)
    assert np.allclose(probs.sum(1), 1)
    acc = (probs.argmax(1) == clean[1500:]).mean()
    assert acc > (noisy_probs[1500:].argmax(1) == clean[1500:]).mean() + 0.02


@pytest.mark.parametrize("bad", [np.ones((3, 3)), np.full((3,), 1 / 3), np.eye(3)[:, :2]])
def test_bad_inputs_name_the_problem(bad):
    with pytest.raises(ValueError):
        tr.estimate_transition_anchors(bad)
    with pytest.raises(ValueError, match="T must be"):
        tr.correct_posteriors(np.full((2, 3), 1 / 3), np.eye(4))
