"""Face detection: OpenCV's bundled Haar cascades, run in stages, and a registry of them.

Keras-free; OpenCV (the `[webcam]` / `[detect]` extra) is imported when a detector is built.
Boxes are (x, y, w, h) in pixels of the frame they were found in.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

HAAR_FILE = "haarcascade_frontalface_default.xml"
INSTALL_HINT = "pip install 'ferkeras[webcam]' (or: pip install 'opencv-python-headless<5')"


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
DEFAULT_DETECTOR = "haar-staged"


def list_detectors() -> list[str]:
    """Names `build_detector` accepts."""
    return sorted(DETECTOR_STAGES)


def build_detector(name: str = DEFAULT_DETECTOR, **kwargs) -> HaarFaceDetector:
    """The face detector registered under `name` (see `list_detectors`)."""
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
        stages = tuple(DETECTOR_STAGES[DEFAULT_DETECTOR] if stages is None else stages)
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
