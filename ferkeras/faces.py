"""Images in, face crops out: reading files, frame sources, Haar detection, cropping.

Keras-free and import-light: OpenCV, Pillow and tqdm are imported inside the functions that
need them. OpenCV is the `[webcam]` extra; without it, still images can be read (Pillow) and
predicted with `detect=False`, while detection, video, webcam and annotation say how to get it.

Conventions: frames from OpenCV are BGR (H, W, 3) uint8; boxes are (x, y, w, h) in pixels of
the frame they were found in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import os
import pathlib

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
HAAR_FILE = "haarcascade_frontalface_default.xml"
INSTALL_HINT = "pip install 'ferkeras[webcam]' (or: pip install 'opencv-python-headless<5')"


class OpenCVMissingError(RuntimeError):
    """OpenCV is not installed, or is a build without what a feature needs."""


class FrameSourceError(RuntimeError):
    """A webcam or video file could not be opened."""


def import_cv2(feature: str):
    """Import OpenCV or raise `OpenCVMissingError` saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise OpenCVMissingError(f"{feature} needs OpenCV: {INSTALL_HINT}") from None
    return cv2


# ----------------------------------------------------------------------------- detection
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


# ----------------------------------------------------------------------------- pixels
# One definition of "face crop -> model input", shared with training
# (`ferkeras.data.pipeline.to_model_input`): float32 throughout, channels converted first
# with TensorFlow's grey weights, then resized with TensorFlow's bilinear + antialias
# (`tf.image.resize(..., antialias=True)`, a triangle kernel stretched by the shrink factor),
# clipped to [0, 255]. Written here in NumPy so that predicting never imports TensorFlow;
# tests/test_preprocess_parity.py checks both paths give the same model inputs.
TF_GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def to_grey(image: np.ndarray, *, color: str = "rgb") -> np.ndarray:
    """(H, W) float32 luma of a grey, grey-with-axis, RGB(A) or BGR(A) image (TF weights)."""
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color must be 'rgb' or 'bgr'. Received: color={color!r}")
    if image.ndim == 2:
        return image.astype(np.float32, copy=False)
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Expected an (H, W[, 1|3|4]) image. Received: shape={image.shape}")
    if image.shape[-1] == 1:
        return image[..., 0].astype(np.float32, copy=False)
    weights = TF_GREY_WEIGHTS if color == "rgb" else TF_GREY_WEIGHTS[::-1]
    return image[..., :3].astype(np.float32) @ np.asarray(weights, np.float32)


def convert_channels(image: np.ndarray, *, channels: int, color: str = "rgb") -> np.ndarray:
    """(H, W, channels) float32 image; 3 channels come out RGB whatever `color` the input was."""
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color must be 'rgb' or 'bgr'. Received: color={color!r}")
    if channels == 1:
        return to_grey(image, color=color)[..., None]
    if channels != 3:
        raise ValueError(f"channels must be 1 or 3. Received: channels={channels}")
    if image.ndim == 2 or image.shape[-1] == 1:
        grey = image.reshape(image.shape[:2]).astype(np.float32, copy=False)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"Expected an (H, W[, 1|3|4]) image. Received: shape={image.shape}")
    rgb = image[..., :3]
    return (rgb[..., ::-1] if color == "bgr" else rgb).astype(np.float32)


@functools.lru_cache(maxsize=64)
def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float32 rows of TF's bilinear antialiased resampling weights.

    Mirrors tensorflow/core/kernels/image/scale_and_translate_op.cc (triangle kernel of
    radius 1, widened by the shrink factor when shrinking, half-pixel centres, each row
    normalised to sum to 1).
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1. Received: in_size={in_size}, "
                         f"out_size={out_size}")
    inv_scale = np.float32(in_size / out_size)
    kernel_scale = max(float(inv_scale), 1.0)
    weights = np.zeros((out_size, in_size), np.float32)
    for x in range(out_size):
        sample = (x + 0.5) * float(inv_scale)
        start = int(np.ceil(sample - kernel_scale - 0.5))
        end = int(np.floor(sample + kernel_scale - 0.5))
        start, end = min(max(start, 0), in_size - 1), min(max(end, 0), in_size - 1) + 1
        source = np.arange(start, end, dtype=np.float32)
        row = np.maximum(0.0, 1.0 - np.abs((source + 0.5 - sample) / kernel_scale))
        total = row.sum()
        weights[x, start:end] = row / total if total > 0 else row
    return weights


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """(size, size[, C]) float32 resize of an (H, W[, C]) image, as `tf.image.resize`
    (bilinear, antialias=True) then clipped to [0, 255]."""
    if size < 1:
        raise ValueError(f"size must be >= 1. Received: size={size}")
    image = np.asarray(image, np.float32)
    if image.shape[0] == size and image.shape[1] == size:
        return image
    rows = resize_weights(int(image.shape[0]), size)
    cols = resize_weights(int(image.shape[1]), size)
    if image.ndim == 2:
        out = rows @ image @ cols.T
    else:
        out = np.einsum("ih,hwc,jw->ijc", rows, image, cols, optimize=True)
    return np.clip(out, 0.0, 255.0)


def prepare_face(crop: np.ndarray, *, size: int, channels: int,
                 color: str = "rgb") -> np.ndarray:
    """(size, size, channels) float32 model input from an (h, w[, C]) face crop in [0, 255].

    The same steps as training (`ferkeras.data.pipeline.to_model_input`): channels first,
    then TF's antialiased bilinear resize, then clip.
    """
    converted = convert_channels(np.asarray(crop), channels=channels, color=color)
    return resize(converted, size).reshape(size, size, channels)


def crop_box(image: np.ndarray, box, *, margin: float = 0.1) -> np.ndarray:
    """The square around `box` grown by `margin` x its size on each side, clipped to the image."""
    x, y, w, h = (int(v) for v in box)
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    x1 = min(image.shape[1], round(cx + side / 2))
    y1 = min(image.shape[0], round(cy + side / 2))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"Box lies outside the image. Received: box={box}, "
                         f"image shape={image.shape}")
    return image[y0:y1, x0:x1]


# ----------------------------------------------------------------------------- sources
def read_image(path: str | os.PathLike) -> np.ndarray | None:
    """BGR (H, W, 3) uint8 pixels of an image file, or None if it is not a readable image."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    try:
        import cv2
    except ImportError:
        return _read_image_pil(path)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return image if image is not None and image.size else None


def _read_image_pil(path) -> np.ndarray | None:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as pil:
            rgb = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return np.ascontiguousarray(rgb[..., ::-1])


def is_video(path: str | os.PathLike) -> bool:
    return pathlib.Path(path).suffix.lower() in VIDEO_SUFFIXES


def collect_inputs(inputs) -> list[pathlib.Path]:
    """Expand files, folders (recursively, image files only) and glob patterns into files.

    Raises FileNotFoundError naming an input that matches nothing, and ValueError for a folder
    without images. Explicitly named files are kept whatever their suffix, so that a file
    that is not an image is reported as such rather than dropped.
    """
    files: list[pathlib.Path] = []
    for item in inputs:
        path = pathlib.Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"{item}: no images in this folder (looked for "
                                 f"{', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.exists():
            files.append(path)
        elif glob.has_magic(str(item)):
            found = sorted(pathlib.Path(p) for p in glob.glob(str(item), recursive=True))
            found = [p for p in found if p.is_file()]
            if not found:
                raise FileNotFoundError(f"{item}: no file matches this pattern")
            files += found
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return files


@contextlib.contextmanager
def _quiet_opencv(cv2):
    """Silence OpenCV's own stderr warnings (e.g. a missing camera) for the block."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def open_capture(source: int | str | os.PathLike):
    """An opened `cv2.VideoCapture` for a webcam index or a video file.

    Raises FrameSourceError naming the device or file that could not be opened.
    """
    # FFmpeg's own log lines ("moov atom not found") would duplicate our one-line error.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2 = import_cv2("Video and webcam input")
    name = f"webcam {source}" if isinstance(source, int) else f"{source}"
    if not isinstance(source, int) and not os.path.isfile(source):
        raise FrameSourceError(f"{name}: no such video file")
    with _quiet_opencv(cv2):
        capture = cv2.VideoCapture(source if isinstance(source, int) else str(source))
        opened = capture.isOpened()
    if not opened:
        capture.release()
        if isinstance(source, int):
            raise FrameSourceError(f"cannot open {name} (no camera at index {source}, or it "
                                   "is busy or not permitted)")
        raise FrameSourceError(f"{name}: cannot open as a video")
    return capture


def count_frames(capture) -> int | None:
    """Frame count a capture reports (video files), or None when unknown (webcams)."""
    import cv2

    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return total if total > 0 else None


def iter_frames(capture, *, every: int = 1, max_frames: int = 0):
    """Yield (frame_index, BGR frame) for every `every`-th frame of an opened capture.

    The same generator serves webcams and video files. It releases the capture when done.
    max_frames: stop after yielding this many frames (0: until the source ends).
    """
    if every < 1:
        raise ValueError(f"every must be >= 1. Received: every={every}")
    if max_frames < 0:
        raise ValueError(f"max_frames must be >= 0. Received: max_frames={max_frames}")
    index, yielded = 0, 0
    try:
        while not max_frames or yielded < max_frames:
            if not capture.grab():
                return
            if index % every == 0:
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    return
                yield index, frame
                yielded += 1
            index += 1
    finally:
        capture.release()


def draw_faces(frame: np.ndarray, faces: list[dict]) -> np.ndarray:
    """A BGR copy of `frame` with each face's box and top label drawn on it."""
    cv2 = import_cv2("--annotate")
    canvas = frame.copy() if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    thickness = max(1, round(max(canvas.shape[:2]) / 320))
    for face in faces:
        if face.get("box") is None:
            continue
        x, y, w, h = face["box"]
        cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 255, 0), thickness)
        if face.get("label"):
            text = f"{face['label']} {face['score']:.2f}"
            scale = 0.4 * thickness
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
            top = max(0, y - th - base - 2)
            cv2.rectangle(canvas, (x, top), (x + tw + 2, top + th + base + 2), (0, 255, 0), -1)
            cv2.putText(canvas, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas
