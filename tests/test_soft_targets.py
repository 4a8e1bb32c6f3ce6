"""Soft-target methods (ferkeras.noise.soft_targets): ELR (Liu et al., NeurIPS 2020) and
self-distillation from the EMA teacher.

Array level against known truth; the defining behaviour of ELR (on injected label noise, it
keeps the network from memorising the wrong labels that plain CE memorises); the trainer's
wiring (one step by hand, 2 replicas = 1 replica, the ELR table saved and restored); the
recipe path.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ferkeras.noise import soft_targets as S
from ferkeras.trainers.supervised import SupervisedTrainer
from ferkeras.training.recipe import RecipeError, recipe_from_dict


# ----------------------------------------------------------------------------- array level
def test_elr_targets_are_the_running_average_of_normalised_predictions():
    r = np.random.default_rng(0)
    beta = 0.7
    probs = r.dirichlet(np.ones(5), size=(20, 3)).astype(np.float32) * 2.0  # unnormalised
    targets = np.zeros((3, 5), np.float32)
    expected = np.zeros((3, 5))
    for step in range(20):
        targets = np.asarray(S.elr_update_targets(targets, probs[step], beta=beta))
        expected = beta * expected + (1 - beta) * probs[step] / probs[step].sum(-1, keepdims=True)
    np.testing.assert_allclose(targets, expected, atol=1e-6)
    # from zeros, a row sums to 1 - beta**n after n updates, and stays on the simplex
    np.testing.assert_allclose(targets.sum(-1), 1 - beta ** 20, atol=1e-6)
    # constant predictions: the targets converge to them
    const = np.array([[0.1, 0.2, 0.3, 0.4, 0.0]], np.float32)
    t = np.zeros((1, 5), np.float32)
    for _ in range(60):
        t = np.asarray(S.elr_update_targets(t, const, beta=beta))
    np.testing.assert_allclose(t, const, atol=1e-6)


def test_elr_penalty_gradient_pushes_predictions_toward_the_target():
    r = np.random.default_rng(1)
    logits = tf.Variable(r.normal(size=(8, 4)).astype(np.float32))
    targets = r.dirichlet(np.ones(4) * 0.3, size=8).astype(np.float32)

    def inner():
        return np.sum(tf.nn.softmax(logits).numpy() * targets, axis=-1)

    before = inner()
    for step in range(300):
        with tf.GradientTape() as tape:
            penalty = tf.reduce_mean(S.elr_penalty(S.clip_probs(tf.nn.softmax(logits)),
                                                   targets))
        grad = tape.gradient(penalty, logits).numpy()
        if step == 0:
            # descent raises logit k exactly where t_k exceeds <p, t> (d<p,t>/dz_k =
            # p_k (t_k - <p,t>), and log(1 - x) falls as x rises)
            np.testing.assert_array_equal(np.sign(-grad), np.sign(targets - before[:, None]))
        logits.assign_sub(2.0 * grad)
    after = inner()
    assert np.all(after > before), (before, after)
    # p ends on the target's largest class
    np.testing.assert_array_equal(tf.argmax(logits, -1).numpy(), targets.argmax(-1))
    # the penalty is log(1 - <p, t>), no gradient into the targets
    p = np.full((1, 4), 0.25, np.float32)
    t = tf.Variable(np.array([[1.0, 0, 0, 0]], np.float32))
    with tf.GradientTape() as tape:
        value = S.elr_penalty(p, t)
    np.testing.assert_allclose(value.numpy(), np.log(0.75), rtol=1e-6)
    assert tape.gradient(value, t) is None


def test_distillation_targets_mix_labels_and_teacher():
    r = np.random.default_rng(2)
    labels = np.array([0, 2, 1, 2])
    teacher = r.dirichlet(np.ones(3), size=4).astype(np.float32)
    onehot = np.eye(3, dtype=np.float32)[labels]
    np.testing.assert_array_equal(
        np.asarray(S.distillation_targets(labels, teacher, alpha=0.0, num_classes=3)), onehot)
    np.testing.assert_allclose(
        np.asarray(S.distillation_targets(labels, teacher, alpha=1.0, num_classes=3)), teacher)
    mixed = np.asarray(S.distillation_targets(labels, teacher, alpha=0.3, num_classes=3))
    np.testing.assert_allclose(mixed, 0.7 * onehot + 0.3 * teacher, atol=1e-7)
    np.testing.assert_allclose(mixed.sum(-1), 1.0, atol=1e-6)
    # soft labels (FERPlus votes) are mixed as given
    soft = r.dirichlet(np.ones(3), size=4).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(S.distillation_targets(soft, teacher, alpha=0.5, num_classes=3)),
        0.5 * soft + 0.5 * teacher, atol=1e-7)
    # temperature: T -> large flattens the teacher, T = 1 is the plain softmax
    z = np.array([[3.0, 0.0, -1.0]], np.float32)
    np.testing.assert_allclose(np.asarray(S.teacher_probabilities(z, temperature=1.0)),
                               tf.nn.softmax(z).numpy(), atol=1e-7)
    np.testing.assert_allclose(np.asarray(S.teacher_probabilities(z, temperature=1e4)),
                               np.full((1, 3), 1 / 3), atol=1e-3)


@pytest.mark.parametrize("call", [
    lambda: S.elr_update_targets(np.zeros((1, 2)), np.ones((1, 2)), beta=1.0),
    lambda: S.distillation_targets(np.zeros(1, int), np.ones((1, 2)), alpha=1.5,
                                   num_classes=2),
    lambda: S.teacher_probabilities(np.zeros((1, 2)), temperature=0.0),
])
def test_array_functions_name_bad_options(call):
    with pytest.raises(ValueError, match="Received"):
        call()


# ----------------------------------------------------------------------------- defining behaviour
K, N, D = 4, 256, 32


def _blobs(noise=0.4, seed=0):
    """K well-separated Gaussian blobs in D dims (as (N, 4, 8, 1) "images"), `noise` of the
    labels flipped uniformly to another class. Returns (x, given, truth, flipped)."""
    r = np.random.default_rng(seed)
    truth = np.arange(N) % K
    means = r.normal(0, 1, (K, D))
    means *= 3.0 / np.linalg.norm(means, axis=1, keepdims=True)
    x = means[truth] + r.normal(0, 3 / np.sqrt(D), (N, D))
    flipped = r.random(N) < noise
    given = np.where(flipped, (truth + r.integers(1, K, N)) % K, truth)
    return x.reshape(N, 4, 8, 1).astype(np.float32), given.astype(np.int32), truth, flipped


def _mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(256, activation="relu"),
                             keras.layers.Dense(256, activation="relu"), keras.layers.Dense(K)])


def test_elr_resists_memorising_noisy_labels_that_ce_memorises():
    """40 % flipped labels, an MLP that can memorise them all. After 60 epochs plain CE fits
    the wrong labels (its predictions on the flipped samples no longer match their true
    class); with ELR (the paper's lambda 3, beta 0.7) they still do."""
    x, given, truth, flipped = _blobs()
    recovered = {}
    for elr in (0.0, 3.0):
        trainer = SupervisedTrainer(_mlp(), num_classes=K, elr_lambda=elr, elr_beta=0.7)
        trainer.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        trainer.fit(x, given, batch_size=32, epochs=60, verbose=0)
        pred = trainer.network.predict(x, verbose=0).argmax(-1)
        recovered[elr] = (pred == truth)[flipped].mean()
    assert recovered[0.0] < 0.2, recovered  # CE memorised the wrong labels
    assert recovered[3.0] > 0.8, recovered  # ELR kept the early (true) answer
    assert trainer.elr_targets.shape == (N, K)
    # each sample's target is a running average of normalised predictions: rows sum to
    # 1 - 0.7 ** 60 = 1 (every sample is seen once an epoch)
    np.testing.assert_allclose(trainer.elr_targets.numpy().sum(-1), 1.0, atol=1e-4)


# ----------------------------------------------------------------------------- trainer wiring
S_IMG = 12


def _plain_network():
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((S_IMG, S_IMG, 1)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(6, 3, activation="relu"), keras.layers.Flatten(),
        keras.layers.Dense(K),
    ])


def _data(n=64):
    r = np.random.default_rng(0)
    labels = (np.arange(n) % K).astype(np.int32)
    images = r.uniform(0, 255, size=(n, S_IMG, S_IMG, 1)).astype(np.float32)
    images[np.arange(n), labels * 3, :, 0] = 255.0
    index = np.arange(n, dtype=np.int32)
    return tf.data.Dataset.from_tensor_slices((images, labels, index)).batch(
        16, drop_remainder=True)


def test_distillation_step_trains_on_the_mixed_target():
    """One SGD step by hand: at the first step the EMA teacher equals the student, so the
    logged loss is CE against 0.6 * onehot + 0.4 * softmax(logits / 2)."""
    images, labels, index = next(iter(_data(16)))
    net = _plain_network()
    trainer = SupervisedTrainer(net, num_classes=K, ema_decay=0.9, distill_alpha=0.4,
                                distill_temperature=2.0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    trainer.build_state((S_IMG, S_IMG, 1))
    logits = net(images).numpy()
    target = 0.6 * np.eye(K)[labels.numpy()] + 0.4 * tf.nn.softmax(logits / 2.0).numpy()
    expected = -(target * tf.nn.log_softmax(logits).numpy()).sum(-1).mean()
    hist = trainer.fit(tf.data.Dataset.from_tensors((images, labels, index)), epochs=1,
                       verbose=0, shuffle=False)
    assert hist.history["loss"][-1] == pytest.approx(expected, rel=1e-5)


def test_trainer_refuses_distillation_without_ema_and_rebuilds_from_config():
    with pytest.raises(ValueError, match="ema_decay"):
        SupervisedTrainer(_plain_network(), num_classes=K, distill_alpha=0.5)
    trainer = SupervisedTrainer(_plain_network(), num_classes=K, ema_decay=0.9,
                                distill_alpha=0.5, distill_temperature=2.0, elr_lambda=3.0,
                                elr_beta=0.9, num_samples=64)
    clone = SupervisedTrainer.from_config(trainer.get_config())
    for key in ("elr_lambda", "elr_beta", "distill_alpha", "distill_temperature"):
        assert getattr(clone, key) == getattr(trainer, key)
    assert clone.elr_targets.shape == (64, K)
    assert SupervisedTrainer(_plain_network(), num_classes=K).elr_targets is None


def _train(strategy, **kwargs):
    with strategy.scope():
        trainer = SupervisedTrainer(_plain_network(), num_classes=K, **kwargs)
        trainer.compile(optimizer=keras.optimizers.SGD(0.05))
        trainer.build_state((S_IMG, S_IMG, 1))
    hist = trainer.fit(_data(), epochs=2, verbose=0, shuffle=False)
    return trainer, hist.history


def test_elr_and_distillation_two_replicas_match_one(mirrored_strategy):
    kw = dict(elr_lambda=3.0, elr_beta=0.7, num_samples=64, ema_decay=0.9, distill_alpha=0.5)
    t1, h1 = _train(tf.distribute.get_strategy(), **kw)
    two = mirrored_strategy
    t2, h2 = _train(two, **kw)
    assert two.num_replicas_in_sync == 2
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-4)
    w1 = np.concatenate([w.numpy().ravel() for w in t1.network.trainable_weights])
    w2 = np.concatenate([w.numpy().ravel() for w in t2.network.trainable_weights])
    np.testing.assert_allclose(w1, w2, atol=1e-5)
    # the ELR table: each replica's rows land once, whatever the replica count
    table1, table2 = t1.elr_targets.numpy(), t2.elr_targets.numpy()
    np.testing.assert_allclose(table1, table2, atol=1e-5)
    np.testing.assert_allclose(table2.sum(-1), 1 - 0.7 ** 2, atol=1e-5)


def test_elr_table_is_saved_and_loaded_with_the_trainer_weights(tmp_path):
    trainer, _ = _train(tf.distribute.get_strategy(), elr_lambda=3.0, num_samples=64)
    path = tmp_path / "state.weights.h5"
    trainer.save_weights(str(path))  # what RunState writes each epoch
    fresh, _ = _train(tf.distribute.get_strategy(), elr_lambda=3.0, num_samples=64)
    fresh.elr_targets.assign(np.zeros((64, K), np.float32))
    fresh.load_weights(str(path))
    np.testing.assert_array_equal(fresh.elr_targets.numpy(), trainer.elr_targets.numpy())


# ----------------------------------------------------------------------------- recipe path
def _tiny(**train):
    return recipe_from_dict({
        "name": "t", "seed": 1,
        "data": {"source": "synthetic", "image_size": 16,
                 "synthetic": {"n_train": 128, "n_val": 32, "n_test": 32, "noise": 0.3,
                               "profile": "uniform"}},
        "model": {"backbone": "small_cnn", "width": 4},
        "train": {"epochs": 1, "batch_size": 32, "loss": "ce", **train}})


def test_recipe_refuses_distillation_without_ema_and_with_the_cycle():
    with pytest.raises(RecipeError, match="train.distill_alpha"):
        _tiny(distill_alpha=0.5)
    with pytest.raises(RecipeError, match="train.elr_lambda"):
        recipe_from_dict({"train": {"elr_lambda": 3.0}, "cycle": {"enabled": True}})
    with pytest.raises(RecipeError, match="train.elr_beta"):
        _tiny(elr_beta=1.0)
    defaults = _tiny().train
    assert defaults.elr_lambda == 0.0 and defaults.distill_alpha == 0.0  # off by default


@pytest.mark.parametrize("loss", ["ce", "logit_adjusted"])
def test_recipe_trains_with_distillation(tmp_path, loss):
    from ferkeras.training import train_recipe

    recipe = _tiny(ema_decay=0.9, distill_alpha=0.5, distill_temperature=2.0, loss=loss)
    metrics = train_recipe(recipe, run_dir=tmp_path / "run", verbose=0, echo=lambda *_: None)
    assert metrics["epochs"] == 1 and np.isfinite(metrics["val"]["best"]["accuracy"])


def test_recipe_trains_with_elr_and_resume_restores_its_table(tmp_path, monkeypatch):
    from ferkeras.callbacks.state import RunState
    from ferkeras.training import train_recipe

    seen = []
    restore = RunState.restore

    def spy(self, trainer, state):
        epoch = restore(self, trainer, state)
        seen.append((trainer, trainer.elr_targets.numpy().copy()))
        return epoch

    monkeypatch.setattr(RunState, "restore", spy)
    recipe = _tiny(elr_lambda=3.0, elr_beta=0.7, loss="class_balanced")
    run = tmp_path / "run"
    train_recipe(recipe, run_dir=run, verbose=0, echo=lambda *_: None)
    first, at_start = seen[0]
    assert not at_start.any()  # a fresh run starts from zero targets
    final = first.elr_targets.numpy()
    # one epoch: every training sample updated once from zero, so its row sums to 1 - beta
    np.testing.assert_allclose(final.sum(-1), 0.3, atol=1e-5)
    train_recipe(recipe, run_dir=run, resume=True, verbose=0, echo=lambda *_: None)
    np.testing.assert_array_equal(seen[1][1], final)  # restored from the saved state
