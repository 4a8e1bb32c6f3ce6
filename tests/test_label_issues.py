"""Label-error ranking from training dynamics (area under the margin), on injected noise
with known truth (ferkeras.noise.label_issues)."""

import numpy as np
import pytest


def test_area_under_margin_ranks_injected_flips_first():
    """Training dynamics with known truth: flipped rows keep a low given-label margin."""
    from sklearn.metrics import roc_auc_score

    from ferkeras.noise.label_issues import (
        area_under_margin,
        find_label_issues_by_aum,
        given_label_margins,
    )

    rng = np.random.default_rng(0)
    n, k, epochs = 2000, 4, 5
    truth = rng.choice(k, n, p=[0.5, 0.25, 0.15, 0.1])  # imbalanced
    flipped = rng.random(n) < 0.25
    given = np.where(flipped, (truth + rng.integers(1, k, n)) % k, truth)
    margins, last = [], None
    for e in range(epochs):  # the model learns the truth; late epochs memorise the flips
        logits = rng.normal(0, 1, (n, k))
        logits[np.arange(n), truth] += 2.5
        logits[np.arange(n), given] += 0.5 * e * flipped[np.arange(n)]
        last = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        margins.append(given_label_margins(given, last))
    aum = area_under_margin(np.column_stack(margins))
    assert roc_auc_score(flipped, -aum) > 0.95
    assert roc_auc_score(flipped, -margins[-1]) < roc_auc_score(flipped, -aum)  # memorised
    issues = find_label_issues_by_aum(given, aum, last)
    assert flipped[issues].mean() > 0.85 and issues[flipped].mean() > 0.5
    ranked = find_label_issues_by_aum(given, aum, last, return_indices_ranked=True)
    assert set(ranked) == set(np.flatnonzero(issues)) and np.all(np.diff(aum[ranked]) >= 0)
    m = given_label_margins(np.array([0, 1]), np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]]))
    np.testing.assert_allclose(m, [0.5, -0.5])
    with pytest.raises(ValueError, match="at least one epoch"):
        area_under_margin(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="aum has shape"):
        find_label_issues_by_aum(given, aum[:5], last)


def test_epoch_npz_appends_replaces_redone_epochs_and_refuses_other_rows(tmp_path):
    """The per-epoch log behind the audit's margins (ferkeras.io.append_epoch_npz): a resumed
    run that redoes epoch 2 replaces it and drops what came after."""
    from ferkeras.io import append_epoch_npz

    path = tmp_path / "margins.npz"
    for epoch in (1, 2, 3):
        append_epoch_npz(path, epoch, axis=1, margin=np.full(4, epoch, np.float32))
    out = append_epoch_npz(path, 2, axis=1, margin=np.full(4, 20.0, np.float32))
    with np.load(path) as z:
        assert z["epochs"].tolist() == [1, 2] == out["epochs"].tolist()
        np.testing.assert_array_equal(z["margin"], [[1, 20]] * 4)
        assert z["margin"].dtype == np.float32
    rows = append_epoch_npz(tmp_path / "p.npz", 1, axis=0, val=np.ones((3, 2), np.float16))
    assert rows["val"].shape == (1, 3, 2) and rows["val"].dtype == np.float16
    with pytest.raises(ValueError, match="margins.npz: margin has shape"):
        append_epoch_npz(path, 3, axis=1, margin=np.zeros(5, np.float32))
