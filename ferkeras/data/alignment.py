"""Aligned face crops: eye keypoints -> similarity transform -> a level, FER2013-framed crop.

Plain NumPy array functions, Keras-free and OpenCV-free, shared by `Predictor`,
`ferkeras predict` and any pipeline that crops faces out of real photos:

    eyes = eyes_from_keypoints(detection.keypoints)           # (2, 2)
    matrix = eye_similarity(eyes, side=96)                     # (2, 3) crop -> image
    crop = warp_affine(image, matrix, side=96)                 # (96, 96[, C]) float32

Coordinates are continuous pixels: x to the right, y down, the centre of pixel (row r,
column c) at (c + 0.5, r + 0.5), in the image and in the crop alike. `eyes[0]` is the eye
that lies on the image's left in an upright, unmirrored face (the subject's right eye:
BlazeFace's keypoint 0), `eyes[1]` the other; the crop turns the vector eyes[0] -> eyes[1]
horizontal, pointing right.

The framing (`FaceFraming`) places the midpoint of the eyes and scales the eye distance as
FER2013's own crops do, measured with the same detector (BlazeFace) on FER2013 images by
`bench/face_framing.py`: see `FER2013_FRAMING`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class FaceFraming:
    """Where the eyes sit in a square crop, in units of the crop's side.

    eye_distance: distance between the two eye keypoints / crop side.
    eye_x, eye_y: midpoint of the eyes / crop side (from the left, from the top).
    """

    eye_distance: float
    eye_x: float = 0.5
    eye_y: float = 0.4

    def __post_init__(self):
        if not 0.0 < self.eye_distance < 1.0:
            raise ValueError(f"eye_distance must be in (0, 1). Received: "
                             f"eye_distance={self.eye_distance}")
        for name in ("eye_x", "eye_y"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1). Received: {name}={value}")


# BlazeFace on 3,000 seeded FER2013 Training faces (97 % found; `python bench/face_framing.py`
# -> bench/results/face_framing.{json,md}): medians of the eye distance (0.366, quartiles
# 0.327-0.396) and of the eyes' midpoint (x 0.500, y 0.396), as shares of the 48-pixel crop.
FER2013_FRAMING = FaceFraming(eye_distance=0.366, eye_x=0.5, eye_y=0.396)


def eyes_from_keypoints(keypoints) -> np.ndarray:
    """(2, 2) eye positions [image-left eye, image-right eye] from BlazeFace's (6, 2)
    keypoints (its first two are the right and left eye) or iBUG-68 (68, 2) landmarks (the
    mean of points 36-41 and of 42-47)."""
    points = np.asarray(keypoints, np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"keypoints must be (K, 2). Received: shape={points.shape}")
    if points.shape[0] == 68:
        return np.stack([points[36:42].mean(0), points[42:48].mean(0)])
    if points.shape[0] < 2:
        raise ValueError(f"keypoints must hold at least the 2 eyes. Received: "
                         f"shape={points.shape}")
    return points[:2].copy()


def eye_angle(eyes) -> float:
    """Roll of the face in degrees: the angle of the vector eyes[0] -> eyes[1] from the
    horizontal, positive when it points down-right (clockwise on screen, y down)."""
    eyes = np.asarray(eyes, np.float64)
    dx, dy = eyes[1] - eyes[0]
    return math.degrees(math.atan2(dy, dx))


def eye_similarity(eyes, *, side: int, framing: FaceFraming = FER2013_FRAMING,
                   rotate: bool = True) -> np.ndarray:
    """(2, 3) matrix M mapping crop coordinates to image coordinates, [x, y, 1] -> image
    [x, y], such that the crop (side x side) shows the eyes level (rotate=True; False keeps
    the image's orientation and only frames) with `framing`'s eye distance and midpoint.

    eyes: (2, 2) [image-left eye, image-right eye] in image pixels.
    """
    if side < 1:
        raise ValueError(f"side must be >= 1. Received: side={side}")
    eyes = np.asarray(eyes, np.float64)
    if eyes.shape != (2, 2) or not np.all(np.isfinite(eyes)):
        raise ValueError(f"eyes must be a finite (2, 2) array. Received: {eyes.tolist()}")
    vector = eyes[1] - eyes[0]
    distance = float(np.hypot(*vector))
    if distance <= 1e-6:
        raise ValueError(f"the two eyes coincide. Received: eyes={eyes.tolist()}")
    scale = distance / (framing.eye_distance * side)  # image pixels per crop pixel
    cos, sin = (vector / distance) if rotate else (1.0, 0.0)
    linear = scale * np.array([[cos, -sin], [sin, cos]])
    target = np.array([framing.eye_x * side, framing.eye_y * side])
    offset = eyes.mean(0) - linear @ target
    return np.concatenate([linear, offset[:, None]], axis=1)


def crop_side(eyes, *, framing: FaceFraming = FER2013_FRAMING, min_side: int = 1,
              max_side: int | None = None) -> int:
    """The crop's side in pixels at the image's own scale (one crop pixel per image pixel),
    clipped to [min_side, max_side]: warp at this size, then resize to the model's input."""
    eyes = np.asarray(eyes, np.float64)
    side = round(float(np.hypot(*(eyes[1] - eyes[0]))) / framing.eye_distance)
    side = max(min_side, side)
    return min(side, max_side) if max_side else side


def warp_affine(image: np.ndarray, matrix, *, side: int) -> np.ndarray:
    """(side, side[, C]) float32 crop of an (H, W[, C]) image: crop pixel (r, c) is the
    image sampled bilinearly at matrix @ [c + 0.5, r + 0.5, 1] (edge pixels repeated
    outside the image)."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"Expected an (H, W[, C]) image. Received: shape={image.shape}")
    matrix = np.asarray(matrix, np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must be (2, 3). Received: shape={matrix.shape}")
    if side < 1:
        raise ValueError(f"side must be >= 1. Received: side={side}")
    grid = np.arange(side, dtype=np.float64) + 0.5
    # Image coordinates of each crop pixel centre, then array indices (pixel centres at .5).
    src_x = matrix[0, 0] * grid[None, :] + matrix[0, 1] * grid[:, None] + matrix[0, 2] - 0.5
    src_y = matrix[1, 0] * grid[None, :] + matrix[1, 1] * grid[:, None] + matrix[1, 2] - 0.5
    height, width = image.shape[:2]
    src_x = np.clip(src_x, 0.0, width - 1.0)
    src_y = np.clip(src_y, 0.0, height - 1.0)
    x0 = np.minimum(np.floor(src_x).astype(np.intp), width - 1)
    y0 = np.minimum(np.floor(src_y).astype(np.intp), height - 1)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (src_x - x0).astype(np.float32), (src_y - y0).astype(np.float32)
    if image.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    pixels = image.astype(np.float32, copy=False)
    top = pixels[y0, x0] * (1 - fx) + pixels[y0, x1] * fx
    bottom = pixels[y1, x0] * (1 - fx) + pixels[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def align_face(image: np.ndarray, eyes, *, framing: FaceFraming = FER2013_FRAMING,
               side: int | None = None, min_side: int = 48, max_side: int = 192,
               rotate: bool = True) -> np.ndarray:
    """The aligned, FER2013-framed (side, side[, C]) float32 crop of the face whose eyes are
    `eyes` ((2, 2), see `eyes_from_keypoints`) in an (H, W[, C]) image.

    side: the crop's side; None: the image's own scale (`crop_side`), clipped to
      [min_side, max_side] so that the model's antialiased resize does the shrinking.
    rotate: False frames the face the same way without levelling the eyes.
    """
    if side is None:
        side = crop_side(eyes, framing=framing, min_side=min_side, max_side=max_side)
    matrix = eye_similarity(eyes, side=side, framing=framing, rotate=rotate)
    return warp_affine(image, matrix, side=side)


def projective_transform(matrix) -> np.ndarray:
    """(8,) float32 transform of `tf.raw_ops.ImageProjectiveTransformV3` (output pixel index
    -> input pixel index, integer pixel centres) equal to a (2, 3) crop -> image `matrix` in
    this module's continuous coordinates (pixel centres at .5): the training pipeline's warp
    (`ferkeras.data.pipeline`) samples the same points as `warp_affine`."""
    matrix = np.asarray(matrix, np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must be (2, 3). Received: shape={matrix.shape}")
    linear = matrix[:, :2]
    offset = linear @ np.array([0.5, 0.5]) + matrix[:, 2] - 0.5
    return np.array([linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1],
                     offset[1], 0.0, 0.0], np.float32)


def landmark_warps(landmarks, *, framing: FaceFraming = FER2013_FRAMING, min_side: int = 48,
                   max_side: int = 192) -> np.ndarray:
    """(N, 9) float32 warps of the training pipeline from (N, L, 2) landmarks (iBUG-68 or
    BlazeFace's 6; NaN rows = none): [side, 8 `projective_transform` values], the aligned
    crop `align_face` would take (same side rule); rows without usable eyes are all -1."""
    points = np.asarray(landmarks, np.float64)
    out = np.full((len(points), 9), -1.0, np.float32)
    for i, row in enumerate(points):
        if not np.all(np.isfinite(row)):
            continue
        try:
            eyes = eyes_from_keypoints(row)
            side = crop_side(eyes, framing=framing, min_side=min_side, max_side=max_side)
            matrix = eye_similarity(eyes, side=side, framing=framing)
        except ValueError:  # the eyes coincide: no alignment for this row
            continue
        out[i, 0] = side
        out[i, 1:] = projective_transform(matrix)
    return out


def transform_points(matrix, points) -> np.ndarray:
    """(N, 2) image positions of (N, 2) crop positions under a `eye_similarity` matrix."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    matrix = np.asarray(matrix, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_similarity(matrix) -> np.ndarray:
    """The (2, 3) inverse of an affine (2, 3) matrix: image -> crop coordinates."""
    matrix = np.asarray(matrix, np.float64)
    inverse = np.linalg.inv(matrix[:, :2])
    return np.concatenate([inverse, -(inverse @ matrix[:, 2])[:, None]], axis=1)
