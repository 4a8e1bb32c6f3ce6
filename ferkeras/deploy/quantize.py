"""int8 static quantization of an exported model with ONNX Runtime's quantization tools.

`quantize_export(export_dir, out_dir, calibration_images)` writes `out_dir/model.onnx`
(int8 weights and activations, QDQ format, calibrated on the given images) and a copy of
`metadata.json` recording the quantization; `compare_models` scores the float and int8
models on a labelled set. Keras-free and TensorFlow-free: numpy and onnxruntime only.

The convolutions, dense layers, ReLUs and pools are quantized (`DEFAULT_OP_TYPES`); the
softmax output stays float, so `probs` keeps its meaning and sums to 1.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np

from ferkeras.deploy.inference import METADATA_FILE, ONNX_FILE, create_session, read_metadata

# Relu and the pools in int8 too: fewer quantize/dequantize pairs between the convolutions
# (vgg4 w32, batch 1: 0.39 -> 0.35 ms per face, and int8 - float accuracy -0.4 -> 0.0 points
# on PublicTest's reported half, calibrated on 256 faces; 2-core CPU under load).
DEFAULT_OP_TYPES = ("Conv", "MatMul", "Gemm", "Relu", "MaxPool", "AveragePool",
                    "GlobalAveragePool")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class CalibrationReader:
    """An `onnxruntime.quantization.CalibrationDataReader` over an in-memory image array.

    images: (N, S, S, C) float32 model inputs in [0, 255]. input_name: the model's input.
    batch_size: images per calibration call.
    """

    def __init__(self, images: np.ndarray, *, input_name: str = "image", batch_size: int = 64):
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or not len(images):
            raise ValueError(f"images must be a non-empty (N, S, S, C) array. Received: "
                             f"shape={images.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        self.images = images
        self.input_name = input_name
        self.batch_size = batch_size
        self._start = 0

    def get_next(self):
        if self._start >= len(self.images):
            return None
        batch = self.images[self._start:self._start + self.batch_size]
        self._start += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._start = 0

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)


def quantize_onnx(float_path, int8_path, calibration_images: np.ndarray, *,
                  input_name: str = "image", method: str = "minmax",
                  op_types=DEFAULT_OP_TYPES, per_channel: bool = True) -> None:
    """Statically quantize `float_path` to int8 at `int8_path` (QDQ, uint8 activations,
    int8 weights), calibrated on (N, S, S, C) `calibration_images`."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}. Received: "
                         f"method={method!r}")
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="ferkeras-quant-") as tmp:
        prepared = pathlib.Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(int8_path),
            CalibrationReader(calibration_images, input_name=input_name),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=per_channel,
            calibrate_method=calibrate, op_types_to_quantize=list(op_types),
            extra_options={"CalibTensorRangeSymmetric": False},
        )


def predict_probs(onnx_path, images: np.ndarray, *, batch_size: int = 256,
                  input_name: str = "image", output_name: str = "probs") -> np.ndarray:
    """(N, K) probabilities of an ONNX model on (N, S, S, C) model-ready images."""
    session = create_session(onnx_path)
    images = np.asarray(images, np.float32)
    out = [session.run([output_name], {input_name: images[i:i + batch_size]})[0]
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def compare_models(float_path, int8_path, images: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy of the float and the int8 model on labelled images, and how they differ.

    images: (N, S, S, C) model inputs; labels: (N,) class ids of the model's classes, -1
    rows are ignored. Returns float_acc, int8_acc, int8_minus_float_acc (points of a
    fraction: 0.01 is one point), top1_agreement and max_abs_prob_diff, over n rows.
    """
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"labels has {len(labels)} rows but images has {len(images)}.")
    keep = labels >= 0
    if not keep.any():
        raise ValueError("labels has no row >= 0 to score.")
    p_float = predict_probs(float_path, images[keep])
    p_int8 = predict_probs(int8_path, images[keep])
    y = labels[keep]
    float_acc = float(np.mean(p_float.argmax(1) == y))
    int8_acc = float(np.mean(p_int8.argmax(1) == y))
    return {"n": int(keep.sum()), "float_acc": round(float_acc, 4),
            "int8_acc": round(int8_acc, 4),
            "int8_minus_float_acc": round(int8_acc - float_acc, 4),
            "top1_agreement": round(float(np.mean(p_float.argmax(1) == p_int8.argmax(1))), 4),
            "max_abs_prob_diff": round(float(np.max(np.abs(p_float - p_int8))), 4)}


def quantize_export(export_dir, out_dir, calibration_images: np.ndarray, *,
                    method: str = "minmax", per_channel: bool = True,
                    calibration_source: str = "given images", check=None) -> dict:
    """Write an int8 copy of an export folder (model.onnx + metadata.json) to `out_dir`.

    calibration_images: (N, S, S, C) model inputs in [0, 255] (see `faces.prepare_face`).
    check: optional (images, labels) scored by `compare_models`; the result goes into the
      metadata under quantization.check. `out_dir` is replaced only once complete.
    Returns the new metadata.
    """
    export_dir, out_dir = pathlib.Path(export_dir), pathlib.Path(out_dir)
    meta = read_metadata(export_dir)
    expected = (meta["image_size"], meta["image_size"], meta["channels"])
    calibration_images = np.asarray(calibration_images, np.float32)
    if calibration_images.ndim != 4 or calibration_images.shape[1:] != expected:
        raise ValueError(f"calibration_images must be (N, {expected[0]}, {expected[1]}, "
                         f"{expected[2]}) for this model. Received: "
                         f"shape={calibration_images.shape}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        float_path = export_dir / ONNX_FILE
        quantize_onnx(float_path, tmp / ONNX_FILE, calibration_images,
                      input_name=meta["input"]["name"], method=method,
                      per_channel=per_channel)
        info = {
            "kind": "static int8 (onnxruntime.quantization, QDQ)",
            "activations": "uint8", "weights": "int8" + (" per channel" if per_channel else ""),
            "operators": list(DEFAULT_OP_TYPES), "calibration_method": method,
            "calibration_images": int(len(calibration_images)),
            "calibration_source": calibration_source,
            "float_onnx_sha256": meta["files"].get("onnx_sha256"),
            "float_onnx_bytes": float_path.stat().st_size,
            "int8_onnx_bytes": (tmp / ONNX_FILE).stat().st_size,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
        }
        if check is not None:
            images, labels = check
            info["check"] = compare_models(float_path, tmp / ONNX_FILE, images, labels)
        new_meta = dict(meta)
        new_meta["files"] = {**meta["files"], "onnx": ONNX_FILE,
                             "onnx_sha256": hashlib.sha256(
                                 (tmp / ONNX_FILE).read_bytes()).hexdigest()}
        new_meta["files"].pop("saved_model", None)
        new_meta["files"].pop("saved_model_signature", None)
        new_meta["quantization"] = info
        (tmp / METADATA_FILE).write_text(json.dumps(new_meta, indent=2) + "\n")
        read_metadata(tmp)  # the result must be a valid export folder
        create_session(tmp / ONNX_FILE)  # ... that onnxruntime loads
        _replace_files(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return new_meta


def _replace_files(tmp: pathlib.Path, out: pathlib.Path) -> None:
    """Move model.onnx and metadata.json from `tmp` into `out`, keeping other files there
    (the model card)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (ONNX_FILE, METADATA_FILE):
        os.replace(tmp / name, out / name)
