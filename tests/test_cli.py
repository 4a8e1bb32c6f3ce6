"""The CLI through its entry point: a tiny recipe trained end to end into tmp_path."""

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from ferkeras.cli import cli

TINY = {
    "name": "tiny",
    "seed": 1,
    "data": {"source": "synthetic", "image_size": 32,
             "synthetic": {"n_train": 384, "n_val": 64, "n_test": 64, "noise": 0.3}},
    "model": {"backbone": "small_cnn", "width": 8},
    "train": {"epochs": 2, "batch_size": 64, "loss": "logit_adjusted", "ema_decay": 0.9},
}


def _write(tmp_path, recipe):
    path = tmp_path / "tiny.yaml"
    path.write_text("# ferkeras train tiny.yaml\n" + yaml.safe_dump(recipe))
    return path


# Trained on conftest's toy bundle (8 classes coded by brightness; 16 px): a small CNN
# separates it in a few epochs, so these runs have figures that can be checked. Chance
# balanced accuracy is 1/8 = 0.125; chance detection ROC-AUC is 0.5.
TOY = {
    "name": "toy",
    "seed": 0,
    "data": {"source": "synthetic", "image_size": 16, "class_set": "affectnet8"},
    "model": {"backbone": "small_cnn", "width": 8, "dropout": 0.0},
    "train": {"epochs": 3, "batch_size": 64, "learning_rate": 0.03, "warmup_epochs": 0,
              "loss": "logit_adjusted", "ema_decay": 0.9},
}


def _run(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result


def test_train_evaluate_and_outputs(tmp_path, toy_bundle):
    # 2048 rows (32 steps an epoch) at lr 0.01: with 512 rows (8 steps) the run's fate hung
    # on the seed (balanced accuracy 0.125-0.63 over seeds 0-3); here seeds 0-3 all reach 1.0.
    toy_bundle(noise=0.0, n_train=2048)
    run_dir = tmp_path / "run"
    recipe = dict(TOY, train={**TOY["train"], "epochs": 2, "learning_rate": 0.01})
    result = _run(["train", str(_write(tmp_path, recipe)),
                   "--run-dir", str(run_dir), "--set", "train.epochs=3"])
    assert result.exit_code == 0, result.output
    # not a terminal: one progress line per epoch (Keras verbose=2), no per-step bar
    assert "\r" not in result.output
    assert len(re.findall(r"^32/32 - .*loss", result.output, flags=re.M)) == 3, result.output
    assert f"run folder: {run_dir}" in result.output
    assert "val  best: accuracy" in result.output
    for name in ("recipe.yaml", "run_info.json", "metrics.json", "history.csv",
                 "confusion_matrix.png", "per_class.png", "checkpoints/best.weights.h5",
                 "checkpoints/last.weights.h5", "checkpoints/state.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "tensorboard").is_dir()
    saved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert saved["train"]["epochs"] == 3  # the --set override is in the resolved recipe
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("val", "test"):
        for which in ("best", "last"):
            m = metrics[split][which]
            assert set(m) >= {"accuracy", "balanced_accuracy", "macro_f1", "per_class_recall"}
    # It learned: well above chance (0.125) on the clean test split.
    assert metrics["test"]["best"]["balanced_accuracy"] >= 0.5, metrics["test"]["best"]
    assert 1 <= metrics["best_epoch"] <= 3
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 4

    result = _run(["evaluate", str(run_dir), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "test (best): accuracy" in result.output
    # evaluate recomputes exactly what training reported for the best checkpoint
    acc = float(result.output.split("accuracy ")[1].split()[0])
    assert acc == pytest.approx(metrics["test"]["best"]["accuracy"], abs=1e-4)


def test_existing_run_folder_is_never_clobbered(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("keep me")
    result = _run(["train", str(_write(tmp_path, TINY)), "--run-dir", str(run_dir), "-q"])
    assert result.exit_code != 0
    assert "pass --resume to continue it, --overwrite to replace it" in result.output
    assert (run_dir / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_cycle_detects_injected_noise_and_learns(tmp_path, toy_bundle):
    """Known noise (30% of training labels flipped): the split finds it, and the cycle's
    model beats chance by a wide margin; the CE baseline is trained and compared."""
    bundle, is_noisy = toy_bundle(noise=0.3)
    assert 0.25 < is_noisy.mean() < 0.35
    recipe = dict(TOY, cycle={"enabled": True, "warmup_epochs": 4, "cycles": 1,
                              "epochs_per_cycle": 2, "min_class_samples": 8,
                              "compare_ce": True})
    run_dir = tmp_path / "cycle"
    result = _run(["train", str(_write(tmp_path, recipe)), "--run-dir", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert "split at epoch 5:" in result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Detection: chance ROC-AUC is 0.5 (measured 0.89-0.98 over seeds 0-3).
    assert metrics["noise_detection"]["auc"] > 0.75, metrics["noise_detection"]
    # The model: chance balanced accuracy is 0.125 (measured 0.99-1.0 over seeds 0-3).
    assert metrics["test"]["best"]["balanced_accuracy"] > 0.6
    assert set(metrics["comparison"]) >= {"ce", "cycle"}
    assert metrics["comparison"]["ce"]["balanced_accuracy"] > 0.3
    report = run_dir / "reports" / "split-e005"
    for name in ("counts.csv", "samples.csv", "detection.json", "loss_histogram.png",
                 "suspected_errors.png"):
        assert (report / name).is_file(), name
    rows = (report / "samples.csv").read_text().splitlines()
    assert rows[0].startswith("index,given_label,predicted_label,clean_prob,loss,labelled")
    assert len(rows) == 1 + len(bundle.train)
    # The report's clean_prob column is what was scored: noisy rows get lower values.
    table = list(csv.DictReader(rows))
    index = np.array([int(r["index"]) for r in table])
    clean_prob = np.array([float(r["clean_prob"]) for r in table])
    assert clean_prob[is_noisy[index]].mean() < clean_prob[~is_noisy[index]].mean() - 0.3
    assert (run_dir / "ce_baseline" / "metrics.json").is_file()


@pytest.mark.slow
def test_small_loss_selector_resplits_every_epoch_over_a_loss_window(tmp_path, toy_bundle):
    """cycle.selector small_loss, resplit_every_epoch and loss_window 2 in one run."""
    bundle, is_noisy = toy_bundle(noise=0.3)
    recipe = dict(TOY, cycle={"enabled": True, "warmup_epochs": 4, "cycles": 1,
                              "epochs_per_cycle": 3, "resplit_every_epoch": True,
                              "selector": "small_loss", "keep_ratio": 0.7, "loss_window": 2,
                              "min_class_samples": 8})
    run_dir = tmp_path / "run"
    result = _run(["train", str(_write(tmp_path, recipe)), "--run-dir", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output
    for epoch in (5, 6, 7):  # a split before every epoch of the cycle
        assert f"split at epoch {epoch}:" in result.output
    labels = bundle.train.labels
    for epoch in (5, 6, 7):
        with open(run_dir / "reports" / f"split-e{epoch:03d}" / "samples.csv") as fh:
            table = list(csv.DictReader(fh))
        index = np.array([int(r["index"]) for r in table])
        labelled = np.array([r["labelled"] == "1" for r in table])
        for c in range(8):  # small_loss keeps keep_ratio of each given class
            share = labelled[labels[index] == c].mean()
            assert abs(share - 0.7) <= 0.06, (epoch, c, share)
    # loss_window 2: the last split scored the mean of the last two loss passes, which the
    # run state keeps as the selector history.
    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    history = np.load(run_dir / "checkpoints" / state["extra"]["NoiseSplit"]["history_file"])[
        "history"]
    assert history.shape == (2, len(labels))
    losses = np.array([float(r["loss"]) for r in table])
    np.testing.assert_allclose(losses, history.mean(axis=0)[index], rtol=1e-3, atol=1e-4)
    assert not np.allclose(history[0], history[1])  # two different passes were averaged
    # The small-loss ranking finds the injected noise too (chance ROC-AUC 0.5).
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["noise_detection"]["auc"] > 0.75, metrics["noise_detection"]


@pytest.mark.slow
def test_baseline_is_reused_when_finished_and_resumed_when_not(tmp_path, toy_bundle):
    """train_with_baseline (cycle.compare_ce) under --resume: a finished CE baseline is read
    back, not retrained; one without metrics.json continues from its own saved state."""
    import keras

    toy_bundle(noise=0.3, n_train=256)
    recipe = dict(TOY, cycle={"enabled": True, "warmup_epochs": 2, "cycles": 1,
                              "epochs_per_cycle": 1, "min_class_samples": 8,
                              "compare_ce": True})
    path, run_dir = _write(tmp_path, recipe), tmp_path / "run"
    base = run_dir / "ce_baseline"
    assert _run(["train", str(path), "--run-dir", str(run_dir), "-q"]).exit_code == 0
    before = {name: (base / name).read_bytes() for name in ("metrics.json", "history.csv")}
    comparison = json.loads((run_dir / "metrics.json").read_text())["comparison"]

    keras.utils.clear_session()  # number layers as the fresh `--resume` process would
    result = _run(["train", "--resume", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert str(base) not in result.output  # the finished baseline is not touched ...
    assert (base / "metrics.json").read_bytes() == before["metrics.json"]
    now = json.loads((run_dir / "metrics.json").read_text())["comparison"]
    assert now["ce"] == comparison["ce"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):  # (wall_seconds: this process)
        assert now["cycle"][key] == pytest.approx(comparison["cycle"][key]), key

    (base / "metrics.json").unlink()  # ... one cut short before its metrics is resumed
    keras.utils.clear_session()
    result = _run(["train", "--resume", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert f"resume: {base} has all 3 epochs; recomputing the final metrics" in result.output
    assert (base / "history.csv").read_bytes() == before["history.csv"]  # no epoch retrained
    again = json.loads((base / "metrics.json").read_text())
    old = json.loads(before["metrics.json"])
    assert again["test"]["best"]["accuracy"] == pytest.approx(old["test"]["best"]["accuracy"])
    assert json.loads((run_dir / "metrics.json").read_text())["comparison"]["ce"][
        "accuracy"] == pytest.approx(comparison["ce"]["accuracy"])


def test_recipe_errors_are_one_line(tmp_path):
    result = _run(["train", str(_write(tmp_path, TINY)), "--set", "train.epochs=-2"])
    assert result.exit_code == 2 or result.exit_code == 1
    assert "'train.epochs' must be >= 1. Received: -2" in result.output
    assert "Traceback" not in result.output


def test_models_methods_and_help_do_not_import_tensorflow():
    code = ("import sys; from ferkeras.cli import cli\n"
            "for args in (['--help'], ['models'], ['methods']):\n"
            "    try:\n        cli(args)\n    except SystemExit:\n        pass\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "small_cnn" in out.stdout and "predict" in out.stdout
    # `ferkeras methods`: every method of the table, one line each with its paper
    from ferkeras.methods import METHODS

    for name, method in METHODS.items():
        assert f"{name:10s} {method.description}" in out.stdout
        assert method.paper in out.stdout
    assert "composable" in out.stdout and "train.elr_lambda" in out.stdout


@pytest.mark.parametrize("score", ["aum", "loss"])
def test_audit_writes_ranked_label_issues(tmp_path, score):
    recipe = dict(TINY, cycle={"warmup_epochs": 2})
    run_dir = tmp_path / "audit"
    args = ["audit", str(_write(tmp_path, recipe)), "--run-dir", str(run_dir), "-q"]
    result = _run(args + ([] if score == "aum" else ["--score", "loss"]))  # aum: the default
    assert result.exit_code == 0, result.output
    assert f"training labels as likely wrong, ranked by {score}" in result.output
    assert "against the true labels: ROC-AUC" in result.output
    with open(run_dir / "audit" / "label_issues.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:7] == ["rank", "index", "file", "given_label", "suggested_label",
                                 "suggested_prob", "ranked_by"]
    summary = json.loads((run_dir / "audit" / "summary.json").read_text())
    assert len(rows) == summary["flagged"] > 0 and summary["ranked_by"] == score
    assert {r["ranked_by"] for r in rows} == {score}
    if score == "loss":
        assert all(float(r["clean_prob"]) <= 0.5 for r in rows)  # below p_clean only
        assert not (run_dir / "audit" / "margins.npz").exists()
    else:  # ranked by the area under the margin over both warm-up epochs, lowest first
        aum = [float(r["aum"]) for r in rows]
        assert aum == sorted(aum)
        with np.load(run_dir / "audit" / "margins.npz") as z:
            assert list(z["epochs"]) == [1, 2] and summary["aum_epochs"] == [1, 2]
            mean = z["margin"].mean(1)
        assert np.allclose([mean[int(r["index"])] for r in rows], aum, atol=1e-4)
    assert (run_dir / "audit" / "suspected_errors.png").is_file()


def test_progress_is_the_bar_on_a_terminal_and_a_line_per_epoch_elsewhere():
    import io

    from ferkeras.training.console import progress_verbosity

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress_verbosity("auto", stream=io.StringIO()) == 2
    assert progress_verbosity("auto", stream=Terminal()) == 1
    assert [progress_verbosity(v) for v in (0, 1, 2)] == [0, 1, 2]
    with pytest.raises(ValueError, match="Received: verbose='loud'"):
        progress_verbosity("loud")
