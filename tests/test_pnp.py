"""PNP (Sun et al., CVPR 2022; ferkeras.methods.pnp.core, ferkeras.methods.pnp.trainer).

Defining behaviour: on images with injected ID noise (flipped labels) and injected OOD rows (a
held-out pattern with random labels), the noise-type head trained by PNP's pseudo-targets ranks
the OOD rows above the clean ones by p(OOD), and the ID-noisy rows' relabelled targets point to
their true class more often than not. 2 replicas match 1; the recipe path trains and writes
p_ood into samples.csv.
"""

import csv
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from ferkeras.methods.pnp import core as PNP
from ferkeras.methods.pnp.trainer import PNPTrainer


# ----------------------------------------------------------------------------- array core
def test_targets_on_known_numbers():
    sm = np.asarray(PNP.smoothed_labels([0, 2], num_classes=3, epsilon=0.6))
    np.testing.assert_allclose(sm, [[0.4, 0.3, 0.3], [0.3, 0.3, 0.4]], atol=1e-6)
    onehot = np.eye(3, dtype=np.float32)
    assert float(PNP.js_divergence(onehot[:1], onehot[1:2])[0]) == pytest.approx(1.0, abs=1e-4)
    assert float(PNP.js_divergence(onehot[:1], onehot[:1])[0]) == pytest.approx(0.0, abs=1e-6)
    sharp = PNP.smoothed_labels([0, 0, 0], num_classes=3, epsilon=0.1)
    confident = np.array([[0.98, 0.01, 0.01]] * 3, np.float32)  # agrees with label 0
    wrong = np.array([[0.01, 0.98, 0.01]] * 3, np.float32)      # another class
    flat = np.full((3, 3), 1 / 3, np.float32)                   # no class at all
    c_ok, o_ok = (np.asarray(v) for v in PNP.noise_type_targets(confident, confident, sharp))
    c_id, o_id = (np.asarray(v) for v in PNP.noise_type_targets(wrong, wrong, sharp))
    c_ood, o_ood = (np.asarray(v) for v in PNP.noise_type_targets(flat, confident, sharp))
    assert c_ok[0] > 0.9 and c_id[0] < 0.3          # clean target: agreement with the label
    assert o_ok[0] < 0.1 and o_id[0] < 0.1 and o_ood[0] > 0.65  # OOD: entropy + disagreement
    relabel, flattened = (np.asarray(v) for v in PNP.type_targets(wrong, wrong, sharp))
    assert (relabel.argmax(1) == 1).all() and relabel.max() > 0.9  # the model's class wins
    assert flattened.max() < 0.4                                  # close to uniform
    labelled, clean_prob = PNP.split_from_noise_types(
        np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1]]),
        np.array([0, 0, 1, 2]), num_classes=3)
    np.testing.assert_array_equal(labelled, [True, False, True, True])  # classes 1, 2 keep one
    np.testing.assert_allclose(clean_prob, [0.8, 0.1, 0.3, 0.2])
    with pytest.raises(ValueError, match="epsilon"):
        PNP.smoothed_labels([0], num_classes=3, epsilon=1.0)
    with pytest.raises(ValueError, match="type_probs"):
        PNP.split_from_noise_types(np.ones((2, 2)), np.array([0, 1]), num_classes=2)


# ----------------------------------------------------------------------------- the head
K, S = 4, 12


def _bands(seed=0, n_per=50, n_ood=40, flip=0.15):
    """K classes = a bright horizontal band at row 3k; OOD = a vertical band (a pattern no
    class has) with a random label; 15% of the ID rows get another class (known truth)."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(K), n_per)
    x = 40 + rng.normal(0, 12, (true.size + n_ood, S, S, 1))
    for i, k in enumerate(true):
        x[i, 3 * k: 3 * k + 2, :, 0] += 160
    for j, col in enumerate(rng.integers(0, S - 2, n_ood)):
        x[true.size + j, :, col: col + 2, 0] += 160
    given = np.concatenate([true, rng.integers(0, K, n_ood)])
    is_ood = np.r_[np.zeros(true.size, bool), np.ones(n_ood, bool)]
    flipped = np.r_[rng.random(true.size) < flip, np.zeros(n_ood, bool)]
    given[flipped] = (given[flipped] + rng.integers(1, K, flipped.sum())) % K
    truth = np.r_[true, np.full(n_ood, -1)]
    return (np.clip(x, 0, 255).astype(np.float32), given.astype(np.int32), truth, is_ood,
            flipped)


def test_noise_type_head_finds_ood_rows_and_relabels_id_noise():
    from ferkeras.models import build_network
    from ferkeras.trainers.supervised import SupervisedTrainer

    x, y, truth, is_ood, flipped = _bands()
    keras.utils.set_random_seed(0)
    net = build_network("small_cnn", num_classes=K, input_shape=(S, S, 1), width=8)
    warm = SupervisedTrainer(net, num_classes=K)  # the cycle's warm-up: the given labels
    warm.compile(optimizer=keras.optimizers.Adam(3e-3))
    warm.fit(x, y, batch_size=32, epochs=5, verbose=0)
    # OOD rows dropped (beta 0) and no view consistency (omega 0): with the authors' beta 1
    # (a near-uniform target weighted by p(OOD) for every row) and omega 1 (symmetric KL, no
    # stop-gradient), this tiny CNN trained from scratch loses its confidence within a few
    # hundred steps, and with it the relabelled targets (see the module docstring of pnp).
    trainer = PNPTrainer(net, num_classes=K, num_samples=len(x), true_labels=truth,
                         label_smoothing_epsilon=0.2, ood_weight=0.0, consistency_weight=0.0)
    trainer.compile(optimizer=keras.optimizers.Adam(3e-3))
    trainer.build_state((S, S, 1))
    trainer.set_split(np.ones(len(x), bool), np.ones(len(x)), np.full(K, 1 / K))
    hist = trainer.fit(x, y, batch_size=16, epochs=10, verbose=0).history
    assert hist["pnp_aux_loss"][-1] < hist["pnp_aux_loss"][0]
    ds = tf.data.Dataset.from_tensor_slices((x, y, np.arange(len(x), dtype=np.int32))).batch(64)
    types = trainer.noise_type_probs(ds)
    assert types.shape == (len(x), 3) and np.allclose(types.sum(1), 1.0, atol=1e-5)
    clean = ~is_ood & ~flipped
    auc = roc_auc_score(is_ood[is_ood | clean], types[is_ood | clean, 2])
    assert auc > 0.8, auc
    probs = tf.nn.softmax(net(x, training=False)).numpy()
    smoothed = PNP.smoothed_labels(y, num_classes=K, epsilon=0.2)
    relabel = np.asarray(PNP.type_targets(probs, probs, smoothed, temperature=0.1)[0])
    hit = (relabel.argmax(1)[flipped] == truth[flipped]).mean()
    assert hit > 0.5, hit


# ----------------------------------------------------------------------------- replicas
def _logits_network():
    """test_trainers' plain network with its last layer named 'logits' (PNP's feature tap)."""
    from test_trainers import S as TS

    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((TS, TS, 1)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(6, 3, activation="relu"), keras.layers.Flatten(),
        keras.layers.Dense(4, name="logits"),
    ])


def test_pnp_two_replicas_match_one(tmp_path):
    """In its own process (as test_mpl's): a MirroredStrategy built in the pytest process
    shares collective instance keys with later tests' strategies, and their replica tests
    then fail ("Shape mismatch in the collective instance")."""
    from tiny_recipe import check_in_replica_process

    check_in_replica_process(tmp_path, "test_pnp", "t._check_two_replicas_match_one(devices)")


def _check_two_replicas_match_one(devices):
    from test_trainers import N, _data, _strategies, _weights
    from test_trainers import S as TS

    def run(strategy):
        with strategy.scope():
            trainer = PNPTrainer(_logits_network(), num_classes=4, num_samples=N)
            trainer.compile(optimizer=keras.optimizers.SGD(0.05))
            trainer.build_state((TS, TS, 1))
        trainer.set_split(np.ones(N, bool), np.ones(N), np.full(4, 0.25))
        hist = trainer.fit(_data(True), epochs=2, verbose=0, shuffle=False).history
        return trainer, hist

    one, two = _strategies(devices)
    t1, h1 = run(one)
    t2, h2 = run(two)
    assert two.num_replicas_in_sync == 2
    for key in ("loss", "pnp_aux_loss", "p_clean", "p_ood"):
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-4, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(_weights(t1.network), _weights(t2.network), atol=1e-5)
    np.testing.assert_allclose(_weights(t1.noise_type_head), _weights(t2.noise_type_head),
                               atol=1e-5)


def test_saved_weights_hold_the_head_and_its_optimizer_slots(tmp_path):
    """What RunState writes (save_weights) restores the head and the shared optimizer: one
    more epoch after a reload equals one more epoch straight on."""
    from test_trainers import N, _data
    from test_trainers import S as TS

    def fresh():
        trainer = PNPTrainer(_logits_network(), num_classes=4, num_samples=N)
        trainer.compile(optimizer=keras.optimizers.Adam(0.01))
        trainer.build_state((TS, TS, 1))
        trainer.set_split(np.ones(N, bool), np.ones(N), np.full(4, 0.25))
        return trainer

    straight = fresh()
    straight.fit(_data(True), epochs=1, verbose=0, shuffle=False)
    straight.save_weights(tmp_path / "e1.weights.h5")
    straight.fit(_data(True), epochs=2, initial_epoch=1, verbose=0, shuffle=False)
    resumed = fresh()
    resumed.load_weights(tmp_path / "e1.weights.h5")
    resumed.fit(_data(True), epochs=2, initial_epoch=1, verbose=0, shuffle=False)
    for a, b in zip(straight.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)


def test_bad_arguments_and_config():
    with pytest.raises(ValueError, match="ood_weight=-1"):
        PNPTrainer(_logits_network(), num_classes=4, ood_weight=-1.0)
    trainer = PNPTrainer(_logits_network(), num_classes=4, eta=0.3, ood_weight=0.0)
    config = trainer.get_config()
    assert config["eta"] == 0.3 and config["ood_weight"] == 0.0


# ----------------------------------------------------------------------------- recipe path
def _recipe_values():
    return {
        "name": "pnp", "seed": 0,
        "data": {"source": "synthetic", "image_size": 16,
                 "synthetic": {"n_train": 96, "n_val": 32, "n_test": 0, "noise": 0.3,
                               "profile": "uniform"}},
        "model": {"backbone": "small_cnn", "width": 4},
        "train": {"batch_size": 48, "loss": "ce"},
        "cycle": {"enabled": True, "warmup_epochs": 0, "cycles": 1, "epochs_per_cycle": 1,
                  "min_class_samples": 4, "method": "pnp"},
    }


def test_recipe_path_trains_with_pnp_and_reports_p_ood(tmp_path):
    from ferkeras.training import train_recipe
    from ferkeras.training.recipe import recipe_from_dict

    lines = []
    metrics = train_recipe(recipe_from_dict(_recipe_values()), run_dir=tmp_path / "run",
                           verbose=0, echo=lines.append)
    assert metrics["epochs"] == 1
    with open(tmp_path / "run" / "reports" / "split-e001" / "samples.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 96 and "p_ood" in rows[0]
    p_ood = np.array([float(r["p_ood"]) for r in rows])
    assert ((p_ood >= 0) & (p_ood <= 1)).all()
    assert "pnp_aux_loss" in (tmp_path / "run" / "history.csv").read_text()


def test_recipe_refuses_pnp_with_another_cycle_method():
    from ferkeras.training.recipe import RecipeError, recipe_from_dict

    values = _recipe_values()
    values["cycle"]["crest"] = True  # the old spelling of another method
    with pytest.raises(RecipeError, match=r"name different methods.*\(crest, pnp\)"):
        recipe_from_dict(values)
    values = _recipe_values()
    values["cycle"]["pnp"] = {"temperature": 0.0}
    with pytest.raises(RecipeError, match="'cycle.pnp.temperature' must be >= 0.01"):
        recipe_from_dict(values)
    values = _recipe_values()
    values["cycle"]["selector"] = "h2e"  # PNP splits with its own head
    with pytest.raises(RecipeError, match="'cycle.selector' cannot be set with cycle.method pnp"):
        recipe_from_dict(values)


@pytest.mark.slow  # the one grid variant trained here; the others build their recipes only
def test_grid_variant_pnp_trains_end_to_end(tmp_path):
    from test_adacm import train_grid_variant

    recipe, metrics = train_grid_variant("pnp", tmp_path / "run")
    assert recipe.cycle.method == "pnp" and metrics["epochs"] == 3
    reports = sorted((tmp_path / "run" / "reports").glob("split-*/samples.csv"))
    assert reports and "p_ood" in reports[-1].read_text().splitlines()[0]


def test_every_grid_variant_builds_a_recipe_of_its_method():
    """bench/noisy_grid.py's variants are written in the recipe's own keys (cycle.method and
    its section): each builds a valid recipe that names its method, without training (the
    recipe-path test of each method trains it; the pnp variant above trains through the
    grid's builders)."""
    import argparse
    import sys
    import warnings

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
    import noisy_grid

    from ferkeras.methods import METHODS

    args = argparse.Namespace(model="small_cnn", width=4, epochs=10, limit_train=0,
                              dynamics=False)
    seen = set()
    for name, (_, overrides) in noisy_grid.VARIANTS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # an old key would warn
            recipe = noisy_grid.make_recipe(name, noisy_grid.settings_for(name, args, 0),
                                            "unused")
        if "cycle.method" in overrides:
            assert recipe.cycle.method == overrides["cycle.method"], name
            seen.add(recipe.cycle.method)
        for key, value in overrides.items():
            section, _, rest = key.partition(".")
            node = getattr(recipe, section)
            for part in rest.split("."):
                node = getattr(node, part)
            assert node == value, (name, key)
    assert seen >= set(METHODS) - {"fixmatch", "soft"}, seen

