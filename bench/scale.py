"""AffectNet at scale: memory, input pipeline, training, split pass and checkpoint against N.

    .venv/bin/python bench/scale.py            # 29k and 100k rows, 287k extrapolated (~15 min)
    .venv/bin/python bench/scale.py --sizes 29000,100000,287651 --unique 10000 \
        --set train.batch_size=64                # all three measured (~25 min)
    .venv/bin/python bench/scale.py --smoke    # seconds; writes under FERKERAS_BENCH_*

1. `write_affectnet_layout` (what `ferkeras data synth --layout affectnet` runs) writes the
   largest size in AffectNet's official layout, in parallel chunks; its time and disk size
   are reported. With `--unique U`, only U faces are drawn and the other rows are hard links
   to them under their own names (N files, N CSV rows; disk and drawing time of U images).
   Three sources are then broken (a deleted image, a truncated JPEG, a CSV row naming a
   missing file); every smaller size is a prefix of training.csv over the same images.
2. Each size runs in a fresh process with `recipes/affectnet.yaml` (data.root set to it):
   load the bundle (CSV + probe of every file), build the CycleTrainer exactly as training
   does, then time the input pipeline alone, `--steps` training steps, the split's inference
   pass over `--split-sample` images and its selection over all N losses, and one run-state
   checkpoint (trainer weights with the per-sample tables, plus the loss history). Peak RSS
   (VmHWM) and RSS after each stage are recorded.
3. The smallest size also runs `ferkeras train` end to end (`--smoke` schedule, small_cnn),
   so its `run_info.json` and `skipped_files.tsv` show the skipped sources at that scale.
4. 287,651 (AffectNet's 8-class training set): RSS measured when it is among `--sizes`, else
   from the line through the measured sizes;
   the split's inference time from the measured rate (it is linear in N); selection and the
   checkpoint are measured at 287,651 directly (they only need N-sized tables).
The generated images are deleted at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402

ROOT = common.ROOT
TARGET = 287651
TABLES_PER_SAMPLE = {"labelled_mask": 4, "clean_prob": 4, "selected_labels": 4, "true_labels": 4}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--sizes", default="29000,100000")
    p.add_argument("--unique", type=int, default=29000, help="faces actually drawn")
    p.add_argument("--sides", default="160,320", help="min,max image side of the JPEGs")
    p.add_argument("--n-test", type=int, default=800)
    p.add_argument("--steps", type=int, default=3, help="training steps per size")
    p.add_argument("--pipeline-batches", type=int, default=8)
    p.add_argument("--split-sample", type=int, default=768)
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "affectnet.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra recipe override for every size, e.g. train.batch_size=128")
    p.add_argument("--keep", action="store_true", help="keep the generated images")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end train run")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- child process
def _rss_mb():
    out = {}
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return out


def child(spec: dict) -> dict:
    """One size in this (fresh) process; returns the figures."""
    import keras
    import numpy as np
    from training_speed import _Clock, time_selection

    from ferkeras.data.pipeline import make_dataset
    from ferkeras.data.sources import load_bundle
    from ferkeras.io import atomic_save_weights
    from ferkeras.models import build_network
    from ferkeras.trainers.cycle import CycleTrainer
    from ferkeras.training import build_optimizer
    from ferkeras.training.passes import predict_probs
    from ferkeras.training.recipe import load_recipe
    from ferkeras.training.strategy import precision_policy

    out, stages = {"n_rows": spec["n"]}, {}
    stages["imports"] = _rss_mb()
    recipe = load_recipe(spec["recipe"], [f"data.root={spec['root']}", *spec["overrides"]])
    t = time.perf_counter()
    bundle = load_bundle(recipe.data, seed=recipe.seed)
    out["load_s"] = round(time.perf_counter() - t, 2)
    out["n_train"], out["n_val"] = len(bundle.train), len(bundle.val)
    out["skipped_train"] = len(bundle.train.skipped)
    stages["bundle"] = _rss_mb()
    host = sum(getattr(bundle.train, f).nbytes for f in ("labels", "paths", "boxes")
               if getattr(bundle.train, f) is not None)
    out["host_table_bytes_per_sample"] = round(host / len(bundle.train), 1)

    size, ch = recipe.data.image_size, recipe.data.channels
    shape, batch = (size, size, ch), recipe.train.batch_size
    with precision_policy(recipe.train.precision):
        net = build_network(recipe.model, input_shape=shape, num_classes=bundle.num_classes,
                            seed=recipe.seed)
        trainer = CycleTrainer.from_recipe(recipe, net, bundle)
        trainer.compile(optimizer=build_optimizer(recipe.train, total_steps=1000,
                                                  steps_per_epoch=100),
                        jit_compile=recipe.train.jit_compile)
        trainer.build_state(shape)
    trainer.set_class_prior(bundle.train.class_counts(bundle.num_classes))
    stages["trainer"] = _rss_mb()

    # Input pipeline alone: the training stream (shuffle, decode + crop + resize, weak aug).
    ds = make_dataset(bundle.train, recipe.data, batch_size=batch, shuffle=True,
                      augment=recipe.train.augment, seed=1, drop_remainder=True)
    t = time.perf_counter()
    it = iter(ds)
    next(it)
    out["pipeline_first_batch_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    for _ in range(spec["pipeline_batches"]):
        next(it)
    out["pipeline_img_s"] = round(spec["pipeline_batches"] * batch / (time.perf_counter() - t), 1)
    del it
    stages["pipeline"] = _rss_mb()

    # Training steps (the warm-up's supervised step on the same stream).
    stream = make_dataset(bundle.train, recipe.data, batch_size=batch, shuffle=True,
                          augment=recipe.train.augment, seed=2, drop_remainder=True)
    clock = _Clock()
    keras.Model.fit(trainer, stream, epochs=1, steps_per_epoch=spec["steps"], verbose=0,
                    callbacks=[clock], shuffle=False)
    ends = clock.ends
    out["train_first_step_s"] = round(ends[1] - ends[0], 2)
    if len(ends) > 2:
        out["train_img_s"] = round((len(ends) - 2) * batch / (ends[-1] - ends[1]), 2)
    stages["train"] = _rss_mb()

    # The split's inference pass on a sample (rate), its selection on all N.
    m = min(spec["split_sample"], len(bundle.train))
    sub = bundle.train.subset(np.arange(m))
    eval_batch = max(batch, 256)
    warm = bundle.train.subset(np.arange(min(eval_batch, m)))
    predict_probs(trainer.eval_network, make_dataset(warm, recipe.data, batch_size=eval_batch))
    t = time.perf_counter()
    predict_probs(trainer.eval_network, make_dataset(sub, recipe.data, batch_size=eval_batch))
    out["split_infer_img_s"] = round(m / (time.perf_counter() - t), 2)
    out["split_select_s"] = time_selection(len(bundle.train), num_classes=bundle.num_classes,
                                           repeats=1)
    out["split_pass_s"] = round(len(bundle.train) / out["split_infer_img_s"]
                                + out["split_select_s"], 1)
    stages["split"] = _rss_mb()

    out["checkpoint"] = _checkpoint(trainer, len(bundle.train), spec["work"],
                                    atomic_save_weights)
    if spec.get("target"):
        big = CycleTrainer(net, num_classes=bundle.num_classes, num_samples=spec["target"],
                           loss=recipe.train.loss, ema_decay=recipe.train.ema_decay)
        big.compile(optimizer=build_optimizer(recipe.train, total_steps=1000,
                                              steps_per_epoch=100))
        big.build_state(shape)
        out["checkpoint_target"] = _checkpoint(big, spec["target"], spec["work"],
                                               atomic_save_weights)
        out["split_select_target_s"] = time_selection(spec["target"],
                                                      num_classes=bundle.num_classes, repeats=1)
    stages["end"] = _rss_mb()
    out["rss_stages_mb"] = stages
    out["rss_mb"] = stages["end"]["VmHWM"]
    out["params"] = int(net.count_params())
    return out


def _checkpoint(trainer, n, work, save):
    """Seconds and bytes of one run-state write: trainer weights (network, EMA, optimizer,
    per-sample tables) and the (window, N) float32 loss history the split keeps."""
    import numpy as np

    folder = pathlib.Path(work) / f"ckpt-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    save(trainer, folder / "state.weights.h5")
    np.save(folder / "loss_history.npy", np.zeros((2, n), np.float32))
    seconds = time.perf_counter() - t
    size = sum(p.stat().st_size for p in folder.iterdir())
    shutil.rmtree(folder)
    return {"seconds": round(seconds, 3), "mb": round(size / 1e6, 2)}


# ----------------------------------------------------------------------------- parent
def make_sizes(args, work: pathlib.Path, sizes):
    from ferkeras.data.affectnet_synth import (
        LISTS_DIR,
        damage_sources,
        write_affectnet_layout,
    )

    lo, hi = (int(v) for v in args.sides.split(","))
    big = work / f"affectnet-{sizes[-1]}"
    if big.exists():
        shutil.rmtree(big)
    info = write_affectnet_layout(big, n_train=sizes[-1], n_test=args.n_test, sides=(lo, hi),
                                  unique=min(args.unique, sizes[-1]), workers=os.cpu_count())
    damaged = damage_sources(big, within=sizes[0])
    roots = {sizes[-1]: big}
    lines = (big / LISTS_DIR / "training.csv").read_text().splitlines()
    for n in sizes[:-1]:
        root = work / f"affectnet-{n}"
        if root.exists():
            shutil.rmtree(root)
        (root / LISTS_DIR).mkdir(parents=True)
        (root / "Manually_Annotated_Images").symlink_to(big / "Manually_Annotated_Images")
        (root / LISTS_DIR / "training.csv").write_text("\n".join(lines[: n + 1]) + "\n")
        shutil.copy(big / LISTS_DIR / "validation.csv", root / LISTS_DIR / "validation.csv")
        roots[n] = root
    return roots, info, damaged


def run_child(spec, env):
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"size {spec['n']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_e2e(root, work, env, smoke):
    """`ferkeras train --smoke` on `root` with small_cnn: run_info.json + skipped_files.tsv."""
    run_dir = work / "e2e-run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "ferkeras.cli", "train", str(ROOT / "recipes/affectnet.yaml"),
           "--smoke", "--run-dir", str(run_dir), "--quiet",
           "--set", f"data.root={root}", "--set", "model.backbone=small_cnn",
           "--set", "model.width=8", "--set", "train.ema_decay=0.0"]
    if smoke:
        cmd += ["--set", "data.image_size=32"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = round(time.perf_counter() - t, 1)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:], "seconds": seconds}
    info = json.loads((run_dir / "run_info.json").read_text())
    tsv = (run_dir / "skipped_files.tsv")
    rows = tsv.read_text().splitlines()[1:] if tsv.is_file() else []
    out = {"seconds": seconds, "n_train": info.get("n_train"), "skipped": info.get("skipped"),
           "skipped_notes": [n for n in info.get("data_notes", []) if n and "skipped" in n],
           "skipped_files_tsv": [r.split("\t", 1)[1] for r in rows], "command": " ".join(cmd)}
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


def fit_line(xs, ys):
    n = len(xs)
    if n < 2:
        return None, None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def markdown(data):
    s, r287 = data["settings"], data["at_287k"]
    lines = ["# AffectNet at scale", "", f"Command: `{data['command']}`", "",
             f"Recipe `recipes/affectnet.yaml` ({s['model']}, {s['image_size']} px, batch "
             f"{s['batch']}, {s['precision']}), synthetic faces in AffectNet's official "
             f"layout. Load average at start {data['load_start']}, at end {data['load_end']} "
             f"({os.cpu_count()} cores).", "",
             "## Data", "",
             f"- Generated {data['synth']['n_train']} training rows + {data['synth']['n_test']}"
             f" test rows in {data['synth']['seconds']} s, {data['synth']['bytes'] / 1e6:.0f} MB "
             f"on disk; {data['synth']['n_unique']} faces drawn, the other rows hard links "
             f"(JPEG sides {s['sides']} px, quality 90).",
             f"- Per drawn image: {data['synth_ms_per_image']} ms wall with "
             f"{os.cpu_count()} workers, {data['synth_kb_per_image']} kB: all {TARGET} drawn "
             f"would take ~{data['synth_287k_min']} min and ~{data['synth_287k_gb']} GB here.",
             f"- Broken on purpose: {', '.join(f'{p} ({w})' for p, w in data['damaged'])}.", "",
             "## Per size", "",
             "| rows | train (after skips, carve) | load s | peak RSS MB | pipeline img/s | "
             "train img/s | split pass s | checkpoint s (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for n, r in data["sizes"].items():
        lines.append(f"| {n} | {r['n_train']} | {r['load_s']} | {r['rss_mb']} | "
                     f"{r['pipeline_img_s']} | {r.get('train_img_s')} | {r['split_pass_s']} | "
                     f"{r['checkpoint']['seconds']} ({r['checkpoint']['mb']}) |")
    lines += ["", "## At 287,651 rows", "",
              f"- Peak RSS **{r287['rss_mb']} MB** (" + ("measured at this size)." if
                                                         r287.get("rss_measured") else
                                                         "extrapolated on the line through "
                                                         "the measured sizes)."),
              f"- RSS slope **{data['rss_mb_per_100k_images']} MB per 100k rows**; the O(N) "
              f"tables explain {data['rss_explained_mb_per_100k']} MB of it (host arrays of "
              f"the split {data['host_bytes_per_sample']} B/row, trainer tables "
              f"{sum(TABLES_PER_SAMPLE.values())} B/row, the tf.data copy of the rows and the "
              "pre-decode shuffle buffer of (path, box, label, index) rows).",
              f"- Input pipeline **{r287['pipeline_img_s']} img/s**, training "
              f"**{r287['train_img_s']} img/s** (measured at the largest size; neither "
              "depends on N).",
              f"- Split pass **{r287['split_pass_s']} s** = {r287['n_train']} training rows / "
              f"{r287['split_infer_img_s']} img/s inference (rate measured on "
              f"{s['split_sample']} images) + {r287['split_select_s']} s selection "
              f"(measured at {TARGET}).",
              f"- Run-state checkpoint **{r287['checkpoint_s']} s**, {r287['checkpoint_mb']} MB "
              f"(measured at {TARGET}).",
              f"- One epoch of training would take ~{r287['epoch_h']} h on this CPU.", "",
              "## Unreadable sources at scale", ""]
    e2e = data.get("e2e") or {}
    if e2e.get("error"):
        lines.append(f"`ferkeras train` end to end failed: {e2e['error'][-300:]}")
    elif e2e:
        lines += [f"`ferkeras train --smoke` on the {data['sizes_list'][0]}-row folder "
                  f"({e2e['seconds']} s): run_info.json `skipped` = {e2e['skipped']}; "
                  f"skipped_files.tsv names {len(e2e['skipped_files_tsv'])} file(s):", ""]
        lines += [f"- `{row.split(chr(9))[0]}`: {row.split(chr(9))[-1]}"
                  for row in e2e["skipped_files_tsv"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return None
    sizes = sorted(int(v) for v in args.sizes.split(","))
    overrides = list(args.overrides)
    if args.smoke:
        sizes, args.unique, args.sides, args.n_test = [120, 240], 120, "40,64", 16
        args.steps, args.pipeline_batches, args.split_sample = 2, 2, 32
        overrides += ["data.image_size=32", "model.backbone=small_cnn", "model.width=4",
                      "train.batch_size=16"]
    work = common.WORK / "scale"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bench") + os.pathsep
           + os.environ.get("PYTHONPATH", "")}
    t0, load_start = time.time(), os.getloadavg()
    disk_free_gb = round(shutil.disk_usage(work).free / 1e9, 1)
    roots, synth, damaged = make_sizes(args, work, sizes)
    print(f"generated {synth} ({time.time() - t0:.0f} s)", flush=True)
    results = {}
    try:
        for n in sizes:
            spec = {"n": n, "root": str(roots[n]), "recipe": args.recipe, "overrides": overrides,
                    "steps": args.steps, "pipeline_batches": args.pipeline_batches,
                    "split_sample": args.split_sample, "work": str(work),
                    "target": TARGET if n == sizes[-1] and not args.smoke else None}
            results[n] = run_child(spec, env)
            print(f"{n}: {results[n]} ({time.time() - t0:.0f} s)", flush=True)
        e2e = None if args.no_e2e else run_e2e(roots[sizes[0]], work, env, args.smoke)
    finally:
        if not args.keep:
            for root in roots.values():
                shutil.rmtree(root, ignore_errors=True)
    from ferkeras.training.recipe import load_recipe

    recipe = load_recipe(args.recipe, [f"data.root={roots[sizes[0]]}", *overrides])
    xs = [results[n]["n_train"] for n in sizes]
    intercept, slope = fit_line(xs, [results[n]["rss_mb"] for n in sizes])
    largest = results[sizes[-1]]
    host_b = largest["host_table_bytes_per_sample"]
    explained = (host_b + sum(TABLES_PER_SAMPLE.values())) * 1e5 / 2**20
    n287 = round(TARGET * largest["n_train"] / largest["n_rows"])
    infer = largest["split_infer_img_s"]
    select_287 = largest.get("split_select_target_s", largest["split_select_s"])
    ckpt = largest.get("checkpoint_target", largest["checkpoint"])
    measured_287 = sizes[-1] == TARGET
    at_287 = {
        "n_train": n287,
        "rss_mb": largest["rss_mb"] if measured_287 else
        round(intercept + slope * n287, 1) if slope is not None else None,
        "pipeline_img_s": largest["pipeline_img_s"], "train_img_s": largest.get("train_img_s"),
        "split_infer_img_s": infer, "split_select_s": select_287,
        "split_pass_s": round(n287 / infer + select_287, 1),
        "checkpoint_s": ckpt["seconds"], "checkpoint_mb": ckpt["mb"],
        "epoch_h": round(n287 / largest["train_img_s"] / 3600, 1)
        if largest.get("train_img_s") else None,
        "how": ("rss_mb: measured at N" if measured_287 else
                "rss_mb: line through the measured sizes") +
               "; split_pass_s: measured inference rate x N + selection measured at N; "
               "checkpoint: measured at N (tables of N rows).",
        "rss_measured": measured_287,
    }
    drawn = synth["n_unique"] + synth["n_test"]
    settings = {"sizes": sizes, "unique": args.unique, "sides": args.sides,
                "n_test": args.n_test, "steps": args.steps,
                "pipeline_batches": args.pipeline_batches, "split_sample": args.split_sample,
                "recipe": str(pathlib.Path(args.recipe).resolve().relative_to(ROOT))
                if pathlib.Path(args.recipe).resolve().is_relative_to(ROOT) else args.recipe,
                "overrides": overrides, "smoke": args.smoke, "model": recipe.model.backbone,
                "image_size": recipe.data.image_size, "batch": recipe.train.batch_size,
                "precision": recipe.train.precision}
    data = {
        "sizes": {str(n): results[n] for n in sizes}, "sizes_list": sizes,
        "rss_mb": {str(n): results[n]["rss_mb"] for n in sizes} | (
            {} if measured_287 else {f"{TARGET} (extrapolated)": at_287["rss_mb"]}),
        "rss_mb_per_100k_images": round(slope * 1e5, 1) if slope is not None else None,
        "rss_intercept_mb": round(intercept, 1) if intercept is not None else None,
        "rss_explained_mb_per_100k": round(explained, 1),
        "host_bytes_per_sample": host_b,
        "pipeline_img_s": at_287["pipeline_img_s"], "train_img_s": at_287["train_img_s"],
        "split_pass_s": at_287["split_pass_s"], "checkpoint_s": at_287["checkpoint_s"],
        "at_287k": at_287, "synth": synth, "damaged": damaged, "e2e": e2e,
        "synth_ms_per_image": round(synth["seconds"] / drawn * 1e3, 2),
        "synth_kb_per_image": round(synth["bytes"] / drawn / 1e3, 1),
        "synth_287k_min": round(synth["seconds"] / drawn * (TARGET + 4000) / 60, 1),
        "synth_287k_gb": round(synth["bytes"] / drawn * (TARGET + 4000) / 1e9, 1),
        "load_start": [round(v, 2) for v in load_start],
        "load_end": [round(v, 2) for v in os.getloadavg()],
        "wall_s": round(time.time() - t0, 1), "command": common.command_line(),
        "settings": settings, "images_kept": bool(args.keep),
        "disk_free_gb_before": disk_free_gb,
    }
    json_path, md_path = common.write_results("scale", data, markdown(data), settings,
                                              code_files=[__file__])
    print(f"wrote {json_path} and {md_path} in {data['wall_s']} s")
    return data


if __name__ == "__main__":
    main()
