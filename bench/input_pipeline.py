"""Benchmark: can the tf.data input pipeline feed a 112x112 model from AffectNet-like JPEGs?

Command (from the repository root):

    .venv/bin/python bench/input_pipeline.py
    .venv/bin/python bench/input_pipeline.py --models mobilenetv3small --n-images 1000  # shorter

Expected runtime on the shared 2-core CPU (load 5-9): about 19 minutes (image generation ~2 min,
once; pipeline modes ~4 min; diagnosis ~3 min; ResNet-18 at width 64 takes ~45 s per
64-image step, ~8 min for its 10 steps). `--models mobilenetv3small` cuts it to ~10 minutes;
`--report-only` rebuilds the markdown from the JSON.

Protocol
- Images: `--n-images` (2000) synthetic 224x224 RGB JPEGs (quality 90) in
  bench/.work/affectnet_like/, written once: a procedurally drawn face
  (`ferkeras.data.synthetic.draw_faces`, 160 px, 8 AffectNet classes) tinted to a random skin
  tone and pasted at a random place on a coloured, noisy 224x224 background; its face box
  (x, y, 160, 160) is recorded, like AffectNet's box per image.
- Pipeline: the project's own `ferkeras.data.pipeline.make_dataset(Split(paths=..., boxes=...,
  labels=...), DataConfig(image_size=112, channels=3), batch_size=64, shuffle=True, augment=...)`:
  read file -> decode JPEG -> crop the box -> resize to 112 -> augment, in parallel
  (AUTOTUNE). Modes: augment none / weak / strong, and views=True (the FixMatch weak + strong
  pair of each sample). One epoch is iterated first (tracing, file cache), then `--epochs`
  timed epochs; the figure is images (samples) per second, median over epochs. The JPEGs sit
  in the OS page cache after the first epoch, so "from disk" means file read + decode, as
  on a machine whose RAM holds the data set; AffectNet's 280k images at ~15 kB would too.
- Model: `ferkeras.models.build_network` + `SupervisedTrainer` (balanced softmax, AdamW),
  112x112x3, batch `--batch-size`, trained with `fit` on one in-memory batch repeated (no
  input cost); images/s = batch / median step time after warm-up steps.
- End to end: the same fit, fed by the strong-augmentation pipeline over the JPEGs. Both
  share the same 2 cores, so this is the figure that shows whether the pipeline slows
  training down: compare it with the in-memory rate.
- The load average is recorded before and after each measurement: other jobs share the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402  (bench/common.py; stdlib only)

ROOT = common.ROOT
IMAGES = common.WORK / "affectnet_like"
SIDE, FACE = 224, 160
MODES = ("none", "weak", "strong", "views")
MODEL_WIDTH = {"resnet18": 64}  # recipes/affectnet.yaml; keras.applications ignore width


# ----------------------------------------------------------------------------- images
def make_images(n: int, seed: int, folder: pathlib.Path = IMAGES) -> dict:
    """Write the JPEGs into `folder` once; return the manifest {files, boxes, labels}."""
    import numpy as np
    from PIL import Image

    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if (manifest["n"], manifest["seed"]) == (n, seed):
            return manifest
    from ferkeras.data.synthetic import draw_faces
    from ferkeras.labels import CLASS_SETS

    print(f"images: drawing {n} faces into {folder}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = CLASS_SETS["affectnet8"]
    labels = rng.integers(0, len(classes), n)
    files, boxes = [], []
    for start in range(0, n, 250):
        stop = min(start + 250, n)
        faces = draw_faces(labels[start:stop], classes, size=FACE, seed=seed + start)
        for i, face in enumerate(faces, start=start):
            skin = rng.uniform([0.75, 0.55, 0.4], [1.1, 0.9, 0.75]).astype(np.float32)
            canvas = rng.uniform(0, 255, 3) + rng.normal(0, 25, (SIDE, SIDE, 3))
            x, y = (int(v) for v in rng.integers(0, SIDE - FACE, 2))
            canvas[y:y + FACE, x:x + FACE] = face[..., None] * skin
            name = f"{i:05d}.jpg"
            Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(folder / name,
                                                                           quality=90)
            files.append(name)
            boxes.append([x, y, FACE, FACE])
    manifest = {"n": n, "seed": seed, "files": files, "boxes": boxes,
                "labels": labels.astype(int).tolist(), "classes": list(classes),
                "bytes": sum((folder / f).stat().st_size for f in files)}
    manifest_path.write_text(json.dumps(manifest) + "\n")
    return manifest


def make_split(manifest: dict, folder: pathlib.Path = IMAGES):
    import numpy as np

    from ferkeras.data.table import Split

    return Split(labels=np.asarray(manifest["labels"], np.int32),
                 paths=np.asarray([str(folder / f) for f in manifest["files"]]),
                 boxes=np.asarray(manifest["boxes"], np.int32))


def data_config():
    from ferkeras.training.recipe import DataConfig

    return DataConfig(source="affectnet", class_set="affectnet8", image_size=112, channels=3)


# ----------------------------------------------------------------------------- pipeline
def time_pipeline(split, mode: str, *, batch_size: int, epochs: int) -> dict:
    """Samples/s of make_dataset in `mode`: one untimed epoch, then `epochs` timed ones."""
    from ferkeras.data.pipeline import make_dataset

    before = common.machine_state()["loadavg_1_5_15"]
    ds = make_dataset(split, data_config(), batch_size=batch_size, shuffle=True,
                      augment="none" if mode == "views" else mode, views=mode == "views")
    rates, first = [], None
    for epoch in range(epochs + 1):
        start, count = time.perf_counter(), 0
        for batch in ds:
            count += int(batch[1].shape[0])
        elapsed = time.perf_counter() - start
        if epoch == 0:
            first = elapsed
        else:
            rates.append(count / elapsed)
    images = batch[0]
    shape = [list(t.shape) for t in images] if mode == "views" else list(images.shape)
    return {"samples_per_s": round(common.percentile(rates, 50), 1),
            "samples_per_s_all": [round(r, 1) for r in rates], "first_epoch_s": round(first, 2),
            "batch_shape": shape, "loadavg_before": before,
            "loadavg_after": common.machine_state()["loadavg_1_5_15"]}


# ----------------------------------------------------------------------------- diagnosis
def diagnose_strong(*, n: int = 256, passes: int = 2, seed: int = 0) -> dict:
    """Samples/s of each piece of the strong augmentation on in-memory 112x112x3 images.

    Same tf.data shape as the pipeline (per-image map, AUTOTUNE, batch 64), no decoding:
    identity, weak, cutout, ferkeras's RandAugment (`tf.switch_case`: only the drawn ops
    run), `keras.layers.RandAugment` for comparison, strong, and each of the Keras layer's
    sub-layers alone (what it computes for every slot).
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from ferkeras.data import augment as aug

    images = np.random.default_rng(seed).uniform(0, 255, (n, 112, 112, 3)).astype(np.float32)
    keras_ra = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5, seed=seed)

    def rate(fn) -> float:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices(images), seeds))
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(64).prefetch(2)
        for _ in ds:  # trace + warm up
            pass
        start = time.perf_counter()
        for _ in range(passes):
            for _ in ds:
                pass
        return round(passes * n / (time.perf_counter() - start), 1)

    pieces = {
        "identity": lambda im, s: im,
        "weak": aug.weak_augment,
        "cutout": aug.cutout,
        "RandAugment (ferkeras, tf.switch_case)": aug.rand_augment,
        "keras.layers.RandAugment (2 ops)": lambda im, s: keras_ra(im),
        "strong (weak + RandAugment + cutout)": aug.strong_augment,
    }
    out = {"loadavg_before": common.machine_state()["loadavg_1_5_15"], "pieces": {},
           "randaugment_layers": {}}
    for name, fn in pieces.items():
        out["pieces"][name] = rate(fn)
        print(f"  {name}: {out['pieces'][name]} samples/s", flush=True)
    for name in keras_ra._AUGMENT_LAYERS:
        layer = getattr(keras_ra, name)
        out["randaugment_layers"][name] = rate(lambda im, s, layer=layer: layer(im))
    per_op_ms = sum(1e3 / r for r in out["randaugment_layers"].values())
    out["sum_of_layers_ms_per_image"] = round(per_op_ms, 2)
    out["loadavg_after"] = common.machine_state()["loadavg_1_5_15"]
    return out


# ----------------------------------------------------------------------------- model
class _StepTimes:
    """A keras callback factory: wall time of each training batch."""

    @staticmethod
    def make():
        import keras

        class StepTimes(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times, self._start = [], None

            def on_train_batch_begin(self, batch, logs=None):
                self._start = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter() - self._start)

        return StepTimes()


def build_trainer(backbone: str, *, seed: int = 0):
    import keras

    from ferkeras.models import build_network
    from ferkeras.trainers.supervised import SupervisedTrainer
    from ferkeras.training.recipe import ModelConfig

    cfg = ModelConfig(backbone=backbone, width=MODEL_WIDTH.get(backbone, 32))  # 32: default
    network = build_network(cfg, input_shape=(112, 112, 3), num_classes=8, seed=seed)
    trainer = SupervisedTrainer(network, num_classes=8, loss="balanced_softmax")
    trainer.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4))
    trainer.build_state((112, 112, 3))
    trainer.set_class_prior([134415, 74874, 25459, 24882, 14090, 6378, 3803, 3750])
    return trainer, network.count_params()


def time_training(backbone: str, *, batch_size: int, steps: int, warmup: int,
                  split=None) -> dict:
    """Images/s of `fit` steps: from one in-memory batch, or from the strong pipeline."""
    import numpy as np
    import tensorflow as tf

    from ferkeras.data.pipeline import make_dataset

    before = common.machine_state()["loadavg_1_5_15"]
    trainer, params = build_trainer(backbone)
    if split is None:
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (batch_size, 112, 112, 3)).astype(np.float32)
        labels = rng.integers(0, 8, batch_size).astype(np.int32)
        ds = tf.data.Dataset.from_tensors((images, labels, np.arange(batch_size,
                                                                     dtype=np.int32)))
        ds = ds.repeat()
    else:
        ds = make_dataset(split, data_config(), batch_size=batch_size, shuffle=True,
                          augment="strong", drop_remainder=True).repeat()
    timer = _StepTimes.make()
    start = time.perf_counter()
    trainer.fit(ds, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer])
    wall = time.perf_counter() - start
    step_times = timer.times[warmup:]
    median = common.percentile(step_times, 50)
    return {"backbone": backbone, "width": MODEL_WIDTH.get(backbone), "params": params,
            "batch_size": batch_size, "feed": "in-memory batch" if split is None
            else "pipeline (strong)", "step_ms": common.summarize_ms(step_times),
            "images_per_s": round(batch_size / median, 1),
            "images_per_s_mean": round(batch_size * len(step_times) / sum(step_times), 1),
            "fit_wall_s": round(wall, 1), "warmup_steps": warmup,
            "loadavg_before": before,
            "loadavg_after": common.machine_state()["loadavg_1_5_15"]}


# ----------------------------------------------------------------------------- report
def verdict(out: dict) -> list[str]:
    """Plain statements: is the pipeline the bottleneck, per model and augmentation."""
    pipe = out["pipeline"]
    lines = []
    for name, m in out["models"].items():
        mem = m["in_memory"]["images_per_s"]
        enough = [k for k, r in pipe.items() if r["samples_per_s"] >= mem]
        short = [k for k, r in pipe.items() if r["samples_per_s"] < mem]
        need = {k: 100 * mem / r["samples_per_s"] for k, r in pipe.items()}
        head = (f"{name}: trains at {mem:.1f} img/s from memory. The pipeline alone is faster "
                f"in modes {enough or 'none'}" + (f" and slower in {short}" if short else "")
                + "; feeding this rate would take about "
                + ", ".join(f"{v:.0f}% ({k})" for k, v in need.items())
                + " of what the pipeline can do on this machine")
        e2e = m.get("end_to_end", {}).get("images_per_s")
        if e2e is not None:
            slow = 1 - e2e / mem
            head += (f". Fed by the strong pipeline it trained at {e2e:.1f} img/s, "
                     + (f"{100 * slow:.0f}% slower than from memory" if slow > 0.05 else
                        "as fast as from memory (within 5%)"))
            r = m["end_to_end"]
            if need["strong"] < 100 and 100 * slow > need["strong"] + 5:
                head += (f" — more than the pipeline's {need['strong']:.0f}% share: over those "
                         f"{r['step_ms']['n']} timed steps the load went "
                         f"{m['in_memory']['loadavg_before'][0]} -> {r['loadavg_after'][0]} "
                         "(vs in-memory), so this run cannot separate the two")
        lines.append(head + ".")
    lines.append(
        "A share above 100% means the pipeline is the bottleneck for that model and mode; "
        "well below 100%, the pipeline costs the model only that share of the CPU, and an "
        "end-to-end gap of that order or smaller is within the load swings recorded here. "
        "The FixMatch stage of recipes/affectnet.yaml needs `views` for mu x batch "
        "unlabelled samples per step on top of the labelled batch.")
    return lines


def markdown(out: dict) -> str:
    m = out["images"]
    lines = [
        "# Input pipeline: AffectNet-like 224x224 JPEGs -> 112x112 crops",
        "",
        f"Command: `{out['command']}`",
        "",
        f"Load average (1/5/15 min) at start {out['machine']['start']['loadavg_1_5_15']}, at "
        f"end {out['machine']['end']['loadavg_1_5_15']} on "
        f"{out['machine']['start']['cpu_count']} cores: other jobs shared the CPU, so these "
        "rates are below an idle machine's. Each row also records its own load.",
        "",
        f"Images: {m['n']} synthetic 224x224 RGB JPEGs ({m['bytes'] / m['n'] / 1e3:.1f} kB "
        f"each) with a 160-px face box, `{m['folder']}`. Pipeline: "
        "`ferkeras.data.pipeline.make_dataset` (read, decode, crop box, resize to 112, augment; "
        f"batch {out['settings']['batch_size']}, shuffled), median over "
        f"{out['settings']['epochs']} timed epochs after one untimed.",
        "",
        "## Pipeline alone",
        "",
        "| mode | samples/s | per-epoch | first epoch (s) | load before -> after |",
        "|---|---|---|---|---|",
    ]
    for mode, r in out["pipeline"].items():
        lines.append(f"| {mode} | {r['samples_per_s']:.0f} | {r['samples_per_s_all']} | "
                     f"{r['first_epoch_s']} | {r['loadavg_before'][0]} -> "
                     f"{r['loadavg_after'][0]} |")
    lines += ["", "`views` yields the FixMatch (weak, strong) pair of each sample: two "
              "augmented images per sample.", "", "## Training step rate at 112x112x3", "",
              "| model | params | batch | feed | step p50 (ms) | step p95 (ms) | img/s | "
              "load before -> after |", "|---|---|---|---|---|---|---|---|"]
    for name, m in out["models"].items():
        for key in ("in_memory", "end_to_end"):
            if key not in m:
                continue
            r = m[key]
            label = f"{name} (width {r['width']})" if r["width"] else name
            lines.append(f"| {label} | {r['params']:,} | "
                         f"{r['batch_size']} | {r['feed']} | {r['step_ms']['p50']:.0f} | "
                         f"{r['step_ms']['p95']:.0f} | {r['images_per_s']:.1f} | "
                         f"{r['loadavg_before'][0]} -> {r['loadavg_after'][0]} |")
    lines += ["", "## Verdict", ""] + [f"- {v}" for v in out["verdict"]]
    if out.get("diagnosis"):
        d = out["diagnosis"]
        lines += ["", "## Pieces of the strong augmentation", "",
                  "Samples/s of each piece on in-memory 112x112x3 images (no decoding), same "
                  f"tf.data layout; load {d['loadavg_before'][0]} -> {d['loadavg_after'][0]}:",
                  "", "| piece | samples/s |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in d["pieces"].items()]
        lines += ["", "`keras.layers.RandAugment`'s sub-layers, each alone:", "",
                  "| layer | samples/s | ms/image |", "|---|---|---|"]
        lines += [f"| {k} | {v:.0f} | {1e3 / v:.2f} |"
                  for k, v in d["randaugment_layers"].items()]
        ours = d["pieces"].get("RandAugment (ferkeras, tf.switch_case)")
        theirs = d["pieces"].get("keras.layers.RandAugment (2 ops)")
        lines += ["", f"Sum over the {len(d['randaugment_layers'])} sub-layers: "
                  f"{d['sum_of_layers_ms_per_image']:.1f} ms per image. "
                  "`keras.layers.RandAugment` (Keras "
                  f"{out['versions']['keras']}) runs every candidate layer for each of its "
                  "`num_ops` slots and keeps the chosen one with `where`."]
        if ours and theirs:
            lines += ["", f"ferkeras's own RandAugment (`ferkeras.data.augment.rand_augment`, "
                      f"`tf.switch_case`: only the drawn ops run) gives {ours:.0f} samples/s "
                      f"against {theirs:.0f} for `keras.layers.RandAugment` in the same run "
                      f"({ours / theirs:.1f}x)."]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in out["notes"]]
    lines += ["", "## Versions", "", "```", json.dumps(out["versions"], indent=1), "```"]
    return "\n".join(lines)


NOTES = [
    "The pipeline and the model share the same 2 cores (and other jobs): the pipeline-alone "
    "rate is an upper bound, and the end-to-end row is what training sees.",
    "Strong augmentation = weak (flip + translate) + ferkeras's RandAugment (2 ops drawn from "
    "12 with `tf.switch_case`, magnitude up to 0.5) + cutout, per image inside tf.data.map "
    "(`ferkeras.data.augment`).",
    "Training is `SupervisedTrainer.fit` with balanced softmax and AdamW, no EMA; the "
    "in-memory feed repeats one random batch so it costs nothing; steps are timed after the "
    "warm-up steps (tracing).",
    "resnet18 width 64 is `recipes/affectnet.yaml`'s model (its stem keeps full 112x112 "
    "resolution, so it is heavy on a CPU); mobilenetv3small is the light alternative.",
    "Files are in the OS page cache after the first epoch: the figure is read + decode from "
    "RAM, not from a cold disk.",
]


# ----------------------------------------------------------------------------- main
SMOKE = {"n_images": 24, "batch_size": 8, "epochs": 1, "models": "small_cnn", "steps": 2,
         "warmup_steps": 1, "resnet_steps": 1}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3, help="timed pipeline epochs per mode")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--models", default="mobilenetv3small,resnet18")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per model")
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--resnet-steps", type=int, default=3,
                   help="timed steps for resnet18 (each takes tens of seconds here; 2 warm-up)")
    p.add_argument("--no-diagnose", action="store_true",
                   help="skip timing the pieces of the strong augmentation")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the markdown (and verdict) from results/input_pipeline.json; "
                        "the run's own command, settings and commit are kept")
    p.add_argument("--no-end-to-end", action="store_true",
                   help="skip training fed by the pipeline")
    p.add_argument("--smoke", action="store_true",
                   help="seconds-long run of every step on a few images (small_cnn), written "
                        "under --work, never into bench/results")
    p.add_argument("--work", default=None,
                   help=f"working folder (default {common.WORK}; with --smoke, WORK/smoke)")
    p.add_argument("--results", default=None,
                   help="results folder (default bench/results; with --smoke, WORK/results)")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    return args


def run_settings(args) -> dict:
    """The options that change a figure (not where files go, not --report-only)."""
    return {k: v for k, v in vars(args).items() if k not in ("report_only", "work", "results")}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = pathlib.Path(args.work) if args.work else (
        common.WORK / "smoke" if args.smoke else common.WORK)
    results = pathlib.Path(args.results) if args.results else (
        work / "results" if args.smoke else common.RESULTS)
    if args.report_only:
        out = json.loads((results / "input_pipeline.json").read_text())
        out["verdict"], out["notes"] = verdict(out), NOTES
        common.rebuild_report("input_pipeline", out, markdown(out), results=results)
        print("\n".join(out["verdict"]))
        return 0
    start = common.machine_state()
    t0 = time.time()
    folder = work / ("affectnet_like_smoke" if args.smoke else "affectnet_like")
    manifest = make_images(args.n_images, args.seed, folder)
    split = make_split(manifest, folder)
    pipeline = {}
    for mode in args.modes.split(","):
        print(f"pipeline: {mode}", flush=True)
        pipeline[mode] = time_pipeline(split, mode, batch_size=args.batch_size,
                                       epochs=args.epochs)
        print(f"  {pipeline[mode]['samples_per_s']} samples/s", flush=True)
    diagnosis = None
    if not args.no_diagnose:
        print("diagnosis: pieces of the strong augmentation", flush=True)
        diagnosis = diagnose_strong(n=16, passes=1) if args.smoke else diagnose_strong()
    models = {}
    for name in args.models.split(","):
        steps = args.resnet_steps if name == "resnet18" else args.steps
        warmup = min(2, args.warmup_steps) if name == "resnet18" else args.warmup_steps
        print(f"model: {name} in memory ({steps} steps)", flush=True)
        models[name] = {"in_memory": time_training(name, batch_size=args.batch_size,
                                                   steps=steps, warmup=warmup)}
        print(f"  {models[name]['in_memory']['images_per_s']} img/s", flush=True)
        if not args.no_end_to_end:
            print(f"model: {name} fed by the strong pipeline", flush=True)
            models[name]["end_to_end"] = time_training(
                name, batch_size=args.batch_size, steps=steps, warmup=warmup, split=split)
            print(f"  {models[name]['end_to_end']['images_per_s']} img/s", flush=True)
    out = {
        "machine": {"start": start, "end": common.machine_state()},
        "images": {"n": manifest["n"], "bytes": manifest["bytes"], "size": [SIDE, SIDE, 3],
                   "face_box": FACE, "output_size": 112,
                   "folder": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT)
                   else str(folder)},
        "pipeline": pipeline, "models": models, "diagnosis": diagnosis,
        "versions": common.package_versions(["ferkeras", "tensorflow", "keras", "numpy"]),
        "notes": NOTES,
    }
    out["settings"] = run_settings(args)
    out["command"] = common.command_line()
    out["verdict"] = verdict(out)
    out["wall_s"] = round(time.time() - t0, 1)
    paths = common.write_results("input_pipeline", out, markdown(out), run_settings(args),
                                 results=results, code_files=[__file__])
    print("\n".join(out["verdict"]))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
