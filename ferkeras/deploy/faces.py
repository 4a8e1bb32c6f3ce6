"""Images in, face crops out: reading files, frame sources, cropping, drawing.

Keras-free and import-light: OpenCV, Pillow and tqdm are imported inside the functions that
need them. OpenCV is the `[webcam]` extra; without it, still images can be read (Pillow) and
predicted with `detect=False`, while detection, video, webcam and annotation say how to get it.
Detection lives in `ferkeras.deploy.detection`, eye alignment in `ferkeras.data.alignment`,
crop -> model input in `ferkeras.data.preprocess`; their public names are re-exported here.
`crop_face` is the one crop used by `Predictor`, `ferkeras predict` and the benchmarks.

Conventions: frames from OpenCV are BGR (H, W, 3) uint8; boxes are (x, y, w, h) in pixels of
the frame they were found in.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pathlib

import numpy as np

from ferkeras.data.alignment import (  # noqa: F401  (re-exported)
    FER2013_FRAMING,
    FaceFraming,
    align_face,
    eyes_from_keypoints,
)
from ferkeras.data.preprocess import (  # noqa: F401  (re-exported)
    TF_GREY_WEIGHTS,
    convert_channels,
    prepare_face,
    resize,
    resize_weights,
    to_grey,
)
from ferkeras.deploy.detection import (  # noqa: F401  (re-exported)
    DEFAULT_DETECTOR,
    DETECTOR_STAGES,
    HAAR_FILE,
    INSTALL_HINT,
    Detection,
    HaarFaceDetector,
    HaarStage,
    OpenCVMissingError,
    build_detector,
    detect_faces,
    import_cv2,
    list_detectors,
    merge_boxes,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class FrameSourceError(RuntimeError):
    """A webcam or video file could not be opened."""


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


def crop_face(image: np.ndarray, box, keypoints=None, *, align: bool = True,
              margin: float = 0.1, framing: FaceFraming = FER2013_FRAMING,
              min_side: int = 48, max_side: int = 192) -> np.ndarray:
    """The crop of one face, as `Predictor` and `ferkeras predict` take it.

    With eye keypoints ((K, 2), see `alignment.eyes_from_keypoints`) and align=True: the
    face rotated so that its eyes are level and framed as FER2013 frames its faces
    (`alignment.align_face`), a float32 (s, s[, C]) crop with s in [min_side, max_side]
    (the image's own scale). Otherwise (no keypoints, e.g. a Haar box, or align=False): the
    square around `box` grown by `margin` on each side (`crop_box`).
    """
    if align and keypoints is not None:
        return align_face(image, eyes_from_keypoints(keypoints), framing=framing,
                          min_side=min_side, max_side=max_side)
    return crop_box(image, box, margin=margin)


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
