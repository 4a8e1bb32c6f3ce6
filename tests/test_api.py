"""The public Python API (docs/api.md) on tiny random data.

Each failure a new user hit (issue 13) has a test here that fails on the code before it:
public names missing, `CycleTrainer.fit(x, y)` / a second fit / `evaluate(ds)` failing,
losses that were not Keras losses, a registry that needed a config dataclass, a network
build that reset the global random state, and a 7-class folder without neutral (CK+).
"""

import json
import random
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from click.testing import CliRunner
from PIL import Image

import ferkeras as fk
from ferkeras.cli import cli

K, S = 7, 16
CKPLUS = ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]


def _data(n, seed=0, k=K, size=S):
    """Learnable tiny images: the class id is a bright band at a class-specific row."""
    r = np.random.default_rng(seed)
    y = (np.arange(n) % k).astype(np.int32)
    x = r.uniform(0, 60, size=(n, size, size, 1)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 2 * c: 2 * c + 2, :, 0] = 250.0
    return x, y


def _net(k=K, size=S):
    return fk.build_network("small_cnn", num_classes=k, input_shape=(size, size, 1), width=4)


def _cycle(**kwargs):
    trainer = fk.CycleTrainer(_net(), num_classes=K, **kwargs)
    trainer.compile(optimizer="adamw")
    return trainer


# ----------------------------------------------------------------------------- the snippet
def test_issue_snippet_runs_as_written(tmp_path):
    x_train, y_train = _data(70)
    x_val, y_val = _data(21, seed=1)
    resnet = fk.build_network("resnet18", num_classes=7, input_shape=(48, 48, 1))
    assert resnet.output_shape == (None, 7) and "resnet18" in fk.list_models()
    net = fk.build_network("small_cnn", num_classes=7, input_shape=(S, S, 1), width=4)
    trainer = fk.CycleTrainer(net, num_classes=7, loss=fk.losses.LogitAdjusted(tau=1.0))
    trainer.compile(optimizer="adamw")
    history = trainer.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=3,
                          batch_size=14, verbose=0,
                          callbacks=[fk.NoiseSplit(warmup_epochs=1, every=1,
                                                   report_dir=tmp_path / "reports",
                                                   min_class_samples=4)])
    assert len(history.history["val_loss"]) == 3
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["split-e002",
                                                                       "split-e003"]
    assert set(trainer.evaluate(x_val, y_val, verbose=0, return_dict=True)) == {"loss",
                                                                               "accuracy"}
    probs = trainer.predict(x_val, verbose=0)
    assert probs.shape == (21, 7) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    issues = fk.find_label_issues(y_val, probs)
    assert issues.shape == (21,) and issues.dtype == bool

    def make_model():
        model = keras.Sequential([keras.Input((S, S, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(7)])
        model.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    oos = fk.out_of_sample_probs(make_model, x_train, y_train, folds=2)
    assert oos.shape == (70, 7) and np.allclose(oos.sum(axis=1), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- import surface
def test_public_names_import():
    from ferkeras import CycleTrainer, NoiseSplit, find_label_issues  # noqa: F401
    from ferkeras.callbacks import NoiseSplit as callback  # noqa: F401
    from ferkeras.trainers import CycleTrainer as trainer  # noqa: F401

    assert callback is NoiseSplit and trainer is CycleTrainer
    assert issubclass(fk.losses.LogitAdjusted, keras.losses.Loss)


def test_import_ferkeras_does_not_import_tensorflow():
    code = "import ferkeras, sys; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]


def test_unknown_public_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Trainer'"):
        fk.Trainer  # noqa: B018


# ----------------------------------------------------------------------------- trainers
def test_fit_arrays_twice_then_evaluate_a_dataset():
    from ferkeras.models import build_network
    from ferkeras.trainers.cycle import CycleTrainer
    from ferkeras.training.recipe import ModelConfig

    x, y = _data(42)
    # the module paths and arguments the code before this API already had
    net = build_network(ModelConfig(width=4), input_shape=(S, S, 1), num_classes=K)
    trainer = CycleTrainer(net, num_classes=K, num_samples=42)
    trainer.compile(optimizer="adamw")
    trainer.fit(x, y, epochs=1, batch_size=14, verbose=0)  # was: "expected 3, got 2"
    trainer.fit(x, y, epochs=1, batch_size=14, verbose=0)  # was: "non-first call"
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(14)
    result = trainer.evaluate(ds, verbose=0, return_dict=True)  # was: "No loss to compute"
    assert np.isfinite(result["loss"]) and 0.0 <= result["accuracy"] <= 1.0


def test_supervised_trainer_learns_from_arrays():
    x, y = _data(70)
    trainer = fk.SupervisedTrainer(_net(), num_classes=K, loss=fk.losses.BalancedSoftmax())
    trainer.compile(optimizer=keras.optimizers.Adam(0.01))
    trainer.fit(x, y, epochs=8, batch_size=14, verbose=0)
    # the prior came from the labels (uniform here), not left at zero
    np.testing.assert_allclose(np.exp(trainer.log_prior.numpy()), 1.0 / K, atol=1e-6)
    assert trainer.evaluate(x, y, verbose=0, return_dict=True)["accuracy"] > 0.5


def test_fit_tf_data_with_and_without_indices(tmp_path):
    x, y = _data(42)
    plain = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(42, seed=0).batch(14)
    trainer = _cycle()
    split = fk.NoiseSplit(warmup_epochs=1, every=1, min_class_samples=4, verbose=0,
                          report_dir=tmp_path)
    trainer.fit(plain, epochs=2, verbose=0, callbacks=[split])
    assert split.splits == [1]
    # the split is over the numbered samples: the mask the trainer holds is the split's
    np.testing.assert_array_equal(trainer.labelled_mask.numpy() > 0.5,
                                  split.last_split.labelled)
    assert (tmp_path / "split-e002" / "suspected_errors.png").is_file()
    index = np.arange(42, dtype=np.int32)
    indexed = tf.data.Dataset.from_tensor_slices((x, y, index)).batch(14)
    other = _cycle()
    other.fit(indexed, epochs=2, verbose=0,
              callbacks=[fk.NoiseSplit(warmup_epochs=1, min_class_samples=4, verbose=0)])
    assert other.num_samples == 42


def test_loss_given_to_compile_is_refused_by_name():
    trainer = fk.SupervisedTrainer(_net(), num_classes=K)
    with pytest.raises(ValueError, match="Received: loss='mse'"):
        trainer.compile(optimizer="adam", loss="mse")


def test_fit_on_a_different_training_set_is_refused_by_name():
    trainer = _cycle()
    trainer.fit(*_data(42), epochs=1, batch_size=14, verbose=0)
    with pytest.raises(ValueError, match="Received: 28 samples"):
        trainer.fit(*_data(28), epochs=1, batch_size=14, verbose=0)


def test_config_round_trip_and_keras_file(tmp_path):
    x, y = _data(42)
    trainer = _cycle(loss=fk.losses.ClassBalanced(beta=0.99), ema_decay=0.9, threshold=0.8)
    trainer.fit(x, y, epochs=1, batch_size=14, verbose=0)
    config = trainer.get_config()
    clone = fk.CycleTrainer.from_config(config)
    assert {k: v for k, v in clone.get_config().items() if k != "network"} == \
        {k: v for k, v in config.items() if k != "network"}
    assert [layer.name for layer in clone.network.layers] == \
        [layer.name for layer in trainer.network.layers]
    assert clone.loss_name == "class_balanced" and clone.cb_beta == 0.99
    path = tmp_path / "trainer.keras"
    trainer.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is fk.CycleTrainer and loaded.num_samples == 42
    np.testing.assert_allclose(loaded.predict(x, verbose=0), trainer.predict(x, verbose=0),
                               atol=1e-6)
    np.testing.assert_array_equal(loaded.labelled_mask.numpy(), trainer.labelled_mask.numpy())
    assert int(loaded.optimizer.iterations) == int(trainer.optimizer.iterations) == 3
    loaded.fit(x, y, epochs=1, batch_size=14, verbose=0)  # and it trains on


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("name, kwargs", [
    ("LogitAdjusted", {"tau": 0.5, "class_counts": [1, 2, 5]}),
    ("BalancedSoftmax", {"class_counts": [1, 2, 5]}),
    ("ClassBalanced", {"beta": 0.9, "class_counts": [1, 2, 5]}),
    ("CrossEntropy", {"label_smoothing": 0.1})])
def test_losses_are_keras_losses(name, kwargs):
    loss = getattr(fk.losses, name)(**kwargs)
    r = np.random.default_rng(0)
    logits = r.normal(size=(6, 3)).astype("float32")
    labels = np.array([0, 1, 2, 2, 1, 0])
    clone = type(loss).from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    expected = float(np.mean(keras.ops.convert_to_numpy(loss.call(labels, logits))))
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(labels[:, None].astype("float32"), logits)) == pytest.approx(expected,
                                                                                   rel=1e-5)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss=loss)
    model.fit(r.normal(size=(12, 4)), np.arange(12) % 3, epochs=1, verbose=0)


def test_logit_adjusted_matches_the_function():
    counts = np.array([10.0, 30.0, 60.0])
    logits = np.array([[1.0, 0.0, -1.0]], np.float32)
    got = fk.losses.LogitAdjusted(tau=2.0, class_counts=counts)(np.array([2]), logits)
    want = fk.losses.logit_adjusted_cross_entropy(
        np.array([2]), logits, log_prior=fk.losses.log_prior_from_counts(counts), tau=2.0)
    assert float(got) == pytest.approx(float(want[0]), rel=1e-6)


def test_prior_losses_need_counts_outside_a_trainer():
    with pytest.raises(ValueError, match="class_counts=None"):
        fk.losses.BalancedSoftmax()(np.array([0]), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="Received: tau=-1"):
        fk.losses.LogitAdjusted(tau=-1)


# ----------------------------------------------------------------------------- models
def test_build_network_by_name_like_timm():
    net = fk.build_network("vgg4", num_classes=5, input_shape=(24, 24, 3), width=4)
    assert net.output_shape == (None, 5) and net.input_shape == (None, 24, 24, 3)
    with pytest.raises(ValueError, match="Received: name='resnet99'"):
        fk.build_network("resnet99", num_classes=5)
    with pytest.raises(ValueError, match="Received: num_classes=1"):
        fk.build_network("small_cnn", num_classes=1)


def test_build_network_keeps_the_global_random_state():
    """Defect: build_network called keras.utils.set_random_seed, resetting Python, NumPy and
    TensorFlow global RNGs in the user's process."""
    random.seed(123)
    np.random.seed(123)
    tf.random.set_seed(123)
    expected = (random.random(), np.random.rand(), float(tf.random.uniform(())))
    from ferkeras.models import build_network
    from ferkeras.training.recipe import ModelConfig

    random.seed(123)
    np.random.seed(123)
    tf.random.set_seed(123)
    a = build_network(ModelConfig(width=4), num_classes=3, input_shape=(S, S, 1), seed=7)
    got = (random.random(), np.random.rand(), float(tf.random.uniform(())))
    assert got[:2] == expected[:2]
    assert got[2] == pytest.approx(expected[2])
    # ...while the seed still fixes the weights
    b = fk.build_network("small_cnn", num_classes=3, input_shape=(S, S, 1), width=4, seed=7)
    c = fk.build_network("small_cnn", num_classes=3, input_shape=(S, S, 1), width=4, seed=8)
    flat = [np.concatenate([w.numpy().ravel() for w in m.weights]) for m in (a, b, c)]
    np.testing.assert_array_equal(flat[0], flat[1])
    assert not np.array_equal(flat[0], flat[2])


# ----------------------------------------------------------------------------- label issues
def _noisy_probs(seed=0, n=600, k=4, noise=0.2):
    """Imbalanced labels, a decent model's probabilities, and 20% flipped labels."""
    r = np.random.default_rng(seed)
    true = r.choice(k, size=n, p=[0.5, 0.25, 0.15, 0.10])
    logits = r.normal(size=(n, k))
    logits[np.arange(n), true] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    given = true.copy()
    flip = r.random(n) < noise
    given[flip] = (true[flip] + r.integers(1, k, size=flip.sum())) % k
    return given, probs, flip


@pytest.mark.parametrize("filter_by", ["prune_by_noise_rate", "prune_by_class", "both",
                                       "confident_learning", "predicted_neq_given"])
def test_find_label_issues_finds_injected_noise(filter_by):
    given, probs, flip = _noisy_probs()
    issues = fk.find_label_issues(given, probs, filter_by=filter_by)
    precision = (issues & flip).sum() / issues.sum()
    recall = (issues & flip).sum() / flip.sum()
    assert precision > 0.8 and recall > 0.6, (precision, recall)


def test_find_label_issues_ranked_and_scores():
    given, probs, flip = _noisy_probs()
    ranked = fk.find_label_issues(given, probs, return_indices_ranked_by="self_confidence")
    mask = fk.find_label_issues(given, probs)
    assert set(ranked) == set(np.flatnonzero(mask))
    scores = fk.label_quality_scores(given, probs)
    assert np.all(np.diff(scores[ranked]) >= 0)  # most suspect first
    for method in ("self_confidence", "normalized_margin", "confidence_weighted_entropy"):
        s = fk.label_quality_scores(given, probs, method=method)
        assert s.shape == given.shape
        assert s[flip].mean() < s[~flip].mean()
    with pytest.raises(ValueError, match="Received: filter_by='loss'"):
        fk.find_label_issues(given, probs, filter_by="loss")


def test_find_label_issues_by_loss():
    given, probs, flip = _noisy_probs(seed=1)
    losses = -np.log(probs[np.arange(len(given)), given])
    issues = fk.find_label_issues_by_loss(given, losses, num_classes=4)
    assert (issues & flip).sum() / issues.sum() > 0.7
    ranked = fk.find_label_issues_by_loss(given, losses, num_classes=4,
                                          return_indices_ranked=True)
    assert set(ranked) == set(np.flatnonzero(issues))


def test_out_of_sample_probs_never_predicts_a_seen_sample():
    x = np.arange(40, dtype=np.float32)[:, None]
    y = np.arange(40) % 2
    seen = []

    class Memo:
        """A 'model' that predicts class 1 for the samples it was trained on."""

        def fit(self, xs, ys, **kwargs):
            self.train = set(xs[:, 0].tolist())
            seen.append(self.train)

        def predict(self, xs, **kwargs):
            hit = np.array([v in self.train for v in xs[:, 0]], np.float32)
            return np.stack([1 - hit, hit], axis=1)

    probs = fk.out_of_sample_probs(Memo, x, y, folds=4)
    assert len(seen) == 4
    np.testing.assert_array_equal(probs[:, 1], 0.0)  # every sample came from a held-out fold
    with pytest.raises(ValueError, match="Received: folds=1"):
        fk.out_of_sample_probs(Memo, x, y, folds=1)


# ----------------------------------------------------------------------------- your classes
def _ckplus_folder(root, n_per_class=8, size=24):
    """CK+48's layout: root/<class>/*.png, 7 classes, no neutral."""
    r = np.random.default_rng(0)
    for c, name in enumerate(CKPLUS):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            pixels = r.integers(0, 60, size=(size, size), dtype=np.uint8)
            pixels[3 * c: 3 * c + 3, :] = 250
            Image.fromarray(pixels).save(root / name / f"S{c:03d}_{i:03d}.png")
    return root


def test_ckplus_folder_trains_and_evaluates_through_the_api(tmp_path):
    data = fk.load_image_folder(_ckplus_folder(tmp_path / "CK+48"), class_names=CKPLUS,
                                image_size=24, val_fraction=0.25)
    assert data.class_names == ("anger", "contempt", "disgust", "fear", "happy", "sad",
                                "surprise")
    x, y = data.train
    assert x.shape[1:] == (24, 24, 1) and np.bincount(y).tolist() == [6] * 7
    net = fk.build_network("small_cnn", num_classes=7, input_shape=(24, 24, 1), width=4)
    trainer = fk.CycleTrainer(net, num_classes=7)
    trainer.compile(optimizer="adamw")
    trainer.fit(x, y, validation_data=data.val, epochs=2, batch_size=14, verbose=0,
                callbacks=[fk.NoiseSplit(warmup_epochs=1, min_class_samples=2, verbose=0,
                                         class_names=data.class_names)])
    assert set(trainer.evaluate(*data.val, verbose=0, return_dict=True)) == {"loss",
                                                                             "accuracy"}


def test_ckplus_folder_trains_and_evaluates_through_the_cli(tmp_path):
    root = _ckplus_folder(tmp_path / "CK+48")
    recipe = {"name": "ckplus", "seed": 0,
              "data": {"source": "folder", "root": str(root), "class_names": CKPLUS,
                       "image_size": 24, "val_fraction": 0.25},
              "model": {"backbone": "small_cnn", "width": 4},
              "train": {"epochs": 1, "batch_size": 14, "loss": "logit_adjusted"},
              "cycle": {"enabled": True, "warmup_epochs": 1, "cycles": 1,
                        "epochs_per_cycle": 1, "min_class_samples": 2}}
    path = tmp_path / "ckplus.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run_dir = tmp_path / "run"
    runner = CliRunner()
    train = runner.invoke(cli, ["train", str(path), "--run-dir", str(run_dir), "-q"],
                          catch_exceptions=False)
    assert train.exit_code == 0, train.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["class_names"] == ["anger", "contempt", "disgust", "fear", "happy", "sad",
                                      "surprise"]
    evaluate = runner.invoke(cli, ["evaluate", str(run_dir), "--split", "val"],
                             catch_exceptions=False)
    assert evaluate.exit_code == 0, evaluate.output
    assert "val (best): accuracy" in evaluate.output


def test_class_names_validation_names_the_value():
    from ferkeras.labels import resolve_class_names
    from ferkeras.training.recipe import RecipeError, recipe_from_dict

    assert resolve_class_names("Angry, happiness,pain") == ("anger", "happy", "pain")
    with pytest.raises(ValueError, match="both mean 'sad'"):
        resolve_class_names(["sad", "sadness"])
    with pytest.raises(RecipeError, match="Received: source='synthetic'"):
        recipe_from_dict({"data": {"class_names": ["a", "b"]}})


def test_csv_dataset_with_your_own_class_list(tmp_path):
    from test_sources import write_fer2013

    from ferkeras.data.sources import load_bundle
    from ferkeras.training.recipe import DataConfig

    csv_path, _ = write_fer2013(tmp_path)
    cfg = DataConfig(source="fer2013", root=str(csv_path), val_fraction=0.25,
                     class_names="Angry,happiness,sad,neutral,surprise,fear")  # no disgust
    bundle = load_bundle(cfg, seed=0)
    assert bundle.class_names == ("anger", "happy", "sad", "neutral", "surprise", "fear")
    assert len(bundle.train) == 12  # the one disgust row of 13 is dropped
    assert [bundle.class_names[k] for k in bundle.train.labels[:3]] == ["anger", "fear",
                                                                        "happy"]


def test_fit_input_errors_name_the_value():
    trainer = fk.SupervisedTrainer(_net(), num_classes=K)
    trainer.compile(optimizer="adam")
    x, y = _data(14)
    one_hot = tf.data.Dataset.from_tensor_slices((x, np.eye(K)[y])).batch(7)
    with pytest.raises(ValueError, match="not one-hot"):
        trainer.fit(one_hot, verbose=0)
    with pytest.raises(ValueError, match=r"Received shape: \(14, 256\)"):
        trainer.fit(x.reshape(14, -1), y, verbose=0)
    with pytest.raises(ValueError, match="Received min=0, max=9"):
        trainer.fit(x, np.arange(14) % 10, verbose=0)


def test_loss_classes_cover_the_loss_table():
    from ferkeras.registry import list_losses

    assert sorted(fk.losses.LOSSES) == sorted(list_losses())
    for name in list_losses():
        assert fk.losses.get_loss(name).kind == name
