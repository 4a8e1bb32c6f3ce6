"""Export a training run to SavedModel + ONNX, checked for parity, written atomically.

`export_run(run_dir, out)` rebuilds the network from the run's recipe and checkpoint, writes

  out/saved_model/   `serving_default`: image float32 (N, S, S, C) in [0, 255] -> probs, logits
  out/model.onnx     the same function through tf2onnx (dynamic batch)
  out/metadata.json  classes, input contract, recipe + hash, metrics, versions, parity
  out/README.md      what is in the folder and how to run `ferkeras predict`

into a temporary folder next to `out`, checks that ONNX Runtime and Keras agree on real
validation images, and only then renames it into place. TensorFlow is imported on call.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import pathlib
import shutil
import tempfile

import numpy as np

from ferkeras.deploy.inference import EXPORT_FORMAT, METADATA_FILE, ONNX_FILE

PARITY_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The run folder cannot be exported (missing files, inconsistent run, unsafe target)."""


class ParityError(ExportError):
    """ONNX Runtime and Keras disagree on the parity images by more than the tolerance."""


# ----------------------------------------------------------------------------- run folder
def open_finished_run(run_dir, *, weights: str = "best"):
    """`ferkeras.training.runs.open_run` of a finished run, its errors raised as ExportError."""
    from ferkeras.training.runs import RunFolderError, open_run

    try:
        return open_run(run_dir, weights=weights, finished=True)
    except RunFolderError as err:
        raise ExportError(str(err)) from None


# ----------------------------------------------------------------------------- parity images
def load_parity_images(recipe, *, image_size: int, channels: int, limit: int = 256):
    """Up to `limit` images (n, S, S, C) uint8, evenly spread over the validation split.

    Falls back to the test split when the validation split is empty.
    """
    try:
        from ferkeras.data.sources import load_bundle

        bundle = load_bundle(recipe.data, seed=recipe.seed)
    except Exception as err:  # any data problem becomes one line
        raise ExportError(f"cannot load the validation split for the parity check "
                          f"({type(err).__name__}: {err})") from None
    split = bundle.val if len(bundle.val.labels) else getattr(bundle, "test", None)
    if split is None or not len(split.labels):
        raise ExportError("the run's data has no validation or test images for the parity "
                          "check")
    count = len(split.labels)
    rows = np.unique(np.linspace(0, count - 1, min(limit, count)).round().astype(int))
    if split.images is not None:
        images = [split.images[i] for i in rows]
    else:
        from ferkeras.deploy.faces import read_image

        images = [read_image(split.paths[i]) for i in rows]
        images = [image[..., ::-1] for image in images if image is not None]  # BGR -> RGB
    return prepare_images(images, image_size=image_size, channels=channels)


def prepare_images(images, *, image_size: int, channels: int) -> np.ndarray:
    """(n, S, S, C) float32 from RGB/grey images of any size (as the predictor does)."""
    from ferkeras.deploy.faces import prepare_face

    out = [prepare_face(np.asarray(image), size=image_size, channels=channels, color="rgb")
           for image in images]
    if not out:
        raise ExportError("no parity images: the check needs at least one image")
    return np.stack(out)


def check_parity(network, onnx_path, images: np.ndarray, *, tolerance: float = PARITY_TOLERANCE,
                 batch_size: int = 64) -> dict:
    """Compare Keras and ONNX Runtime probabilities; raise ParityError above `tolerance`."""
    keras_probs = _keras_probs(network, images, batch_size=batch_size)
    onnx_probs = _onnx_probs(onnx_path, images, batch_size=batch_size)
    diff = float(np.max(np.abs(keras_probs - onnx_probs)))
    agree = float(np.mean(keras_probs.argmax(-1) == onnx_probs.argmax(-1)))
    result = {"images": int(len(images)), "max_abs_diff": diff, "tolerance": tolerance,
              "top1_agreement": agree, "passed": bool(diff <= tolerance)}
    if not result["passed"]:
        raise ParityError(f"parity check failed: ONNX Runtime and Keras probabilities differ by "
                          f"up to {diff:.3g} (> {tolerance:g}) on {len(images)} images")
    return result


def _keras_probs(network, images: np.ndarray, *, batch_size: int) -> np.ndarray:
    import tensorflow as tf

    out = [tf.nn.softmax(network(images[i:i + batch_size].astype(np.float32), training=False))
           .numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


def _onnx_probs(onnx_path, images: np.ndarray, *, batch_size: int) -> np.ndarray:
    from ferkeras.deploy.inference import create_session

    session = create_session(onnx_path)
    out = [session.run(["probs"], {"image": images[i:i + batch_size].astype(np.float32)})[0]
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


# ----------------------------------------------------------------------------- writing
def _serving_function(network, *, image_size: int, channels: int):
    import tensorflow as tf

    spec = tf.TensorSpec([None, image_size, image_size, channels], tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def serve(image):
        logits = network(image, training=False)
        return {"probs": tf.nn.softmax(logits, axis=-1), "logits": logits}

    return serve


@contextlib.contextmanager
def _quiet_tf2onnx():
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def write_onnx(serve, path: pathlib.Path, *, opset: int) -> None:
    """Convert the serving tf.function to ONNX with a batch dimension named 'batch'."""
    import onnx
    import tf2onnx

    with _quiet_tf2onnx():
        model, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                                 opset=opset)
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_metadata(run, *, opset: int, parity: dict, onnx_sha256: str) -> dict:
    """The metadata.json of an export of `run` (a `ferkeras.training.runs.Run`); see
    `ferkeras.deploy.inference.read_metadata`."""
    import ferkeras
    from ferkeras.pretrained import portable_path
    from ferkeras.training.recipe import recipe_hash

    info, metrics = run.info, run.metrics
    size, channels, names = int(info["image_size"]), int(info["channels"]), info["class_names"]
    return {
        "format": EXPORT_FORMAT,
        "ferkeras_version": ferkeras.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "class_names": list(names),
        "image_size": size,
        "channels": channels,
        "input": {
            "name": "image", "dtype": "float32", "shape": [None, size, size, channels],
            "layout": "NHWC", "color": "grey" if channels == 1 else "rgb",
            "value_range": [0, 255],
            "normalization": "none outside the model: its Rescaling layer maps [0, 255] to "
                             "the backbone's range",
            "preprocessing": "crop the face, resize to image_size x image_size, convert "
                             "channels, cast to float32",
        },
        "outputs": {
            "probs": {"name": "probs", "shape": [None, len(names)], "meaning": "softmax"},
            "logits": {"name": "logits", "shape": [None, len(names)], "meaning": "logits"},
        },
        "files": {"onnx": ONNX_FILE, "onnx_sha256": onnx_sha256, "onnx_opset": opset,
                  "saved_model": "saved_model", "saved_model_signature": "serving_default"},
        "recipe": _jsonable(run.recipe),
        "recipe_hash": recipe_hash(run.recipe),
        # Relative to the working directory (or the folder's name): no machine paths.
        "run_dir": portable_path(run.dir.resolve()),
        "weights": run.weights,
        "metrics": {"val": metrics.get("val"), "test": metrics.get("test"),
                    **({"decision": metrics["decision"]} if metrics.get("decision") else {})},
        "decision_rule": (metrics.get("decision") or {}).get("rule", "argmax"),
        "parity": parity,
    }


def _jsonable(recipe) -> dict:
    from ferkeras.training.recipe import recipe_to_dict

    return json.loads(json.dumps(recipe_to_dict(recipe), default=str))


def _readme(meta: dict, out: pathlib.Path) -> str:
    names = ", ".join(meta["class_names"])
    size, channels, k = meta["image_size"], meta["channels"], len(meta["class_names"])
    parity = meta["parity"]
    return f"""# ferkeras export `{out.name}`

Facial-expression classifier exported by ferkeras {meta["ferkeras_version"]} on
{meta["created"]} (recipe hash `{meta["recipe_hash"]}`, `{meta["weights"]}` checkpoint).

- `model.onnx`: ONNX, opset {meta["files"]["onnx_opset"]}; input `image`, outputs `probs`, `logits`.
- `saved_model/`: TensorFlow SavedModel, signature `serving_default`, same inputs and outputs.
- `metadata.json`: class names, input contract, training recipe, metrics, parity check.

Input `image`: float32 `(batch, {size}, {size}, {channels})`, {meta["input"]["color"]} pixels
in [0, 255], one face per image: crop, resize, no normalisation (it is inside the model).
Output `probs`: `(batch, {k})` probabilities over {names}.

Parity: ONNX Runtime and Keras probabilities differ by at most {parity["max_abs_diff"]:.2g}
on {parity["images"]} images ({parity["source"]}).

## Predict

Faces are found with OpenCV (`pip install 'ferkeras[webcam]'`); `--no-detect` takes each
image as a face crop. `--json` writes one object per face per line.

    ferkeras predict --model {out} photo.jpg folder/ --json
    ferkeras predict --model {out} --no-detect crops/
    ferkeras predict --model {out} --video clip.mp4 --every 5 --annotate annotated/
    ferkeras predict --model {out} --webcam 0

From Python, without TensorFlow:

    from ferkeras.deploy.inference import Predictor
    predictor = Predictor("{out}")
    faces = predictor.predict(rgb_image)         # [{{box, label, score, scores, box_source}}]
    fer_style = predictor.detect_emotions(bgr_image)  # fer's [{{box, emotions}}]
    probs = predictor.predict_crops(face_crops)  # (N, {k})
"""


def _replace_folder(tmp: pathlib.Path, out: pathlib.Path) -> None:
    """Move `tmp` to `out`, replacing an existing export only once `tmp` is complete."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, *, opset: int = 17,
               weights: str = "best", parity_images: np.ndarray | None = None,
               parity_limit: int = 256, tolerance: float = PARITY_TOLERANCE) -> dict:
    """Export a training run to `out` (see the module docstring); return its metadata.

    parity_images: (n, H, W[, C]) uint8 RGB/grey images for the parity check; None loads up
      to `parity_limit` images of the run's validation split.
    Raises ExportError (ParityError on a parity failure); `out` is then left as it was.
    """
    if opset < 13:
        raise ValueError(f"opset must be >= 13. Received: opset={opset}")
    out = pathlib.Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / METADATA_FILE).is_file())):
        raise ExportError(f"{out}: exists and is not a ferkeras export; refusing to replace it")
    run = open_finished_run(run_dir, weights=weights)
    size, channels = run.image_size, run.channels
    if parity_images is None:
        images = load_parity_images(run.recipe, image_size=size, channels=channels,
                                    limit=parity_limit)
        source = "validation split"
    else:
        images = prepare_images(parity_images[:parity_limit], image_size=size,
                                channels=channels)
        source = "given images"
    from ferkeras.noise.trusted import read_decision, wrap_network

    decision = read_decision(run.dir)
    network = wrap_network(run.build_network(), decision)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary folder
    try:
        import tensorflow as tf

        serve = _serving_function(network, image_size=size, channels=channels)
        tf.saved_model.save(network, str(tmp / "saved_model"),
                            signatures={"serving_default": serve})
        write_onnx(serve, tmp / ONNX_FILE, opset=opset)
        parity = check_parity(network, tmp / ONNX_FILE, images, tolerance=tolerance)
        parity["source"] = source
        meta = build_metadata(run, opset=opset, parity=parity,
                              onnx_sha256=_sha256(tmp / ONNX_FILE))
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "README.md").write_text(_readme(meta, out))
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta
