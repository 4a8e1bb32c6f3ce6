"""Predict: the CLI and the Python API on a real (tiny, one-step) export.

JPEGs, a video and bad inputs are written to tmp_path. The drawn faces are crude, but
OpenCV's Haar cascade finds them (checked in `test_haar_finds_the_drawn_face`). Runs in ~25 s.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "docs" / "predict_schema.json").read_text())
SIZE = 48


# ----------------------------------------------------------------------------- fixtures
def draw_face(canvas, cx, cy, scale=1.0):
    """Draw a frontal cartoon face (BGR) that the Haar cascade detects; blur it a little."""
    import cv2

    s = scale
    cv2.ellipse(canvas, (cx, int(cy + 5 * s)), (int(62 * s), int(80 * s)), 0, 0, 360,
                (170, 190, 210), -1)
    for dx in (-25, 25):
        cv2.ellipse(canvas, (int(cx + dx * s), int(cy - 15 * s)), (int(12 * s), int(6 * s)),
                    0, 0, 360, (30, 30, 30), -1)
        cv2.ellipse(canvas, (int(cx + dx * s), int(cy - 30 * s)), (int(15 * s), int(4 * s)),
                    0, 0, 360, (40, 40, 40), -1)
    cv2.ellipse(canvas, (cx, int(cy + 15 * s)), (int(6 * s), int(12 * s)), 0, 0, 360,
                (130, 150, 170), -1)
    cv2.ellipse(canvas, (cx, int(cy + 45 * s)), (int(22 * s), int(6 * s)), 0, 0, 360,
                (60, 60, 120), -1)
    canvas[...] = cv2.GaussianBlur(canvas, (5, 5), 0)
    return canvas


def face_image(width=320, height=240, cx=160, cy=120, scale=1.0):
    return draw_face(np.full((height, width, 3), 70, np.uint8), cx, cy, scale)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A real export of a one-step small_cnn on 48x48 grey faces."""
    root = tmp_path_factory.mktemp("predict_model")
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from test_export import make_fake_run
    finally:
        sys.path.remove(str(REPO / "tests"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(root / "keras_home"))
        from ferkeras.deploy.export import export_run

        make_fake_run(root / "run", image_size=SIZE, channels=1)
        rng = np.random.default_rng(0)
        export_run(root / "run", root / "model", parity_images=rng.integers(
            0, 256, (16, SIZE, SIZE, 1), np.uint8))
    return root / "model"


@pytest.fixture()
def inputs(tmp_path):
    """A folder with a face, a blank image, a face crop and a file that is not an image."""
    import cv2

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "face.jpg"), face_image())
    cv2.imwrite(str(folder / "sub" / "blank.png"), np.full((240, 320, 3), 200, np.uint8))
    cv2.imwrite(str(folder / "sub" / "crop.jpg"), np.random.default_rng(0).integers(
        0, 256, (SIZE, SIZE), np.uint8))
    (folder / "notes.jpg").write_text("this is not a JPEG")
    return folder


# ----------------------------------------------------------------------------- schema
def validate(instance, schema):
    """Check `instance` against the JSON Schema subset docs/predict_schema.json uses."""
    types_ = {"object": dict, "array": list, "string": str, "null": type(None),
              "number": (int, float), "integer": int}

    def is_type(value, name):
        return isinstance(value, types_[name]) and not (
            isinstance(value, bool) and name in ("number", "integer"))

    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert any(is_type(instance, n) for n in names), (instance, schema["type"])
    if "enum" in schema:
        assert instance in schema["enum"], (instance, schema["enum"])
    if "const" in schema:
        assert instance == schema["const"]
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        assert instance >= schema.get("minimum", -np.inf)
        assert instance <= schema.get("maximum", np.inf)
    if isinstance(instance, list):
        assert schema.get("minItems", 0) <= len(instance) <= schema.get("maxItems", np.inf)
        for item in instance:
            validate(item, schema.get("items", {}))
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            assert key in instance, f"missing {key}"
        props = schema.get("properties", {})
        for key, value in instance.items():
            if key in props:
                validate(value, props[key])
            elif schema.get("additionalProperties") is False:
                raise AssertionError(f"unexpected key {key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                validate(value, schema["additionalProperties"])
    if "if" in schema:
        try:
            validate(instance, schema["if"])
            branch = schema.get("then", {})
        except AssertionError:
            branch = schema.get("else", {})
        validate(instance, branch)


def json_records(output: str) -> list[dict]:
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    for record in records:
        validate(record, SCHEMA)
    return records


def run_predict(*args):
    from ferkeras.commands.predict_cmd import predict

    return CliRunner().invoke(predict, [str(a) for a in args])


# ----------------------------------------------------------------------------- tests
def test_schema_validator_rejects_bad_records():
    good = {"source": "a.jpg", "frame": None, "box": [1, 2, 3, 4], "label": "happy",
            "score": 0.5, "scores": {"happy": 0.5, "sad": 0.5}, "box_source": "detector",
            "error": None}
    validate(good, SCHEMA)
    for bad in ({**good, "box": [1, 2, 3]}, {**good, "score": 1.5}, {**good, "extra": 1},
                {**good, "error": "no face"}, {**good, "label": None},
                {**good, "box_source": "guess"}):
        with pytest.raises(AssertionError):
            validate(bad, SCHEMA)


def test_haar_finds_the_drawn_face():
    from ferkeras.deploy.faces import HaarFaceDetector

    detector = HaarFaceDetector()
    (x, y, w, h), = detector(face_image())
    assert 40 < x < 120 and 0 < y < 80 and 120 < w < 220
    (x, y, w, h), = detector(face_image(640, 480, 320, 240, 1.6))  # downscaled for detection
    assert 150 < x < 230 and 200 < w < 330
    assert detector(np.full((240, 320, 3), 200, np.uint8)) == []


def test_cli_json_folder_with_detection(model_dir, inputs):
    result = run_predict("--model", model_dir, inputs, "--json")
    assert result.exit_code == 0, result.output
    errors, *notes = result.stderr.strip().splitlines()
    assert errors == f"error: {inputs / 'notes.jpg'}: not an image"
    records = {pathlib.Path(r["source"]).name: r for r in json_records(result.stdout)}
    assert set(records) == {"face.jpg", "blank.png", "crop.jpg"}
    face = records["face.jpg"]
    assert face["frame"] is None and face["error"] is None
    assert face["box_source"] == "detector"
    # The 48x48 crop has no detectable face: a tight crop, so the whole image is the face,
    # and the output says so; the large blank image has none, and stderr says how to get one.
    assert records["crop.jpg"]["box_source"] == "whole_image_fallback"
    assert records["crop.jpg"]["box"] == [0, 0, SIZE, SIZE]
    assert any("whole image was used" in n for n in notes)
    assert any("--no-detect" in n for n in notes), notes
    assert 40 < face["box"][0] < 120 and face["label"] in face["scores"]
    assert face["score"] == max(face["scores"].values())
    assert abs(sum(face["scores"].values()) - 1) < 1e-4
    assert records["blank.png"]["error"] == "no face" and records["blank.png"]["label"] is None


def test_cli_no_detect_table_and_annotate(model_dir, inputs, tmp_path):
    import cv2

    crop = inputs / "sub" / "crop.jpg"
    result = run_predict("--model", model_dir, crop, inputs / "face.jpg", "--no-detect",
                         "--annotate", tmp_path / "ann")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["source", "frame", "box", "label", "score"]
    assert len(rows) == 2 and "[0, 0, 48, 48]" in rows[0] and "[0, 0, 320, 240]" in rows[1]
    saved = sorted(p.name for p in (tmp_path / "ann").iterdir())
    assert saved == ["crop.jpg", "face.jpg"]
    assert cv2.imread(str(tmp_path / "ann" / "face.jpg")).shape == (240, 320, 3)


def test_cli_video_every_n_and_annotate(model_dir, tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(10):
        writer.write(face_image(cx=150 + 2 * i) if i < 7 else np.zeros((240, 320, 3), np.uint8))
    writer.release()
    result = run_predict("--model", model_dir, "--video", path, "--every", "3", "--json",
                         "--annotate", tmp_path / "ann")
    assert result.exit_code == 0, result.output
    records = json_records(result.stdout)
    assert [r["frame"] for r in records] == [0, 3, 6, 9]
    assert [r["error"] for r in records] == [None, None, None, "no face"]
    assert all(r["source"] == str(path) for r in records)
    assert len(list((tmp_path / "ann").glob("clip_*.jpg"))) == 4
    # A video named among INPUTS goes through the same frame source.
    result = run_predict("--model", model_dir, path, "--max-frames", "2", "--json")
    assert [r["frame"] for r in json_records(result.stdout)] == [0, 1]


def test_cli_errors(model_dir, inputs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    cases = [
        ((inputs / "notes.jpg",), "nothing could be read"),
        ((empty,), "no images in this folder"),
        ((tmp_path / "missing.jpg",), "no such file or folder"),
        ((str(tmp_path / "*.png"),), "no file matches"),
        (("--webcam", "57"), "cannot open webcam 57"),
        (("--video", tmp_path / "missing.mp4"), "nothing could be read"),
    ]
    for args, message in cases:
        result = run_predict("--model", model_dir, *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, (args, result.output)
    assert run_predict("--model", model_dir).exit_code == 2  # no inputs at all
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video")
    result = run_predict("--model", model_dir, garbage, inputs / "face.jpg", "--no-detect")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2
    assert result.stderr.startswith(f"error: {garbage}: ") and "video" in result.stderr


def _copy_model(model_dir, dest, **changes):
    import shutil

    shutil.copytree(model_dir, dest)
    meta = json.loads((dest / "metadata.json").read_text())
    for key, value in changes.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    (dest / "metadata.json").write_text(json.dumps(meta))
    return dest


def test_bad_model_folders_are_refused(model_dir, inputs, tmp_path):
    meta = json.loads((model_dir / "metadata.json").read_text())
    missing = tmp_path / "no_meta"
    missing.mkdir()
    cases = [
        (missing, "no metadata.json"),
        (tmp_path / "nowhere", "no such model folder"),
        (_copy_model(model_dir, tmp_path / "a", format="ferkeras-export/0"),
         "unsupported format 'ferkeras-export/0'"),
        (_copy_model(model_dir, tmp_path / "b", class_names=None), "missing keys ['class_names']"),
        (_copy_model(model_dir, tmp_path / "c", class_names=meta["class_names"][:3]),
         "model outputs 8 classes but metadata names 3"),
        (_copy_model(model_dir, tmp_path / "d", image_size=64), "does not match metadata"),
        (_copy_model(model_dir, tmp_path / "e", channels=3), "does not match metadata"),
    ]
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "metadata.json").write_text(json.dumps(meta))
    (tmp_path / "f" / "model.onnx").write_text("not onnx")
    cases.append((tmp_path / "f", "onnxruntime cannot load it"))
    for folder, reason in cases:
        result = run_predict("--model", folder, inputs / "face.jpg")
        assert result.exit_code == 1, (folder, result.output)
        assert reason in result.output and len(result.output.strip().splitlines()) == 1, (
            reason, result.output)


def test_subprocess_predict_does_not_import_tensorflow(model_dir, inputs):
    cmd = [sys.executable, "-X", "importtime", "-m", "ferkeras.commands.predict_cmd",
           "--model", str(model_dir), str(inputs / "face.jpg"), "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "onnxruntime" in imported and "cv2" in imported
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx")}
    (record,) = json_records(proc.stdout)
    assert record["error"] is None


def test_python_api(model_dir):
    from ferkeras.deploy.inference import Predictor

    predictor = Predictor(model_dir, threads=1, batch_size=2)
    assert len(predictor.class_names) == 8 and predictor.image_size == SIZE
    rgb = face_image()[..., ::-1]
    grey = np.full((100, 80), 30, np.uint8)
    found = predictor.predict_batch([rgb, grey, rgb[..., :1].copy()])
    assert len(found[0]) == 1 and len(found[2]) == 1
    assert found[1][0]["box_source"] == "whole_image_fallback"  # 100x80: a tight crop
    assert set(found[0][0]) == {"box", "label", "score", "scores", "box_source"}
    assert Predictor(model_dir, tight_crop_side=0).predict(grey) == []
    crops = np.random.default_rng(3).integers(0, 256, (5, SIZE, SIZE, 1), np.uint8)
    fast = predictor.predict_crops(crops)  # already the model's size: no per-crop work
    slow = predictor.predict_crops([c[..., 0] for c in crops])  # (H, W) crops
    assert fast.shape == (5, 8)
    np.testing.assert_allclose(fast, slow, atol=1e-6)
    whole = predictor.predict_batch(list(crops), detect=False)
    np.testing.assert_allclose([f[0]["score"] for f in whole], fast.max(-1), atol=1e-6)
    with pytest.raises(ValueError, match="batch_size=0"):
        Predictor(model_dir, batch_size=0)


def test_injected_detector_batches_many_faces(model_dir):
    from ferkeras.deploy.inference import Predictor

    boxes = [(0, 0, 10, 10), (5, 5, 20, 20), (30, 30, 15, 15)]
    predictor = Predictor(model_dir, batch_size=2, detector=lambda image, color: boxes)
    images = [np.full((60, 60, 3), v, np.uint8) for v in (0, 100, 200)]
    found = predictor.predict_batch(images)
    assert [len(f) for f in found] == [3, 3, 3]
    assert [f["box"] for f in found[1]] == [list(b) for b in boxes]


def test_missing_or_newer_opencv(model_dir, monkeypatch):
    from ferkeras.deploy.faces import HaarFaceDetector, OpenCVMissingError, read_image
    from ferkeras.deploy.inference import Predictor

    rgb = face_image()[..., ::-1].copy()  # drawn while OpenCV is still there

    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__="5.0.0"))
    with pytest.raises(OpenCVMissingError, match="OpenCV 5.0.0 ships no Haar cascades"):
        HaarFaceDetector()
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(OpenCVMissingError, match=r"pip install 'ferkeras\[webcam\]'"):
        HaarFaceDetector()
    result = run_predict("--model", model_dir, "--detector", "haar", __file__)
    assert result.exit_code == 1 and "ferkeras[webcam]" in result.output
    # The default detector runs without OpenCV: BlazeFace on onnxruntime, Haar skipped.
    (face,) = Predictor(model_dir).predict(rgb)
    assert face["box_source"] == "detector"
    # Crops still work without OpenCV (Pillow reads and resizes).
    predictor = Predictor(model_dir)
    (face,) = predictor.predict(np.zeros((100, 90, 3), np.uint8), detect=False)
    assert face["box"] == [0, 0, 90, 100]
    assert read_image(__file__) is None


# ----------------------------------------------------------------------------- issue 12
def test_predict_takes_one_image_and_batches_are_explicit(model_dir):
    from ferkeras.deploy.inference import Predictor

    predictor = Predictor(model_dir)
    image = np.zeros((350, 300, 3), np.uint8)
    image[100:260, 70:230] = face_image(160, 160, 80, 80, 0.8)
    faces = predictor.predict(image)  # one image: its faces, not 350 rows taken as a batch
    assert isinstance(faces, list) and len(faces) == 1 and faces[0]["box_source"] == "detector"
    assert predictor.predict(image[..., 0], detect=False)[0]["box"] == [0, 0, 300, 350]
    with pytest.raises(ValueError, match="predict_batch"):
        predictor.predict(np.stack([image, image]))
    with pytest.raises(ValueError, match="predict_batch"):
        predictor.predict([image, image])
    assert [len(f) for f in predictor.predict_batch(np.stack([image, image]))] == [1, 1]


def test_detect_emotions_is_fer_compatible(model_dir):
    from ferkeras.deploy.inference import FER_EMOTIONS, Predictor

    predictor = Predictor(model_dir)
    bgr = face_image()
    (face,) = predictor.detect_emotions(bgr)
    assert set(face) == {"box", "emotions"} and len(face["box"]) == 4
    assert list(face["emotions"]) == list(FER_EMOTIONS)  # fer's names: angry, not anger
    assert abs(sum(face["emotions"].values()) - 1) < 1e-5  # contempt dropped, renormalised
    (ours,) = predictor.predict(bgr, color="bgr")
    rest = 1 - ours["scores"]["contempt"]
    assert face["emotions"]["angry"] == pytest.approx(ours["scores"]["anger"] / rest, rel=1e-5)
    (full,) = predictor.detect_emotions(bgr, include_contempt=True)
    assert full["emotions"]["contempt"] == pytest.approx(ours["scores"]["contempt"])
    (given,) = predictor.detect_emotions(bgr, face_rectangles=[(10, 10, 60, 60)])
    assert given["box"] == [10, 10, 60, 60]
    assert predictor.detect_emotions(np.full((240, 320, 3), 200, np.uint8)) == []


def test_training_and_serving_preprocessing_match(model_dir, tmp_path):
    """Faces larger than the model input go through training's pipeline (tf.data decode,
    channels, antialiased resize) and through the predictor: same inputs, same outputs.
    The old predictor resized with cv2 INTER_AREA first and rounded its own grey: it fails."""
    import cv2
    import tensorflow as tf

    from ferkeras.data.pipeline import decode_file, to_model_input
    from ferkeras.deploy.faces import read_image
    from ferkeras.deploy.inference import Predictor

    predictor = Predictor(model_dir)
    rng = np.random.default_rng(7)
    faces = [face_image(320, 240, 160, 120, 1.0)[30:230, 60:260],  # 200x200 BGR
             cv2.resize(face_image(), (97, 61)),
             rng.integers(0, 256, (150, 120, 3), np.uint8)]
    for i, bgr in enumerate(faces):
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        trained = to_model_input(tf.constant(rgb), size=SIZE, channels=1).numpy()
        served = predictor.prepare_crop(bgr, color="bgr")
        np.testing.assert_allclose(served, trained, atol=0.01)
        path = tmp_path / f"face{i}.png"
        cv2.imwrite(str(path), bgr)
        from_file = decode_file(tf.constant(str(path)), tf.constant([-1, -1, -1, -1]),
                                size=SIZE, channels=1).numpy()
        (face,) = predictor.predict(read_image(path), detect=False, color="bgr")
        np.testing.assert_allclose(from_file, trained, atol=1e-4)
        want = predictor.predict_crops(from_file[None])[0]
        got = np.array([face["scores"][n] for n in predictor.class_names])
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_annotate_into_unwritable_folder_fails_in_one_line(model_dir, inputs, tmp_path,
                                                            monkeypatch):
    import cv2

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    # Tests run as root, which chmod does not stop: a path under a regular file cannot be
    # created, and /proc accepts no new files.
    for target in (blocker / "ann", "/proc"):
        result = run_predict("--model", model_dir, inputs / "face.jpg", "--annotate", target)
        assert result.exit_code == 1, result.output
        (line,) = result.output.strip().splitlines()
        assert f"--annotate {target}: cannot write annotated images there" in line
    # Writable at start, but each image fails to write (e.g. the disk fills up): non-zero.
    monkeypatch.setattr(cv2, "imwrite", lambda *a, **k: False)
    result = run_predict("--model", model_dir, inputs / "face.jpg", "--annotate",
                         tmp_path / "ann")
    assert result.exit_code == 1
    assert "cannot write the annotated image" in result.stderr
    assert "1 annotated image(s) could not be written" in result.stderr


def test_stdout_on_a_full_disk_fails_in_one_line(model_dir, inputs):
    cmd = [sys.executable, "-m", "ferkeras.commands.predict_cmd", "--model", str(model_dir),
           str(inputs / "face.jpg"), "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open("/dev/full", "w") as full:
        proc = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=REPO, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == "Error: cannot write the output (No space left on device)"


def test_default_model_is_the_shipped_one_never_the_quickstart(model_dir, inputs, monkeypatch,
                                                               tmp_path):
    import ferkeras.pretrained as pretrained

    monkeypatch.delenv("FERKERAS_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)  # an export/quickstart here must not be picked up silently
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "quickstart").symlink_to(model_dir)
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path / "none")
    result = run_predict(inputs / "face.jpg")
    assert result.exit_code == 1 and "no shipped model" in result.output
    assert "--model" in result.output
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", model_dir)
    result = run_predict(inputs / "face.jpg", "--json")
    assert result.exit_code == 0, result.output
    assert json_records(result.stdout)[0]["box_source"] == "detector"
    monkeypatch.setenv("FERKERAS_MODEL", str(tmp_path / "nowhere"))  # the env var overrides
    result = run_predict(inputs / "face.jpg")
    assert result.exit_code == 1 and "no such model folder" in result.output


def test_detector_registry_and_box_merging():
    from ferkeras.deploy.faces import build_detector, list_detectors, merge_boxes

    assert list_detectors() == ["blazeface", "blazeface+haar", "haar", "haar-staged"]
    with pytest.raises(ValueError, match=r"Unknown detector 'yolo'.*haar-staged"):
        build_detector("yolo")
    # A nested or overlapping duplicate goes; a separate face stays.
    boxes = [(10, 10, 100, 100), (20, 20, 50, 50), (15, 12, 100, 95), (200, 10, 60, 60)]
    assert merge_boxes(boxes) == [(10, 10, 100, 100), (200, 10, 60, 60)]
    # A face filling the image (a tight crop) is found by the padded passes only.
    face = face_image()[50:205, 100:220]
    assert build_detector("haar")(face) == []
    ((x, y, w, h),) = build_detector("haar-staged")(face)
    assert x >= 0 and y >= 0 and x + w <= face.shape[1] and y + h <= face.shape[0]


def test_blazeface_ships_with_ferkeras_and_finds_the_face():
    """The default detector's weights are inside the package (no download): BlazeFace on
    onnxruntime, with the staged Haar cascades where it finds nothing."""
    from ferkeras.deploy.detection import (
        BLAZEFACE_FILE,
        FallbackDetector,
        blazeface_anchors,
        build_detector,
        weighted_nms,
    )

    assert BLAZEFACE_FILE.is_file() and blazeface_anchors().shape == (896, 2)
    detector = build_detector()
    assert isinstance(detector, FallbackDetector)
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[100:340, 150:470] = face_image()
    ((x, y, w, h),) = build_detector("blazeface")(canvas)
    assert 200 < x + w / 2 < 420 and 150 < y + h / 2 < 300  # around the drawn face
    assert detector(canvas) == build_detector("blazeface")(canvas)
    assert build_detector("blazeface")(np.zeros((240, 320, 3), np.uint8)) == []
    merged = weighted_nms(np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60.]]),
                          np.array([0.9, 0.6, 0.8]), iou=0.3)
    assert merged.shape == (2, 4) and 0 < merged[0, 0] < 1
