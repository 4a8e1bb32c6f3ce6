"""Trainers: they learn; the cycle routes each sample by the split (the given labels of
unlabelled samples never reach a loss, strong views feed only the unsupervised term); and 2
replicas on 2 logical CPUs match 1 replica."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ferkeras.models import build_network
from ferkeras.trainers.cycle import CycleTrainer
from ferkeras.trainers.supervised import SupervisedTrainer
from ferkeras.training.recipe import ModelConfig

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
    """No BatchNorm: per-replica batch statistics would make 1 and 2 replicas differ, and a
    view's batch statistics would let one sample's input reach another's loss. Flatten keeps
    the position of the class-coded row."""
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((S, S, 1)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(6, 3, activation="relu"), keras.layers.Flatten(),
        keras.layers.Dense(K),
    ])


def _weights(network):
    return np.concatenate([w.numpy().ravel() for w in network.trainable_weights])


def _train(strategy, trainer_cls, views, epochs=2, **kwargs):
    with strategy.scope():
        net = _plain_network()
        trainer = trainer_cls(net, num_classes=K, **kwargs)
        trainer.compile(optimizer=keras.optimizers.SGD(0.05))
        trainer.build_state((S, S, 1))
    if isinstance(trainer, CycleTrainer):
        mask = np.ones(N, np.float32)
        mask[::3] = 0.0  # a third of the samples go to the unlabelled branch
        trainer.set_split(mask > 0.5, mask, np.full(K, 1.0 / K))
    hist = trainer.fit(_data(views), epochs=epochs, verbose=0, shuffle=False)
    return trainer, hist.history


def _strategies(mirrored):
    """(default strategy, 2-replica strategy); `mirrored` is the session's strategy (the
    `mirrored_strategy` fixture) or, in a check run in its own process, device names."""
    if isinstance(mirrored, (list, tuple)):
        mirrored = tf.distribute.MirroredStrategy(list(mirrored))
    return tf.distribute.get_strategy(), mirrored


@pytest.mark.parametrize("loss", ["ce", "logit_adjusted", "class_balanced"])
def test_supervised_trainer_learns(loss):
    trainer, hist = _train(tf.distribute.get_strategy(), SupervisedTrainer, False, epochs=12,
                           loss=loss)
    images = np.concatenate([b[0].numpy() for b in _data()])
    labels = np.concatenate([b[1].numpy() for b in _data()])
    pred = np.argmax(trainer.network.predict(images, verbose=0), axis=-1)
    # chance is 1/K = 0.25 on these balanced classes
    assert (pred == labels).mean() >= 0.9, (pred == labels).mean()
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]


@pytest.mark.parametrize("loss", ["ce", "logit_adjusted", "class_balanced"])
def test_supervised_two_replicas_match_one(loss, mirrored_strategy):
    one, two = _strategies(mirrored_strategy)
    t1, h1 = _train(one, SupervisedTrainer, False, loss=loss, ema_decay=0.9)
    t2, h2 = _train(two, SupervisedTrainer, False, loss=loss, ema_decay=0.9)
    assert two.num_replicas_in_sync == 2
    # With the loss averaged over the global batch, summed replica gradients equal the
    # single-device gradient: same losses, same weights (to float32 reduction-order noise).
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-4)
    w1, w2 = _weights(t1.network), _weights(t2.network)
    np.testing.assert_allclose(w1, w2, atol=1e-5)
    ema = np.concatenate([w.numpy().ravel() for w in t2.ema_network.weights])
    assert not np.allclose(ema, w2)  # the EMA copy moves, and lags the weights


def test_cycle_two_replicas_match_one(mirrored_strategy):
    one, two = _strategies(mirrored_strategy)
    kw = dict(num_samples=N, true_labels=np.arange(N) % K, threshold=0.5,
              threshold_mode="adaptive", min_threshold=0.3)
    t1, h1 = _train(one, CycleTrainer, True, **kw)
    t2, h2 = _train(two, CycleTrainer, True, **kw)
    for key in ("loss", "sup_loss", "unsup_loss", "mask_rate", "labelled_share"):
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-4, atol=1e-6, err_msg=key)
    w1, w2 = _weights(t1.network), _weights(t2.network)
    np.testing.assert_allclose(w1, w2, atol=1e-5)
    np.testing.assert_array_equal(t1.selected_labels.numpy(), t2.selected_labels.numpy())
    assert h1["labelled_share"][-1] == pytest.approx(2 / 3, abs=0.05)
    # The global FlexMatch/prior state is identical whatever the replica count.
    # Replicas average their local means: equal to the pooled mean up to the unlabelled
    # counts per replica, hence a looser tolerance than the weights.
    np.testing.assert_allclose(t1.model_prior.numpy(), t2.model_prior.numpy(), atol=1e-3)
    assert np.isclose(t2.model_prior.numpy().sum(), 1.0, atol=1e-4)


# ----------------------------------------------------------------------------- routing
UNLAB = np.arange(N) % 3 == 0  # a third of the samples are judged noisy (unlabelled)


def _one_cycle_step(labels, weak, strong, *, lambda_u=1.0):
    """Weights and logged losses after one SGD step of a fresh CycleTrainer on one batch of
    all N samples, with the split UNLAB (threshold 0: every pseudo-label is kept)."""
    net = _plain_network()
    trainer = CycleTrainer(net, num_classes=K, num_samples=N, threshold=0.0,
                           threshold_mode="fixed", lambda_u=lambda_u)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    trainer.build_state((S, S, 1))
    mask = (~UNLAB).astype(np.float32)
    trainer.set_split(~UNLAB, mask, np.full(K, 1.0 / K))
    data = ((weak, strong), np.asarray(labels, np.int32), np.arange(N, dtype=np.int32))
    hist = trainer.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0, shuffle=False)
    return _weights(trainer.network), {k: v[-1] for k, v in hist.history.items()}


def _views(seed=0):
    r = np.random.default_rng(seed)
    labels = (np.arange(N) % K).astype(np.int32)
    weak = r.uniform(0, 255, size=(N, S, S, 1)).astype(np.float32)
    weak[np.arange(N), labels * 3, :, 0] = 255.0
    strong = r.uniform(0, 255, size=(N, S, S, 1)).astype(np.float32)
    return labels, weak, strong


def test_wrong_labels_of_unlabelled_samples_never_reach_the_loss():
    labels, weak, strong = _views()
    w_ref, log_ref = _one_cycle_step(labels, weak, strong)
    for wrong in ((labels + 1) % K, np.zeros_like(labels), np.full_like(labels, K - 1)):
        noisy = np.where(UNLAB, wrong, labels)  # only the unlabelled samples' labels change
        w, log = _one_cycle_step(noisy, weak, strong)
        np.testing.assert_array_equal(w, w_ref)
        for key in ("loss", "sup_loss", "unsup_loss"):
            assert log[key] == log_ref[key], key
    # Not vacuous: the label of a labelled sample does reach the loss.
    changed = labels.copy()
    changed[1] = (labels[1] + 1) % K
    assert not UNLAB[1]
    w, log = _one_cycle_step(changed, weak, strong)
    assert np.abs(w - w_ref).max() > 1e-6 and log["sup_loss"] != log_ref["sup_loss"]


def test_strong_views_feed_only_the_unsupervised_term():
    labels, weak, strong = _views()
    w_ref, log_ref = _one_cycle_step(labels, weak, strong)
    # Strong views of labelled samples are never used ...
    other = np.where(UNLAB[:, None, None, None], strong, 255.0 - strong)
    w, log = _one_cycle_step(labels, weak, other)
    np.testing.assert_array_equal(w, w_ref)
    assert log == log_ref
    # ... those of unlabelled samples change the unsupervised term only.
    other = np.where(UNLAB[:, None, None, None], 255.0 - strong, strong)
    w, log = _one_cycle_step(labels, weak, other)
    assert log["sup_loss"] == log_ref["sup_loss"]
    assert log["unsup_loss"] != log_ref["unsup_loss"] and np.abs(w - w_ref).max() > 1e-6
    # With lambda_u = 0 the strong views carry no weight at all.
    w0, _ = _one_cycle_step(labels, weak, strong, lambda_u=0.0)
    w1, _ = _one_cycle_step(labels, weak, 255.0 - strong, lambda_u=0.0)
    np.testing.assert_array_equal(w0, w1)


def test_supervised_trainer_rejects_bad_arguments():
    net = build_network(ModelConfig(width=4), input_shape=(S, S, 1), num_classes=K)
    with pytest.raises(ValueError, match="Received: loss='focal'"):
        SupervisedTrainer(net, num_classes=K, loss="focal")
    with pytest.raises(ValueError, match="Received: ema_decay=1.5"):
        SupervisedTrainer(net, num_classes=K, ema_decay=1.5)
