"""Noise detection on simulated per-sample losses with injected noise and known truth."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ferkeras.noise import selection

# FER2013 training counts / 10 and its estimated share of wrong labels, in FER2013 class order
# (angry, disgust, fear, happy, sad, surprise, neutral).
FER_COUNTS = np.array([400, 44, 410, 722, 483, 317, 497])
FER_NOISE = np.array([0.47, 0.62, 0.86, 0.07, 0.55, 0.16, 0.11])


def simulate_losses(counts, noise_rates, clean_means, *, gap=1.0, seed=0):
    """Given-label losses: clean ~ N(mean_c, 0.2), noisy ~ N(mean_c + gap, 0.3), folded at 0."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    is_clean = np.concatenate(
        [rng.random(n) >= r for n, r in zip(counts, noise_rates, strict=True)]
    )
    mean = np.asarray(clean_means)[labels] + np.where(is_clean, 0.0, gap)
    losses = np.abs(rng.normal(mean, np.where(is_clean, 0.2, 0.3)))
    return losses, labels, is_clean


@pytest.fixture
def long_tail():
    """4 classes 800/400/150/60; the tail's clean losses (2.0) sit above head noisy ones (1.2)."""
    return simulate_losses([800, 400, 150, 60], [0.1, 0.2, 0.4, 0.5], [0.2, 0.5, 1.2, 2.0])


# ----------------------------------------------------------------------------- normalisation
def test_normalize_per_class_spans_unit_interval_in_every_class(long_tail):
    losses, labels, _ = long_tail
    normed = selection.normalize_losses(losses, labels, num_classes=4, mode="per_class")
    for c in range(4):
        assert normed[labels == c].min() == 0.0 and normed[labels == c].max() == 1.0
    glob = selection.normalize_losses(losses, labels, num_classes=4, mode="global")
    np.testing.assert_allclose(glob, (losses - losses.min()) / np.ptp(losses))


def test_per_class_normalisation_beats_global_on_long_tail(long_tail):
    losses, labels, is_clean = long_tail
    aucs, reports = {}, {}
    for mode in ("global", "per_class"):
        normed = selection.normalize_losses(losses, labels, num_classes=4, mode=mode)
        aucs[mode] = roc_auc_score(is_clean, -normed)
        prob = selection.clean_probability(losses, labels, num_classes=4, normalize=mode)
        reports[mode] = selection.score_noise_detection(prob, is_clean, labels=labels)
    assert aucs["per_class"] > aucs["global"] + 0.02
    assert reports["per_class"]["auc"] > reports["global"]["auc"] + 0.02
    # Global normalisation throws away the tail class's clean samples as "noise".
    tail_precision = {m: r["per_class"][3]["precision"] for m, r in reports.items()}
    assert tail_precision["global"] < 0.6 < 0.8 < tail_precision["per_class"], tail_precision
    assert reports["per_class"]["precision"] > 0.9 > 0.8 > reports["global"]["precision"]


def test_normalize_handles_constant_and_singleton_classes():
    losses = np.array([0.3, 0.3, 0.3, 5.0, 1.0, 2.0])
    labels = np.array([0, 0, 0, 1, 2, 2])
    normed = selection.normalize_losses(losses, labels, num_classes=4)
    np.testing.assert_array_equal(normed, [0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    assert selection.normalize_losses([], [], num_classes=2).shape == (0,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "percentile"}, "Received: 'percentile'"),
        ({"losses": [0.1, np.nan]}, "non-finite"),
        ({"labels": [0, 3]}, "max=3"),
        ({"labels": [0.0, 1.0]}, "dtype float64"),
    ],
)
def test_normalize_rejects_bad_input(kwargs, match):
    args = {"losses": [0.1, 0.2], "labels": [0, 1], "num_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        selection.normalize_losses(args.pop("losses"), args.pop("labels"), **args)


def test_average_loss_history_uses_last_window_rows():
    history = np.array([[9.0, 9.0], [1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(selection.average_loss_history(history, window=2), [2.0, 3.0])
    np.testing.assert_allclose(selection.average_loss_history(history, window=10), [13 / 3, 5])
    np.testing.assert_allclose(selection.average_loss_history([1.0, 2.0], window=3), [1.0, 2.0])
    with pytest.raises(ValueError, match="Received: 0"):
        selection.average_loss_history(history, window=0)


# ----------------------------------------------------------------------------- GMM
def test_gmm_recovers_injected_noise_with_fer2013_noise_rates():
    clean_means = 0.2 + np.log(FER_COUNTS.max() / FER_COUNTS)  # tail classes: higher losses
    losses, labels, is_clean = simulate_losses(FER_COUNTS, FER_NOISE, clean_means)
    for scope in ("global", "per_class"):
        prob = selection.clean_probability(losses, labels, num_classes=7, gmm_scope=scope)
        report = selection.score_noise_detection(prob, is_clean, labels=labels)
        assert report["auc"] > 0.98 and report["precision"] > 0.9 and report["recall"] > 0.9
        assert report["noise_rate"] == pytest.approx(1 - is_clean.mean())
        for row in report["per_class"]:  # fear (86% noisy) included
            assert row["auc"] > 0.95 and row["recall"] > 0.75, row


def test_gmm_clean_prob_is_lower_component_posterior():
    rng = np.random.default_rng(1)
    losses = np.concatenate([rng.normal(0.1, 0.05, 300), rng.normal(0.8, 0.05, 100)])
    prob = selection.fit_two_component_gmm(losses, seed=0)
    assert prob.shape == (400,) and np.all((prob >= 0) & (prob <= 1))
    assert prob[:300].min() > 0.95 and prob[300:].max() < 0.05
    np.testing.assert_array_equal(prob, selection.fit_two_component_gmm(losses, seed=0))


def test_gmm_monotone_guard_stops_wide_clean_component_reclaiming_high_losses():
    rng = np.random.default_rng(0)
    clean = rng.normal(0.3, 0.15, 600)  # wide
    noisy = rng.normal(0.7, 0.02, 300)  # narrow
    losses = np.concatenate([clean, noisy, [0.95, 1.0]])  # two far high-loss outliers
    raw = selection.fit_two_component_gmm(losses, monotone=False)
    guarded = selection.fit_two_component_gmm(losses)
    assert raw[-2:].min() > 0.9  # DivideMix as-is calls the highest losses clean
    assert guarded[-2:].max() < 0.05
    between = (losses > 0.3) & (losses < 0.7)  # between the means nothing changes
    np.testing.assert_allclose(guarded[between], raw[between])


@pytest.mark.parametrize("losses", [[], [0.7], [0.2, 0.2, 0.2]])
def test_gmm_degenerate_input_keeps_everything(losses):
    prob = selection.fit_two_component_gmm(losses)
    np.testing.assert_array_equal(prob, np.ones(len(losses)))


def test_clean_probability_rank_rule_for_small_classes():
    losses = np.array([0.1, 0.2, 0.3, 0.4, 9.0])
    labels = np.array([0, 0, 0, 0, 1])
    prob = selection.clean_probability(
        losses, labels, num_classes=2, gmm_scope="per_class", min_class_samples=20
    )
    np.testing.assert_allclose(prob, [0.875, 0.625, 0.375, 0.125, 0.5])


# ----------------------------------------------------------------------------- splits
def test_small_loss_selection_keeps_smallest_share_per_class(long_tail):
    losses, labels, is_clean = long_tail
    keep = selection.small_loss_selection(losses, labels, num_classes=4, keep_ratio=0.45)
    for c, n in enumerate([800, 400, 150, 60]):
        in_c = labels == c
        assert keep[in_c].sum() == int(0.45 * n)
        assert losses[in_c & keep].max() <= losses[in_c & ~keep].min()
    assert is_clean[keep].mean() > 0.98
    glob = selection.small_loss_selection(
        losses, labels, num_classes=4, keep_ratio=0.45, per_class=False
    )
    assert glob.sum() == int(0.45 * losses.size)
    assert glob[labels == 3].sum() < 5  # without per_class the tail class is dropped


def test_small_loss_selection_keeps_at_least_one_per_class():
    keep = selection.small_loss_selection(
        [0.5, 0.1, 0.9], [0, 0, 1], num_classes=2, keep_ratio=0.01
    )
    np.testing.assert_array_equal(keep, [False, True, True])
    with pytest.raises(ValueError, match="Received: 0"):
        selection.small_loss_selection([0.1], [0], num_classes=1, keep_ratio=0)


def test_split_by_threshold_never_empties_a_class():
    clean_prob = np.array([0.9, 0.8, 0.2, 0.1, 0.3, 0.05, 0.4])
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    mask = selection.split_by_threshold(clean_prob, labels, p_clean=0.5, num_classes=4)
    np.testing.assert_array_equal(mask, [True, True, False, False, True, False, True])
    mask2 = selection.split_by_threshold(
        clean_prob, labels, p_clean=0.5, num_classes=4, min_per_class=2
    )
    np.testing.assert_array_equal(mask2, [True, True, False, True, True, False, True])
    everything_noisy = selection.split_by_threshold(clean_prob, labels, p_clean=1.0, num_classes=4)
    assert np.bincount(labels[everything_noisy], minlength=3).tolist() == [1, 1, 1]


def test_estimate_clean_prior_moves_toward_true_prior():
    rng = np.random.default_rng(0)
    k, true_prior = 5, np.array([0.5, 0.25, 0.13, 0.08, 0.04])
    true = rng.choice(k, size=4000, p=true_prior)
    flip = rng.random(true.size) < 0.4  # symmetric noise flattens the noisy label counts
    given = np.where(flip, (true + rng.integers(1, k, true.size)) % k, true)
    noisy_prior = np.bincount(given, minlength=k) / given.size
    clean_prior = selection.estimate_clean_prior(given, given == true, num_classes=k)
    assert clean_prior.sum() == pytest.approx(1.0)
    err_noisy = np.abs(noisy_prior - true_prior).sum()
    assert np.abs(clean_prior - true_prior).sum() < 0.25 * err_noisy


def test_estimate_clean_prior_pred_probs_corrects_class_dependent_noise():
    rng = np.random.default_rng(0)
    k, true_prior, rates = 3, np.array([0.5, 0.3, 0.2]), np.array([0.05, 0.8, 0.1])
    true = rng.choice(k, size=3000, p=true_prior)
    flip = rng.random(true.size) < rates[true]
    given = np.where(flip, (true + 1) % k, true)
    clean = given == true
    pred_probs = np.eye(k)[true] * 0.9 + 0.1 / k  # a decent model
    only_clean = selection.estimate_clean_prior(given, clean, num_classes=k)
    with_pred = selection.estimate_clean_prior(given, clean, num_classes=k, pred_probs=pred_probs)
    assert only_clean[1] < 0.15  # class 1 (80% noisy) is badly under-weighted
    assert np.abs(with_pred - true_prior).sum() < 0.3 * np.abs(only_clean - true_prior).sum()


def test_estimate_clean_prior_smoothing_and_errors():
    prior = selection.estimate_clean_prior(
        [0, 0, 1], np.array([True, True, False]), num_classes=3, smoothing=1.0
    )
    np.testing.assert_allclose(prior, [3 / 5, 1 / 5, 1 / 5])
    with pytest.raises(ValueError, match="undefined"):
        selection.estimate_clean_prior([0], np.array([False]), num_classes=2, smoothing=0.0)
    with pytest.raises(ValueError, match="dtype int64"):
        selection.estimate_clean_prior([0, 1], np.array([1, 0]), num_classes=2)


# ----------------------------------------------------------------------------- reporting
def test_score_noise_detection_hand_computed():
    clean_prob = np.array([0.9, 0.8, 0.3, 0.1, 0.6, 0.2])
    is_clean = np.array([True, True, True, False, False, False])
    labels = np.array([0, 0, 0, 1, 1, 1])
    report = selection.score_noise_detection(clean_prob, is_clean, labels=labels)
    # flagged noisy: indices 2, 3, 5; truly noisy: 3, 4, 5.
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["recall"] == pytest.approx(2 / 3)
    assert report["auc"] == pytest.approx(8 / 9)
    assert report["n"] == 6 and report["noise_rate"] == 0.5
    assert report["per_class"][0]["auc"] is None and report["per_class"][0]["recall"] is None
    assert report["per_class"][0]["precision"] == 0.0
    assert report["per_class"][1]["recall"] == pytest.approx(2 / 3)
    assert selection.score_noise_detection(clean_prob, is_clean)["per_class"] == []


def test_rank_label_issues_most_suspect_first():
    order = selection.rank_label_issues([0.9, 0.1, 0.1, 0.5], [0.2, 1.0, 3.0, 0.4])
    np.testing.assert_array_equal(order, [2, 1, 3, 0])


# ----------------------------------------------------------------------------- the one split
def test_split_training_set_gmm_matches_the_composed_steps(long_tail):
    losses, labels, is_clean = long_tail
    history = np.stack([losses * 1.1, losses])
    result = selection.split_training_set(
        history, labels, num_classes=4, selector="gmm", window=2, normalize="per_class",
        p_clean=0.5, seed=3)
    avg = selection.average_loss_history(history, window=2)
    prob = selection.clean_probability(avg, labels, num_classes=4, seed=3)
    np.testing.assert_allclose(result.clean_prob, prob)
    np.testing.assert_array_equal(
        result.labelled, selection.split_by_threshold(prob, labels, p_clean=0.5, num_classes=4))
    np.testing.assert_array_equal(result.clean_counts, np.bincount(labels[result.labelled]))
    assert result.clean_prior.shape == (4,) and result.clean_prior.sum() == pytest.approx(1.0)
    # the carried GMM is the one that split: it reproduces clean_prob
    np.testing.assert_allclose(
        selection.gmm_clean_probability(result.gmm[None], result.normalized), result.clean_prob)


def test_split_training_set_per_class_gmm_is_carried(long_tail):
    losses, labels, _ = long_tail
    result = selection.split_training_set(losses, labels, num_classes=4, gmm_scope="per_class",
                                          min_class_samples=100)
    assert sorted(result.gmm) == [0, 1, 2, 3] and result.gmm[3] is None  # 60 < 100: rank rule
    for c in (0, 1, 2):
        idx = labels == c
        np.testing.assert_allclose(
            selection.gmm_clean_probability(result.gmm[c], result.normalized[idx]),
            result.clean_prob[idx])
    grid = np.linspace(0, 1, 11)
    density = selection.gmm_density(result.gmm, grid, labels)
    share = [np.mean(labels == c) for c in range(3)]
    expected = sum(s * np.exp(result.gmm[c].score_samples(grid[:, None]))
                   for c, s in enumerate(share))
    np.testing.assert_allclose(density, expected)


def test_small_loss_scores_describe_the_mask_it_trains_with(long_tail):
    """Precision and recall of the small-loss split are those of its keep-ratio mask, not of
    `clean_prob > p_clean` (which flags another set of samples)."""
    losses, labels, is_clean = long_tail
    true = np.where(is_clean, labels, (labels + 1) % 4)
    result = selection.split_training_set(losses, labels, num_classes=4, selector="small_loss",
                                          keep_ratio=0.6, true_labels=true, p_clean=0.5)
    flagged, noisy = ~result.labelled, ~is_clean
    assert result.scores["precision"] == pytest.approx((flagged & noisy).sum() / flagged.sum())
    assert result.scores["recall"] == pytest.approx((flagged & noisy).sum() / noisy.sum())
    by_threshold = ~(result.clean_prob > 0.5)
    assert (by_threshold != flagged).sum() > 100  # the old scores described this other set
    for row in result.scores["per_class"]:
        idx = labels == row["class"]
        hits = (flagged[idx] & noisy[idx]).sum()
        assert row["precision"] == pytest.approx(hits / flagged[idx].sum())


def test_selector_registry_and_unknown_selector(long_tail):
    losses, labels, _ = long_tail
    assert selection.list_selectors() == ["gmm", "h2e", "pnp", "small_loss", "trusted"]
    with pytest.raises(ValueError, match=r"`selector` must be one of .*Received: 'coteach'"):
        selection.split_training_set(losses, labels, num_classes=4, selector="coteach")
    result = selection.split_training_set(losses, labels, num_classes=4, selector="small_loss",
                                          keep_ratio=0.5)
    assert result.gmm is None and result.scores is None
    assert result.labelled.sum() == sum(int(np.floor(0.5 * n)) for n in (800, 400, 150, 60))


def test_split_warnings_flag_a_near_chance_model_and_an_extreme_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    good = np.eye(4)[labels] * 0.7 + 0.075
    labelled = rng.random(400) > 0.25
    assert selection.split_warnings(labelled, labels, good, num_classes=4) == []
    chance = np.full((400, 4), 0.25)
    chance[:, 0] += 1e-3
    chance /= chance.sum(1, keepdims=True)
    msgs = selection.split_warnings(labelled, labels, chance, num_classes=4)
    assert any("near" in m for m in msgs)
    labelled_extreme = labelled.copy()
    labelled_extreme[labels == 2] = False  # class 2 flagged wholesale
    msgs = selection.split_warnings(labelled_extreme, labels, good, num_classes=4,
                                    class_names=["a", "b", "c", "d"])
    assert len(msgs) == 1 and "'c'" in msgs[0] and "100%" in msgs[0]
