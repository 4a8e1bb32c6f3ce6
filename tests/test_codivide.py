"""DivideMix co-divide (ferkeras.methods.co_divide.core, ferkeras.methods.co_divide.trainer): each
network's split
comes from the other network's losses; label co-refinement and co-guessing on hand-made
arrays; the trainer under 2 replicas vs 1; resume with both networks; the recipe path; the
exported ensemble."""

import json

import numpy as np
import pytest

from ferkeras.methods.co_divide.core import (
    co_divide_masks,
    co_divide_splits,
    co_guess,
    co_refine,
    sharpen,
)
from ferkeras.noise import selection

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


def test_selector_inputs_are_swapped_with_the_losses(monkeypatch):
    """A selector that needs more than the losses (H2E: a network's features) gets, for A's
    split, network B's inputs, as it gets B's losses."""
    labels, _, losses_a, losses_b, _, _ = _noisy_losses(n=40)
    seen = []

    def spy(losses, normalized, labels, *, num_classes, seed, features=None, **_):
        seen.append((losses.copy(), features))
        return np.ones(len(losses), bool), np.ones(len(losses)), None

    monkeypatch.setitem(selection.SELECTORS, "spy", spy)
    co_divide_splits(losses_a, losses_b, labels, num_classes=K, selector="spy",
                     selector_inputs_a={"features": "A"}, selector_inputs_b={"features": "B"})
    (first_losses, first_features), (second_losses, second_features) = seen
    np.testing.assert_allclose(first_losses, losses_b)  # A's split: B's losses, B's features
    assert first_features == "B" and second_features == "A"
    np.testing.assert_allclose(second_losses, losses_a)


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


def test_mixmatch_mix_keeps_each_row_closer_to_itself():
    from ferkeras.methods.co_divide.core import mixmatch_mix, mixmatch_row_losses, prior_penalty

    x = np.arange(6, dtype="float32").reshape(3, 2)
    t = np.eye(3, dtype="float32")
    perm = np.array([2, 0, 1])
    for lam in (0.3, 0.7):  # max(lam, 1 - lam) = 0.7 either way
        xm, tm = mixmatch_mix(x, t, lam=lam, perm=perm)
        np.testing.assert_allclose(np.asarray(xm), 0.7 * x + 0.3 * x[perm], atol=1e-6)
        np.testing.assert_allclose(np.asarray(tm), 0.7 * t + 0.3 * t[perm], atol=1e-6)
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]], "float32"))
    targets = np.array([[1.0, 0, 0], [0, 1.0, 0]], "float32")
    lx, lu = mixmatch_row_losses(logits, targets, np.array([1.0, 0.0]))
    np.testing.assert_allclose(np.asarray(lx), [-np.log(0.7), 0.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(lu), [0.0, (0.04 + 0.25 + 0.09) / 3], atol=1e-6)
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.5, 0.4]], "float32")
    prior = probs.mean(0)
    assert float(prior_penalty(probs, prior)) == pytest.approx(0.0, abs=1e-6)
    uniform = np.full(3, 1 / 3)  # the paper's prior: KL(uniform || mean prediction)
    want = float(np.sum(uniform * np.log(uniform / prior)))
    assert float(prior_penalty(probs, uniform)) == pytest.approx(want, rel=1e-5)
    assert want > 0


# ----------------------------------------------------------------------------- trainer
N, S = 48, 12


def _stream(views=True, seed=0):
    import tensorflow as tf

    r = np.random.default_rng(seed)
    labels = (np.arange(N) % K).astype(np.int32)
    images = r.uniform(0, 255, size=(N, S, S, 1)).astype(np.float32)
    images[np.arange(N), labels * 3, :, 0] = 255.0  # a class-coded bright row
    x = (images, np.flip(images, axis=2).copy()) if views else images
    return tf.data.Dataset.from_tensor_slices(
        (x, labels, np.arange(N, dtype=np.int32))).batch(16, drop_remainder=True)


def _plain_network(seed):
    """No BatchNorm (per-replica batch statistics differ between 1 and 2 replicas)."""
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input((S, S, 1))
    x = keras.layers.Rescaling(1 / 255.0)(image)
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(x))
    return keras.Model(image, keras.layers.Dense(K)(x))


def _split():
    idx = np.arange(N)
    lab_a, lab_b = idx % 3 != 0, idx % 4 != 1  # different labelled sets per network
    r = np.random.default_rng(5)
    return lab_a, r.uniform(0.5, 1, N), lab_b, r.uniform(0.5, 1, N)


def _co_trainer(strategy, **kwargs):
    import keras

    from ferkeras.methods.co_divide.trainer import CoDivideTrainer

    with strategy.scope():
        trainer = CoDivideTrainer(_plain_network(3), network_b=_plain_network(4),
                                  num_classes=K, num_samples=N, true_labels=np.arange(N) % K,
                                  **kwargs)
        trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        trainer.build_state((S, S, 1))
    lab_a, w_a, lab_b, w_b = _split()
    trainer.set_co_split(lab_a, w_a, lab_b, w_b, np.full(K, 1.0 / K))
    return trainer


def _weights(network):
    return np.concatenate([w.numpy().ravel() for w in network.trainable_weights])


def test_co_divide_under_two_replicas(tmp_path):
    """In its own process (as tests/test_mpl.py): MirroredStrategy objects built in one
    process number their collective ops alike, and TF then mixes up this trainer's
    two-network all-reduce with other tests' ("Shape mismatch in the collective instance")."""
    from tiny_recipe import check_in_replica_process

    check_in_replica_process(
        tmp_path, "test_codivide", "two = tf.distribute.MirroredStrategy(devices); "
        "t._check_two_replicas_match_one(two); t._check_mixmatch_learns(two)", timeout=600)


def _check_two_replicas_match_one(two):
    """FixMatch-style co-divide: 2 replicas give the single device's losses and weights."""
    import tensorflow as tf

    assert two.num_replicas_in_sync == 2
    runs = []
    for strategy in (tf.distribute.get_strategy(), two):
        trainer = _co_trainer(strategy)
        warm = trainer.fit(_stream(views=False), epochs=1, verbose=0, shuffle=False).history
        hist = trainer.fit(_stream(), epochs=2, verbose=0, shuffle=False).history
        runs.append((trainer, {**{f"warm_{k}": v for k, v in warm.items()}, **hist}))
    (t1, h1), (t2, h2) = runs
    for key in ("warm_loss", "loss", "sup_loss", "unsup_loss", "labelled_share", "pseudo_acc"):
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-4, atol=1e-6, err_msg=key)
    for net in ("network", "network_b"):
        np.testing.assert_allclose(_weights(getattr(t1, net)), _weights(getattr(t2, net)),
                                   atol=1e-5, err_msg=net)
    # the two networks stay different (own seeds, own splits)
    assert not np.allclose(_weights(t1.network), _weights(t1.network_b))
    # labelled share: the mean of both networks' labelled shares
    assert abs(h1["labelled_share"][-1] - (2 / 3 + 3 / 4) / 2) < 0.02


def _check_mixmatch_learns(two):
    """MixMatch mode runs under MirroredStrategy (its mix is per replica, so the replicas
    are not compared with one device) and fits the clean signal."""
    trainer = _co_trainer(two, mixup_alpha=4.0, lambda_u=1.0)
    hist = trainer.fit(_stream(), epochs=8, verbose=0, shuffle=False).history
    assert np.all(np.isfinite(hist["loss"])) and hist["loss"][-1] < hist["loss"][0]
    images = np.concatenate([b[0][0].numpy() for b in _stream()])
    labels = np.concatenate([b[1].numpy() for b in _stream()])
    pred = trainer.predict(images, verbose=0).argmax(-1)
    assert (pred == labels).mean() >= 0.75, (pred == labels).mean()


def test_co_divide_trainer_rebuilds_from_its_config():
    from ferkeras.methods.co_divide.trainer import CoDivideTrainer

    trainer = CoDivideTrainer(_plain_network(3), network_b=_plain_network(4), num_classes=K,
                              num_samples=N, temperature=0.4, mixup_alpha=2.0, lambda_u=3.0)
    again = CoDivideTrainer.from_config(trainer.get_config())
    assert (again.temperature, again.mixup_alpha, again.lambda_u) == (0.4, 2.0, 3.0)
    assert again.network_b is not again.network and again.num_samples == N
    with pytest.raises(ValueError, match="Received: ema_decay=0.9"):
        CoDivideTrainer(_plain_network(3), network_b=_plain_network(4), num_classes=K,
                        ema_decay=0.9)
    with pytest.raises(ValueError, match="Received: mixup_alpha=-1"):
        CoDivideTrainer(_plain_network(3), network_b=_plain_network(4), num_classes=K,
                        mixup_alpha=-1)


def _one_step(labels, mixup_alpha=0.0):
    """Both networks' weights after one SGD step on one batch of all N samples."""
    import keras
    import tensorflow as tf

    from ferkeras.methods.co_divide.trainer import CoDivideTrainer

    trainer = CoDivideTrainer(_plain_network(3), network_b=_plain_network(4), num_classes=K,
                              num_samples=N, mixup_alpha=mixup_alpha)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    trainer.build_state((S, S, 1))
    trainer.set_co_split(*_split(), np.full(K, 1.0 / K))
    (weak, strong), _, index = next(iter(_stream().unbatch().batch(N)))
    data = ((weak, strong), np.asarray(labels, np.int32), index)
    trainer.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0, shuffle=False)
    return _weights(trainer.network), _weights(trainer.network_b)


@pytest.mark.parametrize("mixup_alpha", [0.0, 4.0], ids=["fixmatch", "mixmatch"])
def test_each_network_trains_on_the_labels_of_its_own_split_only(mixup_alpha):
    """A given label reaches network A's loss only where A's split (from B's losses) calls
    the sample labelled, and likewise for B (with MixMatch too: mixed rows carry the other
    row's target, and an unlabelled row's target is co-guessed, never its label)."""
    lab_a, _, lab_b, _ = _split()
    labels = np.arange(N) % K
    a_ref, b_ref = _one_step(labels, mixup_alpha)
    wrong = (labels + 1) % K
    a, b = _one_step(np.where(~lab_a & lab_b, wrong, labels), mixup_alpha)  # A: unlab., B: lab.
    np.testing.assert_array_equal(a, a_ref)
    assert np.abs(b - b_ref).max() > 1e-6
    a, b = _one_step(np.where(lab_a & ~lab_b, wrong, labels), mixup_alpha)  # the reverse
    np.testing.assert_array_equal(b, b_ref)
    assert np.abs(a - a_ref).max() > 1e-6


# ----------------------------------------------------------------------------- recipe path
def _recipe(cycles=1, epochs_per_cycle=1, **cycle):
    from ferkeras.training.recipe import recipe_from_dict

    return recipe_from_dict({
        "name": "codivide", "seed": 2,
        "data": {"source": "synthetic", "image_size": 16,
                 "synthetic": {"n_train": 64, "n_val": 32, "n_test": 32, "noise": 0.3,
                               "profile": "uniform"}},
        "model": {"backbone": "small_cnn", "width": 4, "dropout": 0.2},
        "train": {"batch_size": 16, "learning_rate": 0.005, "loss": "ce", "ema_decay": 0.0},
        "cycle": {"enabled": True, "warmup_epochs": 1, "cycles": cycles,
                  "epochs_per_cycle": epochs_per_cycle, "min_class_samples": 4,
                  "method": "co_divide", **cycle}})


@pytest.fixture(scope="module")
def co_run(tmp_path_factory):
    """A finished co-divide run: 1 warm-up epoch + 1 cycle of 1 epoch (about 15 s)."""
    from ferkeras.training import train_recipe

    run = tmp_path_factory.mktemp("codivide") / "run"
    lines = []
    metrics = train_recipe(_recipe(), run_dir=run, verbose=0, echo=lines.append)
    return run, metrics, lines


def _report_column(path, column):
    import csv

    with open(path, newline="") as fh:
        return np.array([float(row[column]) for row in csv.DictReader(fh)])


def test_recipe_trains_co_divide_and_splits_each_network_by_the_other(co_run):
    run, metrics, lines = co_run
    assert metrics["epochs"] == 2 and np.isfinite(metrics["val"]["best"]["accuracy"])
    assert "noise_detection" in metrics and "noise_detection_b" in metrics
    assert any(line.startswith("co-divide split at epoch 2") for line in lines), lines
    hist_a = np.load(run / "checkpoints" / "selector_history.npz")["history"]
    hist_b = np.load(run / "checkpoints" / "selector_history_b.npz")["history"]
    assert not np.allclose(hist_a, hist_b)  # two networks, two loss columns
    # A's report holds B's losses (what made A's split), B's report A's losses.
    np.testing.assert_allclose(_report_column(run / "reports" / "split-e002" / "samples.csv",
                                              "loss"), hist_b[-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_report_column(
        run / "reports" / "net_b" / "split-e002" / "samples.csv", "loss"), hist_a[-1],
        rtol=1e-4, atol=1e-5)


def test_run_network_is_the_ensemble_of_both_networks(co_run, tmp_path):
    import dataclasses

    from ferkeras.methods.co_divide.core import build_run_network
    from ferkeras.training.runs import open_run

    run, _, _ = co_run
    opened = open_run(run)
    ensemble = opened.build_network()
    x = np.random.default_rng(0).uniform(0, 255, (5, 16, 16, 1)).astype("float32")
    za = ensemble.get_layer("net_a")(x, training=False).numpy()
    zb = ensemble.get_layer("net_b")(x, training=False).numpy()
    assert not np.allclose(za, zb)
    np.testing.assert_allclose(ensemble(x, training=False).numpy(), (za + zb) / 2, atol=1e-5)
    recipe = opened.recipe
    for choice, want in (("a", za), ("b", zb)):
        one = build_run_network(
            dataclasses.replace(recipe, cycle=dataclasses.replace(
                recipe.cycle, co_divide=dataclasses.replace(recipe.cycle.co_divide,
                                                            export=choice))),
            input_shape=(16, 16, 1), num_classes=len(opened.class_names),
            weights=opened.weights_path)
        np.testing.assert_allclose(one(x, training=False).numpy(), want, atol=1e-5)


def test_export_of_a_co_divide_run_serves_the_ensemble(co_run, tmp_path):
    import tensorflow as tf

    from ferkeras.deploy.export import export_run
    from ferkeras.deploy.inference import Predictor
    from ferkeras.training.runs import open_run

    run, _, _ = co_run
    x = np.random.default_rng(1).uniform(0, 255, (6, 16, 16, 1)).astype("uint8")
    export_run(run, tmp_path / "out", parity_images=x)
    ensemble = open_run(run).build_network()
    za = ensemble.get_layer("net_a")(x.astype("float32"), training=False).numpy()
    zb = ensemble.get_layer("net_b")(x.astype("float32"), training=False).numpy()
    want = tf.nn.softmax((za + zb) / 2).numpy()  # the mean of both networks' logits
    got = Predictor(tmp_path / "out").predict_crops(x)
    np.testing.assert_allclose(got, want, atol=1e-4)


# ----------------------------------------------------------------------------- resume
class _Killed(Exception):
    pass


def _values(trainer):
    return [np.array(v.numpy()) for v in [*trainer.variables, *trainer.optimizer.variables]]


@pytest.mark.slow
def test_resume_restores_both_networks_optimizer_and_tables(tmp_path, monkeypatch):
    """Kill a co-divide run mid-cycle (after epoch 2 of 3, its state saved), resume it: every
    variable (both networks, both networks' optimizer slots, both split tables) and both loss
    histories come back as they were, and the run ends as an uninterrupted one (MixMatch
    mode, through the recipe)."""
    from ferkeras.callbacks.state import RunState
    from ferkeras.methods.co_divide.split import CoDivideSplit
    from ferkeras.training import train_recipe

    # MixMatch mode: its mixing RNG (a SeedGenerator) must come back too
    recipe = _recipe(epochs_per_cycle=2, co_divide={"mixup_alpha": 4.0})
    quiet = dict(verbose=0, echo=lambda *_: None)
    whole = train_recipe(recipe, run_dir=tmp_path / "whole", **quiet)

    saved, restored, histories = {}, {}, {}
    on_epoch_end, restore = RunState.on_epoch_end, RunState.restore

    def kill_after_two(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        if epoch + 1 == 2:
            saved["values"] = _values(self.model)
            split = self.extra_state[0]
            saved["history"] = [np.stack(split.history), np.stack(split.history_b)]
            raise _Killed

    monkeypatch.setattr(RunState, "on_epoch_end", kill_after_two)
    run = tmp_path / "killed"
    with pytest.raises(_Killed):
        train_recipe(recipe, run_dir=run, **quiet)
    monkeypatch.setattr(RunState, "on_epoch_end", on_epoch_end)

    def spy(self, trainer, state):
        epoch = restore(self, trainer, state)
        restored["values"] = _values(trainer)
        split = self.extra_state[0]
        assert isinstance(split, CoDivideSplit)
        histories["restored"] = [np.stack(split.history), np.stack(split.history_b)]
        return epoch

    monkeypatch.setattr(RunState, "restore", spy)
    resumed = train_recipe(recipe, run_dir=run, resume=True, **quiet)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert any("mix_seed" in path for path, _ in state["seed_states"])
    assert len(saved["values"]) == len(restored["values"])
    for i, (a, b) in enumerate(zip(saved["values"], restored["values"], strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=str(i))
    for a, b in zip(saved["history"], histories["restored"], strict=True):
        np.testing.assert_array_equal(a, b)
    for which in ("best", "last"):
        assert resumed["val"][which]["accuracy"] == pytest.approx(
            whole["val"][which]["accuracy"], abs=1e-6)
