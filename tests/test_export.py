"""Export: a tiny model trained one step, exported to SavedModel + ONNX, parity-checked.

Runs in ~30 s on 2 cores (TensorFlow import, one fake run, three exports).
"""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE, CHANNELS = 32, 3


def make_fake_run(run_dir, *, image_size: int, channels: int, seed: int = 0):
    """A run folder as the trainer writes it: recipe, checkpoints, metrics, run info."""
    import keras

    from ferkeras.labels import get_class_names
    from ferkeras.models import build_network
    from ferkeras.training.recipe import recipe_from_dict, recipe_to_yaml

    recipe = recipe_from_dict({"name": "tiny", "seed": seed, "model": {"width": 4},
                               "data": {"image_size": image_size, "channels": channels}})
    names = list(get_class_names(recipe.data.class_set))
    net = build_network(recipe.model, input_shape=(image_size, image_size, channels),
                        num_classes=len(names), seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (8, image_size, image_size, channels)).astype("float32")
    y = rng.integers(0, len(names), 8)
    net.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(x, y, epochs=1, steps_per_epoch=1, verbose=0)
    (run_dir / "checkpoints").mkdir(parents=True)
    net.save_weights(str(run_dir / "checkpoints" / "best.weights.h5"))
    net.save_weights(str(run_dir / "checkpoints" / "last.weights.h5"))
    (run_dir / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    metrics = {"class_names": names, "val": {"accuracy": 0.25, "balanced_accuracy": 0.2},
               "test": {"accuracy": 0.3}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    info = {"class_names": names, "image_size": image_size, "channels": channels}
    (run_dir / "run_info.json").write_text(json.dumps(info))
    return net


def _images(n, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, CHANNELS), np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run_dir, export_dir, network, metadata) of one export of a one-step model."""
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(root / "keras_home"))
        from ferkeras.deploy.export import export_run

        net = make_fake_run(root / "run", image_size=SIZE, channels=CHANNELS)
        meta = export_run(root / "run", root / "out" / "tiny", parity_images=_images(40))
    return root / "run", root / "out" / "tiny", net, meta


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_export_writes_complete_folder(exported):
    from ferkeras.deploy.inference import EXPORT_FORMAT, read_metadata
    from ferkeras.training.recipe import load_recipe, recipe_hash

    run_dir, out, _, meta = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "metadata.json", "model.onnx", "saved_model"]
    assert read_metadata(out) == json.loads((out / "metadata.json").read_text()) == meta
    assert meta["format"] == EXPORT_FORMAT
    assert meta["class_names"] == json.loads((run_dir / "run_info.json").read_text())[
        "class_names"]
    assert (meta["image_size"], meta["channels"]) == (SIZE, CHANNELS)
    assert meta["input"]["value_range"] == [0, 255] and meta["input"]["color"] == "rgb"
    assert meta["recipe_hash"] == recipe_hash(load_recipe(run_dir / "recipe.yaml"))
    assert meta["recipe"]["model"]["width"] == 4
    assert meta["metrics"] == {"val": {"accuracy": 0.25, "balanced_accuracy": 0.2},
                               "test": {"accuracy": 0.3}}
    assert meta["files"]["onnx_opset"] == 17
    parity = meta["parity"]
    assert parity["passed"] and parity["images"] == 40 and parity["source"] == "given images"
    assert parity["max_abs_diff"] <= 1e-4
    assert "ferkeras predict --model" in (out / "README.md").read_text()
    assert _leftovers(out.parent) == []


def test_onnx_has_dynamic_batch_and_matches_keras(exported):
    import onnx
    import tensorflow as tf

    from ferkeras.deploy.inference import Predictor

    _, out, net, meta = exported
    model = onnx.load(str(out / "model.onnx"))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", SIZE, SIZE, CHANNELS]

    images = _images(70, seed=5)  # more than one batch of 64
    keras_probs = tf.nn.softmax(net(images.astype("float32"), training=False)).numpy()
    predictor = Predictor(out, batch_size=64)
    probs = predictor.predict_crops(images)
    assert probs.shape == (70, len(meta["class_names"]))
    np.testing.assert_allclose(probs, keras_probs, atol=1e-4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)

    served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    result = served(image=tf.constant(images[:3], tf.float32))
    assert set(result) == {"probs", "logits"}
    np.testing.assert_allclose(result["probs"].numpy(), keras_probs[:3], atol=1e-5)


def test_parity_failure_keeps_previous_export(exported, monkeypatch, tmp_path):
    from ferkeras.commands.export_cmd import export as export_cmd
    from ferkeras.deploy import export

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    run_dir, out, _, _ = exported
    before = (out / "metadata.json").read_text()
    real = export._onnx_probs
    monkeypatch.setattr(export, "_onnx_probs", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(export.ParityError, match=r"differ by up to 0\.001"):
        export.export_run(run_dir, out, parity_images=_images(8))
    assert (out / "metadata.json").read_text() == before
    assert _leftovers(out.parent) == []

    # The same through the CLI: one line, exit 1. The validation split comes from the
    # (faked) data module, which also exercises the lazy parity-image loader.
    _fake_sources(monkeypatch)
    result = CliRunner().invoke(export_cmd, [str(run_dir), "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: parity check failed")
    assert len(result.output.strip().splitlines()) == 1
    assert (out / "metadata.json").read_text() == before
    assert _leftovers(out.parent) == []


def _fake_sources(monkeypatch, n_val=12):
    """Install a stand-in for ferkeras.data.sources whose validation split is in memory."""
    from ferkeras.data.table import Split

    def load_bundle(data_cfg, *, seed):
        val = Split(labels=np.zeros(n_val), images=_images(n_val, seed=seed + 7))
        return types.SimpleNamespace(val=val)

    from ferkeras.data import sources as real

    module = types.ModuleType("ferkeras.data.sources")
    module.__dict__.update({k: v for k, v in vars(real).items() if not k.startswith("__")})
    module.load_bundle = load_bundle
    monkeypatch.setitem(sys.modules, "ferkeras.data.sources", module)


def test_cli_export_replaces_previous_export(exported, monkeypatch, tmp_path):
    from ferkeras.commands.export_cmd import export as export_cmd

    run_dir, _, _, _ = exported
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    _fake_sources(monkeypatch)
    out = tmp_path / "exports" / "mine"
    (out).mkdir(parents=True)
    (out / "metadata.json").write_text("{}")  # an older export
    (out / "stale.txt").write_text("from the old export")
    result = CliRunner().invoke(export_cmd, [str(run_dir), "--out", str(out), "--weights",
                                             "last", "--parity-limit", "5"])
    assert result.exit_code == 0, result.output
    assert "parity max|diff|" in result.output
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["weights"] == "last"
    assert meta["parity"]["source"] == "validation split" and meta["parity"]["images"] == 5
    assert not (out / "stale.txt").exists()
    assert _leftovers(out.parent) == []


def test_bad_run_folder_and_unsafe_target(exported, tmp_path):
    from ferkeras.commands.export_cmd import export as export_cmd
    from ferkeras.deploy.export import ExportError, export_run

    run_dir, _, _, _ = exported
    with pytest.raises(ExportError, match="missing"):
        export_run(tmp_path, tmp_path / "x", parity_images=_images(2))
    result = CliRunner().invoke(export_cmd, [str(tmp_path / "nope"), "--out",
                                             str(tmp_path / "x")])
    assert result.exit_code == 1 and "no such run folder" in result.output

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(ExportError, match="not a ferkeras export"):
        export_run(run_dir, precious, parity_images=_images(2))
    assert (precious / "thesis.tex").is_file()
    with pytest.raises(ValueError, match="weights='final'"):
        export_run(run_dir, tmp_path / "y", weights="final", parity_images=_images(2))


def test_export_to_an_unwritable_out_is_one_line(exported, tmp_path, monkeypatch):
    """Tests run as root (chmod does not stop root): a path under a regular file cannot be
    created, /proc accepts no new files, and a write failing midway (full disk) is caught."""
    from ferkeras.commands.export_cmd import export as export_cmd

    run_dir, _, _, _ = exported
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker / "sub" / "model", "/proc/ferkeras-model"):
        result = CliRunner().invoke(export_cmd, [str(run_dir), "--out", str(out)])
        assert result.exit_code == 1, result.output
        (line,) = result.output.strip().splitlines()
        assert f"--out {out}: cannot write there" in line

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ferkeras.deploy.export.export_run", full_disk)
    result = CliRunner().invoke(export_cmd, [str(run_dir), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: --out {tmp_path / 'm'}: cannot write the export "
                                     "(No space left on device)")


def test_data_sheet_to_an_unwritable_out_is_one_line(tmp_path):
    from PIL import Image

    from ferkeras.cli import cli

    for name in ("happy", "sad"):
        (tmp_path / "faces" / name).mkdir(parents=True)
        Image.fromarray(np.full((16, 16), 90, np.uint8)).save(tmp_path / "faces" / name / "a.png")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker / "sheet.png", "/proc/ferkeras-sheet.png", "/dev/full"):
        result = CliRunner().invoke(cli, ["data", "sheet", str(tmp_path / "faces"), "--out",
                                          str(out)])
        assert result.exit_code == 1, (out, result.output)
        (line,) = result.output.strip().splitlines()
        assert f"{out}: cannot write the contact sheet" in line, line
    ok = CliRunner().invoke(cli, ["data", "sheet", str(tmp_path / "faces"), "--out",
                                  str(tmp_path / "sheet.png")])
    assert ok.exit_code == 0 and (tmp_path / "sheet.png").is_file()
