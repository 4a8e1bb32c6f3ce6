"""Benchmark: ferkeras's ONNX Runtime predictor against the `fer` PyPI package, side by side.

Command (from the repository root; the shared data is read in place, never copied):

    .venv/bin/python bench/inference.py                      # model: bench/.work/export_fer2013
    .venv/bin/python bench/inference.py --model export/NAME  # any ferkeras export folder
    .venv/bin/python bench/inference.py --train-if-missing   # train + export the small model
    .venv/bin/python bench/inference.py --also-model bench/.work/export_fer2013_w16  # + others

Expected runtime on the shared 2-core CPU: about 6 minutes once the model, the crops and the
fer environment exist (10 rounds); the first run adds the crops (~40 s), the fer environment
(~2 min, local package mirror) and, with --train-if-missing, training (~10 min) and export.

Protocol
- Images: `--n-crops` (500) FER2013 PublicTest faces, a seeded sample, written once as 48x48
  grey JPEGs (quality 95) to bench/.work/crops/ with their FER2013 and FERPlus-majority
  labels (joined by row position). Both libraries read the same JPEG files.
- Frames: `--n-frames` (20) 640x480 frames, each with one of those faces upscaled to 192 px
  on a textured background, written as PNGs to bench/.work/crops/frames/.
- ferkeras runs in this process (`ferkeras.inference.Predictor`, default options).
  fer runs in its own interpreter, `bench/.work/fer-venv` (this script creates it when missing:
  fer 25.10.3 `--no-deps` + tensorflow-cpu 2.21 + opencv-python-headless<5 + requests +
  Pillow + setuptools<81 for `pkg_resources`; torch/facenet-pytorch are only for fer's MTCNN
  detector, not used here). It runs `bench/inference.py --fer-worker CONFIG.json`, which
  imports only the worker function (no ferkeras) and answers timing requests as JSON lines.
  fer configures logging and TensorFlow at import time, so it never shares our process.
- Interleaving: `--rounds` (10) rounds; in each, every measurement runs as a block on each
  side in turn (order rotated per round), so both libraries see the same machine load.
- Latency (batch 1, detection off, per face): ferkeras `predict_crops` on one (1, 48, 48, 1)
  crop; fer `FER().detect_emotions(img, face_rectangles=[(0, 0, 48, 48)])` on one 48x48 BGR
  crop (its public API; default quantized TFLite classifier at 64x64). Also the bare model
  calls: ONNX Runtime `session.run`, fer's `_classify_emotions` (TFLite) and its Keras .hdf5
  model (`FER(use_tflite=False)`).
- Throughput: all crops per call. ferkeras `predict_crops(array)` (batch 64); fer has no
  batch API for crops, so its figures are its API in a loop and, as its best case, the Keras
  .hdf5 model called on batches of 64 preprocessed faces.
- Frames (detection on): ferkeras `predict([frame])` (Haar on a 320-px copy); fer
  `detect_emotions(frame)` (Haar on the full frame). One frame per call, as from a webcam.
- Start-up: wall time of `ferkeras predict --help` and `ferkeras predict --model DIR
  frame.jpg` as subprocesses; for fer, a `python -c` that imports it, builds FER() and calls
  `top_emotion` on the same frame (fer installs no command-line tool).
- Accuracy on the crops vs FER2013 labels and vs FERPlus majority (rows that have one),
  from the raw probabilities (fer's API rounds scores to 2 decimals, so its raw classifier
  output is captured instead).
- Every block starts with untimed warm-up calls; figures are medians and p95 over all
  rounds. Frames also record process CPU time (all threads), less sensitive to other jobs.
  The load average is recorded at start, per round and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py; stdlib only)

ROOT = common.ROOT
DATA = ROOT.parent / "shared" / "data"
FER_CSV = DATA / "fer2013" / "fer2013.csv.gz"
FERPLUS_CSV = DATA / "ferplus" / "fer2013new.csv"
WORK = common.WORK / "inference"
CROPS = common.WORK / "crops"
FER_VENV = common.WORK / "fer-venv"
RUN_DIR = common.WORK / "fer2013_small"
DEFAULT_MODEL = common.WORK / "export_fer2013"
TRAIN_ARGS = ["train", "recipes/fer2013.yaml", "--run-dir", str(RUN_DIR.relative_to(ROOT)),
              "--set", "cycle.enabled=false", "--set", "train.epochs=2",
              "--set", "train.ema_decay=0", "--set", "model.backbone=small_cnn",
              "--set", "model.width=32", "-q"]
FER_PIP = [["fer==25.10.3", "--no-deps"],
           ["tensorflow-cpu==2.21.0", "opencv-python-headless<5", "requests", "Pillow",
            "setuptools<81"]]
# fer's class names and FERPlus/ferkeras spellings -> FER2013 ids.
FER2013_IDS = {"angry": 0, "anger": 0, "disgust": 1, "fear": 2, "happy": 3, "happiness": 3,
               "sad": 4, "sadness": 4, "surprise": 5, "neutral": 6}
TARGETS = {"speedup_vs_fer": 3.0, "latency_ms_p50": 2.0, "frame_ms_detect": 15.0}


# ----------------------------------------------------------------------------- inputs
def ensure_model(args) -> pathlib.Path:
    """The export folder to measure; train and export the small model when asked to."""
    model = pathlib.Path(args.model)
    if (model / "metadata.json").is_file():
        return model
    train = " ".join([".venv/bin/ferkeras", *TRAIN_ARGS])
    export = f".venv/bin/ferkeras export {RUN_DIR.relative_to(ROOT)} --out {model}"
    if not args.train_if_missing:
        sys.exit(f"error: {model}: no ferkeras export folder. Make one (about 10 min here):\n"
                 f"  {train}\n  {export}\nor rerun with --train-if-missing.")
    ferkeras = str(ROOT / ".venv" / "bin" / "ferkeras")
    if not (RUN_DIR / "checkpoints" / "best.weights.h5").is_file():
        print(f"training: {train}", flush=True)
        subprocess.run([ferkeras, *TRAIN_ARGS], cwd=ROOT, check=True)
    print(f"exporting: {export}", flush=True)
    subprocess.run([ferkeras, "export", str(RUN_DIR), "--out", str(model)], cwd=ROOT,
                   check=True)
    return model


def make_crops(n: int, seed: int, n_frames: int) -> dict:
    """Write the sampled PublicTest crops and the 640x480 frames once; return the manifest."""
    import numpy as np
    from PIL import Image

    manifest_path = CROPS / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if (manifest["n"], manifest["seed"], manifest["n_frames"]) == (n, seed, n_frames):
            return manifest
    from ferkeras.data.fer2013 import ferplus_labels, read_fer2013_csv, read_ferplus_csv
    from ferkeras.labels import CLASS_SETS

    print(f"crops: reading {FER_CSV} and {FERPLUS_CSV}", flush=True)
    table, plus = read_fer2013_csv(FER_CSV), read_ferplus_csv(FERPLUS_CSV)
    majority, _ = ferplus_labels(plus.votes, class_names=CLASS_SETS["fer2013"],
                                 mode="majority")
    public = np.flatnonzero(table.usage == "PublicTest")
    rows = np.sort(np.random.default_rng(seed).choice(public, size=n, replace=False))
    CROPS.mkdir(parents=True, exist_ok=True)
    files = []
    for row in rows:
        name = f"{row:05d}.jpg"
        Image.fromarray(table.images[row]).save(CROPS / name, quality=95)
        files.append(name)
    frames = write_frames([table.images[r] for r in rows[:n_frames]], seed=seed)
    manifest = {"n": n, "seed": seed, "n_frames": n_frames, "source": str(FER_CSV),
                "rows": rows.tolist(), "files": files, "frames": frames,
                "fer2013_labels": table.emotions[rows].astype(int).tolist(),
                "ferplus_majority": majority[rows].astype(int).tolist()}
    manifest_path.write_text(json.dumps(manifest) + "\n")
    return manifest


def write_frames(faces, *, seed: int, side: int = 192) -> list[str]:
    """640x480 RGB frames, each a face upscaled to `side` px on a smooth, noisy background."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed + 1)
    out = CROPS / "frames"
    out.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    names = []
    for i, face in enumerate(faces):
        tint = rng.uniform(60, 200, size=3).astype(np.float32)
        background = tint + 40 * np.sin(xx[..., None] / rng.uniform(40, 120)) * np.cos(
            yy[..., None] / rng.uniform(40, 120)) + rng.normal(0, 8, (480, 640, 3))
        frame = np.clip(background, 0, 255).astype(np.uint8)
        big = np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.BICUBIC))
        x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        frame[y:y + side, x:x + side] = big[..., None]
        name = f"frame_{i:02d}.png"
        Image.fromarray(frame).save(out / name)
        names.append(f"frames/{name}")
    return names


# ----------------------------------------------------------------------------- interleaving
# One row per measurement: side role -> (task, calls per block). Blocks of the sides take
# turns, and the order of the sides rotates every round, so all of them see the same
# (varying) machine load. Each block starts with a few untimed calls.
SCHEDULE = [
    {"ferkeras": ("latency", 200), "also": ("latency", 200), "fer": ("latency", 200)},
    {"ferkeras": ("latency_session_run", 200), "fer": ("latency_tflite_classify", 200)},
    {"ferkeras": ("latency_threads1", 200), "also": ("latency_threads1", 200),
     "fer": ("latency_keras_api", 10)},
    {"ferkeras": ("latency_list_input", 200), "fer": ("latency_keras_call", 10)},
    {"ferkeras": ("throughput_batch64", 1), "also": ("throughput_batch64", 1),
     "fer": ("throughput_api_loop", 1)},
    {"ferkeras": ("throughput_batch256", 1), "fer": ("throughput_keras_batch64", 1)},
    {"ferkeras": ("frame", 20), "fer": ("frame", 20)},
    {"ferkeras": ("frame_detector", 20), "fer": ("frame_detector", 20)},
    # What-ifs for ferkeras: ONNX Runtime's intra-op threads spin after each run and take
    # the cores the next frame's face detection needs.
    {"ferkeras": ("latency_nospin", 200)},
    {"ferkeras": ("frame_threads1", 20)},
    {"ferkeras": ("frame_nospin", 20)},
    # ... and a cheaper Haar pyramid (scale step 1.2 instead of 1.1), with threads=1.
    {"ferkeras": ("frame_tuned", 20)},
]


def interleave(sides: dict, *, rounds: int) -> dict:
    """{side: {task: [seconds, ...]}} and the load average after each round.

    sides: name -> (role, object with `run(task, calls, warmup, offset)`); role picks the
    SCHEDULE column ('ferkeras', 'also' or 'fer').
    """
    times = {name: {} for name in sides}
    loads = []
    names = list(sides)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for row in SCHEDULE:
            for name in order:
                role, side = sides[name]
                if role not in row:
                    continue
                task, calls = row[role]
                warmup = max(1, calls // 10) if r else max(2, calls // 2)
                got = side.run(task, calls, warmup, r * calls)
                for key, values in got.items():
                    times[name].setdefault(task + key, []).extend(values)
        loads.append(os.getloadavg()[0])
        print(f"  round {r + 1}/{rounds}, load {loads[-1]:.2f}", flush=True)
    return {"times": times, "loadavg_1min_per_round": [round(v, 2) for v in loads]}


def summarize_side(times: dict, n_crops: int) -> dict:
    """Milliseconds per task; faces/s for the throughput tasks (a pass is all the crops)."""
    out = {f"{task}_ms": common.summarize_ms(values) for task, values in times.items()}
    for task, values in times.items():
        if task.startswith("throughput"):
            out[f"faces_per_s_{task[len('throughput_'):]}"] = round(
                n_crops / common.percentile(values, 50), 1)
    return out


# ----------------------------------------------------------------------------- ferkeras side
class FerkerasSide:
    """ferkeras's predictor in this process, with every task of SCHEDULE's ferkeras column."""

    def __init__(self, model: pathlib.Path, manifest: dict):
        import numpy as np
        from PIL import Image

        from ferkeras.inference import Predictor

        crops = np.stack([np.asarray(Image.open(CROPS / f).convert("L"))
                          for f in manifest["files"]])
        self.batch = crops[..., None]  # (N, 48, 48, 1) uint8: the predictor's ready path
        self.frames = [np.asarray(Image.open(CROPS / f).convert("RGB"))
                       for f in manifest["frames"]]
        start = time.perf_counter()
        self.predictor = Predictor(model)
        self.load_s = time.perf_counter() - start
        one_thread, big = Predictor(model, threads=1), Predictor(model, batch_size=256)
        nospin = Predictor(model)
        nospin._session = _session_without_spinning(model / "model.onnx")
        from ferkeras.faces import HaarFaceDetector

        self.tuned = Predictor(model, threads=1, detector=HaarFaceDetector(scale_factor=1.2))
        session = self.predictor._session  # the bare model call, no Python around it
        p = self.predictor
        ones = [self.batch[i:i + 1] for i in range(len(self.batch))]
        floats = [o.astype(np.float32) for o in ones]
        self.tasks = {
            "latency": (p.predict_crops, ones),
            "latency_session_run": (lambda x: session.run(["probs"], {"image": x}), floats),
            "latency_threads1": (one_thread.predict_crops, ones),
            "latency_list_input": (lambda c: p.predict_crops([c]), list(crops)),
            "throughput_batch64": (lambda _: p.predict_crops(self.batch), [None]),
            "throughput_batch256": (lambda _: big.predict_crops(self.batch), [None]),
            "frame": (lambda f: p.predict([f], detect=True), self.frames),
            "frame_detector": (lambda f: p.detector(f, color="rgb"), self.frames),
            "latency_nospin": (nospin.predict_crops, ones),
            "frame_threads1": (lambda f: one_thread.predict([f], detect=True), self.frames),
            "frame_nospin": (lambda f: nospin.predict([f], detect=True), self.frames),
            "frame_tuned": (lambda f: self.tuned.predict([f], detect=True), self.frames),
        }

    def run(self, task, calls, warmup, offset) -> dict:
        """{'': wall seconds per call, '_cpu': process CPU seconds per call (frames only)}."""
        fn, items = self.tasks[task]
        cpu = [] if task.startswith("frame") else None
        wall = common.time_each(fn, items, warmup=warmup, repeats=calls, offset=offset, cpu=cpu)
        return {"": wall, "_cpu": cpu} if cpu is not None else {"": wall}

    def finish(self) -> dict:
        found = [len(self.predictor.predict([f], detect=True)[0]) for f in self.frames]
        tuned = [len(self.tuned.predict([f], detect=True)[0]) for f in self.frames]
        return {"load_s": round(self.load_s, 4), "frames": len(self.frames),
                "frames_with_face": sum(1 for k in found if k > 0), "faces_found": found,
                "frames_with_face_tuned": sum(1 for k in tuned if k > 0),
                "class_names": list(self.predictor.class_names),
                "probs": self.predictor.predict_crops(self.batch).tolist()}


def _session_without_spinning(onnx_path):
    """The what-if session with session.intra_op.allow_spinning=0. Since that became
    `ferkeras.inference.create_session`'s default, this is the library's own session."""
    from ferkeras.inference import create_session

    return create_session(onnx_path)


def model_info(model: pathlib.Path) -> dict:
    import onnx

    meta = json.loads((model / "metadata.json").read_text())
    graph = onnx.load(str(model / "model.onnx")).graph
    params = sum(int(_prod(t.dims)) for t in graph.initializer)
    recipe = meta.get("recipe", {})
    val = (meta.get("metrics") or {}).get("val") or {}
    return {
        "path": str(model), "backbone": recipe.get("model", {}).get("backbone"),
        "width": recipe.get("model", {}).get("width"),
        "epochs": recipe.get("train", {}).get("epochs"),
        "loss": recipe.get("train", {}).get("loss"),
        "input": f"{meta['image_size']}x{meta['image_size']}x{meta['channels']}",
        "onnx_params": params, "onnx_bytes": (model / "model.onnx").stat().st_size,
        "recipe_hash": meta.get("recipe_hash"), "weights": meta.get("weights"),
        "val_metrics": {k: v for k, v in (val.get("best") or val.get("last") or {}).items()
                        if k in ("n", "accuracy", "balanced_accuracy", "macro_f1")},
    }


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


# ----------------------------------------------------------------------------- fer side
def ensure_fer_venv(venv: pathlib.Path) -> pathlib.Path:
    """The fer environment's python, creating the environment when missing (once)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import fer.fer, cv2, tensorflow"]
    if python.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"fer: creating {venv} (pip log: {venv}.pip.log)", flush=True)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    with open(f"{venv}.pip.log", "a") as log:
        for packages in FER_PIP:
            subprocess.run([str(python), "-m", "pip", "install", *packages], check=True,
                           stdout=log, stderr=subprocess.STDOUT)
    subprocess.run(probe, check=True)
    return python


class FerProcess:
    """The fer worker in its own interpreter, driven one JSON line per request."""

    def __init__(self, python: pathlib.Path, manifest: dict):
        WORK.mkdir(parents=True, exist_ok=True)
        config = {"crops": [str(CROPS / f) for f in manifest["files"]],
                  "frames": [str(CROPS / f) for f in manifest["frames"]]}
        config_path = WORK / "fer_config.json"
        config_path.write_text(json.dumps(config))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
        self.log_path = WORK / "fer_worker.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 -- closed in finish()
        self.proc = subprocess.Popen(
            [str(python), str(pathlib.Path(__file__).resolve()), "--fer-worker",
             str(config_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, text=True, env=env)
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line.startswith(REPLY):
            self.proc.kill()
            raise RuntimeError(f"the fer worker stopped (see {self.log_path}): {line!r}")
        return json.loads(line[len(REPLY):])

    def _ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(self, task, calls, warmup, offset) -> dict:
        return self._ask(op="run", task=task, calls=calls, warmup=warmup, offset=offset)

    def finish(self) -> dict:
        out = {**self.hello, **self._ask(op="finish")}
        self.proc.wait(timeout=60)
        self._log.close()
        return out


REPLY = "@@ "


def fer_worker(config_path: str) -> None:
    """Runs inside the fer environment: answers FerProcess's requests on stdin/stdout.

    fd 1 is pointed at stderr first, so that nothing fer or TensorFlow prints can reach
    the reply channel (a private copy of the original stdout).
    """
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(value: dict) -> None:
        replies.write(REPLY + json.dumps(value, default=common._jsonable) + "\n")
        replies.flush()

    cfg = json.loads(pathlib.Path(config_path).read_text())
    start = time.perf_counter()
    import cv2
    import numpy as np
    from fer.fer import FER

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    det = FER()  # defaults: Haar detection, quantized TFLite classifier
    init_s = time.perf_counter() - start
    keras_det = FER(use_tflite=False)  # the .hdf5 Keras model
    model = FER._model_cache
    crops = [cv2.imread(p) for p in cfg["crops"]]  # BGR, as a fer user would pass them
    frames = [cv2.imread(p) for p in cfg["frames"]]
    box = [(0, 0, crops[0].shape[1], crops[0].shape[0])]
    # fer's own preprocessing of a whole-crop box: pad 40, box + 10 px offsets, 64x64, [-1, 1].
    faces = np.stack([_fer_preprocess(c) for c in crops])  # (N, 64, 64) float32
    batch = faces[..., None]

    def api(image, d=det):
        return d.detect_emotions(image, face_rectangles=box)

    tasks = {
        "latency": (api, crops),
        "latency_tflite_classify": (lambda f: det._classify_emotions(f[None]), list(faces)),
        "latency_keras_api": (lambda c: api(c, keras_det), crops),
        "latency_keras_call": (lambda f: model(f[None], training=False), list(batch)),
        "throughput_api_loop": (lambda _: [api(c) for c in crops], [None]),
        "throughput_keras_batch64": (
            lambda _: [model(batch[i:i + 64], training=False)
                       for i in range(0, len(batch), 64)], [None]),
        "frame": (det.detect_emotions, frames),
        "frame_detector": (det.find_faces, frames),
    }
    reply({"import_s": round(import_s, 4), "init_s": round(init_s, 4)})
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "run":
            fn, items = tasks[request["task"]]
            cpu = [] if request["task"].startswith("frame") else None
            wall = common.time_each(fn, items, warmup=request["warmup"],
                                    repeats=request["calls"], offset=request["offset"], cpu=cpu)
            reply({"": wall, "_cpu": cpu} if cpu is not None else {"": wall})
            continue
        found = [len(det.detect_emotions(f)) for f in frames]
        interp = FER._tflite_interpreter_cache
        reply({"frames_with_face": sum(1 for k in found if k > 0), "faces_found": found,
               "class_names": list(FER._get_labels().values()),
               "probs_tflite": _captured_probs(det, crops, box),
               "probs_keras": _captured_probs(keras_det, crops, box),
               "model": {"hdf5_params": int(model.count_params()),
                         "input": "x".join(str(d) for d in model.input_shape[1:])},
               "tflite_input": [int(v) for v in interp.get_input_details()[0]["shape"]],
               "versions": common.package_versions(
                   ["fer", "tensorflow-cpu", "keras", "opencv-python-headless", "numpy"])})
        return


def _fer_preprocess(bgr):
    """fer's detect_emotions preprocessing for a box covering the whole image (see fer.py)."""
    import cv2
    import numpy as np

    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    mean = cv2.mean(grey[-2:])[0]
    padded = cv2.copyMakeBorder(grey, 40, 40, 40, 40, cv2.BORDER_CONSTANT,
                                value=[mean, mean, mean])
    h, w = grey.shape
    face = padded[40 - 10:40 + h + 10, 40 - 10:40 + w + 10]
    face = cv2.resize(face, (64, 64)).astype(np.float32)
    return (face / 255.0 - 0.5) * 2.0


def _captured_probs(det, crops, box) -> list:
    """Raw classifier outputs (N, 7) through fer's API, captured before it rounds them."""
    import numpy as np

    captured = []
    original = det._classify_emotions

    def capture(gray_faces):
        result = np.asarray(original(gray_faces))
        captured.append(result[0])
        return result

    det._classify_emotions = capture
    try:
        for crop in crops:
            det.detect_emotions(crop, face_rectangles=box)
    finally:
        del det._classify_emotions
    return np.stack(captured).tolist()


# ----------------------------------------------------------------------------- start-up
def startup_times(model: pathlib.Path, frame: pathlib.Path, fer_python, repeats: int) -> dict:
    ferkeras = str(ROOT / ".venv" / "bin" / "ferkeras")
    commands = {
        "ferkeras_help": [ferkeras, "predict", "--help"],
        "ferkeras_predict_one": [ferkeras, "predict", "--model", str(model), str(frame)],
    }
    if fer_python is not None:
        code = ("import cv2; from fer.fer import FER; "
                f"print(FER().top_emotion(cv2.imread({str(frame)!r})))")
        commands["fer_top_emotion_one"] = [str(fer_python), "-c", code]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = {}
    for name, cmd in commands.items():
        times, last = [], None
        for i in range(repeats + 1):  # the first run warms the file cache and is dropped
            start = time.perf_counter()
            last = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            if i:
                times.append(time.perf_counter() - start)
            if last.returncode:
                raise RuntimeError(f"{' '.join(cmd)} failed: {last.stderr[-500:]}")
        out[name] = {"median_s": round(common.percentile(times, 50), 3),
                     "min_s": round(min(times), 3), "runs": len(times),
                     "stdout_tail": last.stdout.strip().splitlines()[-1][:200]}
    return out


# ----------------------------------------------------------------------------- scoring
def accuracy(probs, class_names, manifest) -> dict:
    import numpy as np

    ids = np.array([FER2013_IDS[c] for c in class_names])
    pred = ids[np.asarray(probs).argmax(axis=1)]
    fer13 = np.asarray(manifest["fer2013_labels"])
    plus = np.asarray(manifest["ferplus_majority"])
    has = plus >= 0
    return {
        "acc_fer2013": round(float(np.mean(pred == fer13)), 4),
        "balanced_acc_fer2013": _balanced(pred, fer13),
        "acc_ferplus_majority": round(float(np.mean(pred[has] == plus[has])), 4),
        "balanced_acc_ferplus_majority": _balanced(pred[has], plus[has]),
        "n": int(len(pred)), "n_ferplus_majority": int(has.sum()),
        "pred": pred.tolist(),
    }


def _balanced(pred, labels) -> float:
    import numpy as np

    recalls = [np.mean(pred[labels == c] == c) for c in np.unique(labels)]
    return round(float(np.mean(recalls)), 4)


def summary(fk: dict, fer: dict | None, startup: dict) -> dict:
    """The headline figures and the targets."""
    out = {"ferkeras": {
        "latency_ms_p50": fk["latency_ms"]["p50"], "latency_ms_p95": fk["latency_ms"]["p95"],
        "faces_per_s": max(fk["faces_per_s_batch64"], fk["faces_per_s_batch256"]),
        "frame_ms_detect": fk["frame_ms"]["p50"], "frame_ms_detect_p95": fk["frame_ms"]["p95"],
        "frame_cpu_ms_detect": fk["frame_cpu_ms"]["p50"],
        "frame_ms_detect_threads1": fk["frame_threads1_ms"]["p50"],
        "frame_ms_detect_tuned": fk["frame_tuned_ms"]["p50"],
        "startup_s": startup["ferkeras_predict_one"]["median_s"],
        "startup_help_s": startup["ferkeras_help"]["median_s"],
    }}
    targets = {
        "latency_ms_p50<=2": {"value": fk["latency_ms"]["p50"],
                              "met": fk["latency_ms"]["p50"] <= TARGETS["latency_ms_p50"]},
        "frame_ms_detect<=15": {"value": fk["frame_ms"]["p50"],
                                "met": fk["frame_ms"]["p50"] <= TARGETS["frame_ms_detect"]},
    }
    if fer is not None:
        out["fer"] = {
            "latency_ms_p50": fer["latency_ms"]["p50"],
            "latency_ms_p95": fer["latency_ms"]["p95"],
            "faces_per_s": max(fer["faces_per_s_api_loop"], fer["faces_per_s_keras_batch64"]),
            "frame_ms_detect": fer["frame_ms"]["p50"],
            "frame_cpu_ms_detect": fer["frame_cpu_ms"]["p50"],
            "startup_s": startup.get("fer_top_emotion_one", {}).get("median_s"),
        }
        speedup = fer["latency_ms"]["p50"] / fk["latency_ms"]["p50"]
        targets["latency_speedup_vs_fer>=3"] = {
            "value": round(speedup, 2), "met": speedup >= TARGETS["speedup_vs_fer"]}
    out["targets"] = targets
    return out


# ----------------------------------------------------------------------------- report
def _row(name, fk, fer) -> str:
    return f"| {name} | {fk} | {fer} |"


def markdown(out: dict) -> str:
    fk, fer, s = out["ferkeras_detail"], out.get("fer_detail"), out
    m = out["model"]
    yes = {True: "**met**", False: "**not met**"}
    lines = [
        "# Inference: ferkeras (ONNX Runtime) vs the `fer` package",
        "",
        f"Command: `{out['command']}`",
        "",
        f"Load average (1/5/15 min) at start {out['machine']['start']['loadavg_1_5_15']}, "
        f"at end {out['machine']['end']['loadavg_1_5_15']} on "
        f"{out['machine']['start']['cpu_count']} cores: other jobs shared the CPU, so every "
        "time here is longer than on an idle machine. Per side: ferkeras "
        f"{fk['machine']['before']['loadavg_1_5_15'][0]} -> "
        f"{fk['machine']['after']['loadavg_1_5_15'][0]}"
        + (f", fer {fer['machine']['before']['loadavg_1_5_15'][0]} -> "
           f"{fer['machine']['after']['loadavg_1_5_15'][0]}" if fer else "") + ".",
        "",
        f"ferkeras model: `{m['backbone']}` width {m['width']}, input {m['input']}, "
        f"{m['onnx_params']:,} parameters in the ONNX graph ({m['onnx_bytes'] / 1e6:.2f} MB), "
        f"{m['epochs']} epochs on FER2013 Training ({m['loss']} loss), `{m['weights']}` "
        f"checkpoint, export `{m['path']}`; PublicTest accuracy "
        f"{100 * m['val_metrics'].get('accuracy', float('nan')):.1f}% (FER2013 labels, all "
        f"{m['val_metrics'].get('n')} rows). A quick CPU model, not a tuned one.",
    ]
    if fer:
        lines += ["", f"fer model: fer {fer['versions']['fer']}, its bundled classifier "
                  f"(Keras .hdf5 {fer['model']['hdf5_params']:,} parameters, input "
                  f"{fer['model']['input']}; default path: its quantized TFLite copy, input "
                  f"{fer['tflite_input']}), Haar detection."]
    lines += ["", "## Targets", "", "| target | value | |", "|---|---|---|"]
    for name, t in s["summary"]["targets"].items():
        lines.append(f"| {name} | {t['value']} | {yes[t['met']]} |")
    lines += ["", "## Speed (median; p95 in brackets)", "",
              "| measure | ferkeras | fer |", "|---|---|---|"]

    def ms(d):
        return f"{d['p50']:.3f} ms ({d['p95']:.3f})"

    f = fer or {}
    na = "—"
    lines += [
        _row("per face, batch 1, detection off, public API", ms(fk["latency_ms"]),
             ms(f["latency_ms"]) if fer else na),
        _row("per face, bare model call", ms(fk["latency_session_run_ms"]) + " `session.run`",
             (ms(f["latency_tflite_classify_ms"]) + " TFLite `_classify_emotions`") if fer
             else na),
        _row("per face, other paths", ms(fk["latency_threads1_ms"]) + " threads=1; "
             + ms(fk["latency_nospin_ms"]) + " no spinning (what-if); "
             + ms(fk["latency_list_input_ms"]) + " list of (48, 48) crops",
             (ms(f["latency_keras_api_ms"]) + " API with Keras .hdf5; "
              + ms(f["latency_keras_call_ms"]) + " Keras model call") if fer else na),
        _row("throughput, faces/s", f"{fk['faces_per_s_batch64']:.0f} (batch 64), "
             f"{fk['faces_per_s_batch256']:.0f} (batch 256)",
             f"{f['faces_per_s_api_loop']:.0f} (API, one crop a call), "
             f"{f['faces_per_s_keras_batch64']:.0f} (Keras model, batch 64)" if fer else na),
        _row("640x480 frame, detection on", ms(fk["frame_ms"]), ms(f["frame_ms"]) if fer else na),
        _row("  of which face detection", ms(fk["frame_detector_ms"]),
             ms(f["frame_detector_ms"]) if fer else na),
        _row("  CPU time per frame (process, all threads)", ms(fk["frame_cpu_ms"]),
             ms(f["frame_cpu_ms"]) if fer else na),
        _row("  frame with threads=1 / with allow_spinning=0 (what-ifs)",
             ms(fk["frame_threads1_ms"]) + " / " + ms(fk["frame_nospin_ms"]), na),
        _row("  frame with threads=1 + Haar scale_factor=1.2 (what-if)",
             ms(fk["frame_tuned_ms"]) + f", CPU {fk['frame_tuned_cpu_ms']['p50']:.1f} ms; "
             f"faces found in {fk['frames_with_face_tuned']}/{fk['frames']} frames", na),
        _row("frames where a face was found", f"{fk['frames_with_face']}/{fk['frames']}",
             f"{f['frames_with_face']}/{fk['frames']}" if fer else na),
        _row("start-up: `predict --help`", f"{s['startup']['ferkeras_help']['median_s']:.2f} s",
             "— (no CLI)"),
        _row("start-up + one frame", f"{s['startup']['ferkeras_predict_one']['median_s']:.2f} s"
             " `ferkeras predict --model DIR frame.jpg`",
             (f"{s['startup']['fer_top_emotion_one']['median_s']:.2f} s "
              "`python -c 'FER().top_emotion(img)'`") if fer else na),
        _row("model load in-process", f"{fk['load_s']:.2f} s `Predictor(path)`",
             f"{f['import_s']:.2f} s import + {f['init_s']:.2f} s `FER()`" if fer else na),
    ]
    if out.get("other_models"):
        lines += ["", "## Other ferkeras exports (same rounds, interleaved)", "",
                  "| export | model | params | latency p50 (p95) | threads=1 p50 (p95) | "
                  "faces/s (batch 64) |", "|---|---|---|---|---|---|",
                  f"| {m['path']} (main) | {m['backbone']} w{m['width']} | "
                  f"{m['onnx_params']:,} | {ms(fk['latency_ms'])} | "
                  f"{ms(fk['latency_threads1_ms'])} | {fk['faces_per_s_batch64']:.0f} |"]
        for path, o in out["other_models"].items():
            om = o["model"]
            lines.append(f"| {path} | {om['backbone']} w{om['width']}, {om['epochs']} epochs "
                         f"| {om['onnx_params']:,} | {ms(o['latency_ms'])} | "
                         f"{ms(o['latency_threads1_ms'])} | {o['faces_per_s_batch64']:.0f} |")
    acc = out["accuracy"]
    n = acc["ferkeras"]["n"]
    lines += ["", f"## Accuracy on the {n} PublicTest crops (%)", "",
              "| model | vs FER2013 | balanced | vs FERPlus majority "
              f"(n={acc['ferkeras']['n_ferplus_majority']}) | balanced |", "|---|---|---|---|---|"]
    for name, a in acc.items():
        if not isinstance(a, dict) or "acc_fer2013" not in a:
            continue
        lines.append(f"| {name} | {100 * a['acc_fer2013']:.1f} | "
                     f"{100 * a['balanced_acc_fer2013']:.1f} | "
                     f"{100 * a['acc_ferplus_majority']:.1f} | "
                     f"{100 * a['balanced_acc_ferplus_majority']:.1f} |")
    if "agreement_ferkeras_fer" in acc:
        lines += ["", f"Top-1 agreement ferkeras vs fer (TFLite): "
                  f"{100 * acc['agreement_ferkeras_fer']:.1f}%."]
    lines += ["", "## Findings", ""] + [f"- {item}" for item in out["findings"]]
    lines += ["", "## Notes", ""] + [f"- {note}" for note in out["notes"]]
    lines += ["", "## Versions", "", "```", json.dumps(out["versions"], indent=1), "```"]
    return "\n".join(lines)


def findings(out: dict) -> list[str]:
    """What the figures say, with the numbers; no claim beyond them."""
    fk, fer = out["ferkeras_detail"], out.get("fer_detail")
    lat = fk["latency_ms"]["p50"]
    items = []
    if fer:
        items.append(
            f"Per-face latency: ferkeras {lat:.2f} ms vs fer {fer['latency_ms']['p50']:.2f} ms "
            f"(ratio {fer['latency_ms']['p50'] / lat:.2f}; the target asks for >= 3). fer's "
            "default classifier is a 58k-parameter mini-Xception, run from a quantized TFLite file "
            "(93 kB); "
            f"the measured ferkeras model has {out['model']['onnx_params']:,} float32 "
            "parameters and runs its first conv block at full 48x48 resolution. Per face, "
            "the model call is the whole cost on both sides (see the bare-call row).")
    for path, o in out.get("other_models", {}).items():
        items.append(f"Model size decides the latency: the {o['model']['backbone']} width "
                     f"{o['model']['width']} export ({o['model']['onnx_params']:,} params) "
                     f"runs at {o['latency_ms']['p50']:.2f} ms per face and "
                     f"{o['faces_per_s_batch64']:.0f} faces/s (`{path}`).")
    if fk["faces_per_s_batch64"] < 1e3 / lat:
        items.append(f"Batching does not pay for this model here: {fk['faces_per_s_batch64']:.0f} "
                     f"faces/s at batch 64 vs {1e3 / lat:.0f}/s implied by batch-1 latency.")
    items.append(
        f"Frames: {fk['frame_ms']['p50']:.1f} ms with default options vs "
        f"{fk['frame_threads1_ms']['p50']:.1f} ms with threads=1 and "
        f"{fk['frame_nospin_ms']['p50']:.1f} ms with `session.intra_op.allow_spinning=0`: "
        "after each run ONNX Runtime's extra intra-op thread spin-waits and takes the CPU "
        "the next frame's Haar detection needs (2 cores). The detector alone costs "
        f"{fk['frame_detector_cpu_ms']['p50']:.1f} ms of CPU per frame at 320 px, so "
        "<= 15 ms per frame is out of reach on this loaded machine with the default cascade "
        f"settings; scale_factor 1.2 brings it to {fk['frame_tuned_ms']['p50']:.1f} ms "
        f"(faces found in {fk['frames_with_face_tuned']}/{fk['frames']} frames vs "
        f"{fk['frames_with_face']}/{fk['frames']}).")
    if fer:
        items.append(
            f"Start-up: `ferkeras predict` on one image takes "
            f"{out['startup']['ferkeras_predict_one']['median_s']:.2f} s in all; fer needs "
            f"{out['startup']['fer_top_emotion_one']['median_s']:.2f} s, mostly importing "
            "TensorFlow.")
    return items


def notes(out: dict) -> list[str]:
    fk, fer = out["ferkeras_detail"], out.get("fer_detail")
    items = [
        "Sides interleaved: each of "
        f"{out['settings']['rounds']} rounds runs a block of every measurement on every side "
        "in turn (order rotated per round), so both libraries see the same load; 1-min load "
        f"after each round: {out['loadavg_1min_per_round']}. Latency: "
        f"{fk['latency_ms']['n']} single-face calls per side, cycling over the crops; "
        f"throughput: median of {fk['throughput_batch64_ms']['n']} passes over all crops; "
        f"frames: {fk['frame_ms']['n']} calls over {fk['frames']} frames. Each block starts "
        "with untimed warm-up calls.",
        "ferkeras uses default options (`threads=0`: ONNX Runtime's choice; batch 64; "
        "Haar on a copy shrunk to 320 px, min face 24 px there). fer uses its defaults "
        "(Haar on the full frame, min face 50 px; quantized TFLite classifier, one face per "
        "`invoke`).",
        "fer's start-up figure includes importing TensorFlow, which fer does at import time; "
        "ferkeras's CLI imports neither TensorFlow nor Keras.",
        "Both models picked their checkpoint on PublicTest and neither trained on it: "
        "ferkeras's uses PublicTest as its validation split; fer's model is the mini-Xception "
        "(64x64 grey input) of oarriaga/face_classification, which fer credits and whose "
        "`train_emotion_classifier.py` / `split_data` keeps the first 80% of the CSV "
        "(exactly the 28,709 Training rows) for training and validates (checkpoint on "
        "val_loss, early stopping) on the rest, PublicTest + PrivateTest.",
        "Crops are 48x48 JPEGs (quality 95) written from the CSV pixels; frames are the "
        "first crops upscaled to 192 px and pasted on a synthetic textured 640x480 "
        "background (bench/.work/crops/frames/).",
    ]
    if fer is None:
        items.append("fer was not measured (--skip-fer or its environment failed).")
    return items


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL.relative_to(ROOT)),
                   help="ferkeras export folder (default: %(default)s)")
    p.add_argument("--train-if-missing", action="store_true",
                   help="train and export the small FER2013 model when --model is missing")
    p.add_argument("--n-crops", type=int, default=500)
    p.add_argument("--n-frames", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=10,
                   help="interleaved rounds; per round: 200 latency calls, 1 throughput pass, "
                        "20 frames per side (10 calls for fer's slow Keras paths)")
    p.add_argument("--also-model", action="append", default=[], metavar="DIR",
                   help="another ferkeras export to time (latency, throughput); repeatable")
    p.add_argument("--startup-repeats", type=int, default=5)
    p.add_argument("--fer-venv", default=str(FER_VENV.relative_to(ROOT)))
    p.add_argument("--skip-fer", action="store_true", help="measure ferkeras only")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the markdown (findings, notes) from results/inference.json")
    p.add_argument("--fer-worker", metavar="CONFIG", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.fer_worker:
        fer_worker(args.fer_worker)
        return 0
    os.chdir(ROOT)
    if args.report_only:
        out = json.loads((common.RESULTS / "inference.json").read_text())
        out["notes"], out["findings"] = notes(out), findings(out)
        common.write_results("inference", out, markdown(out))
        return 0
    start = common.machine_state()
    t0 = time.time()
    model = ensure_model(args)
    manifest = make_crops(args.n_crops, args.seed, args.n_frames)
    fer_python = None if args.skip_fer else ensure_fer_venv(ROOT / args.fer_venv)
    print(f"measuring, {args.rounds} interleaved rounds: ferkeras {model}"
          + ("" if fer_python is None else " and fer"), flush=True)
    fk_side = FerkerasSide(model, manifest)
    sides = {"ferkeras": ("ferkeras", fk_side)}
    also = {str(m): FerkerasSide(pathlib.Path(m), manifest) for m in args.also_model}
    sides.update({f"ferkeras:{m}": ("also", side) for m, side in also.items()})
    fer_proc = None if fer_python is None else FerProcess(fer_python, manifest)
    if fer_proc is not None:
        sides["fer"] = ("fer", fer_proc)
    state = {"before": common.machine_state()}
    measured = interleave(sides, rounds=args.rounds)
    state["after"] = common.machine_state()
    n = args.n_crops
    fk = {**summarize_side(measured["times"]["ferkeras"], n), **fk_side.finish(),
          "machine": state}
    fer = None
    if fer_proc is not None:
        fer = {**summarize_side(measured["times"]["fer"], n), **fer_proc.finish(),
               "machine": state}
    others = {m: {**summarize_side(measured["times"][f"ferkeras:{m}"], n),
                  "model": model_info(pathlib.Path(m))} for m in also}
    print("start-up: subprocesses", flush=True)
    startup = startup_times(model, CROPS / manifest["frames"][0], fer_python,
                            args.startup_repeats)
    acc = {"ferkeras": accuracy(fk.pop("probs"), fk["class_names"], manifest)}
    if fer is not None:
        acc["fer (TFLite, default)"] = accuracy(fer.pop("probs_tflite"), fer["class_names"],
                                                manifest)
        acc["fer (Keras .hdf5)"] = accuracy(fer.pop("probs_keras"), fer["class_names"],
                                            manifest)
        a, b = acc["ferkeras"]["pred"], acc["fer (TFLite, default)"]["pred"]
        same = sum(x == y for x, y in zip(a, b, strict=True))
        acc["agreement_ferkeras_fer"] = round(same / len(a), 4)
    for a in acc.values():
        if isinstance(a, dict):
            a.pop("pred")
    versions = {"ferkeras_env": common.package_versions(
        ["ferkeras", "onnxruntime", "numpy", "opencv-python-headless", "tensorflow", "keras"]),
        "fer_env": fer["versions"] if fer else None}
    out = {
        "command": common.command_line(),
        "machine": {"start": start, "end": common.machine_state()},
        "wall_s": None,
        "model": model_info(model),
        "settings": {k: v for k, v in vars(args).items() if k != "fer_worker"},
        "images": {"crops": args.n_crops, "frames": args.n_frames, "seed": args.seed,
                   "folder": str(CROPS.relative_to(ROOT))},
        "startup": startup, "accuracy": acc, "versions": versions,
        "ferkeras_detail": fk, "fer_detail": fer, "other_models": others,
        "loadavg_1min_per_round": measured["loadavg_1min_per_round"],
    }
    out["summary"] = summary(fk, fer, startup)
    out.update({k: v for k, v in out["summary"].items() if k != "targets"})
    out["targets"] = out["summary"]["targets"]
    out["wall_s"] = round(time.time() - t0, 1)
    out["notes"] = notes(out)
    out["findings"] = findings(out)
    paths = common.write_results("inference", out, markdown(out))
    print(json.dumps(out["summary"], indent=1))
    print("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
