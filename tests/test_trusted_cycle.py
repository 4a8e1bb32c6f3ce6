"""The cycle with a trusted anchor: trusted rows in training, the trusted split, soft targets,
gold loss correction, decision objectives."""

import json

import numpy as np
import pytest

from ferkeras.data.table import DatasetBundle, Split
from ferkeras.noise import trusted
from ferkeras.training.recipe import RecipeError, recipe_from_dict

K = 3


def _bundle(n_val=200, n_test=0, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, K, n_val)
    noisy = np.where(rng.random(n_val) < 0.3, (truth + 1) % K, truth)
    img = np.zeros((n_val, 8, 8, 1), np.uint8)
    img[:, 0, 0, 0] = np.arange(n_val)  # tag rows
    train = Split(images=np.full((30, 8, 8, 1), 255, np.uint8), labels=np.arange(30) % K,
                  true_labels=np.arange(30) % K)
    val = Split(images=img, labels=noisy, true_labels=truth)
    return DatasetBundle(class_names=("a", "b", "c"), train=train, val=val, test=None,
                         source="t", notes=[])


def _cfg(**kw):
    return recipe_from_dict({"trusted": kw}).trusted


def test_trusted_rows_join_training_and_never_reach_the_reported_test():
    b = _bundle()
    out, rows, _ = trusted.prepare_bundle(
        b, _cfg(source="val_true_labels", test_fraction=0.5, train_fraction=0.5,
                train_weight=3.0), seed=0)
    ids = lambda s: set(s.images[:, 0, 0, 0].tolist()) - {255}  # noqa: E731
    test, val, moved = ids(out.test), ids(out.val), ids(out.train.subset(rows.train_index))
    assert moved and val and test
    # the reported rows are carved first: nothing fitted or trained on trusted rows sees them
    assert not test & moved and not test & val and not moved & val
    # the moved rows carry their trusted label and the weight; the rest of train weighs 1
    truth = b.val.true_labels
    tags = out.train.images[rows.train_index, 0, 0, 0]
    np.testing.assert_array_equal(out.train.labels[rows.train_index], truth[tags])
    assert (out.train.weights[rows.train_index] == 3.0).all()
    assert (out.train.weights[:30] == 1.0).all()
    assert (out.train.true_labels[rows.train_index] == -1).all()  # never scored as train
    # the trusted rows left in validation index the right rows
    np.testing.assert_array_equal(out.val.true_labels[rows.index], rows.labels)


def test_trusted_cycle_keys_are_checked():
    with pytest.raises(RecipeError, match="trusted.source"):
        recipe_from_dict({"cycle": {"enabled": True, "selector": "trusted"}})
    with pytest.raises(RecipeError, match="cycle.selector=trusted"):
        recipe_from_dict({"cycle": {"enabled": True, "method": "soft"},
                          "trusted": {"source": "val_labels"}})
    with pytest.raises(RecipeError, match="trusted.source"):
        recipe_from_dict({"train": {"forward_correction": "gold"}})
    with pytest.raises(RecipeError, match="train_fraction"):
        recipe_from_dict({"train": {"forward_correction": "gold"},
                          "trusted": {"source": "val_labels", "train_fraction": 0.5}})


def test_balanced_objective_raises_balanced_accuracy_on_a_long_tail():
    rng = np.random.default_rng(0)
    n = 3000
    y = rng.choice(K, n, p=[0.8, 0.15, 0.05])
    prior = np.bincount(y, minlength=K) / n
    # a calibrated model of this long-tailed world: posterior = prior x likelihood
    logits = 1.2 * np.eye(K)[y] + rng.normal(0, 1, (n, K)) + np.log(prior)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    fit, held = slice(0, 1500), slice(1500, None)

    def bal(d):
        pred = trusted.apply_decision(d, probs[held]).argmax(1)
        return np.mean([(pred[y[held] == c] == c).mean() for c in range(K)])

    for kind in ("prior", "recalibrate"):
        acc_rule = trusted.fit_decision(kind, probs[fit], y[fit], train_prior=prior)
        bal_rule = trusted.fit_decision(kind, probs[fit], y[fit], train_prior=prior,
                                        objective="balanced")
        assert bal_rule["objective"] == "balanced"
        assert bal(bal_rule) > bal(acc_rule) + 0.05
    with pytest.raises(ValueError, match="objective"):
        trusted.fit_decision("prior", probs, y, train_prior=prior, objective="f1")


def _rule_scores(objective, probs, y, fit, held, prior):
    d = None if objective == "argmax" else trusted.fit_decision(
        "recalibrate", probs[fit], y[fit], train_prior=prior, objective=objective)
    pred = (probs[held] if objective == "argmax" else
            trusted.apply_decision(d, probs[held])).argmax(1)
    yy = y[held]
    return (pred == yy).mean(), np.mean([(pred[yy == c] == c).mean() for c in range(K)]), d


def test_constrained_objective_gains_accuracy_without_losing_the_tail():
    fit, held = slice(0, 2000), slice(2000, None)
    rng = np.random.default_rng(0)
    # 1. a noisy-trained model (class 2 often given as 1): the rule undoes the confusion
    pi = np.array([0.6, 0.3, 0.1])
    y = rng.choice(K, 4000, p=pi)
    post = np.exp(rng.normal(size=(4000, K)) + 1.5 * np.eye(K)[y]) * pi
    post /= post.sum(1, keepdims=True)
    T = np.array([[0.7, 0.25, 0.05], [0.05, 0.9, 0.05], [0.05, 0.45, 0.5]])
    probs = post @ T
    acc0, bal0, _ = _rule_scores("argmax", probs, y, fit, held, pi @ T)
    acc, bal, d = _rule_scores("constrained", probs, y, fit, held, pi @ T)
    assert acc > acc0 + 0.03 and bal >= bal0
    assert len(d["tail_weight_cv"]) == len(trusted.TAIL_WEIGHTS) + 1  # + the argmax
    # 2. a model whose argmax is balanced on a long tail: the accuracy rule buys accuracy
    #    with the tail; the constrained one keeps the tail
    y = rng.choice(K, 4000, p=[0.7, 0.2, 0.1])
    logits = np.eye(K)[y] + rng.normal(0, 1, (4000, K))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    uniform = np.full(K, 1 / K)
    acc0, bal0, _ = _rule_scores("argmax", probs, y, fit, held, uniform)
    acc_a, bal_a, _ = _rule_scores("accuracy", probs, y, fit, held, uniform)
    acc_c, bal_c, d = _rule_scores("constrained", probs, y, fit, held, uniform)
    assert bal_a < bal0 - 0.03 and acc_a > acc0  # the trade-off the constraint refuses
    assert bal_c >= bal0 - 0.01 and acc_c >= acc0 - 0.01
    assert d["tail_weight"] is None or d["tail_weight"] > 0


def _tiny(tmp_path, **cycle_or_train):
    from ferkeras.training import train_recipe

    recipe = recipe_from_dict({
        "name": "tc", "seed": 0,
        "data": {"source": "synthetic", "image_size": 16,
                 "synthetic": {"n_train": 256, "n_val": 192, "n_test": 0, "noise": 0.3,
                               "profile": "uniform"}},
        "model": {"backbone": "small_cnn", "width": 4},
        "train": {"epochs": 3, "batch_size": 32, "loss": "ce",
                  **cycle_or_train.get("train", {})},
        "cycle": cycle_or_train.get("cycle", {}),
        "trusted": {"source": "val_labels", "test_fraction": 0.4, "decision": "recalibrate",
                    **cycle_or_train.get("trusted", {})},
    })
    lines = []
    metrics = train_recipe(recipe, run_dir=tmp_path / "run", verbose=0, echo=lines.append)
    return metrics, lines


@pytest.mark.slow
def test_trusted_cycle_soft_targets_run_end_to_end(tmp_path):
    metrics, lines = _tiny(tmp_path, cycle={
        "enabled": True, "selector": "trusted", "method": "soft", "warmup_epochs": 1,
        "cycles": 2, "epochs_per_cycle": 1, "trusted_folds": 3},
        trusted={"train_fraction": 0.3, "train_weight": 2.0, "select": True})
    assert len(metrics["detection_auc_by_split"]) == 2
    assert len(metrics["trusted_auc_by_split"]) == 2
    split = json.loads((tmp_path / "run" / "reports" / "split-e002" /
                        "trusted_split.json").read_text())
    assert len(split["thresholds"]) == len(split["class_names"])
    # both objectives are reported, and the console shows the rule beside argmax
    assert {"argmax", "recalibrate@accuracy", "recalibrate@balanced"} <= set(
        metrics["decision"]["test"])
    assert any("recalibrate@accuracy" in ln and "baked" in ln for ln in lines)
    assert any("trusted rows (fraction 0.3" in ln for ln in lines)


@pytest.mark.slow
def test_gold_loss_correction_estimates_t_on_the_trusted_rows(tmp_path):
    metrics, lines = _tiny(tmp_path, train={"forward_correction": "gold",
                                            "forward_warmup_epochs": 1})
    fc = metrics["forward_correction"]
    assert fc["estimator"] == "gold" and fc["on"]
    assert any("(gold," in ln for ln in lines)


def test_trusted_keys_work_on_a_rafdb_fixture_with_test_labels(tmp_path):
    """RAF-DB / AffectNet: the clean labels are the test split's (trusted.source
    test_labels). The trusted rows are carved from it, half of them join training, and the
    trusted split runs on them; the reported test rows never reach training or fitting."""
    from test_sources import write_image

    from ferkeras.data.sources import load_bundle
    from ferkeras.noise.trusted_split import trusted_split
    from ferkeras.training.recipe import DataConfig

    root = tmp_path / "basic"
    lines = [f"train_{i:05d}.jpg {i % 7 + 1}" for i in range(1, 29)]
    lines += [f"test_{i:04d}.jpg {i % 7 + 1}" for i in range(1, 57)]
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel/list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        write_image(root / f"Image/aligned/{line.split()[0][:-4]}_aligned.jpg", size=(12, 12))
    bundle = load_bundle(DataConfig(source="rafdb", root=str(root), class_set="rafdb",
                                    val_fraction=0.25), seed=0)
    recipe = recipe_from_dict({
        "data": {"source": "rafdb", "root": str(root), "class_set": "rafdb"},
        "cycle": {"enabled": True, "selector": "trusted", "method": "soft"},
        "trusted": {"source": "test_labels", "fraction": 0.5, "train_fraction": 0.5,
                    "decision": "recalibrate", "decision_objective": "balanced"}})
    out, rows, _ = trusted.prepare_bundle(bundle, recipe.trusted, seed=0)
    reported = set(out.test.paths.tolist())
    in_train = set(out.train.paths[rows.train_index].tolist())
    held = set(out.val.paths[rows.index].tolist())
    assert reported and in_train and held
    assert all("/test_" in p for p in in_train | held)  # carved from the test split
    assert not reported & (in_train | held) and not in_train & held
    assert len(reported) + len(in_train) + len(held) == 56
    k = len(out.class_names)
    rng = np.random.default_rng(0)
    probs = lambda n: rng.dirichlet(np.ones(k), n)  # noqa: E731
    found = trusted_split(probs(len(out.train)), out.train.labels, probs(len(rows.index)),
                          rows.labels, rows.noisy, num_classes=k, folds=2)
    assert found.labelled.shape == (len(out.train),)
