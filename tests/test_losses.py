"""Long-tail losses against hand-computed NumPy values, eagerly and inside tf.function."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import ops  # noqa: E402

from ferkeras import losses  # noqa: E402

LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 5.0]])
LABELS = np.array([0, 2, 1, 0])
COUNTS = np.array([900, 90, 10])


def np_cross_entropy(labels, logits):
    logsumexp = np.log(np.exp(logits).sum(axis=-1))
    return logsumexp - logits[np.arange(len(labels)), labels]


def as_np(x):
    return ops.convert_to_numpy(x)


def test_cross_entropy_matches_numpy():
    out = as_np(losses.cross_entropy(LABELS, LOGITS))
    assert out.shape == (4,) and out.dtype == np.float32
    np.testing.assert_allclose(out, np_cross_entropy(LABELS, LOGITS), rtol=1e-5)


def test_cross_entropy_label_smoothing_matches_numpy():
    s, k = 0.1, 3
    targets = np.eye(k)[LABELS] * (1 - s) + s / k
    logp = LOGITS - np.log(np.exp(LOGITS).sum(-1, keepdims=True))
    expected = -(targets * logp).sum(-1)
    out = losses.cross_entropy(LABELS, LOGITS, label_smoothing=s, num_classes=3)
    np.testing.assert_allclose(as_np(out), expected, rtol=1e-5)


def test_soft_labels_equal_int_labels_when_one_hot():
    soft = np.eye(3, dtype="float32")[LABELS]
    np.testing.assert_allclose(
        as_np(losses.cross_entropy(soft, LOGITS)),
        as_np(losses.cross_entropy(LABELS, LOGITS)),
        rtol=1e-6,
    )
    half = np.array([[0.5, 0.5, 0.0]] * 4, dtype="float32")
    expected = 0.5 * (np_cross_entropy([0] * 4, LOGITS) + np_cross_entropy([1] * 4, LOGITS))
    np.testing.assert_allclose(as_np(losses.cross_entropy(half, LOGITS)), expected, rtol=1e-5)


def test_logit_adjusted_matches_numpy_and_reduces_to_ce():
    log_prior = losses.log_prior_from_counts(COUNTS, smoothing=0.0)
    tau = 0.7
    out = losses.logit_adjusted_cross_entropy(LABELS, LOGITS, log_prior=log_prior, tau=tau)
    np.testing.assert_allclose(
        as_np(out), np_cross_entropy(LABELS, LOGITS + tau * log_prior), rtol=1e-5
    )
    ce = as_np(losses.cross_entropy(LABELS, LOGITS))
    zero = losses.logit_adjusted_cross_entropy(LABELS, LOGITS, log_prior=np.zeros(3))
    np.testing.assert_allclose(as_np(zero), ce, rtol=1e-6)
    tau0 = losses.logit_adjusted_cross_entropy(LABELS, LOGITS, log_prior=log_prior, tau=0.0)
    np.testing.assert_allclose(as_np(tau0), ce, rtol=1e-6)
    # The head logit gets a head start: head-labelled losses fall, tail-labelled ones rise,
    # so training must learn a larger margin for the tail.
    out = as_np(out)
    assert out[0] < ce[0] and out[1] > ce[1]


def test_balanced_softmax_equals_logit_adjustment_with_tau_one():
    log_prior = losses.log_prior_from_counts(COUNTS)
    bs = losses.balanced_softmax_cross_entropy(LABELS, LOGITS, log_prior=log_prior)
    la = losses.logit_adjusted_cross_entropy(LABELS, LOGITS, log_prior=log_prior, tau=1.0)
    np.testing.assert_allclose(as_np(bs), as_np(la), rtol=1e-6)
    prior = np.exp(log_prior)  # Ren et al.'s form: pi_j e^z_j / sum_k pi_k e^z_k
    weighted = prior * np.exp(LOGITS)
    expected = -np.log(weighted[np.arange(4), LABELS] / weighted.sum(-1))
    np.testing.assert_allclose(as_np(bs), expected, rtol=1e-5)


def test_class_balanced_weights_known_counts():
    beta = 0.9
    effective = (1 - beta ** COUNTS.astype(float)) / (1 - beta)
    expected = (1 / effective) * 3 / (1 / effective).sum()
    weights = losses.class_balanced_weights(COUNTS, beta=beta)
    np.testing.assert_allclose(weights, expected, rtol=1e-10)
    assert weights.sum() == pytest.approx(3.0)
    np.testing.assert_allclose(losses.class_balanced_weights(COUNTS, beta=0.0), [1, 1, 1])
    inverse = losses.class_balanced_weights(COUNTS, beta=1.0)
    np.testing.assert_allclose(inverse / inverse[0], [1, 10, 90])
    near_one = losses.class_balanced_weights(COUNTS, beta=0.999999)
    np.testing.assert_allclose(near_one, inverse, rtol=1e-3)


def test_class_balanced_weights_errors_name_the_class():
    with pytest.raises(ValueError, match="class 1"):
        losses.class_balanced_weights([5, 0, 3], beta=0.99)
    with pytest.raises(ValueError, match="Received: 1.5"):
        losses.class_balanced_weights([5, 1, 3], beta=1.5)


def test_class_balanced_cross_entropy_scales_by_label_weight():
    weights = losses.class_balanced_weights(COUNTS, beta=0.99)
    out = losses.class_balanced_cross_entropy(LABELS, LOGITS, weights=weights)
    expected = weights[LABELS] * np_cross_entropy(LABELS, LOGITS)
    np.testing.assert_allclose(as_np(out), expected, rtol=1e-5)
    soft = np.array([[0.5, 0.5, 0.0]], dtype="float32")
    out_soft = losses.class_balanced_cross_entropy(soft, LOGITS[:1], weights=weights)
    ce_soft = as_np(losses.cross_entropy(soft, LOGITS[:1]))
    np.testing.assert_allclose(
        as_np(out_soft), 0.5 * (weights[0] + weights[1]) * ce_soft, rtol=1e-5
    )


def test_log_prior_from_counts():
    log_prior = losses.log_prior_from_counts([3, 1, 0], smoothing=1.0)
    np.testing.assert_allclose(np.exp(log_prior), [4 / 7, 2 / 7, 1 / 7])
    with pytest.raises(ValueError, match="class 2"):
        losses.log_prior_from_counts([3, 1, 0], smoothing=0.0)


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"Received shape: \(2,\)"):
        losses.logit_adjusted_cross_entropy(LABELS, LOGITS, log_prior=np.zeros(2))
    with pytest.raises(ValueError, match="Received: 5"):
        losses.cross_entropy(LABELS, LOGITS, num_classes=5)
    with pytest.raises(ValueError, match="Received: 1.0"):
        losses.cross_entropy(LABELS, LOGITS, label_smoothing=1.0)


def test_losses_inside_tf_function_match_eager_and_accept_float16():
    import tensorflow as tf

    log_prior = losses.log_prior_from_counts(COUNTS)
    weights = losses.class_balanced_weights(COUNTS, beta=0.999)

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 3], tf.float16)]
    )
    def traced(labels, logits):
        return (
            losses.cross_entropy(labels, logits, label_smoothing=0.1),
            losses.logit_adjusted_cross_entropy(labels, logits, log_prior=log_prior, tau=1.5),
            losses.class_balanced_cross_entropy(labels, logits, weights=weights),
        )

    logits16 = LOGITS.astype("float16")
    got = traced(tf.constant(LABELS, tf.int32), tf.constant(logits16))
    want = (
        losses.cross_entropy(LABELS, logits16, label_smoothing=0.1),
        losses.logit_adjusted_cross_entropy(LABELS, logits16, log_prior=log_prior, tau=1.5),
        losses.class_balanced_cross_entropy(LABELS, logits16, weights=weights),
    )
    for g, w in zip(got, want, strict=True):
        assert g.dtype == tf.float32 and g.shape == (4,)
        np.testing.assert_allclose(g.numpy(), as_np(w), rtol=1e-6)
