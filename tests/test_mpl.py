"""Meta Pseudo Labels (Pham et al., CVPR 2021; ferkeras.methods.mpl.core,
ferkeras.methods.mpl.trainer).

Defining behaviour: the teacher learns from the student's labelled-loss feedback h. h is
the first-order estimate of the drop in the student's labelled loss caused by its step on
the teacher's pseudo-labels (checked against the real drop on a linear softmax model, both
signs); with h forced to 0 the teacher ends elsewhere; a teacher whose pseudo-labels are
right gets h > 0 and is pushed toward its labels, one whose labels are a derangement of the
truth gets h < 0 and is pushed away from them. 2 replicas match 1; resume keeps the teacher.
"""


import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from test_trainers import N, S, _data, _strategies, _train, _weights

from ferkeras.methods.mpl import core as M
from ferkeras.methods.mpl.trainer import MPLTrainer

K = 4


# ----------------------------------------------------------------------------- array core
def test_feedback_signal_on_known_numbers():
    g_l = [np.array([[1.0, 2.0]]), np.array([3.0]), None]
    g_u = [np.array([[0.5, -1.0]]), np.array([2.0]), np.array([9.0])]
    # 0.1 * (0.5 - 2 + 6); a missing gradient counts as zero
    h = M.feedback_signal(g_l, g_u, student_learning_rate=0.1)
    assert float(h) == pytest.approx(0.45)
    assert float(M.labelled_loss_drop(2.0, 1.5)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        M.feedback_signal([np.ones(2)], [np.ones(3)], student_learning_rate=0.1)
    with pytest.raises(ValueError, match="one entry per variable"):
        M.feedback_signal([np.ones(2)], [], student_learning_rate=0.1)
    np.testing.assert_array_equal(M.hard_pseudo_labels(np.array([[0.1, 2.0], [3.0, -1.0]])),
                                  [1, 0])
    # the teacher term is h * CE(y_hat, logits): log 2 per row for even logits
    loss = M.feedback_teacher_loss(np.zeros((2, 2)), np.array([0, 1]), feedback=-2.0)
    np.testing.assert_allclose(loss, -2.0 * np.log(2.0), rtol=1e-6)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _ce_and_grad(w, x, y):
    """Mean softmax CE of the linear model x @ w and its gradient (D, K)."""
    p = _softmax(x @ w)
    onehot = np.eye(w.shape[1])[y]
    ce = -np.log(p[np.arange(len(y)), y]).mean()
    return ce, x.T @ (p - onehot) / len(y)


@pytest.mark.parametrize("pseudo", ["truth", "derangement"])
def test_h_estimates_the_labelled_loss_drop_and_its_sign(pseudo):
    """Known truth: class-coded features; the student takes one SGD step on the
    pseudo-labels of unlabelled rows. Right labels lower its labelled loss, deranged labels
    raise it, and h (labelled gradient at the new student . pseudo gradient at the old one)
    has that sign and, for a small step, the size of the real drop."""
    r = np.random.default_rng(0)
    centres = 2.0 * np.eye(K)
    y_l, y_u = r.integers(0, K, 40), r.integers(0, K, 60)
    x_l = centres[y_l] + r.normal(0, 0.5, (40, K))
    x_u = centres[y_u] + r.normal(0, 0.5, (60, K))
    y_hat = y_u if pseudo == "truth" else (y_u + 1) % K
    w = r.normal(0, 0.1, (K, K))
    lr = 0.05
    ce_old, _ = _ce_and_grad(w, x_l, y_l)
    _, g_u = _ce_and_grad(w, x_u, y_hat)
    w_new = w - lr * g_u
    ce_new, g_l_new = _ce_and_grad(w_new, x_l, y_l)
    drop = float(M.labelled_loss_drop(ce_old, ce_new))
    h = float(M.feedback_signal([g_l_new], [g_u], student_learning_rate=lr))
    assert (drop > 0) == (pseudo == "truth") and abs(drop) > 1e-3
    assert np.sign(h) == np.sign(drop)
    assert h == pytest.approx(drop, rel=0.05)  # first order: h ~ the real drop


# ----------------------------------------------------------------------------- trainer
def _linear_network(seed):
    """Pixels in [-1, 1] -> logits; mean-free inputs keep the class code (a bright row)
    the only thing that two rows' features share."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((S, S, 1)), keras.layers.Rescaling(1 / 127.5, -1.0),
                             keras.layers.Flatten(), keras.layers.Dense(K)])


def _views(seed=0):
    r = np.random.default_rng(seed)
    labels = (np.arange(N) % K).astype(np.int32)
    images = r.uniform(0, 255, size=(N, S, S, 1)).astype(np.float32)
    images[np.arange(N), labels * 3, :, 0] = 255.0  # row 3k bright <=> class k
    return labels, images


UNLAB = np.arange(N) % 3 == 0  # every class has labelled and unlabelled rows


def _hand_made_kernel(perm):
    """A Dense kernel that reads row 3 * perm[k] as the evidence for class k."""
    kernel = np.zeros((S, S, K), np.float32)
    for k in range(K):
        kernel[3 * perm[k], :, k] = 1.0
    return kernel.reshape(S * S, K)


def _one_mpl_step(perm, feedback_scale):
    """One step on all N rows (half unlabelled) of a fresh student (random linear) and a
    hand-made teacher; returns (student weights, teacher weights, logs, trainer)."""
    labels, images = _views()
    trainer = MPLTrainer(_linear_network(3), num_classes=K, num_samples=N, threshold=0.9,
                         threshold_mode="fixed", feedback_scale=feedback_scale,
                         true_labels=labels)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05))
    trainer.build_state((S, S, 1))
    trainer.set_split(~UNLAB, (~UNLAB).astype(np.float32), np.full(K, 1.0 / K))
    dense = trainer.teacher.layers[-1]
    dense.kernel.assign(_hand_made_kernel(perm) / 4.0)
    dense.bias.assign(np.zeros(K, np.float32))
    data = ((images, images), labels, np.arange(N, dtype=np.int32))
    hist = trainer.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0, shuffle=False)
    return (_weights(trainer.network), _weights(trainer.teacher),
            {k: v[-1] for k, v in hist.history.items()}, trainer)


def _teacher_ce_on(trainer, perm):
    """The teacher's mean CE on its own pseudo-labels (the deranged or true classes)."""
    labels, images = _views()
    logits = trainer.teacher(images[UNLAB], training=False)
    y_hat = np.argsort(perm)[labels[UNLAB]]  # class k reads row 3 * perm[k]
    return float(np.mean(keras.losses.sparse_categorical_crossentropy(
        y_hat, logits, from_logits=True)))


@pytest.mark.parametrize("perm", [(0, 1, 2, 3), (1, 2, 3, 0)], ids=["right", "deranged"])
def test_feedback_moves_the_teacher_by_the_students_labelled_loss(perm):
    s_on, t_on, log_on, trainer_on = _one_mpl_step(perm, 1.0)
    s_off, t_off, log_off, trainer_off = _one_mpl_step(perm, 0.0)
    # Same seeds, same batch: the student's step does not depend on the feedback ...
    np.testing.assert_array_equal(s_on, s_off)
    assert log_on["mpl_h"] == log_off["mpl_h"]
    # ... the teacher's does.
    assert np.abs(t_on - t_off).max() > 1e-5
    right = perm == (0, 1, 2, 3)
    # The pseudo-labels are the teacher's: right ones (all true) or a derangement (all wrong).
    assert log_on["pseudo_acc"] == (1.0 if right else 0.0)
    h = log_on["mpl_h"]
    assert (h > 0) if right else (h < 0), h
    # h > 0 makes the teacher's pseudo-labels more likely, h < 0 less likely.
    ce_on, ce_off = _teacher_ce_on(trainer_on, perm), _teacher_ce_on(trainer_off, perm)
    assert (ce_on < ce_off) if right else (ce_on > ce_off), (ce_on, ce_off)


def test_pseudo_labels_come_from_the_teacher():
    """A deranged teacher: the student's unlabelled term trains on its (wrong) labels."""
    _, _, log, trainer = _one_mpl_step((1, 2, 3, 0), 1.0)
    labels, images = _views()
    t_pred = np.argmax(trainer.teacher(images[UNLAB], training=False), axis=-1)
    assert (t_pred != labels[UNLAB]).all()


def test_mpl_two_replicas_match_one(tmp_path):
    """In its own process: a MirroredStrategy built in this one would share collective
    instance keys with the other tests' strategies, and TF then mixes up the MPL step's
    extra all-reduces with theirs ("Shape mismatch in the collective instance")."""
    from tiny_recipe import check_in_replica_process

    check_in_replica_process(tmp_path, "test_mpl", "t._check_two_replicas_match_one(devices)")


def _check_two_replicas_match_one(devices):
    one, two = _strategies(devices)
    kw = dict(num_samples=N, threshold=0.5, threshold_mode="fixed")
    t1, h1 = _train(one, MPLTrainer, True, **kw)
    t2, h2 = _train(two, MPLTrainer, True, **kw)
    assert two.num_replicas_in_sync == 2
    for key in ("loss", "sup_loss", "unsup_loss", "teacher_loss", "mpl_h", "teacher_mask_rate"):
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert np.abs(h1["mpl_h"]).min() > 0
    np.testing.assert_allclose(_weights(t1.network), _weights(t2.network), atol=1e-5)
    np.testing.assert_allclose(_weights(t1.teacher), _weights(t2.teacher), atol=1e-5)
    assert int(t2.teacher_optimizer.iterations.numpy()) == int(t1.optimizer.iterations.numpy())


# ----------------------------------------------------------------------------- resume
def _fresh(kw):
    from test_trainers import _plain_network

    trainer = MPLTrainer(_plain_network(), num_classes=K, **kw)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    trainer.build_state((S, S, 1))
    return trainer


def test_resume_keeps_the_teacher_and_its_optimizer(tmp_path):
    """2 epochs straight == 1 epoch, save_weights (what RunState writes), a fresh trainer,
    load, the same split installed again, 1 more epoch."""
    kw = dict(num_samples=N, threshold=0.5, threshold_mode="fixed")
    mask = np.ones(N, np.float32)
    mask[::3] = 0.0

    def split(trainer):
        trainer.set_split(mask > 0.5, mask, np.full(K, 1.0 / K))

    straight = _fresh(kw)
    split(straight)
    straight.fit(_data(True), epochs=2, verbose=0, shuffle=False)

    first = _fresh(kw)
    split(first)
    first.fit(_data(True), epochs=1, verbose=0, shuffle=False)
    path = tmp_path / "state.weights.h5"
    first.save_weights(str(path))
    with h5py.File(path) as fh:
        names = []
        fh.visit(names.append)
    assert any(n.startswith("teacher_optimizer/") for n in names), names

    resumed = _fresh(kw)
    resumed.load_weights(str(path))
    assert float(resumed.teacher_ready.numpy()) == 1.0
    np.testing.assert_array_equal(_weights(resumed.teacher), _weights(first.teacher))
    split(resumed)  # a resumed cycle installs its split again: no fresh copy of the student
    assert not np.allclose(_weights(resumed.teacher), _weights(resumed.network))
    for a, b in zip(resumed.teacher_optimizer.variables, first.teacher_optimizer.variables,
                    strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Continue with the second epoch's batches (the stream's order is fixed, no shuffle).
    resumed.fit(_data(True), epochs=1, verbose=0, shuffle=False)
    np.testing.assert_allclose(_weights(resumed.teacher), _weights(straight.teacher),
                               atol=1e-6)
    np.testing.assert_allclose(_weights(resumed.network), _weights(straight.network),
                               atol=1e-6)


def test_bad_arguments_and_config_round_trip():
    from test_trainers import _plain_network

    with pytest.raises(ValueError, match="Received: teacher_lr_scale=-1"):
        MPLTrainer(_plain_network(), num_classes=K, teacher_lr_scale=-1)
    with pytest.raises(ValueError, match="Received: feedback_scale=-0.5"):
        MPLTrainer(_plain_network(), num_classes=K, feedback_scale=-0.5)
    trainer = MPLTrainer(_plain_network(), num_classes=K, num_samples=N, teacher_lr_scale=0.5)
    rebuilt = MPLTrainer.from_config(trainer.get_config())
    assert rebuilt.teacher_lr_scale == 0.5 and rebuilt.feedback_scale == 1.0
    trainer.compile(optimizer=keras.optimizers.SGD(0.2))
    assert float(trainer.teacher_optimizer.learning_rate) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- recipe
def test_recipe_path_trains_one_epoch_with_mpl(tmp_path):
    from ferkeras.training import train_recipe
    from ferkeras.training.recipe import RecipeError, recipe_from_dict

    values = {
        "name": "mpl", "seed": 0,
        "data": {"source": "synthetic", "image_size": 16,
                 "synthetic": {"n_train": 96, "n_val": 32, "n_test": 0, "noise": 0.3,
                               "profile": "uniform"}},
        "model": {"backbone": "small_cnn", "width": 4},
        "train": {"batch_size": 32, "loss": "ce"},
        "cycle": {"enabled": True, "warmup_epochs": 0, "cycles": 1, "epochs_per_cycle": 1,
                  "min_class_samples": 4, "method": "mpl",
                  "mpl": {"teacher_lr_scale": 2.0}},
    }
    recipe = recipe_from_dict(values)
    metrics = train_recipe(recipe, run_dir=tmp_path / "run", verbose=0, echo=lambda *_: None)
    assert metrics["epochs"] == 1
    history = (tmp_path / "run" / "history.csv").read_text()
    assert "mpl_h" in history and "teacher_loss" in history
    state = next((tmp_path / "run" / "checkpoints").glob("state-e0001.weights.h5"))
    with h5py.File(state) as fh:
        iterations = [np.asarray(fh[n]) for n in _datasets(fh)
                      if n.startswith("teacher_optimizer")]
    assert iterations and int(iterations[0].ravel()[0]) > 0  # the teacher trained, was saved
    with pytest.raises(RecipeError, match="'cycle.method' \\(mpl: .*needs the noise cycle"):
        recipe_from_dict({**values, "cycle": {"method": "mpl"}})
    with pytest.raises(RecipeError, match="mpl.teacher_lr_scale' must be >= 0"):
        recipe_from_dict({**values, "cycle": {**values["cycle"],
                                              "mpl": {"teacher_lr_scale": -1}}})


def _datasets(fh):
    out = []
    fh.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset) else None)
    return out


class _Crash(keras.callbacks.Callback):
    """Stops the run with an error right after `epoch` (1-based) is saved (RunState runs
    before the caller's callbacks)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise RuntimeError("simulated kill")


@pytest.mark.slow
def test_recipe_run_resumed_mid_cycle_equals_the_uninterrupted_run(tmp_path):
    """Warm-up, then a 2-epoch MPL cycle; the run dies after the cycle's first epoch (the
    teacher has trained) and is resumed from its run state: the last epoch and final scores
    equal those of the uninterrupted run, so the teacher and its optimizer came back (the
    flag that stops a later split from re-copying the student is checked above)."""
    from conftest import make_toy_bundle
    from tiny_recipe import read_history

    from ferkeras.training import train
    from ferkeras.training.recipe import recipe_from_dict

    recipe = recipe_from_dict({
        "name": "mpl-resume", "seed": 1,
        "data": {"source": "synthetic", "image_size": 16},
        "model": {"backbone": "small_cnn", "width": 4, "dropout": 0.2},
        "train": {"batch_size": 32, "loss": "ce", "steps_per_epoch": 3},
        "cycle": {"enabled": True, "warmup_epochs": 1, "cycles": 1, "epochs_per_cycle": 2,
                  "min_class_samples": 4, "method": "mpl"},
    })
    bundle, _ = make_toy_bundle(n_train=128, n_val=32, noise=0.3)
    quiet = dict(verbose=0, echo=lambda *_: None)
    full = train(recipe, bundle, run_dir=tmp_path / "full", **quiet)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(recipe, bundle, run_dir=tmp_path / "cut", callbacks=[_Crash(2)], **quiet)
    resumed = train(recipe, bundle, run_dir=tmp_path / "cut", resume=True, **quiet)
    h_full, h_cut = read_history(tmp_path / "full"), read_history(tmp_path / "cut")
    assert len(h_full) == len(h_cut) == 3 and h_full[2]["mpl_h"] != 0.0
    for key in ("loss", "teacher_loss", "mpl_h", "unsup_loss", "val_accuracy"):
        assert h_cut[2][key] == pytest.approx(h_full[2][key], rel=1e-5, abs=1e-7), key
    assert resumed["val"]["last"]["accuracy"] == full["val"]["last"]["accuracy"]
