"""Benchmark: ferkeras's ONNX Runtime predictor against the `fer` PyPI package, side by side.

Command (from the repository root; the shared data is read in place, never copied):

    .venv/bin/python bench/inference.py                      # model: bench/.work/export_fer2013
    .venv/bin/python bench/inference.py --model export/NAME  # any ferkeras export folder
    .venv/bin/python bench/inference.py --train-if-missing   # train + export the small model

Expected runtime on the shared 2-core CPU: about 4 minutes once the model, the crops and the
fer environment exist; first run adds the fer environment (~2 min, local package mirror) and,
with --train-if-missing, training (~5-10 min) and export (~1 min).

Protocol
- Images: `--n-crops` (500) FER2013 PublicTest faces, a seeded sample, written once as 48x48
  grey JPEGs (quality 95) to bench/.work/crops/ with their FER2013 and FERPlus-majority
  labels (joined by row position). Both libraries read the same JPEG files.
- Frames: `--n-frames` (20) 640x480 frames, each with one of those faces upscaled to 192 px
  on a textured background, written as PNGs to bench/.work/crops/frames/.
- ferkeras runs in this process (`ferkeras.inference.Predictor`, default options).
  fer runs in its own interpreter, `bench/.work/fer-venv` (this script creates it when missing:
  fer 25.10.3 `--no-deps` + tensorflow-cpu 2.21 + opencv-python-headless<5 + requests +
  Pillow + setuptools<81 for `pkg_resources`); it is started as
  `fer-venv/bin/python bench/inference.py --fer-worker CONFIG.json`, imports only this file's
  worker function (no ferkeras), and writes its timings and probabilities to JSON, merged here.
  fer configures logging and TensorFlow at import time, so it never shares a process with ours.
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
- Every timing: warm-up calls first, then repetitions; medians and p95. The load average
  is recorded before and after each side, since other jobs share the machine.
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


# ----------------------------------------------------------------------------- ferkeras side
def bench_ferkeras(model: pathlib.Path, manifest: dict, args) -> dict:
    import numpy as np
    from PIL import Image

    from ferkeras.inference import Predictor

    state = {"before": common.machine_state()}
    crops = np.stack([np.asarray(Image.open(CROPS / f).convert("L")) for f in manifest["files"]])
    batch = crops[..., None]  # (N, 48, 48, 1) uint8: the predictor's ready path
    frames = [np.asarray(Image.open(CROPS / f).convert("RGB")) for f in manifest["frames"]]
    t0 = time.perf_counter()
    predictor = Predictor(model)
    load_s = time.perf_counter() - t0
    ones = [batch[i:i + 1] for i in range(len(batch))]
    w, r = args.warmup, args.repeats

    lat = common.time_each(predictor.predict_crops, ones, warmup=w, repeats=r)
    lat_list = common.time_each(lambda c: predictor.predict_crops([c]), list(crops), warmup=w,
                                repeats=r)
    session = predictor._session  # the bare model call, no Python around it
    floats = [o.astype(np.float32) for o in ones]
    lat_raw = common.time_each(lambda x: session.run(["probs"], {"image": x}), floats,
                               warmup=w, repeats=r)
    one_thread = Predictor(model, threads=1)
    lat_t1 = common.time_each(one_thread.predict_crops, ones, warmup=w, repeats=r)

    through = common.time_block(lambda: predictor.predict_crops(batch), warmup=2,
                                repeats=args.throughput_repeats)
    big = Predictor(model, batch_size=256)
    through_256 = common.time_block(lambda: big.predict_crops(batch), warmup=2,
                                    repeats=args.throughput_repeats)

    found = [len(predictor.predict([f], detect=True)[0]) for f in frames]
    frame_t = common.time_each(lambda f: predictor.predict([f], detect=True), frames,
                               warmup=args.frame_warmup, repeats=args.frame_repeats)
    detect_t = common.time_each(lambda f: predictor.detector(f, color="rgb"), frames,
                                warmup=args.frame_warmup, repeats=args.frame_repeats)
    probs = predictor.predict_crops(batch)
    state["after"] = common.machine_state()
    n = len(batch)
    return {
        "load_s": round(load_s, 4),
        "latency_ms": common.summarize_ms(lat),
        "latency_list_input_ms": common.summarize_ms(lat_list),
        "latency_session_run_ms": common.summarize_ms(lat_raw),
        "latency_threads1_ms": common.summarize_ms(lat_t1),
        "throughput_batch64_ms": common.summarize_ms(through),
        "throughput_batch256_ms": common.summarize_ms(through_256),
        "faces_per_s_batch64": round(n / (common.percentile(through, 50)), 1),
        "faces_per_s_batch256": round(n / (common.percentile(through_256, 50)), 1),
        "frame_ms": common.summarize_ms(frame_t),
        "frame_detector_only_ms": common.summarize_ms(detect_t),
        "frames_with_face": sum(1 for k in found if k > 0), "frames": len(frames),
        "faces_found": found,
        "class_names": list(predictor.class_names),
        "probs": probs.tolist(),
        "machine": state,
    }


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
        "val_metrics": {k: v for k, v in val.items() if isinstance(v, (int, float))},
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


def run_fer(python: pathlib.Path, manifest: dict, args) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    config = {"crops": [str(CROPS / f) for f in manifest["files"]],
              "frames": [str(CROPS / f) for f in manifest["frames"]],
              "warmup": args.warmup, "repeats": args.repeats,
              "throughput_repeats": args.throughput_repeats,
              "frame_warmup": args.frame_warmup, "frame_repeats": args.frame_repeats,
              "out": str(WORK / "fer_result.json")}
    config_path = WORK / "fer_config.json"
    config_path.write_text(json.dumps(config))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    with open(WORK / "fer_worker.log", "w") as log:
        subprocess.run([str(python), str(pathlib.Path(__file__).resolve()), "--fer-worker",
                        str(config_path)], check=True, env=env, stdout=log,
                       stderr=subprocess.STDOUT)
    return json.loads((WORK / "fer_result.json").read_text())


def fer_worker(config_path: str) -> None:
    """Runs inside the fer environment: every fer measurement, written to config['out']."""
    state = {"before": common.machine_state()}
    cfg = json.loads(pathlib.Path(config_path).read_text())
    t0 = time.perf_counter()
    import cv2
    import numpy as np
    from fer.fer import FER

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    det = FER()  # defaults: Haar detection, quantized TFLite classifier
    init_s = time.perf_counter() - t0
    keras_det = FER(use_tflite=False)  # the .hdf5 Keras model
    model = FER._model_cache
    crops = [cv2.imread(p) for p in cfg["crops"]]  # BGR, as a fer user would pass them
    frames = [cv2.imread(p) for p in cfg["frames"]]
    box = [(0, 0, crops[0].shape[1], crops[0].shape[0])]
    # fer's own preprocessing of a whole-crop box: pad 40, box + 10 px offsets, 64x64, [-1, 1].
    faces = np.stack([_fer_preprocess(c) for c in crops])  # (N, 64, 64) float32
    w, r = cfg["warmup"], cfg["repeats"]

    def api(image, d=det):
        return d.detect_emotions(image, face_rectangles=box)

    out = {"import_s": round(import_s, 4), "init_s": round(init_s, 4)}
    out["latency_ms"] = common.summarize_ms(common.time_each(api, crops, warmup=w, repeats=r))
    keras_api = common.time_each(lambda c: api(c, keras_det), crops, warmup=w, repeats=r)
    out["latency_keras_api_ms"] = common.summarize_ms(keras_api)
    tfl = common.time_each(lambda f: det._classify_emotions(f[None]), faces, warmup=w,
                           repeats=r)
    out["latency_tflite_classify_ms"] = common.summarize_ms(tfl)
    keras_call = common.time_each(lambda f: model(f[None, ..., None], training=False), faces,
                                  warmup=w, repeats=r)
    out["latency_keras_call_ms"] = common.summarize_ms(keras_call)

    n, tr = len(crops), cfg["throughput_repeats"]
    loop = common.time_block(lambda: [api(c) for c in crops], warmup=1, repeats=tr)
    out["throughput_api_loop_ms"] = common.summarize_ms(loop)
    x = faces[..., None]
    batched = common.time_block(
        lambda: [model(x[i:i + 64], training=False) for i in range(0, n, 64)],
        warmup=2, repeats=tr)
    out["throughput_keras_batch64_ms"] = common.summarize_ms(batched)
    out["faces_per_s_api_loop"] = round(n / common.percentile(loop, 50), 1)
    out["faces_per_s_keras_batch64"] = round(n / common.percentile(batched, 50), 1)

    found = [len(det.detect_emotions(f)) for f in frames]
    fw, fr = cfg["frame_warmup"], cfg["frame_repeats"]
    out["frame_ms"] = common.summarize_ms(
        common.time_each(det.detect_emotions, frames, warmup=fw, repeats=fr))
    out["frame_detector_only_ms"] = common.summarize_ms(
        common.time_each(lambda f: det.find_faces(f), frames, warmup=fw, repeats=fr))
    out["frames_with_face"] = sum(1 for k in found if k > 0)
    out["faces_found"] = found

    out["class_names"] = list(FER._get_labels().values())
    out["probs_tflite"] = _captured_probs(det, crops, box)
    out["probs_keras"] = _captured_probs(keras_det, crops, box)
    out["model"] = {"hdf5_params": int(model.count_params()),
                    "input": "x".join(str(d) for d in model.input_shape[1:])}
    out["versions"] = common.package_versions(["fer", "tensorflow-cpu", "keras",
                                               "opencv-python-headless", "numpy"])
    interp = FER._tflite_interpreter_cache
    out["tflite_input"] = [int(v) for v in interp.get_input_details()[0]["shape"]]
    state["after"] = common.machine_state()
    out["machine"] = state
    pathlib.Path(cfg["out"]).write_text(json.dumps(out, default=common._jsonable))


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
        f"checkpoint, export `{m['path']}`. A quick CPU model, not a tuned one.",
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
             + ms(fk["latency_list_input_ms"]) + " list of (48, 48) crops",
             (ms(f["latency_keras_api_ms"]) + " API with Keras .hdf5; "
              + ms(f["latency_keras_call_ms"]) + " Keras model call") if fer else na),
        _row("throughput, faces/s", f"{fk['faces_per_s_batch64']:.0f} (batch 64), "
             f"{fk['faces_per_s_batch256']:.0f} (batch 256)",
             f"{f['faces_per_s_api_loop']:.0f} (API, one crop a call), "
             f"{f['faces_per_s_keras_batch64']:.0f} (Keras model, batch 64)" if fer else na),
        _row("640x480 frame, detection on", ms(fk["frame_ms"]), ms(f["frame_ms"]) if fer else na),
        _row("  of which face detection", ms(fk["frame_detector_only_ms"]),
             ms(f["frame_detector_only_ms"]) if fer else na),
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
    lines += ["", "## Notes", ""] + [f"- {note}" for note in out["notes"]]
    lines += ["", "## Versions", "", "```", json.dumps(out["versions"], indent=1), "```"]
    return "\n".join(lines)


def notes(out: dict) -> list[str]:
    fk, fer = out["ferkeras_detail"], out.get("fer_detail")
    items = [
        "Latency is per call with one face; the median and p95 are over "
        f"{fk['latency_ms']['n']} calls after {out['settings']['warmup']} warm-up calls, "
        "cycling over the crops. Throughput: the median of "
        f"{fk['throughput_batch64_ms']['n']} passes over all crops. Frames: "
        f"{fk['frame_ms']['n']} calls over {fk['frames']} frames.",
        "ferkeras uses default options (`threads=0`: ONNX Runtime's choice; batch 64; "
        "Haar on a copy shrunk to 320 px, min face 24 px there). fer uses its defaults "
        "(Haar on the full frame, min face 50 px; quantized TFLite classifier, one face per "
        "`invoke`).",
        "fer's start-up figure includes importing TensorFlow, which fer does at import time; "
        "ferkeras's CLI imports neither TensorFlow nor Keras.",
        "The ferkeras model picked its best epoch on PublicTest (its validation split), so "
        "its accuracy here is slightly optimistic. fer's bundled model comes from "
        "oarriaga/face_classification, trained on FER2013 with its own random split: some "
        "of these PublicTest images were probably in its training data.",
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
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2000)
    p.add_argument("--throughput-repeats", type=int, default=7)
    p.add_argument("--frame-warmup", type=int, default=10)
    p.add_argument("--frame-repeats", type=int, default=200)
    p.add_argument("--startup-repeats", type=int, default=5)
    p.add_argument("--fer-venv", default=str(FER_VENV.relative_to(ROOT)))
    p.add_argument("--skip-fer", action="store_true", help="measure ferkeras only")
    p.add_argument("--fer-worker", metavar="CONFIG", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.fer_worker:
        fer_worker(args.fer_worker)
        return 0
    os.chdir(ROOT)
    start = common.machine_state()
    t0 = time.time()
    model = ensure_model(args)
    manifest = make_crops(args.n_crops, args.seed, args.n_frames)
    fer_python = None if args.skip_fer else ensure_fer_venv(ROOT / args.fer_venv)
    print(f"ferkeras: measuring {model}", flush=True)
    fk = bench_ferkeras(model, manifest, args)
    fer = None
    if fer_python is not None:
        print("fer: measuring in its own interpreter", flush=True)
        fer = run_fer(fer_python, manifest, args)
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
        "ferkeras_detail": fk, "fer_detail": fer,
    }
    out["summary"] = summary(fk, fer, startup)
    out.update({k: v for k, v in out["summary"].items() if k != "targets"})
    out["targets"] = out["summary"]["targets"]
    out["wall_s"] = round(time.time() - t0, 1)
    out["notes"] = notes(out)
    paths = common.write_results("inference", out, markdown(out))
    print(json.dumps(out["summary"], indent=1))
    print("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
