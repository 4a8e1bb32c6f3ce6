"""Face detection: OpenCV's bundled Haar cascades, run in stages, and a registry of them.

Keras-free; OpenCV (the `[webcam]` / `[detect]` extra) is imported when a detector is built.
Boxes are (x, y, w, h) in pixels of the frame they were found in. A detector is called as
`detector(frame, color=...)` and returns boxes; one that also finds landmarks (BlazeFace) has
a `detect(frame, color=...)` method returning `Detection`s, and `detect_faces` asks any
detector for those (keypoints None where it has none).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

HAAR_FILE = "haarcascade_frontalface_default.xml"
INSTALL_HINT = "pip install 'ferkeras[webcam]' (or: pip install 'opencv-python-headless<5')"


@dataclasses.dataclass(frozen=True, eq=False)
class Detection:
    """One face: box (x, y, w, h) in frame pixels; keypoints (K, 2) x, y in frame pixels or
    None; score in [0, 1] or None. BlazeFace's 6 keypoints, in MediaPipe's order: the
    subject's right eye (on the image's left in an unmirrored photo), left eye, nose tip,
    mouth centre, right ear tragion, left ear tragion (`BLAZEFACE_KEYPOINTS`)."""

    box: tuple[int, int, int, int]
    keypoints: np.ndarray | None = None
    score: float | None = None


BLAZEFACE_KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")


def detect_faces(detector, frame: np.ndarray, *, color: str = "bgr") -> list[Detection]:
    """`Detection`s from any detector: its `detect` method when it has one, else its boxes
    (keypoints None)."""
    if hasattr(detector, "detect"):
        return list(detector.detect(frame, color=color))
    return [Detection(tuple(int(v) for v in box)) for box in detector(frame, color=color)]


class OpenCVMissingError(RuntimeError):
    """OpenCV is not installed, or is a build without what a feature needs."""


def import_cv2(feature: str):
    """Import OpenCV or raise `OpenCVMissingError` saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise OpenCVMissingError(f"{feature} needs OpenCV: {INSTALL_HINT}") from None
    return cv2


@dataclasses.dataclass(frozen=True)
class HaarStage:
    """One pass of a staged Haar detector: which cascade, how much border, how strict.

    cascade: file name in `cv2.data.haarcascades`. pad: border added on each side, as a share
    of the (downscaled) frame's longer side, so that a face filling the image still has the
    context the cascade needs. flip: also run on the mirrored frame (profile cascades only
    see one side). min_neighbors, min_size: as in `detectMultiScale` (pixels of the
    downscaled frame). min_share: smallest face as a share of the frame's longer side, for
    the passes that look for a face filling the image (fewer scales: a frame without a face
    stays cheap).
    """

    cascade: str
    pad: float = 0.0
    min_neighbors: int = 5
    min_size: int = 24
    flip: bool = False
    min_share: float = 0.0


# Measured on ../shared/data/faces_in_the_wild (600 photos, one face each) by
# `python bench/inference.py --detectors`: see bench/results/inference.md.
DETECTOR_STAGES: dict[str, tuple[HaarStage, ...]] = {
    # The cascade alone, as before (found 86.2 %, more than one box 1.0 %).
    "haar": (HaarStage(HAAR_FILE),),
    # Frontal first; only when it finds nothing: on a padded frame, frontal, alt2, both
    # profiles, then a lenient alt pass, all for faces of at least 35 % of the frame's side
    # (a face filling a tight crop). A frame with a frontal face costs one pass.
    "haar-staged": (
        HaarStage(HAAR_FILE, min_neighbors=4),
        HaarStage(HAAR_FILE, pad=0.3, min_neighbors=3, min_size=16, min_share=0.35),
        HaarStage("haarcascade_frontalface_alt2.xml", pad=0.3, min_neighbors=2, min_size=16,
                  min_share=0.35),
        HaarStage("haarcascade_profileface.xml", pad=0.3, min_neighbors=2, min_size=16,
                  flip=True, min_share=0.35),
        HaarStage("haarcascade_frontalface_alt.xml", pad=0.3, min_neighbors=1, min_size=12,
                  min_share=0.35),
    ),
}
# BlazeFace (ships with ferkeras, runs on onnxruntime), then the staged Haar cascades only
# where it finds nothing: 99.7 % found, 0.3 % with extra boxes on faces_in_the_wild.
DEFAULT_DETECTOR = "blazeface+haar"


def list_detectors() -> list[str]:
    """Names `build_detector` accepts."""
    return sorted([*DETECTOR_STAGES, "blazeface", "blazeface+haar"])


def build_detector(name: str = DEFAULT_DETECTOR, **kwargs):
    """The face detector registered under `name` (see `list_detectors`)."""
    if name == "blazeface":
        return BlazeFaceDetector(**kwargs)
    if name == "blazeface+haar":
        return FallbackDetector(BlazeFaceDetector(**kwargs),
                                lambda: HaarFaceDetector(stages=DETECTOR_STAGES["haar-staged"]))
    if name not in DETECTOR_STAGES:
        raise ValueError(f"Unknown detector {name!r}. Valid detectors: {list_detectors()}")
    return HaarFaceDetector(stages=DETECTOR_STAGES[name], **kwargs)


class HaarFaceDetector:
    """OpenCV Haar cascades, run in stages on a downscaled grey copy of the frame.

    The stages run in order and the first that finds a face wins (default: the
    `haar-staged` stages). Overlapping boxes (IoU > 0.3 or mostly nested) keep the larger.
    max_side: frames are shrunk so that their longer side is at most this many pixels before
      detection (320 keeps a 640x480 frame well under 10 ms on one core).
    scale_factor: `detectMultiScale`'s pyramid step.
    """

    def __init__(self, *, stages=None, max_side: int = 320, scale_factor: float = 1.1):
        if max_side < 32:
            raise ValueError(f"max_side must be >= 32. Received: max_side={max_side}")
        if scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1. Received: scale_factor={scale_factor}")
        stages = tuple(DETECTOR_STAGES["haar-staged"] if stages is None else stages)
        if not stages or not all(isinstance(s, HaarStage) for s in stages):
            raise ValueError(f"stages must be a non-empty sequence of HaarStage. Received: "
                             f"stages={stages!r}")
        cv2 = import_cv2("Face detection")
        data = getattr(cv2, "data", None)
        folder = getattr(data, "haarcascades", "")
        if data is None or not os.path.isfile(os.path.join(folder, HAAR_FILE)):
            raise OpenCVMissingError(
                f"OpenCV {cv2.__version__} ships no Haar cascades (OpenCV 5 removed them); "
                "install 'opencv-python-headless<5', or pass --no-detect for face crops"
            )
        self._cascades = {}
        for stage in stages:
            if stage.cascade not in self._cascades:
                path = os.path.join(folder, stage.cascade)
                cascade = cv2.CascadeClassifier(path)
                if cascade.empty():
                    raise OpenCVMissingError(f"OpenCV could not load its Haar cascade {path}")
                self._cascades[stage.cascade] = cascade
        self._cv2 = cv2
        self.stages = stages
        self.max_side = max_side
        self.scale_factor = scale_factor

    def __call__(self, frame: np.ndarray, *, color: str = "bgr") -> list[tuple[int, ...]]:
        """Boxes (x, y, w, h) of the faces in a (H, W), (H, W, 1) or (H, W, 3) uint8 frame."""
        cv2 = self._cv2
        if frame.ndim == 3 and frame.shape[-1] in (3, 4):
            code = cv2.COLOR_BGR2GRAY if color == "bgr" else cv2.COLOR_RGB2GRAY
            grey = cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), code)
        else:
            grey = np.ascontiguousarray(frame.reshape(frame.shape[:2]), dtype=np.uint8)
        height, width = grey.shape
        scale = min(1.0, self.max_side / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        prepared = {}
        for stage in self.stages:
            if stage.pad not in prepared:
                border = round(stage.pad * max(grey.shape))
                padded = grey if not border else cv2.copyMakeBorder(
                    grey, border, border, border, border, cv2.BORDER_REPLICATE)
                prepared[stage.pad] = (cv2.equalizeHist(padded), border)
            image, border = prepared[stage.pad]
            side = max(grey.shape)
            found = self._detect(image, stage, side)
            if stage.flip:
                mirrored = self._detect(np.ascontiguousarray(image[:, ::-1]), stage, side)
                found += [(image.shape[1] - x - w, y, w, h) for x, y, w, h in mirrored]
            if found:
                boxes = [_clip_box(((x - border) / scale, (y - border) / scale, w / scale,
                                    h / scale), width, height) for x, y, w, h in found]
                boxes = merge_boxes([b for b in boxes if b is not None])
                if boxes:
                    return sorted(boxes, key=lambda b: (b[0], b[1]))
        return []

    def _detect(self, image, stage: HaarStage, side: int) -> list[tuple[int, ...]]:
        smallest = max(stage.min_size, round(stage.min_share * side))
        found = self._cascades[stage.cascade].detectMultiScale(
            image, scaleFactor=self.scale_factor, minNeighbors=stage.min_neighbors,
            minSize=(smallest, smallest))
        return [tuple(int(v) for v in box) for box in np.asarray(found).reshape(-1, 4)]


def _clip_box(box, width: int, height: int):
    x, y, w, h = box
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(width, round(x + w)), min(height, round(y + h))
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def merge_boxes(boxes, *, iou: float = 0.3, nested: float = 0.6) -> list[tuple[int, ...]]:
    """Boxes (x, y, w, h) without duplicates: a box overlapping a larger kept one by IoU >
    `iou`, or lying `nested` or more inside it (share of the smaller box), is dropped."""
    kept: list[tuple[int, ...]] = []
    for box in sorted(boxes, key=lambda b: -b[2] * b[3]):
        x, y, w, h = box
        for kx, ky, kw, kh in kept:
            inter = (max(0, min(x + w, kx + kw) - max(x, kx))
                     * max(0, min(y + h, ky + kh) - max(y, ky)))
            if inter > iou * (w * h + kw * kh - inter) or inter >= nested * min(w * h, kw * kh):
                break
        else:
            kept.append(tuple(int(v) for v in box))
    return kept


# ----------------------------------------------------------------------------- BlazeFace
BLAZEFACE_FILE = (pathlib.Path(__file__).resolve().parents[1] / "pretrained" / "blazeface"
                  / "face_detection_short_range.onnx")
BLAZEFACE_SIZE = 128


def blazeface_anchors() -> np.ndarray:
    """(896, 2) anchor centres (x, y) in [0, 1]: 16x16 cells x 2, then 8x8 cells x 6."""
    out = []
    for grid, count in ((16, 2), (8, 6)):
        ys, xs = np.mgrid[0:grid, 0:grid]
        centres = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], -1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, count, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


class BlazeFaceDetector:
    """MediaPipe's BlazeFace (short range) as ONNX, run by onnxruntime: ships with ferkeras.

    The frame is letterboxed to a square, resized to 128x128 (OpenCV's area filter, or
    Pillow's bilinear without OpenCV), scored at each of 896 anchors; boxes above
    `min_score` are merged by weighted non-maximum suppression (IoU > `iou`), as MediaPipe.

    mirror_average: also run on the mirrored frame and average each face's box and keypoints
      with those of its mirror image (IoU > 0.5; mirrored back, left and right keypoints
      swapped). The keypoints of one pass move by a few pixels between a photo and its
      mirror (eye roll differs by 3.8 degrees at the median on faces_in_the_wild): averaged,
      a face and its mirror get mirror-image crops, and the noise shrinks. Twice the
      detector's compute. Faces found in the frame only are kept as found.
    """

    def __init__(self, *, min_score: float = 0.5, iou: float = 0.3, path=None,
                 mirror_average: bool = True):
        if not 0.0 < min_score < 1.0:
            raise ValueError(f"min_score must be in (0, 1). Received: min_score={min_score}")
        if not 0.0 < iou < 1.0:
            raise ValueError(f"iou must be in (0, 1). Received: iou={iou}")
        from ferkeras.deploy.session import create_session

        self._session = create_session(path or BLAZEFACE_FILE, threads=1)
        self._input = self._session.get_inputs()[0].name
        self._anchors = blazeface_anchors()
        self.min_score, self.iou = min_score, iou
        self.mirror_average = bool(mirror_average)

    def __call__(self, frame: np.ndarray, *, color: str = "bgr") -> list[tuple[int, ...]]:
        """Boxes (x, y, w, h) of the faces in a (H, W), (H, W, 1) or (H, W, 3|4) uint8 frame."""
        return [d.box for d in self.detect(frame, color=color)]

    def detect(self, frame: np.ndarray, *, color: str = "bgr") -> list[Detection]:
        """`Detection`s (box, 6 keypoints, score) of the faces in a uint8 frame, sorted by
        box position."""
        if frame.ndim == 2 or frame.shape[-1] == 1:
            rgb = np.repeat(frame.reshape(frame.shape[:2])[..., None], 3, axis=-1)
        else:
            rgb = frame[..., :3][..., ::-1] if color == "bgr" else frame[..., :3]
        height, width = rgb.shape[:2]
        rows, scores = self._detect_rows(rgb)
        if self.mirror_average and len(rows):
            mirrored, _ = self._detect_rows(rgb[:, ::-1])
            rows = average_with_mirror(rows, mirror_rows(mirrored, width))
        found = []
        for row, score in zip(rows, scores, strict=True):
            x_0, y_0, x_1, y_1 = row[:4]
            box = _clip_box((x_0, y_0, x_1 - x_0, y_1 - y_0), width, height)
            if box is not None:
                found.append(Detection(box, row[4:].reshape(6, 2).astype(np.float32),
                                       float(score)))
        return sorted(found, key=lambda d: (d.box[0], d.box[1]))

    def _detect_rows(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M, 16) x0, y0, x1, y1 and 6 keypoints (x, y) in frame pixels, and (M,) scores,
        after weighted NMS and before clipping."""
        height, width = rgb.shape[:2]
        scale = BLAZEFACE_SIZE / max(height, width)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        x0, y0 = (BLAZEFACE_SIZE - w) // 2, (BLAZEFACE_SIZE - h) // 2
        square = np.zeros((BLAZEFACE_SIZE, BLAZEFACE_SIZE, 3), np.float32)
        square[y0:y0 + h, x0:x0 + w] = _resize_uint8(np.ascontiguousarray(rgb), w, h)
        square = square / 127.5 - 1.0
        raw, logits = self._session.run(None, {self._input: square[None]})
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1), -80.0, 80.0)))
        keep = scores >= self.min_score
        if not keep.any():
            return np.zeros((0, 16)), np.zeros(0, np.float32)
        raw = raw.reshape(-1, raw.shape[-1])[keep] / BLAZEFACE_SIZE
        anchors = self._anchors[keep]
        centres, sizes = raw[:, :2] + anchors, raw[:, 2:4]
        points = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        corners = np.concatenate([centres - sizes / 2, centres + sizes / 2,
                                  points.reshape(-1, 12)], axis=1)
        # Letterboxed unit square -> frame pixels (x, y pairs throughout).
        corners = (corners * BLAZEFACE_SIZE - np.tile([x0, y0], 8)) / scale
        return weighted_nms(corners, scores[keep], iou=self.iou, return_scores=True)


# BlazeFace's keypoints under a mirror: the eyes swap, and so do the ears.
_MIRROR_KEYPOINTS = (1, 0, 2, 3, 5, 4)


def mirror_rows(rows: np.ndarray, width: int) -> np.ndarray:
    """(M, 16) detection rows of a mirrored frame, in the unmirrored frame's pixels: x ->
    width - x, box corners and left/right keypoints swapped."""
    rows = np.asarray(rows, np.float64).reshape(-1, 16)
    out = rows.copy()
    out[:, 0], out[:, 2] = width - rows[:, 2], width - rows[:, 0]
    points = rows[:, 4:].reshape(-1, 6, 2)[:, _MIRROR_KEYPOINTS].copy()
    points[..., 0] = width - points[..., 0]
    out[:, 4:] = points.reshape(-1, 12)
    return out


def average_with_mirror(rows: np.ndarray, mirrored: np.ndarray, *,
                        iou: float = 0.5) -> np.ndarray:
    """Each row (M, 4 + E) averaged with the best-overlapping row of `mirrored` (IoU >
    `iou`, each used once); rows without a match are kept as they are."""
    out = np.asarray(rows, np.float64).copy()
    used = np.zeros(len(mirrored), bool)
    for i, row in enumerate(out):
        if not len(mirrored):
            break
        low = np.maximum(row[:2], mirrored[:, :2])
        high = np.minimum(row[2:4], mirrored[:, 2:4])
        inter = np.prod(np.clip(high - low, 0, None), axis=1)
        area = np.prod(row[2:4] - row[:2])
        areas = np.prod(mirrored[:, 2:4] - mirrored[:, :2], axis=1)
        overlap = np.where(used, -1.0, inter / (area + areas - inter + 1e-9))
        j = int(np.argmax(overlap))
        if overlap[j] > iou:
            out[i] = (row + mirrored[j]) / 2
            used[j] = True
    return out


def weighted_nms(corners: np.ndarray, scores: np.ndarray, *, iou: float,
                 return_scores: bool = False):
    """MediaPipe's weighted non-maximum suppression. corners: (N, 4 + E) x0, y0, x1, y1 then
    any E extra columns (keypoints), averaged alike; scores: (N,). Each kept box is the
    score-weighted mean of the boxes it overlaps by IoU > `iou`. Returns (M, 4 + E), and with
    return_scores also (M,) the score of each group's best box."""
    area = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])
    used = np.zeros(len(scores), bool)
    merged, best = [], []
    for i in np.argsort(-scores):
        if used[i]:
            continue
        low = np.maximum(corners[i, :2], corners[:, :2])
        high = np.minimum(corners[i, 2:4], corners[:, 2:4])
        inter = np.prod(np.clip(high - low, 0, None), axis=1)
        group = (inter / (area + area[i] - inter + 1e-9) > iou) & ~used
        group[i] = True
        used |= group
        weights = scores[group][:, None]
        merged.append((corners[group] * weights).sum(0) / weights.sum())
        best.append(scores[i])
    merged = np.asarray(merged).reshape(-1, corners.shape[1])
    return (merged, np.asarray(best, np.float32)) if return_scores else merged


def _resize_uint8(image: np.ndarray, width: int, height: int) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        from PIL import Image

        return np.asarray(Image.fromarray(image).resize((width, height),
                                                        Image.Resampling.BILINEAR))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


class FallbackDetector:
    """`first`'s boxes, or where it finds none, those of the detector `make_fallback()` builds
    on first need. Without OpenCV (no Haar cascades) the fallback is skipped: `first` alone."""

    def __init__(self, first, make_fallback):
        self.first = first
        self._make_fallback = make_fallback
        self._fallback = None
        self.fallback_available = True

    def __call__(self, frame: np.ndarray, *, color: str = "bgr") -> list[tuple[int, ...]]:
        boxes = self.first(frame, color=color)
        return boxes or self._fallback_boxes(frame, color)

    def detect(self, frame: np.ndarray, *, color: str = "bgr") -> list[Detection]:
        """`Detection`s: `first`'s (with its keypoints), else the fallback's boxes."""
        found = detect_faces(self.first, frame, color=color)
        return found or [Detection(box) for box in self._fallback_boxes(frame, color)]

    def _fallback_boxes(self, frame: np.ndarray, color: str) -> list[tuple[int, ...]]:
        if not self.fallback_available:
            return []
        if self._fallback is None:
            try:
                self._fallback = self._make_fallback()
            except OpenCVMissingError:
                self.fallback_available = False
                return []
        return self._fallback(frame, color=color)
