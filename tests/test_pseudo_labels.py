"""Pseudo-label masks, FlexMatch thresholds and distribution alignment on known values."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import ops  # noqa: E402

from ferkeras.trainers import pseudo_labels as pl  # noqa: E402

PROBS = np.array(
    [[0.96, 0.02, 0.02], [0.50, 0.40, 0.10], [0.05, 0.05, 0.90], [0.10, 0.60, 0.30]],
    dtype="float32",
)


def as_np(x):
    return ops.convert_to_numpy(x)


def test_fixed_threshold_mask():
    pseudo, mask = pl.fixed_threshold_mask(PROBS, threshold=0.9)
    np.testing.assert_array_equal(as_np(pseudo), [0, 0, 2, 1])
    np.testing.assert_array_equal(as_np(mask), [1.0, 0.0, 1.0, 0.0])
    assert as_np(pseudo).dtype == np.int32 and as_np(mask).dtype == np.float32
    with pytest.raises(ValueError, match="Received: 1.5"):
        pl.fixed_threshold_mask(PROBS, threshold=1.5)


def test_class_adaptive_thresholds_flexmatch_values():
    thresholds = as_np(pl.class_adaptive_thresholds([100, 50, 0], threshold=0.95, num_unused=20))
    # beta = [1, 0.5, 0]; M(x) = x / (2 - x) = [1, 1/3, 0].
    np.testing.assert_allclose(thresholds, [0.95, 0.95 / 3, 0.0], rtol=1e-6)
    # Under-learned classes get lower thresholds; the best-learned one reaches tau.
    assert thresholds[0] > thresholds[1] > thresholds[2]


def test_class_adaptive_thresholds_warmup_and_empty_state():
    warm = as_np(pl.class_adaptive_thresholds([100, 50, 0], threshold=0.95, num_unused=200))
    np.testing.assert_allclose(warm, 0.95 * np.array([0.5 / 1.5, 0.25 / 1.75, 0.0]), rtol=1e-6)
    cold = as_np(
        pl.class_adaptive_thresholds([100, 50, 0], threshold=0.95, num_unused=200, warmup=False)
    )
    np.testing.assert_allclose(cold, [0.95, 0.95 / 3, 0.0], rtol=1e-6)
    start = as_np(pl.class_adaptive_thresholds([0, 0, 0], threshold=0.95, num_unused=500))
    np.testing.assert_array_equal(start, [0.0, 0.0, 0.0])


def test_adaptive_threshold_mask_uses_threshold_of_predicted_class():
    pseudo, mask = pl.adaptive_threshold_mask(PROBS, thresholds=[0.97, 0.55, 0.5])
    np.testing.assert_array_equal(as_np(pseudo), [0, 0, 2, 1])
    np.testing.assert_array_equal(as_np(mask), [0.0, 0.0, 1.0, 1.0])


def test_update_selected_labels_and_count_learning_effect():
    selected = np.array([-1, 1, -1, 2, -1, -1], dtype="int32")
    new = as_np(pl.update_selected_labels(selected, [3, 0, 5, 1], PROBS, threshold=0.9))
    # index 3 <- 0 (0.96), index 0 keeps -1 (0.50), index 5 <- 2 (0.90), index 1 keeps 1.
    np.testing.assert_array_equal(new, [-1, 1, -1, 0, -1, 2])
    assert selected[3] == 2  # pure: the input is untouched
    effect, unused = pl.count_learning_effect(new, num_classes=4)
    np.testing.assert_array_equal(as_np(effect), [1, 1, 1, 0])
    assert float(unused) == 3.0
    pool = np.array([True, True, False, True, False, False])
    effect, unused = pl.count_learning_effect(new, num_classes=4, pool_mask=pool)
    np.testing.assert_array_equal(as_np(effect), [1, 1, 0, 0])
    assert float(unused) == 1.0


def test_align_distribution_shifts_mass_toward_target_prior():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([8.0, 1.0, 1.0], size=64).astype("float32")  # over-predicts class 0
    model_prior = probs.mean(axis=0)
    target = np.array([0.4, 0.3, 0.3])
    aligned = as_np(pl.align_distribution(probs, target_prior=target, model_prior=model_prior))
    np.testing.assert_allclose(aligned.sum(axis=1), 1.0, rtol=1e-5)
    before, after = np.abs(model_prior - target).sum(), np.abs(aligned.mean(0) - target).sum()
    assert aligned.mean(0)[0] < model_prior[0] and after < 0.5 * before
    same = pl.align_distribution(probs, target_prior=model_prior, model_prior=model_prior)
    np.testing.assert_allclose(as_np(same), probs, rtol=1e-5)


def test_align_distribution_temperature_flattens_target():
    probs = np.full((2, 2), 0.5, dtype="float32")
    uniform_model = np.array([0.5, 0.5])
    t1 = as_np(pl.align_distribution(probs, target_prior=[0.8, 0.2], model_prior=uniform_model))
    np.testing.assert_allclose(t1, [[0.8, 0.2]] * 2, rtol=1e-5)
    t_half = pl.align_distribution(
        probs, target_prior=[0.8, 0.2], model_prior=uniform_model, temperature=0.5
    )
    np.testing.assert_allclose(as_np(t_half), [[2 / 3, 1 / 3]] * 2, rtol=1e-5)
    t0 = pl.align_distribution(
        probs, target_prior=[0.8, 0.2], model_prior=uniform_model, temperature=0.0
    )
    np.testing.assert_allclose(as_np(t0), probs, rtol=1e-6)


def test_update_model_prior_is_ema_of_batch_mean():
    prior = np.full(3, 1 / 3, dtype="float32")
    out = as_np(pl.update_model_prior(prior, PROBS, momentum=0.9))
    np.testing.assert_allclose(out, 0.9 * prior + 0.1 * PROBS.mean(0), rtol=1e-6)
    np.testing.assert_allclose(
        as_np(pl.update_model_prior(prior, PROBS, momentum=0.0)), PROBS.mean(0), rtol=1e-6
    )
    assert out.sum() == pytest.approx(1.0, rel=1e-6)


def test_pseudo_label_step_inside_tf_function_matches_eager():
    import tensorflow as tf

    state = tf.Variable(np.full(6, -1, dtype="int32"))
    prior = tf.Variable(np.full(3, 1 / 3, dtype="float32"))
    target = np.array([0.5, 0.3, 0.2], dtype="float32")

    def step(index, probs):
        new_prior = pl.update_model_prior(prior, probs)
        probs = pl.align_distribution(probs, target_prior=target, model_prior=new_prior)
        selected = pl.update_selected_labels(state, index, probs, threshold=0.9)
        effect, unused = pl.count_learning_effect(selected, num_classes=3)
        thresholds = pl.class_adaptive_thresholds(effect, threshold=0.9, num_unused=unused)
        return (selected, *pl.adaptive_threshold_mask(probs, thresholds=thresholds))

    index = tf.constant([4, 0, 2, 1])
    eager = step(index, tf.constant(PROBS))
    traced = tf.function(step)(index, tf.constant(PROBS))
    for e, t in zip(eager, traced, strict=True):
        np.testing.assert_allclose(as_np(e), as_np(t), rtol=1e-6)
    # Row 0 (0.96 on class 0) stays confident; row 2 (0.90 on class 2) drops below 0.9
    # because alignment pulls class 2 toward its 0.2 target.
    np.testing.assert_array_equal(as_np(traced[0]), [-1, -1, -1, -1, 0, -1])
    # One confident sample of six: thresholds [0.1, 0, 0], so early on every row passes.
    np.testing.assert_array_equal(as_np(traced[2]), [1.0, 1.0, 1.0, 1.0])


def test_update_model_prior_with_mask_averages_the_masked_rows_only():
    prior = np.full(3, 1 / 3, dtype="float32")
    mask = np.array([0, 1, 0, 1], "float32")
    out = as_np(pl.update_model_prior(prior, PROBS, momentum=0.9, mask=mask))
    np.testing.assert_allclose(out, 0.9 * prior + 0.1 * PROBS[[1, 3]].mean(0), rtol=1e-6)
    # an all-labelled batch leaves the prior as it was
    np.testing.assert_allclose(
        as_np(pl.update_model_prior(prior, PROBS, momentum=0.9, mask=np.zeros(4))), prior)


def test_update_selected_labels_with_mask_records_the_masked_rows_only():
    state = np.full(6, -1, "int32")
    out = as_np(pl.update_selected_labels(state, np.array([4, 0, 2, 1]), PROBS, threshold=0.9,
                                          mask=np.array([1, 1, 0, 1], "float32")))
    np.testing.assert_array_equal(out, [-1, -1, -1, -1, 0, -1])  # row 2 is confident, masked


def test_cycle_trainer_runs_the_tested_pseudo_label_functions():
    """The trainer's global-state update is `update_model_prior` / `update_selected_labels`
    with the unlabelled rows as mask, and that differs from the all-rows mean."""
    import keras
    import tensorflow as tf

    from ferkeras.trainers.cycle import CycleTrainer

    inputs = keras.Input((4,))
    network = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    trainer = CycleTrainer(network, num_classes=3, num_samples=6, threshold=0.9,
                           threshold_mode="adaptive")
    prior0 = as_np(trainer.model_prior).copy()
    index = tf.constant([4, 0, 2, 1])
    unlab = tf.constant([1.0, 0.0, 1.0, 1.0])
    trainer._update_global_state(tf.constant(PROBS), index, unlab)
    expected = as_np(pl.update_model_prior(prior0, PROBS, momentum=0.999, mask=unlab))
    np.testing.assert_allclose(as_np(trainer.model_prior), expected, rtol=1e-6)
    all_rows = as_np(pl.update_model_prior(prior0, PROBS, momentum=0.999))
    assert np.abs(expected - all_rows).max() > 1e-5
    selected = pl.update_selected_labels(np.full(6, -1, "int32"), index, PROBS, threshold=0.9,
                                         mask=unlab)
    np.testing.assert_array_equal(as_np(trainer.selected_labels), as_np(selected))
    np.testing.assert_array_equal(as_np(selected), [-1, -1, 2, -1, 0, -1])  # row 1: labelled
