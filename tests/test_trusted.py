"""The trusted track: carving, selection on trusted labels, decision rules, export baking."""

import json

import numpy as np
import pytest

from ferkeras.data.table import DatasetBundle, Split
from ferkeras.noise import trusted
from ferkeras.training.recipe import recipe_from_dict

K = 3


def _bundle(n_val=200, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, K, n_val)
    noisy = np.where(rng.random(n_val) < 0.3, (truth + 1) % K, truth)
    truth[:7] = -1  # rows without a true label
    img = np.zeros((n_val, 8, 8, 1), np.uint8)
    train = Split(images=np.zeros((30, 8, 8, 1), np.uint8), labels=np.arange(30) % K)
    val = Split(images=img, labels=noisy, true_labels=truth)
    return DatasetBundle(class_names=("a", "b", "c"), train=train, val=val, test=None,
                         source="t", notes=[])


def _cfg(**kw):
    return recipe_from_dict({"trusted": kw}).trusted


def test_test_split_is_carved_before_trusted_rows_and_never_overlaps():
    b = _bundle()
    b.val.images[:, 0, 0, 0] = np.arange(len(b.val))  # tag rows
    out, rows, notes = trusted.prepare_bundle(
        b, _cfg(source="val_true_labels", test_fraction=0.5, select=True), seed=0)
    test_ids = set(out.test.images[:, 0, 0, 0].tolist())
    val_ids = set(out.val.images[:, 0, 0, 0].tolist())
    assert not test_ids & val_ids
    assert len(test_ids) + len(val_ids) <= len(b.val)
    # the test split is scored against true labels; rows without one are dropped
    tagged = b.val.true_labels[out.test.images[:, 0, 0, 0]]
    assert (out.test.labels == tagged).all() and (tagged >= 0).all()
    # select: validation labels ARE the trusted labels now
    assert (out.val.labels == b.val.true_labels[out.val.images[:, 0, 0, 0]]).all()
    assert (rows.labels == out.val.labels[rows.index]).all()
    assert (rows.noisy != rows.labels).any()  # the given labels were noisy
    assert any("held out" in n for n in notes)


def test_without_trusted_rows_select_and_decision_are_refused():
    with pytest.raises(ValueError, match="need trusted rows"):
        trusted.prepare_bundle(_bundle(), _cfg(select=True), seed=0)
    b = _bundle()
    b.val.true_labels = None
    with pytest.raises(ValueError, match="needs true labels"):
        trusted.prepare_bundle(b, _cfg(source="val_true_labels"), seed=0)


def test_test_labels_carve_trusted_rows_out_of_the_test_split_and_never_report_them():
    """AffectNet / RAF-DB: the clean labels are the test split's. A stratified share moves
    into validation as the trusted rows; the reported test keeps only the rest."""
    b = _bundle()
    rng = np.random.default_rng(1)
    test_labels = rng.integers(0, K, 300)
    test = Split(images=np.zeros((300, 8, 8, 1), np.uint8), labels=test_labels)
    test.images[:, 0, 0, 0] = np.arange(300) % 256
    test.images[:, 0, 1, 0] = np.arange(300) // 256 + 1  # tag: nonzero marks a test row
    b = DatasetBundle(class_names=b.class_names, train=b.train, val=b.val, test=test,
                      source="t", notes=[])
    out, rows, notes = trusted.prepare_bundle(
        b, _cfg(source="test_labels", fraction=0.2, decision="prior"), seed=0)

    def tag(split):
        px = split.images[:, 0, :2, 0].astype(int)
        return px[:, 0] + 256 * (px[:, 1] - 1)

    moved = out.val.subset(rows.index)
    assert (moved.images[:, 0, 1, 0] > 0).all()  # trusted rows are the carved test rows
    assert len(rows.index) == 60 and len(out.test) == 240
    assert not set(tag(moved).tolist()) & set(tag(out.test).tolist())
    assert (rows.labels == test_labels[tag(moved)]).all()
    assert np.bincount(rows.labels, minlength=K).min() >= 15  # stratified
    # the noisy validation rows are still there, first, untouched; their truth survives
    assert (out.val.labels[:len(b.val)] == b.val.labels).all()
    assert (out.val.true_labels[len(b.val):] == -1).all()
    assert any("moved into validation" in n for n in notes)
    with pytest.raises(ValueError, match="trusted.fraction"):
        trusted.prepare_bundle(b, _cfg(source="test_labels"), seed=0)
    with pytest.raises(ValueError, match="needs a test split"):
        trusted.prepare_bundle(_bundle(), _cfg(source="test_labels", fraction=0.2), seed=0)


def _structured(n, seed):
    """Clean prior skewed to class 0; class 0 is often given as 1 (FER2013's neutral -> sad);
    ambiguous evidence. Returns clean labels, noisy-model probabilities, train prior."""
    rng = np.random.default_rng(seed)
    T = np.array([[0.55, 0.40, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
    pi = np.array([0.5, 0.2, 0.3])
    y = rng.choice(K, n, p=pi)
    s = rng.normal(size=(n, K)) + 1.2 * np.eye(K)[y]
    post = np.exp(s) * pi
    post /= post.sum(1, keepdims=True)
    noisy_post = post @ T
    return y, noisy_post, pi @ T


@pytest.mark.parametrize("kind", ["prior", "recalibrate"])
def test_decision_rules_fitted_on_trusted_rows_raise_clean_accuracy(kind):
    y, p, train_prior = _structured(4000, 1)
    d = trusted.fit_decision(kind, p[:600], y[:600], train_prior=train_prior)
    before = (p[600:].argmax(1) == y[600:]).mean()
    after = (trusted.apply_decision(d, p[600:]).argmax(1) == y[600:]).mean()
    assert after > before + 0.03
    ident = trusted.fit_decision("argmax", p[:600], y[:600], train_prior=train_prior)
    assert np.allclose(trusted.apply_decision(ident, p), p, atol=1e-9)


def test_decision_layer_equals_the_array_rule():
    import keras

    y, p, prior = _structured(300, 2)
    d = trusted.fit_decision("recalibrate", p, y, train_prior=prior)
    inputs = keras.Input((K,))
    net = keras.Model(inputs, keras.layers.Identity()(inputs))
    wrapped = trusted.wrap_network(net, d)
    logits = np.log(p).astype("float32")
    got = keras.ops.convert_to_numpy(keras.ops.softmax(wrapped(logits), axis=-1))
    assert np.allclose(got, trusted.apply_decision(d, p), atol=1e-5)
    # confident rows (probabilities far below the log floor) get the same features as in
    # the fit: the exported layer and the array rule agree there too
    sharp = np.array([[30.0, 0.0, -30.0], [-40.0, 25.0, 0.0]], dtype="float32")
    sharp_p = np.exp(sharp - sharp.max(1, keepdims=True))
    sharp_p /= sharp_p.sum(1, keepdims=True)
    from ferkeras.noise.transition import log_probs

    got = keras.ops.convert_to_numpy(wrapped(sharp))
    assert np.allclose(got, log_probs(sharp_p) @ np.array(d["W"]) + np.array(d["b"]),
                       atol=1e-3)
    assert trusted.wrap_network(net, None) is net


@pytest.mark.slow
def test_trusted_run_writes_rule_transition_and_export_bakes_it(tmp_path):
    from ferkeras.deploy.export import export_run
    from ferkeras.deploy.inference import Predictor
    from ferkeras.training import train_recipe

    recipe = recipe_from_dict({
        "name": "t", "seed": 1,
        "data": {"source": "synthetic", "image_size": 16,
                 "synthetic": {"n_train": 192, "n_val": 96, "n_test": 0, "noise": 0.3,
                               "profile": "uniform"}},
        "model": {"backbone": "small_cnn", "width": 4},
        "train": {"epochs": 2, "batch_size": 32, "loss": "ce"},
        "trusted": {"source": "val_labels", "test_fraction": 0.5, "decision": "prior"},
    })
    run = tmp_path / "run"
    metrics = train_recipe(recipe, run_dir=run, verbose=0)
    d = json.loads((run / "decision.json").read_text())
    assert d["kind"] == "prior" and metrics["decision"]["rule"] == "prior"
    assert set(metrics["decision"]["test"]) == {"argmax", "prior", "prior@accuracy",
                                                "prior@balanced", "prior@constrained"}
    assert d["objective"] == "accuracy" and metrics["decision"]["baked"] == "prior@accuracy"
    assert (run / "transition.csv").is_file() and (run / "transition.png").is_file()
    meta = export_run(run, tmp_path / "export")
    assert meta["decision_rule"] == "prior"
    # the exported model applies the rule: ONNX probs = rule(Keras probs of the plain net)
    from ferkeras.training.runs import open_run

    net = open_run(run).build_network()
    images = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 1)).astype("float32")
    import keras

    plain = keras.ops.convert_to_numpy(keras.ops.softmax(net(images), axis=-1))
    onnx_probs = Predictor(tmp_path / "export").predict_crops(images)
    assert np.allclose(onnx_probs, trusted.apply_decision(d, plain), atol=1e-4)
