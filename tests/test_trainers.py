"""Trainers: they learn, and 2 replicas on 2 logical CPUs match 1 replica."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ferkeras.models import build_network
from ferkeras.recipe import ModelConfig
from ferkeras.trainers.cycle import CycleTrainer
from ferkeras.trainers.supervised import SupervisedTrainer

K, N, S = 4, 64, 12


def _data(views=False, seed=0):
    r = np.random.default_rng(seed)
    labels = (np.arange(N) % K).astype(np.int32)
    images = r.uniform(0, 255, size=(N, S, S, 1)).astype(np.float32)
    images[np.arange(N), labels * 3, :, 0] = 255.0  # a class-coded bright row
    index = np.arange(N, dtype=np.int32)
    x = (images, np.flip(images, axis=2).copy()) if views else images
    return tf.data.Dataset.from_tensor_slices((x, labels, index)).batch(16, drop_remainder=True)


def _plain_network():
    """No BatchNorm: per-replica batch statistics would make 1 and 2 replicas differ."""
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((S, S, 1)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(6, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(K),
    ])


def _initial_weights():
    return np.concatenate([w.numpy().ravel() for w in _plain_network().trainable_weights])


def _train(strategy, trainer_cls, views, **kwargs):
    with strategy.scope():
        net = _plain_network()
        trainer = trainer_cls(net, num_classes=K, **kwargs)
        trainer.compile(optimizer=keras.optimizers.SGD(0.05))
        trainer.build_state((S, S, 1))
    if isinstance(trainer, CycleTrainer):
        mask = np.ones(N, np.float32)
        mask[::3] = 0.0  # a third of the samples go to the unlabelled branch
        trainer.set_split(mask > 0.5, mask, np.full(K, 1.0 / K))
    hist = trainer.fit(_data(views), epochs=2, verbose=0, shuffle=False)
    return trainer, hist.history


def _strategies():
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(cpus) < 2:
        pytest.skip("needs 2 logical CPU devices (set up in conftest)")
    return tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(cpus[:2])


@pytest.mark.parametrize("loss", ["ce", "logit_adjusted", "class_balanced"])
def test_supervised_two_replicas_match_one(loss):
    one, two = _strategies()
    t1, h1 = _train(one, SupervisedTrainer, False, loss=loss, ema_decay=0.9)
    t2, h2 = _train(two, SupervisedTrainer, False, loss=loss, ema_decay=0.9)
    assert two.num_replicas_in_sync == 2
    # With the loss averaged over the global batch, summed replica gradients equal the
    # single-device gradient: same losses, same weights (to float32 reduction-order noise).
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-4)
    w0 = _initial_weights()
    w1 = np.concatenate([w.numpy().ravel() for w in t1.network.trainable_weights])
    w2 = np.concatenate([w.numpy().ravel() for w in t2.network.trainable_weights])
    assert np.abs(w1 - w0).max() > 1e-3  # it trained
    np.testing.assert_allclose(w1, w2, atol=1e-5)
    ema = np.concatenate([w.numpy().ravel() for w in t2.ema_network.trainable_weights])
    assert not np.allclose(ema, w2)  # the EMA copy moves, and lags the weights


def test_cycle_two_replicas_match_one():
    one, two = _strategies()
    kw = dict(num_samples=N, true_labels=np.arange(N) % K, threshold=0.5,
              threshold_mode="adaptive", min_threshold=0.3)
    t1, h1 = _train(one, CycleTrainer, True, **kw)
    t2, h2 = _train(two, CycleTrainer, True, **kw)
    for key in ("loss", "sup_loss", "unsup_loss", "mask_rate", "labelled_share"):
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-4, atol=1e-6, err_msg=key)
    w1 = np.concatenate([w.numpy().ravel() for w in t1.network.trainable_weights])
    w2 = np.concatenate([w.numpy().ravel() for w in t2.network.trainable_weights])
    np.testing.assert_allclose(w1, w2, atol=1e-5)
    np.testing.assert_array_equal(t1.selected_labels.numpy(), t2.selected_labels.numpy())
    assert h1["labelled_share"][-1] == pytest.approx(2 / 3, abs=0.05)
    # The global FlexMatch/prior state is identical whatever the replica count.
    # Replicas average their local means: equal to the pooled mean up to the unlabelled
    # counts per replica, hence a looser tolerance than the weights.
    np.testing.assert_allclose(t1.model_prior.numpy(), t2.model_prior.numpy(), atol=1e-3)
    assert np.isclose(t2.model_prior.numpy().sum(), 1.0, atol=1e-4)


def test_cycle_routes_samples_by_the_mask():
    strategy = tf.distribute.get_strategy()
    kw = dict(num_samples=N, threshold=0.0, threshold_mode="fixed", lambda_u=1.0)
    _, hist = _train(strategy, CycleTrainer, True, **kw)
    # threshold 0: every unlabelled sample gets a pseudo-label
    assert hist["mask_rate"][-1] == pytest.approx(1.0)
    assert hist["unsup_loss"][-1] > 0.0
    assert hist["labelled_share"][-1] == pytest.approx(2 / 3, abs=0.05)


def test_supervised_trainer_rejects_bad_arguments():
    net = build_network(ModelConfig(width=4), input_shape=(S, S, 1), num_classes=K)
    with pytest.raises(ValueError, match="Received: loss='focal'"):
        SupervisedTrainer(net, num_classes=K, loss="focal")
    with pytest.raises(ValueError, match="Received: ema_decay=1.5"):
        SupervisedTrainer(net, num_classes=K, ema_decay=1.5)
