"""Run an exported model with ONNX Runtime: `Predictor(path).predict(images)`.

Keras-free and TensorFlow-free: importing this module imports numpy only; onnxruntime,
OpenCV and Pillow are imported when a predictor is built or an image is read. The export
folder is the contract (written by `ferkeras.deploy.export`):

  metadata.json   format "ferkeras-export/1", class names, input size/channels, ...
  model.onnx      input "image" float32 (N, S, S, C) in [0, 255] (RGB when C=3), outputs
                  "probs" (N, K) and "logits" (N, K)
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from ferkeras.deploy import faces as _faces
from ferkeras.deploy.session import create_session  # noqa: F401  (re-exported)

EXPORT_FORMAT = "ferkeras-export/1"
METADATA_FILE = "metadata.json"
ONNX_FILE = "model.onnx"
REQUIRED_KEYS = ("format", "class_names", "image_size", "channels", "input", "outputs")


class ModelFolderError(ValueError):
    """An export folder is missing, incomplete, or its metadata does not match the model."""


def read_metadata(path: str | os.PathLike) -> dict:
    """Read and check `metadata.json` of an export folder; raise ModelFolderError why not."""
    folder = pathlib.Path(path)
    meta_path = folder / METADATA_FILE
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: no such model folder")
    if not meta_path.is_file():
        raise ModelFolderError(f"{folder}: no {METADATA_FILE} (not a ferkeras export folder; "
                               "make one with `ferkeras export RUN_DIR --out DIR`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFolderError(f"{meta_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ModelFolderError(f"{meta_path}: expected a JSON object. Received: "
                               f"{type(meta).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise ModelFolderError(f"{meta_path}: missing keys {missing}")
    if meta["format"] != EXPORT_FORMAT:
        raise ModelFolderError(f"{meta_path}: unsupported format {meta['format']!r}; this "
                               f"ferkeras reads {EXPORT_FORMAT!r}")
    names = meta["class_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelFolderError(f"{meta_path}: class_names must be a non-empty list of "
                               f"strings. Received: {names!r}")
    if meta["channels"] not in (1, 3):
        raise ModelFolderError(f"{meta_path}: channels must be 1 or 3. Received: "
                               f"{meta['channels']!r}")
    size = meta["image_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ModelFolderError(f"{meta_path}: image_size must be a positive int. Received: "
                               f"{size!r}")
    try:
        meta["input"]["name"], meta["outputs"]["probs"]["name"]
    except (KeyError, TypeError):
        raise ModelFolderError(f"{meta_path}: needs input.name and outputs.probs.name") from None
    return meta


def _check_session(session, meta: dict, where: str) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    in_name, probs_name = meta["input"]["name"], meta["outputs"]["probs"]["name"]
    if in_name not in inputs:
        raise ModelFolderError(f"{where}: metadata input {in_name!r} is not a model input "
                               f"({sorted(inputs)})")
    if probs_name not in outputs:
        raise ModelFolderError(f"{where}: metadata output {probs_name!r} is not a model output "
                               f"({sorted(outputs)})")
    shape = list(inputs[in_name].shape)
    expected = [meta["image_size"], meta["image_size"], meta["channels"]]
    if len(shape) != 4 or shape[1:] != expected:
        raise ModelFolderError(f"{where}: model input shape {shape} does not match metadata "
                               f"image_size/channels (batch, {expected[0]}, {expected[1]}, "
                               f"{expected[2]})")
    classes = outputs[probs_name].shape[-1]
    if classes != len(meta["class_names"]):
        raise ModelFolderError(f"{where}: model outputs {classes} classes but metadata names "
                               f"{len(meta['class_names'])}")


# fer's `detect_emotions` keys, in its order, and the canonical names they stand for.
FER_EMOTIONS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happy",
                "sad": "sad", "surprise": "surprise", "neutral": "neutral"}
# How a face's box was obtained (the `box_source` of `face_dict` and the JSON lines).
BOX_DETECTED, BOX_WHOLE, BOX_FALLBACK = "detector", "whole_image", "whole_image_fallback"


class Predictor:
    """Facial-expression predictions from an export folder, with ONNX Runtime.

    path: the export folder (or its model.onnx / metadata.json); None: $FERKERAS_MODEL, else
      the model shipped with ferkeras (`ferkeras.pretrained`).
    threads: onnxruntime intra-op threads (0: onnxruntime's choice).
    batch_size: faces per model call; the input batch is preallocated once.
    align: faces with eye keypoints (BlazeFace's) are rotated so that the eyes are level and
      framed as FER2013 frames its faces (`faces.crop_face`, `alignment.FER2013_FRAMING`);
      False crops the box grown by `margin`, unrotated, as before.
    margin: boxes without keypoints (Haar cascades, given rectangles, align=False) are grown
      by this share of their size on each side before cropping.
    detector: called as `detector(image, color="rgb"|"bgr")`, returns a list of (x, y, w, h);
      a detector with a `detect` method returning `detection.Detection`s also gives eye
      keypoints. Default `faces.build_detector()` (BlazeFace, then staged Haar cascades where
      it finds none), built on first use.
    tight_crop_side: when the detector finds no face in an image whose longer side is at most
      this many pixels, the image is taken as a tight face crop and the whole of it is the
      face (`box_source` "whole_image_fallback"); 0 turns the fallback off.

    Preprocessing is training's (`faces.prepare_face`). Not thread-safe (one preallocated
    input batch): use one Predictor per thread.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, threads: int = 0,
                 batch_size: int = 64,
                 margin: float = 0.1, detector=None, providers=None,
                 tight_crop_side: int = 160, align: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0. Received: margin={margin}")
        if tight_crop_side < 0:
            raise ValueError(f"tight_crop_side must be >= 0. Received: "
                             f"tight_crop_side={tight_crop_side}")
        if path is None:
            from ferkeras.pretrained import default_model

            path, origin = default_model(None)
            if path is None:
                raise ModelFolderError(origin)
        folder = pathlib.Path(path)
        if folder.is_file():
            folder = folder.parent
        self.metadata = read_metadata(folder)
        onnx_path = folder / ONNX_FILE
        if not onnx_path.is_file():
            raise ModelFolderError(f"{folder}: no {ONNX_FILE}")
        try:
            self._session = create_session(onnx_path, threads=threads, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelFolderError(f"{onnx_path}: onnxruntime cannot load it: {first}") from None
        _check_session(self._session, self.metadata, str(folder))
        self.path = folder
        self.class_names = tuple(self.metadata["class_names"])
        self.image_size = int(self.metadata["image_size"])
        self.channels = int(self.metadata["channels"])
        self.batch_size = batch_size
        self.margin = margin
        self.align = bool(align)
        self.tight_crop_side = tight_crop_side
        self._detector = detector
        self._input_name = self.metadata["input"]["name"]
        self._output_names = [self.metadata["outputs"]["probs"]["name"]]
        size = self.image_size
        self._buffer = np.empty((batch_size, size, size, self.channels), np.float32)

    def __repr__(self):
        return (f"Predictor({str(self.path)!r}, classes={len(self.class_names)}, "
                f"input={self.image_size}x{self.image_size}x{self.channels})")

    @property
    def detector(self):
        if self._detector is None:
            self._detector = _faces.build_detector()
        return self._detector

    # ------------------------------------------------------------------------- crops
    def prepare_crop(self, crop: np.ndarray, *, color: str = "rgb") -> np.ndarray:
        """(S, S, C) float32 model input from an (h, w[, C]) face crop of any size, exactly as
        training prepares an image (`faces.prepare_face`)."""
        return _faces.prepare_face(crop, size=self.image_size, channels=self.channels,
                                   color=color)

    def predict_crops(self, crops, *, color: str = "rgb") -> np.ndarray:
        """Class probabilities (N, K) for N face crops, the whole of each crop being the face.

        crops: (N, S, S, C) array already at the model's size and channels (the fast path: no
          per-crop work), or a list/array of (h, w[, C]) crops of any size, uint8 or float in
          [0, 255]. color: channel order of 3-channel crops, 'rgb' or 'bgr'.
        """
        expected = (self.image_size, self.image_size, self.channels)
        ready = (isinstance(crops, np.ndarray) and crops.ndim == 4
                 and crops.shape[1:] == expected and (self.channels == 1 or color == "rgb"))
        if not ready:
            crops = [self.prepare_crop(c, color=color) for c in crops]
        count = len(crops)
        probs = np.empty((count, len(self.class_names)), np.float32)
        for start in range(0, count, self.batch_size):
            stop = min(start + self.batch_size, count)
            batch = self._buffer[: stop - start]
            if ready:
                batch[...] = crops[start:stop]
            else:
                for row, crop in enumerate(crops[start:stop]):
                    batch[row] = crop
            feed = {self._input_name: batch}
            probs[start:stop] = self._session.run(self._output_names, feed)[0]
        return probs

    # ------------------------------------------------------------------------- frames
    def find_faces(self, image: np.ndarray, *, detect: bool = True, color: str = "rgb"):
        """Boxes (x, y, w, h) of the faces in an image; the whole image when detect=False."""
        return self.locate_faces(image, detect=detect, color=color)[0]

    def locate_faces(self, image: np.ndarray, *, detect: bool = True, color: str = "rgb"):
        """(boxes, box_source): the faces' (x, y, w, h) boxes and how they were found.

        box_source: "detector"; "whole_image" with detect=False; "whole_image_fallback" when
        the detector found nothing in a tight crop (see `tight_crop_side`); boxes is empty
        (source "detector") when it found nothing in a larger image.
        """
        found, source = self.detect_faces(image, detect=detect, color=color)
        return [d.box for d in found], source

    def detect_faces(self, image: np.ndarray, *, detect: bool = True, color: str = "rgb"):
        """(detections, box_source) as `locate_faces`, with each face's keypoints where the
        detector gives them (`detection.Detection`)."""
        whole = [_faces.Detection((0, 0, int(image.shape[1]), int(image.shape[0])))]
        if not detect:
            return whole, BOX_WHOLE
        found = _faces.detect_faces(self.detector, image, color=color)
        if not found and max(image.shape[:2]) <= self.tight_crop_side:
            return whole, BOX_FALLBACK
        return found, BOX_DETECTED

    def crop(self, image: np.ndarray, detection, box_source: str = BOX_DETECTED) -> np.ndarray:
        """The crop of one detected face (`faces.crop_face`): aligned when it has keypoints
        and `align` is on, else its box grown by `margin` (none for whole-image boxes)."""
        if box_source != BOX_DETECTED:
            return _faces.crop_box(image, detection.box, margin=0.0)
        return _faces.crop_face(image, detection.box, detection.keypoints, align=self.align,
                                margin=self.margin, min_side=self.image_size,
                                max_side=4 * self.image_size)

    def face_dict(self, box, probs: np.ndarray, box_source: str = BOX_DETECTED) -> dict:
        """One face as in `predict` and the JSON output: box, label, score, scores, box_source."""
        top = int(np.argmax(probs))
        return {
            "box": [int(v) for v in box],
            "label": self.class_names[top],
            "score": float(probs[top]),
            "scores": {name: float(p) for name, p in zip(self.class_names, probs, strict=True)},
            "box_source": box_source,
        }

    def iter_predictions(self, items, *, detect: bool = True, color: str = "bgr",
                         max_pending: int | None = None):
        """Yield (key, image, faces) for each (key, image) of `items`, in order.

        Faces of several images share model calls (up to `batch_size` faces); `max_pending`
        caps how many images wait for a batch (1 for live sources such as a webcam).
        faces: list of dicts from `face_dict`, empty when no face was found.
        """
        max_pending = max_pending or self.batch_size
        pending, crops = [], []
        for key, image in items:
            image = _check_image(image)
            found, source = self.detect_faces(image, detect=detect, color=color)
            for detection in found:
                crops.append(self.prepare_crop(self.crop(image, detection, source), color=color))
            pending.append((key, image, [d.box for d in found], source))
            if len(crops) >= self.batch_size or len(pending) >= max_pending:
                yield from self._flush(pending, crops)
                pending, crops = [], []
        yield from self._flush(pending, crops)

    def _flush(self, pending, crops):
        probs = self.predict_crops(np.stack(crops)) if crops else None
        row = 0
        for key, image, boxes, source in pending:
            found = [self.face_dict(box, probs[row + i], source) for i, box in enumerate(boxes)]
            row += len(boxes)
            yield key, image, found

    def predict(self, image, *, detect: bool = True, color: str = "rgb") -> list[dict]:
        """The faces of ONE image, with their expression probabilities.

        image: an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 array of any size; a batch
          is refused (use `predict_batch`). color: 'rgb' (NumPy/Pillow) or 'bgr' (OpenCV).
        detect: find faces with the detector; False takes the whole image as one face.
        Returns a list of dicts {box: [x, y, w, h], label, score, scores: {class: prob},
        box_source}, one per face; an empty list when no face was found (with detect=True
        and an image larger than `tight_crop_side`: pass detect=False for face crops).
        """
        if isinstance(image, (list, tuple)):
            raise ValueError(f"predict takes one (H, W[, C]) image; for several, call "
                             f"predict_batch. Received: a {type(image).__name__} of "
                             f"{len(image)}")
        image = np.asarray(image)
        if image.ndim == 4 or image.dtype == object:
            raise ValueError(f"predict takes one (H, W[, C]) image; for several, call "
                             f"predict_batch. Received: shape={image.shape}")
        return self.predict_batch([image], detect=detect, color=color)[0]

    def predict_batch(self, images, *, detect: bool = True,
                      color: str = "rgb") -> list[list[dict]]:
        """`predict` for each of several images: a list of images, or an (N, H, W[, C])
        array. Returns one list of faces per image, in order."""
        if isinstance(images, np.ndarray) and images.ndim not in (3, 4):
            raise ValueError(f"predict_batch takes a list of images or an (N, H, W[, C]) "
                             f"array. Received: shape={images.shape}")
        items = ((i, image) for i, image in enumerate(images))
        return [found for _, _, found in self.iter_predictions(items, detect=detect,
                                                                 color=color)]

    def detect_emotions(self, img, face_rectangles=None, *, color: str = "bgr",
                        include_contempt: bool = False) -> list[dict]:
        """The `fer` package's `FER().detect_emotions` output, so code written for fer runs.

        img: one image, BGR by default as fer expects (`cv2.imread`). face_rectangles:
          optional (x, y, w, h) boxes, as in fer: they skip detection.
        Returns [{"box": [x, y, w, h], "emotions": {angry, disgust, fear, happy, sad,
        surprise, neutral}}]. fer has no contempt: an 8-class model's contempt probability is
        dropped and the other seven are renormalised to sum to 1, unless include_contempt
        adds it as an eighth key. Scores are not rounded (fer rounds to 2 decimals).
        """
        image = _check_image(np.asarray(img))
        if face_rectangles is None:
            faces = self.predict(image, color=color)
        else:
            boxes = [tuple(int(v) for v in box) for box in face_rectangles]
            crops = [self.prepare_crop(_faces.crop_box(image, b, margin=self.margin),
                                       color=color) for b in boxes]
            probs = self.predict_crops(np.stack(crops)) if crops else []
            faces = [self.face_dict(b, p) for b, p in zip(boxes, probs, strict=True)]
        return [{"box": face["box"], "emotions": to_fer_emotions(
            face["scores"], include_contempt=include_contempt)} for face in faces]


def to_fer_emotions(scores: dict, *, include_contempt: bool = False) -> dict:
    """{fer name: prob} in fer's key order from ferkeras's {class name: prob}.

    Classes fer lacks (contempt) are dropped and the rest renormalised, unless
    include_contempt keeps contempt as an extra key (then nothing is renormalised).
    """
    out = {fer: float(scores.get(name, 0.0)) for fer, name in FER_EMOTIONS.items()}
    if include_contempt and "contempt" in scores:
        out["contempt"] = float(scores["contempt"])
        return out
    total = sum(out.values())
    return {k: v / total for k, v in out.items()} if total > 0 else out


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"Expected one (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image. "
                         f"Received: shape={image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"Expected a non-empty image. Received: shape={image.shape}")
    return image
