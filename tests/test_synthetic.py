"""Synthetic faces: determinism, class profiles, label noise, folders, contact sheets, CLI."""

import csv
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ferkeras.commands.data_synth import sheet, synth
from ferkeras.data.sheet import read_image_folder_for_sheet, write_contact_sheet
from ferkeras.data.synthetic import (
    AFFECTNET_COUNTS,
    ASYMMETRIC_TARGETS,
    allocate_counts,
    draw_faces,
    inject_label_noise,
    make_synthetic_bundle,
    profile_counts,
    write_image_folder,
)
from ferkeras.labels import get_class_names
from ferkeras.training.recipe import DataConfig, SyntheticConfig

NAMES8 = get_class_names("affectnet8")


def small_cfg(**synthetic):
    values = dict(n_train=240, n_val=40, n_test=48, noise=0.3, noise_type="asymmetric")
    values.update(synthetic)
    return DataConfig(synthetic=SyntheticConfig(**values))


@pytest.fixture(scope="module")
def bundle():
    return make_synthetic_bundle(small_cfg(), seed=3)


def test_draw_faces_is_deterministic_and_chunk_invariant():
    labels = np.arange(300) % 8  # spans two sensor-noise blocks
    a = draw_faces(labels, NAMES8, seed=5)
    assert a.shape == (300, 48, 48) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, draw_faces(labels, NAMES8, seed=5))
    np.testing.assert_array_equal(a, draw_faces(labels, NAMES8, seed=5, chunk_size=37))
    assert not np.array_equal(a, draw_faces(labels, NAMES8, seed=6))
    assert a.min() < 40 and a.max() > 215  # uses the range
    assert a.reshape(300, -1).std(axis=1).min() > 5  # no blank images


def test_size_112_and_invalid_size():
    images = draw_faces(np.arange(8), NAMES8, size=112, seed=0)
    assert images.shape == (8, 112, 112) and images.dtype == np.uint8
    with pytest.raises(ValueError, match="size=8"):
        draw_faces(np.arange(8), NAMES8, size=8)


def test_allocate_counts_largest_remainder():
    counts = allocate_counts(10, [1, 1, 1])
    assert counts.tolist() == [4, 3, 3]
    assert allocate_counts(8, [1000, 1, 1, 1, 1, 1, 1, 1]).tolist() == [1] * 8
    assert allocate_counts(20, [1000, 1, 1]).tolist() == [18, 1, 1]
    with pytest.raises(ValueError, match="n=3"):
        allocate_counts(3, [1, 1, 1, 1])


def test_profiles_match_proportions():
    n = 6000
    counts = profile_counts(n, NAMES8, profile="affectnet")
    assert counts.sum() == n and counts.min() >= 1
    share = np.array([AFFECTNET_COUNTS[c] for c in NAMES8], float)
    np.testing.assert_allclose(counts, n * share / share.sum(), atol=1.0)
    assert profile_counts(n, NAMES8, profile="uniform").tolist() == [750] * 8
    factor = profile_counts(n, NAMES8, profile="factor", imbalance=10.0)
    assert factor.sum() == n
    assert factor[NAMES8.index("happy")] / factor[NAMES8.index("contempt")] == pytest.approx(
        10.0, rel=0.05
    )
    seven = profile_counts(700, get_class_names("affectnet7"), profile="affectnet")
    assert seven.sum() == 700 and len(seven) == 7
    with pytest.raises(ValueError, match="profile='zipf'"):
        profile_counts(n, NAMES8, profile="zipf")


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_noise_rate_close_to_requested(kind):
    true = np.arange(5000) % 8
    noisy = inject_label_noise(true, rate=0.3, kind=kind, class_names=NAMES8, seed=0)
    assert noisy.dtype == np.int32 and noisy.shape == true.shape
    assert abs(np.mean(noisy != true) - 0.3) < 0.03
    np.testing.assert_array_equal(
        noisy, inject_label_noise(true, rate=0.3, kind=kind, class_names=NAMES8, seed=0)
    )
    if kind == "symmetric":  # every other class is reachable
        flipped = noisy != true
        assert len(np.unique(noisy[flipped & (true == 0)])) == 7
    clean = inject_label_noise(true, rate=0.0, kind=kind, class_names=NAMES8, seed=0)
    np.testing.assert_array_equal(clean, true)


@pytest.mark.parametrize("class_set", ["affectnet8", "affectnet7"])
def test_asymmetric_flips_follow_the_map(class_set):
    names = get_class_names(class_set)
    true = np.arange(4000) % len(names)
    noisy = inject_label_noise(true, rate=0.4, kind="asymmetric", class_names=names, seed=1)
    for t, g in zip(true[noisy != true], noisy[noisy != true], strict=True):
        target = next(x for x in ASYMMETRIC_TARGETS[names[t]] if x in names)
        assert names[g] == target
    if class_set == "affectnet7":
        assert names[noisy[(true == names.index("happy")) & (noisy != true)][0]] == "neutral"
    with pytest.raises(ValueError, match="kind='pairs'"):
        inject_label_noise(true, rate=0.1, kind="pairs", class_names=names, seed=0)


def test_bundle_splits(bundle):
    assert bundle.source == "synthetic" and bundle.class_names == NAMES8
    train, val, test = bundle.train, bundle.val, bundle.test
    assert train.images.shape == (240, 48, 48, 1) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(
        np.bincount(train.true_labels, minlength=8),
        profile_counts(240, NAMES8, profile="affectnet"),
    )
    realised = np.mean(train.labels != train.true_labels)
    assert 0.15 < realised < 0.45
    assert f"realised {realised:.3f}" in bundle.notes[0]
    for split, n in ((val, 40), (test, 48)):
        assert len(split) == n
        np.testing.assert_array_equal(split.labels, split.true_labels)
        assert np.ptp(split.class_counts(8)) <= 1
    # Independent draws: no image is shared between splits.
    assert not np.array_equal(train.images[:40], val.images)


def test_bundle_deterministic_rgb_and_no_test():
    cfg = small_cfg(n_train=64, n_val=16, n_test=0, profile="uniform", noise=0.0)
    cfg.channels, cfg.image_size = 3, 32
    a = make_synthetic_bundle(cfg, seed=1)
    b = make_synthetic_bundle(cfg, seed=1)
    assert a.test is None and a.train.images.shape == (64, 32, 32, 3)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    np.testing.assert_array_equal(a.train.labels, a.train.true_labels)
    assert not np.array_equal(a.train.images, make_synthetic_bundle(cfg, seed=2).train.images)


def test_write_image_folder(bundle, tmp_path):
    out = write_image_folder(bundle, tmp_path / "faces")
    with open(out / "train" / "true_labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 240 and list(rows[0]) == ["path", "label", "true_label"]
    for i, row in enumerate(rows[:20]):
        assert row["path"] == f"{NAMES8[bundle.train.labels[i]]}/{i:06d}.png"
        assert row["true_label"] == NAMES8[bundle.train.true_labels[i]]
        with Image.open(out / "train" / row["path"]) as im:
            pixels = np.asarray(im)
        np.testing.assert_array_equal(pixels, bundle.train.images[i, ..., 0])
    assert sum(1 for _ in (out / "val").rglob("*.png")) == 40
    assert not any(p.name.startswith(".faces.tmp") for p in tmp_path.iterdir())
    with pytest.raises(FileExistsError, match="non-empty"):
        write_image_folder(bundle, out)


def test_contact_sheet_and_folder_reader(bundle, tmp_path):
    split = bundle.val
    captions = [f"given: {NAMES8[g]} / pred: x" for g in split.labels]
    png = write_contact_sheet(
        split.images,
        split.labels,
        NAMES8,
        tmp_path / "s.png",
        per_class=3,
        title="val",
        captions=captions,
    )
    with Image.open(png) as im:
        width, height = im.size
    assert width > 3 * 96 and height > 8 * 96
    out = write_image_folder(bundle, tmp_path / "faces")
    data, names = read_image_folder_for_sheet(out / "train", per_class=2)
    assert names == NAMES8 and data.images.shape[1:] == (48, 48, 1)
    assert data.true_labels is not None and len(data) == 16
    with pytest.raises(ValueError, match="per_class=0"):
        write_contact_sheet(split.images, split.labels, NAMES8, tmp_path / "t.png", per_class=0)


def test_cli_synth_and_sheet(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ds"
    args = [
        "--out",
        str(out),
        "--n",
        "80",
        "--n-val",
        "16",
        "--n-test",
        "16",
        "--noise",
        "0.3",
        "--profile",
        "factor",
        "--seed",
        "1",
        "--no-progress",
    ]
    result = runner.invoke(synth, args)
    assert result.exit_code == 0, result.output
    assert "realised noise" in result.output and "true/given: neutral" in result.output
    assert (out / "test" / "true_labels.csv").is_file()
    again = runner.invoke(synth, args)
    assert again.exit_code == 2 and "not empty" in again.output
    png = tmp_path / "sheet.png"
    result = runner.invoke(sheet, [str(out), "--out", str(png), "--split", "val"])
    assert result.exit_code == 0, result.output
    assert png.is_file()
    missing = runner.invoke(sheet, [str(out), "--split", "nope"])
    assert missing.exit_code == 2 and "nope" in missing.output


def test_commands_do_not_import_tensorflow():
    code = (
        "import sys, ferkeras.commands.data_synth, ferkeras.data.synthetic, ferkeras.data.sheet;"
        "bad = [m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules];"
        "sys.exit(str(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_asymmetric_noise_never_swamps_a_tail_class():
    """Under the AffectNet profile, flips from head classes into their small partners are
    capped: no class receives more flipped-in samples than half its own size."""
    names = get_class_names("affectnet8")
    counts = profile_counts(20000, names, profile="affectnet")
    true = np.repeat(np.arange(8), counts)
    noisy = inject_label_noise(true, rate=0.3, kind="asymmetric", class_names=names, seed=0)
    for c in range(8):
        flipped_in = np.sum((noisy == c) & (true != c))
        assert flipped_in <= 0.5 * counts[c] * 1.15 + 5, (names[c], flipped_in, counts[c])
        assert np.mean(true[noisy == c] == c) > 0.55, names[c]  # given labels stay mostly right
    assert 0.2 < np.mean(noisy != true) <= 0.31
