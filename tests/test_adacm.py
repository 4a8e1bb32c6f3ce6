"""Ada-CM (Li et al., CVPR 2022): margins are the per-class mean confidence of correctly
predicted labelled samples; the contrastive term prefers matching view pairs and pulls them
together; low-confidence unlabelled samples still train (through the contrastive term); the
recipe path trains with `cycle.threshold_mode: ada_cm`."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from ferkeras.methods.ada_cm import core as A

K, S = 3, 16


def test_margins_are_the_mean_confidence_of_correct_labelled_predictions():
    conf = np.array([0.9, 0.7, 0.6, 0.8, 0.99, 0.5, 0.95], np.float32)
    labels = np.array([0, 0, 1, 1, 2, 0, 1])
    preds = np.array([0, 0, 1, 2, 0, 1, 1])  # rows 3, 4, 5 are wrong: ignored
    got = keras.ops.convert_to_numpy(A.adaptive_margins(conf, labels, preds, num_classes=K))
    np.testing.assert_allclose(got, [0.8, (0.6 + 0.95) / 2, 0.0], atol=1e-6)
    # the mask drops rows (here the 0.95 one of class 1)
    mask = np.array([1, 1, 1, 1, 1, 1, 0])
    got = keras.ops.convert_to_numpy(A.adaptive_margins(conf, labels, preds, num_classes=K,
                                                        mask=mask))
    np.testing.assert_allclose(got, [0.8, 0.6, 0.0], atol=1e-6)
    # the paper's schedule and floor: max(floor, 0.97 / (1 + e^-t) * mean), floor if none
    got = keras.ops.convert_to_numpy(A.adaptive_margins(
        conf, labels, preds, num_classes=K, epoch=3, floor=0.5))
    beta = 0.97 / (1 + math.exp(-3))
    np.testing.assert_allclose(got, [beta * 0.8, max(0.5, beta * 0.775), 0.5], atol=1e-6)
    assert A.margin_schedule(0) == pytest.approx(0.485) and 0.96 < A.margin_schedule(5) < 0.97
    with pytest.raises(ValueError, match="floor"):
        A.margins_from_statistics([1.0], [1.0], floor=1.5)


def test_contrastive_loss_prefers_matching_pairs_and_pulls_them_together():
    r = np.random.default_rng(0)
    a = r.normal(size=(8, 5)).astype(np.float32)
    b = (a + 0.1 * r.normal(size=a.shape)).astype(np.float32)
    matched = keras.ops.convert_to_numpy(A.contrastive_loss(a, b))
    shuffled = keras.ops.convert_to_numpy(A.contrastive_loss(a, b[np.roll(np.arange(8), 1)]))
    assert matched.shape == (8,) and matched.mean() < shuffled.mean() - 1.0

    # a gradient step on the features raises each pair's cosine similarity
    fa, fb = tf.Variable(r.normal(size=(8, 5)).astype(np.float32)), tf.Variable(
        r.normal(size=(8, 5)).astype(np.float32))

    def cosine():
        na = fa / tf.norm(fa, axis=1, keepdims=True)
        nb = fb / tf.norm(fb, axis=1, keepdims=True)
        return tf.reduce_sum(na * nb, axis=1).numpy()

    before = cosine()
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(A.contrastive_loss(fa, fb, temperature=0.5))
        ga, gb = tape.gradient(loss, [fa, fb])
        fa.assign_sub(0.5 * ga)
        fb.assign_sub(0.5 * gb)
    after = cosine()
    assert (after > before).all() and after.mean() > before.mean() + 0.5

    # rows outside the mask: loss 0 and no influence on the others
    mask = np.array([1, 1, 1, 1, 1, 0, 0, 0], np.float32)
    base = keras.ops.convert_to_numpy(A.contrastive_loss(a, b, mask=mask))
    other = b.copy()
    other[5:] = r.normal(size=(3, 5))
    moved = keras.ops.convert_to_numpy(A.contrastive_loss(a, other, mask=mask))
    assert (base[5:] == 0).all()
    np.testing.assert_allclose(base, moved, atol=1e-6)
    # an all-zero feature row gives a finite gradient
    z = tf.Variable(np.zeros((4, 3), np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(A.contrastive_loss(z, z))
    assert np.isfinite(tape.gradient(loss, z).numpy()).all()


def _trainer(**kwargs):
    from ferkeras.methods.ada_cm.trainer import AdaCMTrainer
    from ferkeras.models import build_network
    from ferkeras.training.recipe import ModelConfig

    keras.utils.set_random_seed(1)
    net = build_network(ModelConfig(backbone="small_cnn", width=4, dropout=0.0),
                        input_shape=(S, S, 1), num_classes=K, seed=1)
    trainer = AdaCMTrainer(net, num_classes=K, num_samples=16, **kwargs)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    trainer.build_state((S, S, 1))
    return trainer


def _batch(seed=0):
    r = np.random.default_rng(seed)
    weak = r.uniform(0, 255, (16, S, S, 1)).astype(np.float32)
    strong = r.uniform(0, 255, (16, S, S, 1)).astype(np.float32)
    labels = (np.arange(16) % K).astype(np.int32)
    return (tf.constant(weak), tf.constant(strong)), tf.constant(labels), tf.range(16)


def _weights(trainer):
    return np.concatenate([w.numpy().ravel() for w in trainer.network.trainable_weights])


def test_low_confidence_unlabelled_samples_train_through_the_contrastive_term():
    data = _batch()
    out = {}
    for weight in (0.0, 0.1):
        trainer = _trainer(contrastive_weight=weight, min_threshold=0.0)
        trainer.set_split(np.zeros(16, bool), np.zeros(16), np.full(K, 1 / K))
        trainer.margins.assign(np.full(K, 1.01, np.float32))  # no sample reaches its margin
        w0 = _weights(trainer)
        logs = trainer.train_step(data)
        out[weight] = (np.abs(_weights(trainer) - w0).max(), logs)
    # every unlabelled sample is below its margin (subset II) ...
    assert float(out[0.1][1]["low_confidence_share"]) == 1.0
    assert float(out[0.1][1]["mask_rate"]) == 0.0
    # ... and they still move the network, through the contrastive term only
    assert float(out[0.1][1]["contrastive_loss"]) > 0
    assert out[0.1][0] > 1e-6 and out[0.0][0] == 0.0


def test_the_step_gathers_correct_labelled_confidences_and_epochs_set_margins():
    trainer = _trainer(min_threshold=0.0)
    trainer.set_split(np.ones(16, bool), np.ones(16), np.full(K, 1 / K))
    (weak, _), labels, _ = data = _batch()
    probs = tf.nn.softmax(trainer.network(weak, training=True)).numpy()
    want_sums, want_counts = A.margin_statistics(probs.max(1), labels.numpy(), probs.argmax(1),
                                                 num_classes=K)
    trainer.train_step(data)
    np.testing.assert_allclose(trainer.margin_sums.numpy(), want_sums, atol=1e-5)
    np.testing.assert_allclose(trainer.margin_counts.numpy(), want_counts)
    margins = trainer.update_margins(2)
    want = keras.ops.convert_to_numpy(A.margins_from_statistics(want_sums, want_counts,
                                                                epoch=2))
    np.testing.assert_allclose(margins, want, atol=1e-5)
    np.testing.assert_allclose(trainer.margins.numpy(), want, atol=1e-5)
    assert not trainer.margin_counts.numpy().any()  # statistics restart each epoch
    rebuilt = type(trainer).from_config(trainer.get_config())
    assert rebuilt.contrastive_weight == trainer.contrastive_weight
    assert rebuilt.threshold_mode == "ada_cm"
    with pytest.raises(ValueError, match="contrastive_temperature"):
        _trainer(contrastive_temperature=0.0)


def test_recipe_path_trains_one_epoch_with_ada_cm(tmp_path):
    from ferkeras.methods.ada_cm.trainer import AdaCMTrainer
    from ferkeras.training import train_recipe
    from ferkeras.training.loop import _make_trainer
    from ferkeras.training.recipe import recipe_from_dict

    recipe = recipe_from_dict({
        "name": "adacm", "seed": 0,
        "data": {"source": "synthetic", "image_size": 16,
                 "synthetic": {"n_train": 96, "n_val": 32, "n_test": 0, "noise": 0.3,
                               "profile": "uniform"}},
        "model": {"backbone": "small_cnn", "width": 4},
        "train": {"batch_size": 32, "loss": "ce"},
        "cycle": {"enabled": True, "warmup_epochs": 0, "cycles": 1, "epochs_per_cycle": 1,
                  "min_class_samples": 4, "method": "ada_cm", "min_threshold": 0.8,
                  "ada_cm": {"contrastive_weight": 0.2}},
    })
    metrics = train_recipe(recipe, run_dir=tmp_path / "run", verbose=0, echo=lambda *_: None)
    assert metrics["epochs"] == 1
    history = (tmp_path / "run" / "history.csv").read_text()
    assert "contrastive_loss" in history and "low_confidence_share" in history
    from ferkeras.data.sources import load_bundle
    from ferkeras.models import build_network

    bundle = load_bundle(recipe.data, seed=0)
    net = build_network(recipe.model, input_shape=(16, 16, 3 if recipe.data.channels == 3
                                                   else 1), num_classes=bundle.num_classes)
    trainer = _make_trainer(recipe, net, bundle)
    assert isinstance(trainer, AdaCMTrainer) and trainer.contrastive_weight == 0.2


def train_grid_variant(name, run_dir, *, epochs=3):
    """The noisy-grid variant `name`, tiny (width 4, 3 epochs, batch 64), through the grid's
    own recipe and bundle builders and `training.train`, on fake FER2013 tables."""
    import argparse
    import dataclasses
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
    import noisy_data
    import noisy_grid

    from ferkeras.training import train

    args = argparse.Namespace(model="small_cnn", width=4, epochs=epochs, limit_train=0)
    recipe = noisy_grid.make_recipe(name, noisy_grid.settings_for(name, args, 0), "unused")
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, batch_size=64))
    t = noisy_data.fake_tables(n_train=160, n_public=40)
    bundle, _ = noisy_grid.make_bundle(t, noisy_data.split_rows(t), name)
    return recipe, train(recipe, bundle, run_dir=run_dir, verbose=0, echo=lambda *_: None)


def test_margins_are_gathered_from_the_global_batch_under_two_replicas(mirrored_strategy):
    """The per-class statistics (and so the margins) of 2 replicas equal 1 replica's. With
    the contrastive weight 0 the whole step matches too (its NT-Xent negatives are
    per-replica, as in any data-parallel SimCLR without a feature all-gather)."""
    from ferkeras.methods.ada_cm.trainer import AdaCMTrainer

    n = 48
    r = np.random.default_rng(0)
    labels = (np.arange(n) % K).astype(np.int32)
    images = r.uniform(0, 255, (n, 12, 12, 1)).astype(np.float32)
    images[np.arange(n), labels * 3, :, 0] = 255.0
    data = tf.data.Dataset.from_tensor_slices(
        ((images, images[:, :, ::-1].copy()), labels, np.arange(n, dtype=np.int32))).batch(16)

    def run(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(3)
            inputs = keras.Input((12, 12, 1))
            x = keras.layers.Rescaling(1 / 255.0)(inputs)
            x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(x))
            x = keras.layers.Dropout(0.0, name="head_dropout")(x)
            net = keras.Model(inputs, keras.layers.Dense(K)(x))
            trainer = AdaCMTrainer(net, num_classes=K, num_samples=n, min_threshold=0.0,
                                   contrastive_weight=0.0)
            trainer.compile(optimizer=keras.optimizers.SGD(0.05))
            trainer.build_state((12, 12, 1))
        mask = np.arange(n) % 3 != 0
        trainer.set_split(mask, mask.astype(float), np.full(K, 1 / K))
        counts, update = [], trainer.update_margins

        def recording_update(epoch):  # the epoch's statistics, before they are reset
            counts.append(trainer.margin_counts.numpy().copy())
            return update(epoch)

        trainer.update_margins = recording_update
        trainer.fit(data, epochs=2, verbose=0, shuffle=False)
        trainer.epoch_counts = np.array(counts)
        return trainer

    one = run(tf.distribute.get_strategy())
    two = run(mirrored_strategy)
    assert one.margins.numpy().max() > 0  # set from correct predictions, not the floor
    np.testing.assert_allclose(one.margins.numpy(), two.margins.numpy(), atol=1e-5)
    np.testing.assert_array_equal(one.epoch_counts, two.epoch_counts)
    assert one.epoch_counts.sum() > 0
    np.testing.assert_allclose(_weights(one), _weights(two), atol=1e-5)
