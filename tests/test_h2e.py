"""H2E (Yi et al., ECCV 2022): the class-invariant noise identifier (`ferkeras.noise.h2e`) and the
`h2e` selector of the cycle."""

from __future__ import annotations

import numpy as np
import pytest

from ferkeras.noise import h2e, selection


def _hard_tail(seed, *, n_head=400, n_tail=60, dim=8, head_noise=0.2, tail_to_head=0.3,
               head_to_tail=4):
    """Two head classes and one small tail class whose mean lies between head 0 and its own
    direction (hard: its clean rows get high losses from a classifier fitted on the noisy
    long-tailed labels). Noise with known truth: 20% of head rows swap head classes, 30% of the
    tail rows are labelled as a head class (tail-to-head), 4 head rows are labelled tail.

    Returns features (N, D), given labels, true labels and the per-sample losses of a logistic
    regression fitted on the given labels (what the split's loss pass would see)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    means = np.zeros((3, dim))
    means[0, 0] = means[1, 1] = 3.0
    means[2, :3] = (1.5, 0.0, 2.0)
    true = np.repeat([0, 1, 2], [n_head, n_head, n_tail])
    features = means[true] + rng.normal(size=(true.size, dim))
    given = true.copy()
    head = np.flatnonzero(true < 2)
    swap = head[rng.random(head.size) < head_noise]
    given[swap] = 1 - true[swap]
    given[rng.choice(np.setdiff1d(head, swap), head_to_tail, replace=False)] = 2
    tail = np.flatnonzero(true == 2)
    out = tail[rng.random(tail.size) < tail_to_head]
    given[out] = rng.integers(0, 2, out.size)
    probs = LogisticRegression(max_iter=500).fit(features, given).predict_proba(features)
    losses = -np.log(probs[np.arange(true.size), given])
    return features, given, true, losses


def test_h2e_keeps_more_clean_tail_rows_than_the_gmm_at_equal_or_better_precision():
    """The defining behaviour: on a hard tail, H2E keeps more of the tail's clean rows than
    today's class-aware GMM (per-class loss normalisation with one GMM, and one GMM per class),
    and the set it keeps is at least as precise (pooled over 3 draws)."""
    kept = {"gmm": [0, 0, 0], "gmm_per_class": [0, 0, 0], "h2e": [0, 0, 0]}
    for seed in range(3):
        features, given, true, losses = _hard_tail(seed)
        clean, tail = given == true, given == 2
        assert np.median(losses[clean & tail]) > 3 * np.median(losses[clean & ~tail])  # hard
        masks = {
            "gmm": selection.split_training_set(losses, given, num_classes=3).labelled,
            "gmm_per_class": selection.split_training_set(
                losses, given, num_classes=3, gmm_scope="per_class").labelled,
            "h2e": selection.split_training_set(
                losses, given, num_classes=3, selector="h2e", features=features).labelled,
        }
        for name, keep in masks.items():
            kept[name][0] += int((keep & clean & tail).sum())
            kept[name][1] += int((keep & clean).sum())
            kept[name][2] += int(keep.sum())
    precision = {name: v[1] / v[2] for name, v in kept.items()}
    for base in ("gmm", "gmm_per_class"):
        assert kept["h2e"][0] > kept[base][0], kept
        assert precision["h2e"] >= precision[base], precision
    assert kept["h2e"][0] >= 1.15 * kept["gmm"][0], kept


def test_irm_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 4))
    onehot = np.eye(4)[rng.integers(0, 4, 12)]
    weights = h2e.environment_weights(onehot.argmax(1), num_classes=4)
    _, grad = h2e.irm_objective(logits, onehot, weights, penalty_weight=3.0)
    eps, numeric = 1e-6, np.zeros_like(logits)
    for i, k in np.ndindex(*logits.shape):
        step = np.zeros_like(logits)
        step[i, k] = eps
        up = h2e.irm_objective(logits + step, onehot, weights, penalty_weight=3.0)[0]
        down = h2e.irm_objective(logits - step, onehot, weights, penalty_weight=3.0)[0]
        numeric[i, k] = (up - down) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_environments_differ_only_in_their_class_mix():
    labels = np.repeat([0, 1, 2], [50, 30, 5])
    w = h2e.environment_weights(labels, num_classes=4)
    assert w.shape == (3, labels.size)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    mass = np.stack([np.bincount(labels, weights=row, minlength=4) for row in w])
    np.testing.assert_allclose(mass[0, :3], [50 / 85, 30 / 85, 5 / 85])
    np.testing.assert_allclose(mass[1, :3], 1 / 3)
    assert mass[2, 2] > mass[2, 1] > mass[2, 0] and mass[:, 3].max() == 0  # reversed; absent
    for row in w:  # within a class every row weighs the same
        for c in range(3):
            assert np.ptp(row[labels == c]) < 1e-15
    masked = h2e.environment_weights(labels, num_classes=4, mask=labels != 2)
    assert masked[:, labels == 2].max() == 0


def test_identifier_warm_start_keeps_the_given_logits():
    rng = np.random.default_rng(1)
    features = rng.normal(2.0, 3.0, size=(40, 5))
    kernel, bias = rng.normal(size=(5, 3)), rng.normal(size=3)
    labels = (features @ kernel + bias).argmax(1)
    k, b = h2e.fit_invariant_classifier(features, labels, num_classes=3, steps=1,
                                        learning_rate=1e-12, init=(kernel, bias))
    np.testing.assert_allclose(features @ k + b, features @ kernel + bias, atol=1e-6)


def test_clean_probability_is_the_papers_rule_at_one_half():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.34, 0.33, 0.33]])
    labels = np.array([0, 0, 0])
    cp = h2e.clean_probability_from_identifier(probs, labels)
    np.testing.assert_array_equal(cp > 0.5, [True, False, True])
    assert cp[0] > cp[2]


def test_bad_inputs_name_the_value():
    with pytest.raises(ValueError, match="rounds=0"):
        h2e.identify_noise(np.zeros((4, 2)), np.array([0, 1, 0, 1]), num_classes=2, rounds=0)
    with pytest.raises(ValueError, match="features"):
        selection.split_training_set(np.ones(4), np.array([0, 1, 0, 1]), num_classes=2,
                                     selector="h2e")
    with pytest.raises(ValueError, match="labels"):
        h2e.identify_noise(np.zeros((4, 2)), np.array([0, 1, 0, 2]), num_classes=2)
    assert "h2e" in selection.list_selectors()


def test_recipe_path_trains_with_the_h2e_selector(tmp_path):
    from ferkeras.training import train_recipe
    from ferkeras.training.recipe import RecipeError, recipe_from_dict

    values = {
        "name": "h2e", "seed": 0,
        "data": {"source": "synthetic", "image_size": 16,
                 "synthetic": {"n_train": 96, "n_val": 32, "n_test": 0, "noise": 0.3,
                               "profile": "uniform"}},
        "model": {"backbone": "small_cnn", "width": 4},
        "train": {"batch_size": 48, "loss": "ce"},
        "cycle": {"enabled": True, "warmup_epochs": 0, "cycles": 1, "epochs_per_cycle": 1,
                  "min_class_samples": 4, "selector": "h2e", "h2e": {"rounds": 2}},
    }
    lines = []
    metrics = train_recipe(recipe_from_dict(values), run_dir=tmp_path / "run", verbose=0,
                           echo=lines.append)
    assert metrics["epochs"] == 1
    assert any(m.startswith("split at epoch 1") for m in lines), lines
    report = tmp_path / "run" / "reports" / "split-e001" / "samples.csv"
    assert report.is_file()
    values["cycle"]["h2e"] = {"rounds": 0}
    with pytest.raises(RecipeError, match="h2e.rounds"):
        recipe_from_dict(values)
