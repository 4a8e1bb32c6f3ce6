"""Aligned crops: synthetic faces with known eye positions and roll come out level and framed
as FER2013 (`ferkeras.data.alignment.FER2013_FRAMING`). NumPy only, except the BlazeFace check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ferkeras.data.alignment import (
    FER2013_FRAMING,
    FaceFraming,
    align_face,
    crop_side,
    eye_angle,
    eye_similarity,
    eyes_from_keypoints,
    invert_similarity,
    transform_points,
    warp_affine,
)


def synthetic_face(*, centre=(150.0, 120.0), distance=60.0, angle=0.0, size=(260, 320),
                   radius=5.0):
    """(image, eyes): a grey (H, W) uint8 image, mid-grey, with two dark round eyes at known
    positions: midpoint `centre`, `distance` apart, rolled by `angle` degrees (clockwise on
    screen), plus a dark mouth below them so that the face has an up and a down."""
    height, width = size
    theta = math.radians(angle)
    direction = np.array([math.cos(theta), math.sin(theta)])
    down = np.array([-math.sin(theta), math.cos(theta)])
    centre = np.asarray(centre, np.float64)
    eyes = np.stack([centre - direction * distance / 2, centre + direction * distance / 2])
    mouth = centre + down * distance * 1.1
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    image = np.full((height, width), 160.0)
    for x, y in (*eyes, mouth):
        image[(xs - x) ** 2 + (ys - y) ** 2 <= radius ** 2] = 20.0
    return image.astype(np.uint8), eyes


def dark_blobs(crop: np.ndarray, *, threshold: float = 90.0) -> np.ndarray:
    """Centroids (x, y) in crop pixels of the dark blobs above the crop's middle row band
    that hold the eyes: the dark pixels split at the crop's centre column."""
    ys, xs = np.nonzero(crop < threshold)
    upper = ys < crop.shape[0] * 0.6
    xs, ys = xs[upper] + 0.5, ys[upper] + 0.5
    left = xs < crop.shape[1] / 2
    return np.array([[xs[left].mean(), ys[left].mean()], [xs[~left].mean(), ys[~left].mean()]])


@pytest.mark.parametrize("angle", [-30.0, -10.0, 0.0, 7.5, 20.0, 45.0])
def test_synthetic_faces_come_out_level_and_framed(angle):
    image, eyes = synthetic_face(angle=angle, centre=(170.0, 110.0), distance=64.0)
    assert eye_angle(eyes) == pytest.approx(angle)
    side = 96
    crop = align_face(image, eyes, side=side)
    assert crop.shape == (side, side) and crop.dtype == np.float32
    found = dark_blobs(crop)
    f = FER2013_FRAMING
    # Level: both eyes on the same row (within half a crop pixel).
    assert abs(found[1, 1] - found[0, 1]) < 0.5
    assert abs(eye_angle(found)) < 0.6
    # Framed: eye distance and midpoint where FER2013 has them (within a pixel).
    np.testing.assert_allclose(found.mean(0), [f.eye_x * side, f.eye_y * side], atol=1.0)
    assert np.hypot(*(found[1] - found[0])) == pytest.approx(f.eye_distance * side, abs=1.0)
    # The mouth ends up below the eyes, in the middle.
    mouth_rows = np.nonzero(crop[int(side * 0.6):] < 90)[0]
    assert mouth_rows.size > 0


def test_rotate_false_frames_without_levelling():
    image, eyes = synthetic_face(angle=15.0, distance=64.0)
    crop = align_face(image, eyes, side=96, rotate=False)
    found = dark_blobs(crop)
    assert eye_angle(found) == pytest.approx(15.0, abs=1.5)
    np.testing.assert_allclose(found.mean(0), [48.0, FER2013_FRAMING.eye_y * 96], atol=1.0)


def test_similarity_maps_the_framing_targets_onto_the_eyes():
    eyes = np.array([[100.0, 80.0], [150.0, 95.0]])
    side = 120
    matrix = eye_similarity(eyes, side=side)
    f = FER2013_FRAMING
    half = f.eye_distance * side / 2
    targets = [[f.eye_x * side - half, f.eye_y * side], [f.eye_x * side + half, f.eye_y * side]]
    np.testing.assert_allclose(transform_points(matrix, targets), eyes, atol=1e-9)
    back = transform_points(invert_similarity(matrix), eyes)
    np.testing.assert_allclose(back, targets, atol=1e-9)
    # The crop's own scale: one crop pixel per image pixel.
    assert crop_side(eyes) == round(np.hypot(50, 15) / f.eye_distance)
    assert crop_side(eyes, min_side=400) == 400 and crop_side(eyes, max_side=50) == 50


def test_align_face_sizes_and_colour():
    image, eyes = synthetic_face(distance=12.0, radius=2.0)
    rgb = np.repeat(image[..., None], 3, axis=-1)
    small = align_face(rgb, eyes, min_side=48, max_side=192)  # about 32 px -> raised to 48
    assert small.shape == (48, 48, 3)
    image, eyes = synthetic_face(distance=120.0, size=(400, 400), centre=(200.0, 180.0))
    assert align_face(image, eyes, min_side=48, max_side=192).shape == (192, 192)


def test_warp_affine_identity_and_edges():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_array_equal(warp_affine(image, identity, side=20), image[:, :20])
    # Outside the image the edge pixels repeat.
    shifted = np.array([[1.0, 0, -5], [0, 1.0, 0]])
    out = warp_affine(image[..., 0], shifted, side=10)
    np.testing.assert_array_equal(out[:, :5], np.repeat(image[:10, :1, 0], 5, axis=1))


def test_eyes_from_keypoints_blazeface_and_ibug68():
    blaze = np.arange(12, dtype=float).reshape(6, 2)
    np.testing.assert_array_equal(eyes_from_keypoints(blaze), blaze[:2])
    ibug = np.zeros((68, 2))
    ibug[36:42] = [10.0, 20.0]
    ibug[42:48] = [30.0, 22.0]
    np.testing.assert_array_equal(eyes_from_keypoints(ibug), [[10, 20], [30, 22]])


def test_bad_inputs_name_the_value():
    with pytest.raises(ValueError, match="eye_distance=1.5"):
        FaceFraming(eye_distance=1.5)
    with pytest.raises(ValueError, match="eye_y=0"):
        FaceFraming(eye_distance=0.4, eye_y=0.0)
    with pytest.raises(ValueError, match="coincide"):
        eye_similarity([[5, 5], [5, 5]], side=48)
    with pytest.raises(ValueError, match="shape=\\(3,\\)"):
        eyes_from_keypoints([1, 2, 3])
    with pytest.raises(ValueError, match="side=0"):
        warp_affine(np.zeros((4, 4)), np.eye(2, 3), side=0)


def test_crop_face_aligns_with_keypoints_and_crops_the_box_without():
    from ferkeras.deploy.faces import crop_box, crop_face

    image, eyes = synthetic_face(angle=12.0, distance=50.0)
    keypoints = np.concatenate([eyes, np.zeros((4, 2))])
    aligned = crop_face(image, (100, 60, 100, 120), keypoints)
    assert abs(eye_angle(dark_blobs(aligned))) < 1.0
    np.testing.assert_array_equal(crop_face(image, (100, 60, 100, 120), None, margin=0.1),
                                  crop_box(image, (100, 60, 100, 120), margin=0.1))
    np.testing.assert_array_equal(crop_face(image, (100, 60, 100, 120), keypoints, align=False),
                                  crop_box(image, (100, 60, 100, 120)))


def test_blazeface_keypoints_follow_a_rolled_face():
    """BlazeFace's eye keypoints on a drawn face rolled by 20 degrees give that roll back,
    and the Predictor's aligned crop of it comes out level."""
    cv2 = pytest.importorskip("cv2")
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    try:
        from test_predict import face_image
    finally:
        sys.path.pop(0)
    from ferkeras.deploy.detection import BlazeFaceDetector

    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[100:340, 150:470] = face_image()
    detector = BlazeFaceDetector()
    (upright,) = detector.detect(canvas)
    assert upright.keypoints.shape == (6, 2) and 0.5 <= upright.score <= 1.0
    assert abs(eye_angle(upright.keypoints[:2])) < 5.0
    turn = cv2.getRotationMatrix2D((310.0, 220.0), -20.0, 1.0)  # clockwise on screen
    rolled = cv2.warpAffine(canvas, turn, (640, 480))
    (found,) = detector.detect(rolled)
    assert eye_angle(found.keypoints[:2]) == pytest.approx(20.0, abs=6.0)
    crop = align_face(rolled, found.keypoints[:2], side=96)
    (again,) = detector.detect(np.pad(crop.astype(np.uint8), ((48, 48), (48, 48), (0, 0))))
    assert abs(eye_angle(again.keypoints[:2])) < 6.0


def test_predictor_crops_aligned_faces_through_crop_face(tmp_path):
    """Predictor (as `ferkeras predict` runs it) crops a face with keypoints through
    `faces.crop_face`; align=False, or a detector without keypoints, crops the box."""
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    try:
        from test_quantize import write_tiny_export
    finally:
        sys.path.pop(0)
    from ferkeras.deploy.detection import Detection
    from ferkeras.deploy.faces import crop_box, crop_face
    from ferkeras.deploy.inference import Predictor

    model = write_tiny_export(tmp_path / "model")
    image, eyes = synthetic_face(angle=-14.0, distance=50.0)
    rgb = np.repeat(image[..., None], 3, axis=-1)
    box = (100, 60, 100, 130)
    keypoints = np.concatenate([eyes, np.full((4, 2), 150.0)]).astype(np.float32)

    class WithKeypoints:
        def __call__(self, frame, *, color="bgr"):
            return [box]

        def detect(self, frame, *, color="bgr"):
            return [Detection(box, keypoints, 0.9)]

    for detector in (WithKeypoints(), lambda frame, color: [box]):
        for align in (True, False):
            predictor = Predictor(model, detector=detector, align=align)
            (face,) = predictor.predict(rgb)
            assert face["box"] == list(box) and face["box_source"] == "detector"
            with_keypoints = align and isinstance(detector, WithKeypoints)
            crop = (crop_face(rgb, box, keypoints, min_side=48, max_side=192)
                    if with_keypoints else crop_box(rgb, box, margin=0.1))
            expected = predictor.predict_crops([crop])[0]
            np.testing.assert_allclose(list(face["scores"].values()), expected, atol=1e-6)


def test_mirror_rows_and_averaging_make_detection_mirror_equivariant():
    from ferkeras.deploy.detection import average_with_mirror, mirror_rows

    rng = np.random.default_rng(0)
    row = np.concatenate([[40.0, 30.0, 140.0, 150.0], rng.uniform(40, 140, 12)])
    back = mirror_rows(mirror_rows(row[None], 200), 200)
    np.testing.assert_allclose(back, row[None])  # mirroring twice is the identity
    mirrored = mirror_rows(row[None], 200)[0]
    assert mirrored[0] == 60.0 and mirrored[2] == 160.0
    points, flipped = row[4:].reshape(6, 2), mirrored[4:].reshape(6, 2)
    np.testing.assert_allclose(flipped[0], [200 - points[1, 0], points[1, 1]])  # eyes swap
    np.testing.assert_allclose(flipped[2], [200 - points[2, 0], points[2, 1]])  # nose stays
    # A near copy is averaged in; a far box is not.
    other = row + 2.0
    np.testing.assert_allclose(average_with_mirror(row[None], other[None]), [row + 1.0])
    far = row.copy()
    far[:4] += 500
    np.testing.assert_allclose(average_with_mirror(row[None], far[None]), row[None])
    np.testing.assert_allclose(average_with_mirror(row[None], np.zeros((0, 16))), row[None])


def test_blazeface_gives_a_photo_and_its_mirror_mirror_image_crops():
    pytest.importorskip("cv2")
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    try:
        from test_predict import face_image
    finally:
        sys.path.pop(0)
    from ferkeras.deploy.detection import BlazeFaceDetector

    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[90:330, 150:470] = face_image(cx=150, cy=125)
    mirror = np.ascontiguousarray(canvas[:, ::-1])
    detector = BlazeFaceDetector()
    (face,), (face_m,) = detector.detect(canvas), detector.detect(mirror)
    eyes, eyes_m = eyes_from_keypoints(face.keypoints), eyes_from_keypoints(face_m.keypoints)
    np.testing.assert_allclose(eyes_m, [[640 - eyes[1, 0], eyes[1, 1]],
                                        [640 - eyes[0, 0], eyes[0, 1]]], atol=1e-3)
    crop, crop_m = align_face(canvas, eyes), align_face(mirror, eyes_m)
    np.testing.assert_allclose(crop_m, crop[:, ::-1], atol=1e-2)


def test_cli_predict_aligns_by_default_and_no_align_crops_the_box(tmp_path):
    """`ferkeras predict` (through its entry point, on a JPEG in tmp_path) gives the aligned
    crop's scores by default and the grown box's with --no-align."""
    cv2 = pytest.importorskip("cv2")
    import json
    import pathlib
    import sys

    from click.testing import CliRunner

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    try:
        from test_predict import face_image
        from test_quantize import write_tiny_export
    finally:
        sys.path.pop(0)
    from ferkeras.cli import cli
    from ferkeras.deploy.inference import Predictor

    model = write_tiny_export(tmp_path / "model")
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[100:340, 150:470] = face_image()
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), canvas)
    scores = {}
    for flag in ("--align", "--no-align"):
        result = CliRunner().invoke(cli, ["predict", "--model", str(model), "--json", flag,
                                          str(path)])
        assert result.exit_code == 0, result.output
        (record,) = [json.loads(line) for line in result.output.splitlines()
                     if line.startswith("{")]
        scores[flag] = record["scores"]
    for flag, align in (("--align", True), ("--no-align", False)):
        (face,) = Predictor(model, align=align).predict(cv2.imread(str(path)), color="bgr")
        np.testing.assert_allclose(list(scores[flag].values()),
                                   list(face["scores"].values()), atol=1e-5)
    assert scores["--align"] != scores["--no-align"]


def test_training_pipeline_warp_equals_the_numpy_crop_eagerly_and_in_tf_data():
    """The training pipeline's aligned crop (`pipeline.warp_image`, TF) samples the points
    `warp_affine` (NumPy, what predict uses) samples: eagerly and inside Dataset.map."""
    import tensorflow as tf

    from ferkeras.data.alignment import landmark_warps
    from ferkeras.data.pipeline import warp_image

    image, eyes = synthetic_face(angle=23.0)
    rgb = np.repeat(image[..., None], 3, axis=2)
    warp = landmark_warps(np.array([[eyes[0], eyes[1], [0, 0], [0, 0], [0, 0], [0, 0]]]))[0]
    side = int(warp[0])
    assert side == crop_side(eyes)
    want = warp_affine(rgb, eye_similarity(eyes, side=side), side=side)
    eager = warp_image(tf.constant(rgb), tf.constant(warp)).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors((rgb, warp)).map(warp_image))).numpy()
    for got in (eager, mapped):
        assert got.shape == (side, side, 3)
        np.testing.assert_allclose(got, want, atol=0.05)
    assert np.all(landmark_warps(np.full((1, 68, 2), np.nan)) == -1)  # no landmarks


def test_affectnet_landmarks_give_aligned_training_crops(tmp_path):
    """AffectNet's 68 landmarks -> the crop predict would take; rows without keep the box."""
    from PIL import Image

    from ferkeras.data.affectnet import read_affectnet_official
    from ferkeras.data.alignment import FER2013_FRAMING
    from ferkeras.data.pipeline import make_dataset
    from ferkeras.labels import get_class_names
    from ferkeras.training.recipe import recipe_from_dict

    image, eyes = synthetic_face(angle=-17.0)
    folder = tmp_path / "Manually_Annotated_Images" / "1"
    folder.mkdir(parents=True)
    Image.fromarray(image.astype(np.uint8)).convert("RGB").save(folder / "a.png")
    Image.fromarray(image.astype(np.uint8)).convert("RGB").save(folder / "b.png")
    marks = np.zeros((68, 2))
    marks[36:42], marks[42:48] = eyes[0], eyes[1]  # eye centres = the means of 36-41, 42-47
    text = ";".join(f"{v:.3f}" for v in marks.ravel())
    lists = tmp_path / "Manually_Annotated_file_lists"
    lists.mkdir()
    head = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks," \
           "expression,valence,arousal\n"
    (lists / "training.csv").write_text(head + f"1/a.png,90,60,120,150,{text},1,0,0\n"
                                        f"1/b.png,90,60,120,150,,2,0,0\n")
    splits, notes = read_affectnet_official(tmp_path, class_names=get_class_names("affectnet8"),
                                            face_margin=0.0, align_faces=True)
    train = splits["train"]
    assert train.warps[0, 0] > 0 and np.all(train.warps[1] == -1)
    assert any(n and "1 face(s) aligned" in n and "1 without usable landmarks" in n
               for n in notes)
    data = recipe_from_dict({"data": {"image_size": 48, "channels": 1}}).data
    (got,), _, _ = next(iter(make_dataset(train.subset([0]), data, batch_size=1)))
    # the eyes land where FER2013 puts them: dark, level, at the framing's points
    ys, xs = np.nonzero(got.numpy()[..., 0] < 90)
    upper = ys < 48 * (FER2013_FRAMING.eye_y + 0.15)
    left, right = upper & (xs < 24), upper & (xs >= 24)
    assert abs(ys[left].mean() - ys[right].mean()) < 1.5  # level
    gap = (xs[right].mean() - xs[left].mean()) / 48
    assert gap == pytest.approx(FER2013_FRAMING.eye_distance, abs=0.04)
    (boxed,), _, _ = next(iter(make_dataset(train.subset([1]), data, batch_size=1)))
    assert not np.allclose(boxed.numpy(), got.numpy())  # the box crop, unrotated
