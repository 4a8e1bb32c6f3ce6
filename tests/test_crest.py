"""CReST (Wei et al., CVPR 2021): class-rebalancing rates (the rarest class at 1, others
(N_{K+1-l}/N_1)^alpha), a selection whose per-class share matches the rates and favours
minority classes, CReST+'s temperature schedule, the label table the step trains on, and the
recipe path with 2 cycles (= 2 generations)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from ferkeras.methods.crest import core as C


def test_rates_are_one_for_the_rarest_class_and_count_ratios_to_the_alpha():
    counts = np.array([100, 10, 50, 1])  # ranked: class 0, 2, 1, 3
    rates = C.crest_sampling_rates(counts, alpha=0.5)
    np.testing.assert_allclose(rates, [(1 / 100) ** 0.5, (50 / 100) ** 0.5,
                                       (10 / 100) ** 0.5, 1.0])
    assert rates[3] == 1.0 and (np.argsort(rates) == np.argsort(-counts)).all()
    np.testing.assert_allclose(C.crest_sampling_rates(counts, alpha=0.0), 1.0)
    np.testing.assert_allclose(C.crest_sampling_rates([7, 7, 7], alpha=1 / 3), 1.0)
    with pytest.raises(ValueError, match="class_counts"):
        C.crest_sampling_rates([0, 0], alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        C.crest_sampling_rates([3, 1], alpha=-1)


def test_selected_share_per_class_matches_the_rates_and_takes_the_most_confident():
    rng = np.random.default_rng(0)
    n, k = 40_000, 4
    pseudo = rng.integers(0, k, n)
    conf = rng.uniform(0.2, 1.0, n)
    candidates = rng.random(n) < 0.75
    rates = C.crest_sampling_rates([400, 150, 60, 20], alpha=0.5)  # minority last
    picked = C.crest_select(pseudo, conf, rates, rng=rng, candidates=candidates)
    assert not picked[~candidates].any()
    share = np.array([picked[candidates & (pseudo == c)].mean() for c in range(k)])
    np.testing.assert_allclose(share, rates, atol=0.015)
    assert (np.diff(share) > 0).all()  # the rarer the class, the more of it is added
    for c in range(k):  # within a class, every picked row is at least as confident
        rows = candidates & (pseudo == c)
        assert conf[rows & picked].min() >= conf[rows & ~picked].max(initial=0.0)
    # over many small draws the mean share per class still matches the rates
    shares = []
    for seed in range(300):
        p = C.crest_select(pseudo[:40], conf[:40], rates, rng=np.random.default_rng(seed))
        shares.append([p[pseudo[:40] == c].mean() for c in range(k)])
    np.testing.assert_allclose(np.mean(shares, axis=0), rates, atol=0.04)


def test_progressive_temperature_runs_from_one_to_t_min():
    assert C.progressive_alignment_temperature(0, 4, t_min=0.5) == 1.0
    assert C.progressive_alignment_temperature(4, 4, t_min=0.5) == 0.5
    assert C.progressive_alignment_temperature(2, 4, t_min=0.2) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="generation"):
        C.progressive_alignment_temperature(5, 4, t_min=0.5)
    prior = np.array([0.6, 0.3, 0.1])
    np.testing.assert_allclose(C.temper_prior(prior, temperature=1.0), prior)
    np.testing.assert_allclose(C.temper_prior(prior, temperature=0.0), 1 / 3)
    # the tempered target is what align_distribution(temperature=t) aligns to
    from ferkeras.trainers.pseudo_labels import align_distribution

    probs = np.array([[0.2, 0.5, 0.3], [0.7, 0.2, 0.1]], np.float32)
    model = np.array([0.4, 0.4, 0.2], np.float32)
    a = align_distribution(probs, target_prior=C.temper_prior(prior, temperature=0.5),
                           model_prior=model)
    b = align_distribution(probs, target_prior=prior, model_prior=model, temperature=0.5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                               atol=1e-6)


K, N, S = 3, 16, 8


def _trainer():
    from ferkeras.methods.crest.trainer import CReSTTrainer

    keras.utils.set_random_seed(2)
    net = keras.Sequential([keras.Input((S, S, 1)), keras.layers.Rescaling(1 / 255.0),
                            keras.layers.Flatten(), keras.layers.Dense(K)])
    trainer = CReSTTrainer(net, num_classes=K, num_samples=N, threshold_mode="fixed",
                           distribution_alignment=False)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    trainer.build_state((S, S, 1))
    return trainer


def _step(trainer, labels, mask):
    r = np.random.default_rng(0)
    weak = r.uniform(0, 255, (N, S, S, 1)).astype(np.float32)
    strong = r.uniform(0, 255, (N, S, S, 1)).astype(np.float32)
    trainer.set_split(mask, mask.astype(float), np.array([0.5, 0.3, 0.2]))
    trainer.train_step(((tf.constant(weak), tf.constant(strong)), tf.constant(labels),
                        tf.range(N)))
    return trainer.network.get_weights()


def test_picked_rows_train_on_their_pseudo_label():
    labels = (np.arange(N) % K).astype(np.int32)
    mask = np.ones(N, bool)
    mask[[2, 5]] = False  # judged noisy; CReST picks row 5 with pseudo-label 0
    crest = _trainer()
    table = np.full(N, -1.0)
    table[5] = 0
    crest.set_crest(table, temperature=0.5)
    mask_crest = mask.copy()
    mask_crest[5] = True
    got = _step(crest, labels, mask_crest)
    np.testing.assert_allclose(crest.target_prior.numpy(),
                               C.temper_prior([0.5, 0.3, 0.2], temperature=0.5), atol=1e-6)
    # the same as a plain labelled row whose given label is 0
    want_labels = labels.copy()
    want_labels[5] = 0
    plain = _trainer()
    want = _step(plain, want_labels, mask_crest)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-6)
    other = _step(_trainer(), labels, mask_crest)  # without the table: the given label 2
    assert max(np.abs(g - o).max() for g, o in zip(got, other, strict=True)) > 1e-5
    with pytest.raises(ValueError, match="crest labels"):
        crest.set_crest(np.full(N, 3.0))


def test_recipe_path_trains_two_cycles_as_crest_generations(tmp_path):
    from ferkeras.training import train_recipe
    from ferkeras.training.recipe import RecipeError, recipe_from_dict

    values = {
        "name": "crest", "seed": 0,
        "data": {"source": "synthetic", "image_size": 16,
                 "synthetic": {"n_train": 96, "n_val": 32, "n_test": 0, "noise": 0.3,
                               "profile": "uniform"}},
        "model": {"backbone": "small_cnn", "width": 4},
        "train": {"batch_size": 48, "loss": "ce"},
        "cycle": {"enabled": True, "warmup_epochs": 0, "cycles": 2, "epochs_per_cycle": 1,
                  "min_class_samples": 4, "method": "crest",
                  "crest": {"alpha": 0.5, "t_min": 0.5}},
    }
    lines = []
    metrics = train_recipe(recipe_from_dict(values), run_dir=tmp_path / "run", verbose=0,
                           echo=lines.append)
    assert metrics["epochs"] == 2
    gens = [m for m in lines if m.startswith("CReST generation")]
    assert len(gens) == 2, lines
    assert "generation 0" in gens[0] and "temperature 1.000" in gens[0]
    assert "generation 1" in gens[1] and "temperature 0.500" in gens[1]
    values["cycle"]["threshold_mode"] = "ada_cm"  # the old spelling of another method
    with pytest.raises(RecipeError, match="name different methods"):
        recipe_from_dict(values)
