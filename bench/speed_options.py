"""Process-wide speed options: thread pools, oneDNN, tf.data threading and ordering, layout.

    .venv/bin/python bench/speed_options.py            # ~8 min on the 2-core CPU
    .venv/bin/python bench/speed_options.py --smoke    # seconds; writes under FERKERAS_BENCH_*

`bench/training_speed.py` compares trainers and per-model options inside one process. The
options here are fixed when TensorFlow starts (intra-/inter-op pools, oneDNN), so every
setting runs in its own worker process. Each worker measures, for the proxy `small_cnn`
(width 16) and `vgg4` (width 32) at 48 px, batch 128, the path `ferkeras train` runs for a
supervised epoch: the in-memory uint8 split through `make_dataset` (shuffle, weak
augmentation) into `SupervisedTrainer` (CE, EMA 0.999, float32). It reports steady-state
training images/s (first 2 steps of every fit left out; median over the worker's repeats)
and the pipeline alone (images/s of iterating the same dataset without training).

Workers run round-robin over the settings `--rounds` times (fresh processes each round), so
load from other jobs hits settings alike; the figure per setting is the median over rounds.
Derived: `best_setting` per model and its speed-up over `default`; a setting becomes a
default only if it wins on both models by more than the round-to-round spread.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402

SKIP = 2
MODELS = {"small_cnn": (16, 48, 1, 128, 10), "vgg4": (32, 48, 1, 128, 6)}
# name -> (environment for the worker, make_dataset options)
SETTINGS = {
    "default": ({}, {}),
    "intra2_inter1": ({"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}, {}),
    "intra1_inter2": ({"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}, {}),
    "intra2_inter2": ({"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "2"}, {}),
    "omp1": ({"OMP_NUM_THREADS": "1"}, {}),
    "onednn_off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
    "private_pool_1": ({}, {"threadpool_size": 1}),
    "private_pool_2": ({}, {"threadpool_size": 2}),
    "nondeterministic": ({}, {"deterministic": False}),
    "channels_first": ({"FERKERAS_BENCH_CHANNELS_FIRST": "1"}, {}),
}
NOTES = {
    "nondeterministic": "changes the sample order from run to run: not reproducible, so "
                        "never a default even if faster.",
    "channels_first": "NCHW: TensorFlow's CPU convolutions accept NHWC only; the error is "
                      "recorded when it fails.",
    "omp1": "OMP_NUM_THREADS=1 (oneDNN's OpenMP pool, if the build uses one).",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="seconds-long run of every step")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="timed fits per model per worker")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- worker
def _clock():
    import keras

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    return Clock


def worker(setting: str, *, smoke: bool, repeats: int) -> dict:
    """Runs inside the setting's process; returns {model: {train_img_s, pipeline_img_s}}."""
    import keras
    import numpy as np

    if os.environ.get("FERKERAS_BENCH_CHANNELS_FIRST"):
        keras.config.set_image_data_format("channels_first")

    from ferkeras.data.pipeline import make_dataset
    from ferkeras.data.table import Split
    from ferkeras.models import build_network
    from ferkeras.trainers.supervised import SupervisedTrainer
    from ferkeras.training.recipe import DataConfig

    _Clock = _clock()
    ds_options = SETTINGS[setting][1]
    # What the worker was started with (tf.config's getters report 0 for pools set through
    # the environment, which is how the settings here are applied).
    out = {"threads": {"intra": os.environ.get("TF_NUM_INTRAOP_THREADS", "default"),
                       "inter": os.environ.get("TF_NUM_INTEROP_THREADS", "default")}}
    for name, (width, side, channels, batch, steps) in MODELS.items():
        if smoke:
            width, side, batch, steps = 4, 24, 16, SKIP + 2
        rng = np.random.default_rng(1)
        n = batch * 16
        split = Split(labels=rng.integers(0, 7, n).astype(np.int32),
                      images=rng.integers(0, 256, (n, side, side, channels), dtype=np.uint8))
        cfg = DataConfig(image_size=side, channels=channels)
        try:
            net = build_network(name, num_classes=7, input_shape=(side, side, channels),
                                width=width, dropout=0.2, seed=0)
            model = SupervisedTrainer(net, num_classes=7, loss="ce", ema_decay=0.999)
            model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4))
            model.build_state((side, side, channels))
            stream = make_dataset(split, cfg, batch_size=batch, shuffle=True, augment="weak",
                                  seed=0, drop_remainder=True, **ds_options).repeat()
            rates = []
            for r in range(repeats + 1):  # the first fit traces and warms up
                clock = _Clock()
                keras.Model.fit(model, stream, epochs=1, steps_per_epoch=steps, verbose=0,
                                callbacks=[clock], shuffle=False)
                ends = clock.ends
                if r and len(ends) > SKIP + 1:
                    rates.append((len(ends) - 1 - SKIP) * batch / (ends[-1] - ends[SKIP]))
            it = iter(stream)
            next(it)
            t0, count = time.perf_counter(), 0
            while time.perf_counter() - t0 < (0.3 if smoke else 2.0):
                count += int(next(it)[0].shape[0])
            out[name] = {"train_img_s": round(statistics.median(rates), 1),
                         "pipeline_img_s": round(count / (time.perf_counter() - t0), 1)}
        except Exception as err:  # a setting the stack cannot run is reported, not hidden
            out[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    return out


def run_worker(setting: str, args) -> dict:
    env = {**os.environ, **SETTINGS[setting][0]}
    cmd = [sys.executable, __file__, "--worker", setting, "--repeats", str(args.repeats)]
    if args.smoke:
        cmd.append("--smoke")
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"worker exit {proc.returncode}: {tail[0][:200]}",
                "wall_s": round(time.time() - t0, 1)}
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_s"] = round(time.time() - t0, 1)
    return result


# ----------------------------------------------------------------------------- report
def summarize(per_round: dict) -> dict:
    """{setting: {model: {train_img_s (median over rounds), spread, pipeline_img_s}}}."""
    table = {}
    for setting, results in per_round.items():
        row = {}
        for model in MODELS:
            vals = [r[model]["train_img_s"] for r in results
                    if model in r and "train_img_s" in r[model]]
            pipe = [r[model]["pipeline_img_s"] for r in results
                    if model in r and "pipeline_img_s" in r[model]]
            errs = [r[model]["error"] for r in results if model in r and "error" in r[model]]
            errs += [r["error"] for r in results if "error" in r]
            if vals:
                row[model] = {"train_img_s": round(statistics.median(vals), 1),
                              "spread": round(max(vals) - min(vals), 1),
                              "pipeline_img_s": round(statistics.median(pipe), 1)}
            else:
                row[model] = {"error": errs[0] if errs else "no result"}
        row["threads"] = next((r["threads"] for r in results if "threads" in r), None)
        table[setting] = row
    return table


def derive(table: dict) -> dict:
    out = {}
    base = table.get("default", {})
    for model in MODELS:
        ref = base.get(model, {}).get("train_img_s")
        ok = {s: v[model]["train_img_s"] for s, v in table.items()
              if "train_img_s" in v.get(model, {}) and s != "nondeterministic"}
        if not ref or not ok:
            continue
        best = max(ok, key=ok.get)
        noise = max(table[s][model]["spread"] for s in ok) / ref
        out[model] = {"best_setting": best, "speedup_over_default": round(ok[best] / ref, 3),
                      "noise_rel": round(noise, 3),
                      "ratio": {s: round(v / ref, 3) for s, v in ok.items()}}
    wins = [out[m]["best_setting"] for m in out]
    adopt = None
    if wins and len(set(wins)) == 1 and wins[0] != "default" and all(
            out[m]["speedup_over_default"] - 1 > out[m]["noise_rel"] for m in out):
        adopt = wins[0]
    out["adopt"] = adopt
    return out


def markdown(data: dict) -> str:
    lines = ["# Process-wide speed options", "",
             "Command: `.venv/bin/python bench/speed_options.py`", "",
             f"Training images/s on the `ferkeras train` supervised path (weak augmentation, "
             f"EMA, float32), median over {data['settings']['rounds']} rounds of fresh worker "
             f"processes (spread = max - min over rounds). Load average at start "
             f"{data['load_start']}, at end {data['load_end']} on 2 cores.", "",
             "| setting | " + " | ".join(f"{m} train img/s (spread) | {m} pipeline img/s"
                                        for m in MODELS) + " | threads (intra, inter) |",
             "|---|" + "---|---|" * len(MODELS) + "---|"]
    for s, row in data["table"].items():
        cells = []
        for m in MODELS:
            v = row.get(m, {})
            if "train_img_s" in v:
                cells += [f"{v['train_img_s']} ({v['spread']})", f"{v['pipeline_img_s']}"]
            else:
                cells += [f"error: {v.get('error', '?')[:80]}", ""]
        th = row.get("threads")
        threads = f"{th['intra']}, {th['inter']}" if th else "?"
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {threads} |")
    lines += ["", "## Derived", ""]
    for m in MODELS:
        d = data["derived"].get(m)
        if d:
            lines.append(f"- {m}: best `{d['best_setting']}` at {d['speedup_over_default']}x "
                         f"the default (round-to-round noise {d['noise_rel']:.1%}).")
    adopt = data["derived"].get("adopt")
    lines.append(f"- Adopted as a default: {f'`{adopt}`' if adopt else 'none'} (a setting is "
                 "adopted only if it is the best on both models by more than the noise).")
    lines += ["", "## Notes", ""] + [f"- `{k}`: {v}" for k, v in NOTES.items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, smoke=args.smoke,
                                            repeats=args.repeats)), flush=True)
        return 0
    settings = [s for s in args.settings.split(",") if s]
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        raise SystemExit(f"--settings: unknown {bad}; valid: {list(SETTINGS)}")
    if args.smoke:
        settings, args.rounds, args.repeats = ["private_pool_1"], 1, 1
    t0, load_start = time.time(), os.getloadavg()
    per_round: dict = {s: [] for s in settings}
    for r in range(args.rounds):
        for s in settings:
            per_round[s].append(run_worker(s, args))
            print(f"round {r + 1}/{args.rounds} {s}: {per_round[s][-1]}", flush=True)
    table = summarize(per_round)
    run_settings = {"settings": settings, "rounds": args.rounds, "repeats": args.repeats,
                    "models": {m: dict(zip(("width", "side", "channels", "batch", "steps"),
                                           v, strict=True)) for m, v in MODELS.items()},
                    "smoke": args.smoke}
    data = {"table": table, "derived": derive(table), "raw": per_round,
            "load_start": [round(v, 2) for v in load_start],
            "load_end": [round(v, 2) for v in os.getloadavg()],
            "wall_s": round(time.time() - t0, 1), "settings": run_settings}
    json_path, md_path = common.write_results("speed_options", data, markdown(data),
                                              run_settings, code_files=[__file__])
    print(f"wrote {json_path} and {md_path} in {data['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
