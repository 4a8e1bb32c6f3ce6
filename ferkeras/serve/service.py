"""The model behind `ferkeras serve`: one Predictor (one onnxruntime session) per worker
process, run off the event loop, one call at a time.

`Predictor` is not thread-safe (it owns one preallocated input batch), so inference holds a
lock; decoding runs beside it in other threads. A request that gives up (timeout) while
its inference thread still runs leaves the lock held until that thread ends, so the next
request never shares the predictor with it.
"""

from __future__ import annotations

import hashlib
import pathlib
import threading
import time

import numpy as np

from ferkeras.serve.limits import RequestError


def model_id(metadata: dict, onnx_path: pathlib.Path) -> tuple[str, str]:
    """(id, sha256) of a model: its recipe name (else folder name) @ 12 hex of the ONNX
    file's sha256, computed from the file itself."""
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    recipe = metadata.get("recipe") if isinstance(metadata.get("recipe"), dict) else {}
    name = recipe.get("name") or onnx_path.parent.name
    return f"{name}@{digest[:12]}", digest


def card_summary(metadata: dict, folder: pathlib.Path) -> dict:
    """The model card's headline facts: title, created, test accuracy, quantization."""
    card = folder / "MODEL_CARD.md"
    title = None
    if card.is_file():
        for line in card.read_text(errors="replace").splitlines():
            if line.startswith("# "):
                title = line[2:].strip()
                break
    weights = metadata.get("weights") or "best"
    test = ((metadata.get("metrics") or {}).get("test") or {}).get(weights) or {}
    quant = metadata.get("quantization") or {}
    return {
        "title": title,
        "card_file": "MODEL_CARD.md" if card.is_file() else None,
        "created": metadata.get("created"),
        "trained_with_ferkeras": metadata.get("ferkeras_version"),
        "test_accuracy": test.get("accuracy"),
        "test_balanced_accuracy": test.get("balanced_accuracy"),
        "test_n": test.get("n"),
        "quantization": quant.get("kind"),
        "decision_rule": metadata.get("decision_rule"),
    }


class ModelService:
    """A loaded Predictor, its description for /v1/model, and the lock around it."""

    def __init__(self, predictor, *, detector_name: str | None, detect: bool = True):
        import ferkeras

        self.predictor = predictor
        self.detect = detect
        self._lock = threading.Lock()
        folder = pathlib.Path(getattr(predictor, "path", "."))
        meta = dict(getattr(predictor, "metadata", {}) or {})
        onnx = folder / "model.onnx"
        self.id, sha = model_id(meta, onnx) if onnx.is_file() else (folder.name, None)
        self.info = {
            "id": self.id,
            "classes": list(predictor.class_names),
            "input": {"image_size": int(predictor.image_size),
                      "channels": int(predictor.channels),
                      "color": (meta.get("input") or {}).get("color"),
                      "layout": (meta.get("input") or {}).get("layout")},
            "onnx_sha256": sha,
            "detector": detector_name,
            "detect_by_default": detect,
            "card": card_summary(meta, folder),
            "ferkeras_version": ferkeras.__version__,
        }

    @classmethod
    def load(cls, model: str | None, *, detector: str, detect: bool = True,
             threads: int = 0):
        """Build the Predictor (the shipped model when `model` is None) and warm it up.

        detector: a name from `ferkeras.deploy.faces.list_detectors()`. detect: whether requests
        look for faces unless they say otherwise (False: every image is a face crop).
        """
        import ferkeras
        from ferkeras.deploy.faces import build_detector
        from ferkeras.pretrained import default_model

        path, origin = default_model(model)
        if path is None:
            raise ValueError(origin)
        predictor = ferkeras.Predictor(path, threads=threads,
                                       detector=build_detector(detector))
        service = cls(predictor, detector_name=detector, detect=detect)
        service.warm_up()
        return service

    def warm_up(self) -> None:
        """One prediction on a blank frame, so the first request pays no lazy set-up."""
        blank = np.zeros((64, 64, 3), np.uint8)
        self.predict([blank], detect=True, deadline=None)

    def predict(self, images: list[np.ndarray], *, detect: bool,
                deadline: float | None) -> list[list[dict]]:
        """Faces of each RGB image (`Predictor.predict_batch`), under the lock. Blocking:
        call from a worker thread. 503 when the lock is not free before `deadline`
        (time.monotonic())."""
        wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._lock.acquire(timeout=wait):
            raise RequestError(503, "timeout", "the model stayed busy past the request "
                               "timeout; retry later", headers={"Retry-After": "1"})
        try:
            return self.predictor.predict_batch(images, detect=detect, color="rgb")
        finally:
            self._lock.release()
