"""int8 static quantization and `ferkeras ship`, on a tiny ONNX export built by hand.

No TensorFlow and no real data: the model is a 2-layer ONNX graph (Conv + Gemm + Softmax)
written with onnx.helper, and the data folder holds a 40-row FER2013/FERPlus pair. ~5 s.
"""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

NAMES = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"]
SIZE = 48


def write_tiny_export(folder, *, seed: int = 0):
    """An export folder (model.onnx + metadata.json) of a random 48x48x1 -> 8 classifier."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 0.05, (8, 1, 5, 5)).astype(np.float32)
    conv_b = rng.normal(0, 0.1, 8).astype(np.float32)
    dense_w = rng.normal(0, 0.5, (8, len(NAMES))).astype(np.float32)
    dense_b = np.zeros(len(NAMES), np.float32)
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["nchw", "scale"], ["scaled"]),
        helper.make_node("Conv", ["scaled", "conv_w", "conv_b"], ["conv"], strides=[4, 4]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "dense_w", "dense_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    inits = [numpy_helper.from_array(v, n) for n, v in (
        ("conv_w", conv_w), ("conv_b", conv_b), ("dense_w", dense_w), ("dense_b", dense_b),
        ("scale", np.array(1 / 255, np.float32)))]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                      ["batch", SIZE, SIZE, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(NAMES)]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(NAMES)])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    meta = {"format": "ferkeras-export/1", "class_names": NAMES, "image_size": SIZE,
            "channels": 1, "input": {"name": "image"},
            "outputs": {"probs": {"name": "probs"}, "logits": {"name": "logits"}},
            "files": {"onnx": "model.onnx", "onnx_sha256": "x", "saved_model": "saved_model"}}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


def faces(n, seed=1):
    """(n, 48, 48, 1) float32 images: a bright blob whose place depends on the class."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 80, (n, SIZE, SIZE, 1)).astype(np.float32)
    labels = rng.integers(0, len(NAMES), n)
    for i, c in enumerate(labels):
        y, x = divmod(int(c), 4)
        images[i, 4 + 20 * y:16 + 20 * y, 2 + 11 * x:10 + 11 * x] = 250
    return images, labels


def test_calibration_reader_batches_and_rewinds():
    from ferkeras.deploy.quantize import CalibrationReader

    reader = CalibrationReader(np.zeros((5, 4, 4, 1)), batch_size=2)
    sizes = [len(b["image"]) for b in iter(reader.get_next, None)]
    assert sizes == [2, 2, 1] and len(reader) == 3
    reader.rewind()
    assert reader.get_next()["image"].dtype == np.float32
    with pytest.raises(ValueError, match=r"shape=\(4, 4\)"):
        CalibrationReader(np.zeros((4, 4)))


def test_quantize_export_is_int8_close_to_float_and_a_valid_export(tmp_path):
    import onnx

    from ferkeras.deploy.inference import Predictor
    from ferkeras.deploy.quantize import quantize_export

    export = write_tiny_export(tmp_path / "float")
    images, labels = faces(64)
    (tmp_path / "int8").mkdir()
    (tmp_path / "int8" / "MODEL_CARD.md").write_text("card")
    meta = quantize_export(export, tmp_path / "int8", images, check=(images, labels))
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    q = meta["quantization"]
    assert q["calibration_images"] == 64 and q["weights"] == "int8 per channel"
    assert q["check"]["n"] == 64 and q["check"]["top1_agreement"] >= 0.9
    assert q["check"]["max_abs_prob_diff"] < 0.05
    assert abs(q["check"]["int8_minus_float_acc"]) <= 0.1
    assert (tmp_path / "int8" / "MODEL_CARD.md").read_text() == "card"  # kept
    saved = json.loads((tmp_path / "int8" / "metadata.json").read_text())
    assert "saved_model" not in saved["files"] and saved["quantization"]["kind"].startswith(
        "static int8")
    probs = Predictor(tmp_path / "int8").predict_crops(images[:4])
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)  # softmax stays float
    with pytest.raises(ValueError, match=r"\(N, 48, 48, 1\)"):
        quantize_export(export, tmp_path / "bad", images[..., 0])


def write_tiny_data(root, *, n_train=40, n_public=30, seed=2):
    """fer2013/fer2013.csv.gz + ferplus/fer2013new.csv with a few rows, aligned by position."""
    images, labels = faces(n_train + n_public, seed=seed)
    (root / "fer2013").mkdir(parents=True)
    (root / "ferplus").mkdir()
    rows = ["emotion,pixels,Usage"]
    votes = ["Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,"
             "contempt,unknown,NF"]
    to_ferplus_column = [0, 1, 3, 2, 6, 5, 4, 7]  # NAMES order -> FERPlus vote column
    to_fer2013 = {0: 6, 1: 3, 2: 4, 3: 5, 4: 2, 5: 1, 6: 0, 7: 6}
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        usage = "Training" if i < n_train else "PublicTest"
        pixels = " ".join(str(int(v)) for v in image.reshape(-1).clip(0, 255))
        rows.append(f"{to_fer2013[int(label)]},{pixels},{usage}")
        v = [0] * 10
        v[to_ferplus_column[int(label)]] = 10
        votes.append(f"{usage},fer{i:07d}.png," + ",".join(map(str, v)))
    with gzip.open(root / "fer2013" / "fer2013.csv.gz", "wt") as f:
        f.write("\n".join(rows) + "\n")
    (root / "ferplus" / "fer2013new.csv").write_text("\n".join(votes) + "\n")
    return root


def test_ship_command_quantizes_checks_and_installs(tmp_path):
    from ferkeras.cli import cli
    from ferkeras.deploy.inference import read_metadata

    export = write_tiny_export(tmp_path / "export")
    data = write_tiny_data(tmp_path / "data")
    runner = CliRunner()
    args = ["ship", str(export), "--data", str(data), "--dest", str(tmp_path / "dest"),
            "--calibration-images", "16", "--max-drop", "1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "int8 - float" in result.output and "installed" in result.output
    meta = read_metadata(tmp_path / "dest")
    assert meta["quantization"]["calibration_images"] == 16
    assert "FER2013 Training" in meta["quantization"]["calibration_source"]
    assert meta["quantization"]["check"]["n"] > 0
    # Flip averaging is baked in by default, and the install is hashed.
    from ferkeras.pretrained import verify_hashes

    assert meta["test_time_flip"]["mode"] == "mean_probs"
    assert verify_hashes(tmp_path / "dest") == []
    assert "flip averaging baked" in result.output
    # A missing data folder and a non-export are one-line errors.
    result = runner.invoke(cli, [*args[:3], str(tmp_path / "nodata"), *args[4:]])
    assert result.exit_code == 1 and "not found (pass --data" in result.output
    result = runner.invoke(cli, ["ship", str(tmp_path), "--data", str(data)])
    assert result.exit_code == 1 and "no metadata.json" in result.output


def test_pip_install_ships_the_pretrained_folder():
    """pyproject's package-data carries the shipped model, its metadata and its card."""
    import pathlib

    text = (pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    line = next(x for x in text.splitlines() if x.startswith('"ferkeras.pretrained" = '))
    for name in ("ferplus8/model.onnx", "ferplus8/metadata.json", "ferplus8/MODEL_CARD.md"):
        assert f'"{name}"' in line, name
    from ferkeras.pretrained import SHIPPED_DIR

    card = (SHIPPED_DIR / "MODEL_CARD.md").read_text()
    for needed in ("MIT", "FER2013", "Out-of-scope", "not emotions", "bias"):
        assert needed.lower() in card.lower(), needed
