"""Test-time flip averaging baked into an ONNX export (float and int8), and the shipped
model's files against their recorded hashes. No TensorFlow, no real data; ~3 s."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
from test_quantize import SIZE, faces, write_tiny_export

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def run(folder, images):
    from ferkeras.deploy.inference import create_session

    session = create_session(pathlib.Path(folder) / "model.onnx", threads=1)
    return session.run(["probs", "logits"], {"image": images})


@pytest.mark.parametrize("int8", [False, True])
def test_flip_averaged_export_matches_the_mean_of_image_and_mirror(tmp_path, int8):
    from ferkeras.deploy.flip_average import bake_flip_average
    from ferkeras.deploy.inference import read_metadata

    folder = write_tiny_export(tmp_path / "float")
    images, _ = faces(12)
    if int8:
        from ferkeras.deploy.quantize import quantize_export

        quantize_export(folder, tmp_path / "int8", images)
        folder = tmp_path / "int8"
    plain, _ = run(folder, images)
    mirrored, _ = run(folder, np.ascontiguousarray(images[:, :, ::-1]))
    assert np.abs(plain - mirrored).max() > 1e-3  # the model itself is not mirror-symmetric
    meta = bake_flip_average(folder, tmp_path / "flip")
    probs, logits = run(tmp_path / "flip", images)
    np.testing.assert_allclose(probs, (plain + mirrored) / 2, atol=1e-6)
    np.testing.assert_allclose(np.exp(logits), probs, rtol=1e-5, atol=1e-7)
    # A face and its mirror now get the same probabilities; batch 1 = batch N.
    probs_m, _ = run(tmp_path / "flip", np.ascontiguousarray(images[:, :, ::-1]))
    np.testing.assert_allclose(probs_m, probs, atol=1e-6)
    one, _ = run(tmp_path / "flip", images[:1])
    np.testing.assert_allclose(one, probs[:1], atol=1e-6)
    assert read_metadata(tmp_path / "flip")["test_time_flip"] == meta["test_time_flip"]
    with pytest.raises(ValueError, match="already averages flips"):
        bake_flip_average(tmp_path / "flip")


def test_flip_average_refuses_a_graph_without_the_expected_outputs(tmp_path):
    import onnx

    from ferkeras.deploy.flip_average import add_flip_average

    folder = write_tiny_export(tmp_path / "float")
    model = onnx.load(str(folder / "model.onnx"))
    with pytest.raises(ValueError, match="no graph input 'pixels'"):
        add_flip_average(model, input_name="pixels")
    with pytest.raises(ValueError, match="expected outputs"):
        add_flip_average(model, probs_name="scores")


def test_shipped_model_files_match_their_recorded_hashes():
    from ferkeras.pretrained import SHIPPED_DIR, shipped_model, verify_hashes

    if shipped_model() is None:
        pytest.skip("this tree has no shipped model")
    assert verify_hashes(SHIPPED_DIR) == []
    meta = json.loads((SHIPPED_DIR / "metadata.json").read_text())
    assert meta["test_time_flip"]["mode"] == "mean_probs"
    assert meta["image_size"] == SIZE


def test_shipped_metadata_records_no_machine_paths():
    from ferkeras.pretrained import SHIPPED_DIR, shipped_model

    if shipped_model() is None:
        pytest.skip("this tree has no shipped model")
    meta = json.loads((SHIPPED_DIR / "metadata.json").read_text())

    def strings(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value

    absolute = [s for s in strings(meta) if s.startswith(("/", "~")) or s[1:3] == ":\\"]
    assert absolute == []


def test_hash_check_catches_a_changed_file(tmp_path):
    from ferkeras.pretrained import finalize_shipped, portable_path, verify_hashes

    folder = write_tiny_export(tmp_path / "model")
    meta = json.loads((folder / "metadata.json").read_text())
    meta["run_dir"] = str(tmp_path / "runs" / "r1")
    from ferkeras.pretrained import sha256_file

    meta["files"]["onnx_sha256"] = sha256_file(folder / "model.onnx")
    (folder / "metadata.json").write_text(json.dumps(meta))
    assert "missing" in verify_hashes(folder)[0]
    finalize_shipped(folder, base=tmp_path)
    assert json.loads((folder / "metadata.json").read_text())["run_dir"] == "runs/r1"
    assert verify_hashes(folder) == []
    with open(folder / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    problems = verify_hashes(folder)
    assert any("SHA256SUMS" in p for p in problems) and any("onnx_sha256" in p for p in problems)
    assert portable_path("/elsewhere/run", base=tmp_path) == "run"
    assert portable_path("relative/run") == "relative/run"
