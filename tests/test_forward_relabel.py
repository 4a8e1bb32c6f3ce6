"""Forward loss correction (Patrini et al. 2017) and relabelling of flagged rows (SELFIE):
array cores on injected structured noise with known T, the Keras wiring, the recipe path
and resume."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ferkeras.noise import correction as C
from ferkeras.noise import transition as tr

# Structured noise with a majority flip: 60 % of class 0 is labelled 1, so plain CE learns
# to predict 1 on class 0; class 1 leaks 20 % into 2.
T_TRUE = np.array([[0.4, 0.6, 0.0],
                   [0.0, 0.8, 0.2],
                   [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------- forward, arrays
def test_forward_log_probs_match_in_log_space_and_identity_is_plain():
    r = np.random.default_rng(0)
    p = r.dirichlet(np.ones(3), 20)
    a = C.forward_corrected_log_probs(p, T_TRUE)
    b = C.forward_corrected_log_probs(np.log(p), T_TRUE, from_log=True)
    assert np.allclose(a, b, atol=1e-9)
    assert np.allclose(np.exp(a), p @ T_TRUE, atol=1e-6)
    assert np.allclose(C.forward_corrected_log_probs(p, np.eye(3)), tr.log_probs(p))
    with pytest.raises(ValueError, match="T rows"):
        C.forward_corrected_log_probs(p, T_TRUE * 2)


def _minimise_expected_loss(noisy_posterior, T):
    """argmin over the simplex of E_{y ~ noisy_posterior}[-log (p @ T)_y] (T=None: plain CE)."""
    from scipy.optimize import minimize

    def loss(z):
        p = np.exp(z - z.max())
        p /= p.sum()
        lp = tr.log_probs(p[None]) if T is None else C.forward_corrected_log_probs(p[None], T)
        return -(noisy_posterior * lp[0]).sum()

    z = minimize(loss, np.zeros(len(noisy_posterior)), method="Nelder-Mead",
                 options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 20000}).x
    p = np.exp(z - z.max())
    return p / p.sum()


def test_forward_corrected_minimiser_is_the_clean_posterior_with_anchor_estimated_T():
    # A perfect noisy-label model: its probabilities are clean @ T_TRUE, with some rows
    # (near-)certainly of one clean class: the anchors.
    r = np.random.default_rng(1)
    clean = r.dirichlet(np.ones(3) * 0.5, 400)
    clean[:30] = np.eye(3)[np.arange(30) % 3] * 0.999 + 0.001 / 3
    T_hat = tr.estimate_transition_anchors(clean @ T_TRUE, quantile=1.0)
    assert np.abs(T_hat - T_TRUE).max() < 0.01
    x_clean = np.array([0.7, 0.2, 0.1])  # clean class 0 ...
    noisy = x_clean @ T_TRUE  # ... whose noisy labels are mostly 1
    assert noisy.argmax() == 1
    plain = _minimise_expected_loss(noisy, None)
    corrected = _minimise_expected_loss(noisy, T_hat)
    assert plain.argmax() == 1 and np.allclose(plain, noisy, atol=1e-3)
    assert corrected.argmax() == 0 and np.allclose(corrected, x_clean, atol=0.02)


def test_tf_forward_log_probs_equal_the_array_core():
    from ferkeras.trainers.forward import forward_corrected_log_probs_tf

    logits = np.random.default_rng(2).normal(0, 3, (16, 3)).astype("float32")
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    got = forward_corrected_log_probs_tf(tf.constant(logits), tf.constant(T_TRUE, tf.float32))
    assert np.allclose(got.numpy(), C.forward_corrected_log_probs(p, T_TRUE), atol=1e-4)


# ----------------------------------------------------------------------------- forward, Keras
S, K = 6, 3


def _blobs(n, seed, noisy=True):
    """Images whose class is coded by which third of the rows is bright; noisy labels drawn
    from T_TRUE (known truth)."""
    r = np.random.default_rng(seed)
    truth = np.arange(n) % K
    images = r.uniform(0, 30, (n, S, S, 1)).astype("float32")
    for c in range(K):
        images[truth == c, 2 * c:2 * c + 2] += 200.0
    if not noisy:
        return images, truth
    labels = truth.copy()
    for c in range(K):  # exactly the proportions of T_TRUE's row c, at random rows
        rows = r.permutation(np.flatnonzero(truth == c))
        ends = np.round(np.cumsum(T_TRUE[c]) * len(rows)).astype(int)
        for j in range(K):
            labels[rows[(ends[j - 1] if j else 0):ends[j]]] = j
    return images, labels, truth


def _linear_net(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((S, S, 1)), keras.layers.Rescaling(1 / 255.0),
                             keras.layers.Flatten(), keras.layers.Dense(K)])


def test_forward_correction_in_training_recovers_the_flipped_class():
    from ferkeras.callbacks.forward import ForwardCorrection
    from ferkeras.trainers.forward import ForwardCorrectedTrainer
    from ferkeras.trainers.supervised import SupervisedTrainer

    x, y, truth = _blobs(300, 0)
    xt, yt = _blobs(150, 1, noisy=False)
    ds = tf.data.Dataset.from_tensor_slices((x, y, np.arange(len(y)))).batch(64)

    def clean_accuracy(trainer):
        return float((trainer.predict(xt, verbose=0).argmax(1) == yt).mean())

    def fit(cls, callbacks=()):
        trainer = cls(_linear_net(), num_classes=K, loss="ce", seed=0)
        trainer.compile(optimizer=keras.optimizers.Adam(0.05))
        trainer.fit(x, y, batch_size=32, epochs=24, verbose=0,
                    callbacks=[cb(trainer) for cb in callbacks])
        return trainer

    plain = fit(SupervisedTrainer)
    forward = fit(ForwardCorrectedTrainer, [lambda t: ForwardCorrection(
        trainer=t, train_split=None, data_cfg=None, warmup_epochs=8, dataset=ds,
        echo=lambda *_: None)])
    assert forward.forward_is_on
    T_hat = keras.ops.convert_to_numpy(forward.transition)
    assert T_hat[0, 1] > 0.4 and T_hat[1, 1] > 0.6  # the majority flip is found
    acc_plain, acc_forward = clean_accuracy(plain), clean_accuracy(forward)
    assert acc_plain < 0.75  # class 0 is predicted as 1
    assert acc_forward > 0.9 and acc_forward > acc_plain + 0.2


def test_forward_trainer_refuses_other_losses_and_bad_T():
    from ferkeras.trainers.forward import ForwardCorrectedTrainer

    with pytest.raises(ValueError, match="cross-entropy only"):
        ForwardCorrectedTrainer(_linear_net(), num_classes=K, loss="balanced_softmax")
    t = ForwardCorrectedTrainer(_linear_net(), num_classes=K)
    assert not t.forward_is_on
    with pytest.raises(ValueError, match="T must be"):
        t.set_transition(np.eye(4))


def test_forward_recipe_keys_are_checked():
    from ferkeras.training.recipe import RecipeError, recipe_from_dict

    assert recipe_from_dict({}).train.forward_correction == "none"
    bad = [({"train": {"forward_correction": "anchors", "loss": "logit_adjusted"}}, "train.loss"),
           ({"train": {"forward_correction": "anchors"}, "cycle": {"enabled": True}},
            "cycle.enabled"),
           ({"train": {"forward_correction": "anchors", "epochs": 3}},
            "forward_warmup_epochs"),
           ({"train": {"forward_correction": "backward"}}, "forward_correction")]
    for values, key in bad:
        with pytest.raises(RecipeError, match=key):
            recipe_from_dict(values)


def _tiny(**sections):
    from ferkeras.training.recipe import recipe_from_dict

    values = {"name": "t", "seed": 1,
              "data": {"source": "synthetic", "image_size": 16,
                       "synthetic": {"n_train": 128, "n_val": 32, "n_test": 32, "noise": 0.3,
                                     "profile": "uniform"}},
              "model": {"backbone": "small_cnn", "width": 4},
              "train": {"epochs": 2, "batch_size": 32, "loss": "ce"}}
    for name, extra in sections.items():
        values[name] = {**values.get(name, {}), **extra}
    return recipe_from_dict(values)


class _Killed(Exception):
    pass


def test_forward_recipe_trains_writes_T_and_resume_keeps_it(tmp_path, monkeypatch):
    from ferkeras.callbacks.state import RunState
    from ferkeras.training import train_recipe

    recipe = _tiny(train={"epochs": 3, "forward_correction": "anchors",
                          "forward_warmup_epochs": 1})
    run = tmp_path / "run"
    save = RunState.on_epoch_end

    def killed_after_epoch_2(self, epoch, logs=None):
        save(self, epoch, logs)
        if epoch == 1:
            raise _Killed

    monkeypatch.setattr(RunState, "on_epoch_end", killed_after_epoch_2)
    said = []
    with pytest.raises(_Killed):
        train_recipe(recipe, run_dir=run, verbose=0, echo=said.append)
    assert sum("T estimated after epoch 1" in m for m in said) == 1
    csv = (run / "forward_transition.csv").read_text().splitlines()
    assert csv[1].startswith("estimated,") and any(r.startswith("true,") for r in csv)
    assert (run / "forward_transition.png").is_file()
    T_file = np.array([[float(v) for v in r.split(",")[2:]] for r in csv[1:]
                       if r.startswith("estimated,")])
    monkeypatch.setattr(RunState, "on_epoch_end", save)
    said = []
    metrics = train_recipe(recipe, run_dir=run, resume=True, verbose=0, echo=said.append)
    # the resumed trainer (fresh: identity T, off) got T from the saved state, and did not
    # estimate it again
    assert any("continuing" in m and "epoch 3/3" in m for m in said)
    assert not any("T estimated" in m for m in said)
    block = metrics["forward_correction"]
    assert block["on"] and np.allclose(block["transition"], T_file, atol=1e-3)
    assert json.loads((run / "metrics.json").read_text())["forward_correction"]["on"]


# ----------------------------------------------------------------------------- relabel, arrays
def test_relabel_flagged_fixes_confident_noisy_rows_and_drops_the_rest():
    probs = np.array([[0.95, 0.04, 0.01],   # flagged, confident: relabelled to 0
                      [0.50, 0.45, 0.05],   # flagged, unsure: dropped
                      [0.02, 0.97, 0.01],   # judged clean: kept as given, even if confident
                      [0.05, 0.05, 0.90]])  # flagged, confident, agrees with its label
    labels = np.array([1, 1, 0, 2])
    clean = np.array([False, False, True, False])
    new, keep, relabelled = C.relabel_flagged(probs, labels, clean, threshold=0.9)
    np.testing.assert_array_equal(new, [0, 1, 0, 2])
    np.testing.assert_array_equal(keep, [True, False, True, True])
    np.testing.assert_array_equal(relabelled, [True, False, False, True])
    s = C.relabel_summary(relabelled, new, labels, true_labels=np.array([0, 0, 0, -1]))
    assert s == {"relabelled": 2, "changed": 1, "relabelled_known": 1, "relabel_correct": 1,
                 "given_correct": 0}
    with pytest.raises(ValueError, match="threshold"):
        C.relabel_flagged(probs, labels, clean, threshold=0.0)


def test_relabel_flagged_on_structured_noise_restores_true_labels():
    # Known truth, labels from T_TRUE; the model is confident on most rows (its clean
    # posterior), unsure on a quarter (ambiguous faces). The split flags the noisy rows.
    r = np.random.default_rng(3)
    n = 600
    truth = np.arange(n) % K
    labels = np.array([r.choice(K, p=T_TRUE[c]) for c in truth])
    conf = np.where(r.random(n) < 0.75, 0.97, 0.6)
    probs = np.full((n, K), 0.0)
    probs[np.arange(n), truth] = conf
    probs += ((1 - conf) / (K - 1))[:, None] * (1 - np.eye(K)[truth])
    flagged = labels != truth
    new, keep, relabelled = C.relabel_flagged(probs, labels, ~flagged, threshold=0.9)
    assert relabelled.any() and not (relabelled & ~flagged).any()
    assert (new[relabelled] == truth[relabelled]).all()
    np.testing.assert_array_equal(relabelled, flagged & (conf >= 0.9))
    assert not keep[flagged & (conf < 0.9)].any()  # unsure noisy rows leave the loss


# ----------------------------------------------------------------------------- relabel, Keras
NR = 12


def _one_relabel_step(labels, relabels, keep, strong_shift=0.0):
    """Weights after one SGD step of a relabel-mode CycleTrainer on all NR rows."""
    from ferkeras.trainers.cycle import CycleTrainer

    r = np.random.default_rng(0)
    weak = r.uniform(0, 255, (NR, S, S, 1)).astype("float32")
    strong = np.clip(weak + strong_shift, 0, 255).astype("float32")
    trainer = CycleTrainer(_linear_net(), num_classes=K, num_samples=NR,
                           noisy_mode="relabel", relabel_threshold=0.9)
    trainer.compile(optimizer=keras.optimizers.SGD(0.5))
    trainer.build_state((S, S, 1))
    trainer.set_split(keep, keep.astype("float32"), np.full(K, 1 / K), relabels=relabels)
    data = ((weak, strong), np.asarray(labels, np.int32), np.arange(NR, dtype=np.int32))
    trainer.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0, shuffle=False)
    return np.concatenate([w.numpy().ravel() for w in trainer.network.trainable_weights])


def test_relabel_step_trains_on_new_labels_and_never_on_dropped_rows():
    labels = np.arange(NR) % K
    keep = np.ones(NR, bool)
    keep[[1, 4]] = False  # dropped
    relabels = np.full(NR, -1.0)
    relabels[[2, 5]] = [0, 1]  # relabelled (kept)
    ref = _one_relabel_step(np.where(relabels >= 0, relabels, labels), np.full(NR, -1.0), keep)
    # the table, not the given label, reaches the loss of a relabelled row
    wrong = labels.copy()
    wrong[[2, 5]] = 2
    np.testing.assert_allclose(_one_relabel_step(wrong, relabels, keep), ref, atol=1e-6)
    # dropped rows' labels and every strong view never reach it
    wrong[[1, 4]] = [2, 0]
    np.testing.assert_allclose(_one_relabel_step(wrong, relabels, keep, strong_shift=80.0),
                               ref, atol=1e-6)
    # not vacuous: a kept row's label does
    wrong[0] = 1
    assert np.abs(_one_relabel_step(wrong, relabels, keep) - ref).max() > 1e-5


def test_relabel_recipe_keys_are_checked():
    from ferkeras.training.recipe import RecipeError, recipe_from_dict

    assert recipe_from_dict({}).cycle.method == "fixmatch"
    with pytest.raises(RecipeError, match="cycle.enabled"):
        recipe_from_dict({"cycle": {"method": "relabel"}})
    with pytest.raises(RecipeError, match="cycle.method"):
        recipe_from_dict({"cycle": {"enabled": True, "method": "discard"}})
    with pytest.raises(RecipeError, match="relabel.threshold"):
        recipe_from_dict({"cycle": {"enabled": True, "method": "relabel",
                                    "relabel": {"threshold": 1.5}}})


def test_relabel_recipe_trains_reports_and_resumes(tmp_path):
    import csv

    from ferkeras.training import train_recipe

    recipe = _tiny(train={"ema_decay": 0.9},
                   cycle={"enabled": True, "warmup_epochs": 1, "cycles": 1,
                          "epochs_per_cycle": 1, "min_class_samples": 8,
                          "method": "relabel", "relabel": {"threshold": 0.1}})
    run = tmp_path / "run"
    metrics = train_recipe(recipe, run_dir=run, verbose=0, echo=lambda *_: None)
    block = metrics["relabel"]
    assert block["threshold"] == 0.1 and block["relabelled"] > 0
    assert 0 <= block["relabel_correct"] <= block["relabelled_known"] <= block["relabelled"]
    with open(run / "reports" / "split-e002" / "samples.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    marked = [r for r in rows if r["relabel"]]
    assert len(marked) == block["relabelled"]
    assert all(r["labelled"] == "0" for r in marked)  # only rows judged noisy
    assert sum(r["relabel"] != r["given_label"] for r in marked) == block["changed"]
    again = train_recipe(recipe, run_dir=run, resume=True, verbose=0, echo=lambda *_: None)
    assert again["relabel"] == block


def test_forward_and_relabel_steps_two_replicas_match_one(mirrored_strategy):
    from ferkeras.trainers.cycle import CycleTrainer
    from ferkeras.trainers.forward import ForwardCorrectedTrainer

    x, y, _ = _blobs(64, 4)
    keep = np.arange(64) % 4 != 0
    relabels = np.where(np.arange(64) % 8 == 1, 2.0, -1.0)
    keep |= relabels >= 0

    def run(strategy, relabel):
        with strategy.scope():
            if relabel:
                t = CycleTrainer(_linear_net(), num_classes=K, num_samples=64,
                                 noisy_mode="relabel")
            else:
                t = ForwardCorrectedTrainer(_linear_net(), num_classes=K)
            t.compile(optimizer=keras.optimizers.SGD(0.1))
            t.build_state((S, S, 1))
        if relabel:
            t.set_split(keep, keep.astype("float32"), np.full(K, 1 / K), relabels=relabels)
            data = ((x, x[:, ::-1].copy()), y.astype("int32"), np.arange(64, dtype="int32"))
        else:
            t.set_transition(T_TRUE * 0.9 + 0.1 / K)
            data = (x, y.astype("int32"), np.arange(64, dtype="int32"))
        t.fit(tf.data.Dataset.from_tensor_slices(data).batch(16), epochs=2, verbose=0,
              shuffle=False)
        return np.concatenate([w.numpy().ravel() for w in t.network.trainable_weights])

    for relabel in (False, True):
        one = run(tf.distribute.get_strategy(), relabel)
        two = run(mirrored_strategy, relabel)
        np.testing.assert_allclose(one, two, atol=1e-5)
