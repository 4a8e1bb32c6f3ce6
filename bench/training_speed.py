"""Training speed: ferkeras's trainers against plain `keras.Model.fit`, and the fast-path options.

    .venv/bin/python bench/training_speed.py            # ~10 min on the 2-core CPU
    .venv/bin/python bench/training_speed.py --smoke    # seconds; writes under FERKERAS_BENCH_*

Every row of one model uses the same network, batch size and step count, and all rows are
measured side by side in one process: each configuration is built and traced once, then the
repeats go round-robin over the configurations (so load from other jobs hits them alike), and
each figure is the median over repeats of the steady-state images/s (the first `SKIP` steps of
every `fit` are left out: iterator start-up and the shuffle-buffer fill are reported apart).

Rows (per model):
- `plain_fit`: `keras.Model(network)` compiled with sparse CE from logits, on batches cached
  in memory: the reference.
- `supervised`: `SupervisedTrainer` (CE) on the same cached batches (plus the sample index).
- `supervised_ema`: the same with the recipes' EMA (0.999).
- `default_path`: what `ferkeras train` runs today for a supervised epoch: the in-memory
  uint8 Split through `make_dataset` (shuffle, weak augmentation), EMA on, float32.
- `cycle`: `CycleTrainer` on weak/strong view pairs from `make_dataset`, 30 % unlabelled.
- each of the above under `mixed_bfloat16`, and `plain_fit` / `supervised` under XLA.
- `split_pass`: the noise split's inference pass (`ferkeras.training.passes.predict_probs`, eager
  calls) against the same network called through one `tf.function`, float32 and bfloat16.

Derived: `supervised_over_plain_fit` (same options), `best_speedup_over_default` (best option
over `default_path` float32), `cycle_over_ce` and `split_pass_share` for a recipe schedule
(FER2013's: warm-up 6, 3 cycles of 4 epochs, 28709 training faces), from the measured rates.
A short numerical check trains `small_cnn` on synthetic faces in float32 (two seeds: the
noise) and in mixed_bfloat16 and compares loss curves and validation accuracy.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402

SKIP = 2  # steps of every fit left out of the steady-state rate
MODELS = {
    # name: width, image side, channels, batch, steps per timed fit
    "small_cnn": (16, 48, 1, 128, 9),
    "vgg4": (32, 48, 1, 128, 7),
    "mobilenetv3small": (32, 112, 3, 64, 6),
}
# Rows left out to keep the whole run near 10 minutes on 2 shared cores.
LEAVE_OUT = {
    "vgg4": {"supervised_ema/float32", "supervised_ema/mixed_bfloat16"},
    "mobilenetv3small": {"supervised_ema/float32", "supervised_ema/mixed_bfloat16",
                         "supervised/mixed_bfloat16", "cycle/mixed_bfloat16"},
}
SCHEDULE = {"n_train": 28709, "warmup_epochs": 6, "cycles": 3, "epochs_per_cycle": 4,
            "recipe": "recipes/fer2013.yaml"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="seconds-long run of every step")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-images", type=int, default=2048,
                   help="rows of the in-memory Split the pipeline rows draw from")
    p.add_argument("--xla-models", default="small_cnn",
                   help="models that also get the XLA rows")
    p.add_argument("--numerics-epochs", type=int, default=3)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- rows
class _Clock:
    """A Keras callback: time at the end of each train batch."""

    def __new__(cls):
        import keras

        class Clock(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.ends = [time.perf_counter()]

            def on_train_batch_end(self, batch, logs=None):
                self.ends.append(time.perf_counter())

        return Clock()


def _optimizer():
    import keras

    return keras.optimizers.AdamW(1e-3, weight_decay=1e-4)


def _network(name, width, side, channels, precision, seed=0):
    from ferkeras.models import build_network
    from ferkeras.training.strategy import precision_policy

    with precision_policy(precision):
        return build_network(name, num_classes=8, input_shape=(side, side, channels),
                             width=width, dropout=0.2, seed=seed)


class Row:
    """One configuration: a compiled model plus the dataset its `fit` reads."""

    def __init__(self, name, model, dataset, batch, steps):
        self.name, self.model, self.dataset = name, model, dataset
        self.batch, self.steps = batch, steps
        self.rates, self.first_step_s, self.error = [], [], None

    def run(self, steps=None):
        clock = _Clock()
        steps = steps or self.steps
        start = time.perf_counter()
        fit = getattr(self.model, "_bench_fit", self.model.fit)
        fit(self.dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock],
            shuffle=False)
        ends = clock.ends
        self.first_step_s.append(ends[1] - start)
        if len(ends) > SKIP + 1:
            self.rates.append((len(ends) - 1 - SKIP) * self.batch / (ends[-1] - ends[SKIP]))

    @property
    def img_s(self):
        return round(statistics.median(self.rates), 1) if self.rates else None


def _memory_batches(side, channels, batch, *, with_index):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    n = batch * 8
    x = rng.uniform(0, 255, (n, side, side, channels)).astype(np.float32)
    y = rng.integers(0, 8, n).astype(np.int32)
    parts = (x, y, np.arange(n, dtype=np.int32)) if with_index else (x, y)
    return tf.data.Dataset.from_tensor_slices(parts).batch(batch, drop_remainder=True) \
        .cache().repeat().prefetch(tf.data.AUTOTUNE)


def _split(n, side, channels):
    import numpy as np

    from ferkeras.data.table import Split

    rng = np.random.default_rng(1)
    return Split(labels=rng.integers(0, 8, n).astype(np.int32),
                 images=rng.integers(0, 256, (n, side, side, channels), dtype=np.uint8))


def _data_cfg(side, channels):
    from ferkeras.training.recipe import DataConfig

    return DataConfig(image_size=side, channels=channels)


def build_rows(model_name, *, n_images, xla, smoke):
    import keras
    import numpy as np

    from ferkeras.data.pipeline import make_dataset
    from ferkeras.trainers.cycle import CycleTrainer
    from ferkeras.trainers.supervised import SupervisedTrainer
    from ferkeras.training.strategy import precision_policy

    width, side, channels, batch, steps = MODELS[model_name]
    if smoke:
        width, side, batch, steps = 4, 32, 16, SKIP + 2
        channels = 1 if model_name != "mobilenetv3small" else 3
    shape = (side, side, channels)
    rows = []
    split = _split(max(n_images, batch * 4), side, channels)
    cfg = _data_cfg(side, channels)
    mem_xy = _memory_batches(side, channels, batch, with_index=False)
    mem_xyi = _memory_batches(side, channels, batch, with_index=True)
    options = [("float32", False), ("mixed_bfloat16", False)] + ([("float32", True)] if xla
                                                                 else [])
    emas = (0.0,) if smoke else (0.0, 0.999)
    for precision, jit in options:
        tag = "xla" if jit else precision
        net = _network(model_name, width, side, channels, precision)
        with precision_policy(precision):
            plain = keras.Model(net.input, net.output)
            plain.compile(optimizer=_optimizer(), jit_compile=jit,
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
        rows.append(Row(f"plain_fit/{tag}", plain, mem_xy, batch, steps))
        for ema in (emas if not jit else (0.0,)):
            net = _network(model_name, width, side, channels, precision)
            with precision_policy(precision):
                sup = SupervisedTrainer(net, num_classes=8, loss="ce", ema_decay=ema)
                sup.compile(optimizer=_optimizer(), jit_compile=jit)
                sup.build_state(shape)
            sup._bench_fit = lambda *a, m=sup, **k: keras.Model.fit(m, *a, **k)
            name = "supervised_ema" if ema else "supervised"
            rows.append(Row(f"{name}/{tag}", sup, mem_xyi, batch, steps))
        if jit:
            continue
        net = _network(model_name, width, side, channels, precision)
        with precision_policy(precision):
            default = SupervisedTrainer(net, num_classes=8, loss="ce", ema_decay=0.999)
            default.compile(optimizer=_optimizer())
            default.build_state(shape)
        default._bench_fit = lambda *a, m=default, **k: keras.Model.fit(m, *a, **k)
        stream = make_dataset(split, cfg, batch_size=batch, shuffle=True, augment="weak",
                              seed=0, drop_remainder=True).repeat()
        rows.append(Row(f"default_path/{tag}", default, stream, batch, steps))
        net = _network(model_name, width, side, channels, precision)
        with precision_policy(precision):
            cyc = CycleTrainer(net, num_classes=8, num_samples=len(split), loss="ce",
                               ema_decay=0.999)
            cyc.compile(optimizer=_optimizer())
            cyc.build_state(shape)
        lab = (np.random.default_rng(2).random(len(split)) > 0.3).astype(np.float32)
        cyc.set_split(lab, lab, np.full(8, 1 / 8, np.float32))
        cyc._bench_fit = lambda *a, m=cyc, **k: keras.Model.fit(m, *a, **k)
        views = make_dataset(split, cfg, batch_size=batch, shuffle=True, views=True, seed=0,
                             drop_remainder=True, labelled_mask=cyc.labelled_mask).repeat()
        rows.append(Row(f"cycle/{tag}", cyc, views, batch, steps))
    skip = LEAVE_OUT.get(model_name, set()) if not smoke else set()
    return [r for r in rows if r.name not in skip]


def _eager_probs(network, dataset):
    """The split pass as it was: the network called eagerly on every batch."""
    import keras
    import numpy as np

    out = []
    for images, _, _ in dataset:
        out.append(keras.ops.convert_to_numpy(keras.ops.softmax(network(images,
                                                                        training=False))))
    return np.concatenate(out)


def time_split_pass(model_name, *, n_images, smoke, repeats):
    """img/s of the split's inference pass: eager per-batch calls (before) against
    `ferkeras.training.passes.predict_probs` (one traced function), float32 and bfloat16."""
    from ferkeras.data.pipeline import make_dataset
    from ferkeras.training.passes import predict_probs

    width, side, channels, batch, _ = MODELS[model_name]
    if smoke:
        width, side = 4, 32
        channels = 1 if model_name != "mobilenetv3small" else 3
    split = _split(n_images, side, channels)
    ds = make_dataset(split, _data_cfg(side, channels), batch_size=max(batch, 256))
    nets = {p: _network(model_name, width, side, channels, p)
            for p in ("float32", "mixed_bfloat16")}
    impls = {"eager/float32": lambda: _eager_probs(nets["float32"], ds),
             "predict_probs/float32": lambda: predict_probs(nets["float32"], ds),
             "predict_probs/mixed_bfloat16": lambda: predict_probs(nets["mixed_bfloat16"], ds)}
    for fn in impls.values():
        fn()  # trace / warm
    times = {k: [] for k in impls}
    for _ in range(repeats):
        for k, fn in impls.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: round(len(split) / statistics.median(v), 1) for k, v in times.items()}


def time_selection(n, *, num_classes=8, repeats=2):
    """Seconds of the split's host-side selection (per-class normalisation + GMM) on n
    synthetic losses: the part of a split that is not the inference pass."""
    import numpy as np

    from ferkeras.noise import selection

    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, n)
    losses = np.where(rng.random(n) < 0.3, rng.gamma(4, 0.8, n), rng.gamma(1, 0.3, n))
    probs = rng.dirichlet(np.ones(num_classes), n).astype(np.float32)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        selection.split_training_set(
            np.stack([losses.astype(np.float32)]), labels, num_classes=num_classes,
            selector="gmm", window=1, normalize="per_class", pred_probs=probs, seed=0,
            p_clean=0.5, gmm_scope="global", min_class_samples=20, keep_ratio=0.7)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


# ----------------------------------------------------------------------------- numerics
def check_numerics(*, epochs, smoke):
    """Validation accuracy and per-epoch loss of small_cnn on synthetic faces: float32 with two
    seeds (their gap is the noise) and mixed_bfloat16 with the first seed."""
    import keras
    import numpy as np

    from ferkeras.data.pipeline import make_dataset
    from ferkeras.data.synthetic import make_synthetic_bundle
    from ferkeras.trainers.supervised import SupervisedTrainer
    from ferkeras.training.passes import predict_probs
    from ferkeras.training.recipe import DataConfig, SyntheticConfig
    from ferkeras.training.strategy import precision_policy

    n_train, n_val = (256, 64) if smoke else (3000, 800)
    cfg = DataConfig(image_size=48 if not smoke else 32, channels=1, synthetic=SyntheticConfig(
        n_train=n_train, n_val=n_val, n_test=0, profile="uniform"))
    bundle = make_synthetic_bundle(cfg, seed=0)
    val_ds = make_dataset(bundle.val, cfg, batch_size=256)
    runs = {}
    for name, precision, seed in (("float32_seed0", "float32", 0),
                                  ("float32_seed1", "float32", 1),
                                  ("mixed_bfloat16_seed0", "mixed_bfloat16", 0)):
        keras.utils.set_random_seed(seed)
        net = _network("small_cnn", 4 if smoke else 16, cfg.image_size, 1, precision, seed=seed)
        with precision_policy(precision):
            trainer = SupervisedTrainer(net, num_classes=8, loss="ce")
            trainer.compile(optimizer=_optimizer())
            trainer.build_state((cfg.image_size, cfg.image_size, 1))
        losses, start = [], time.perf_counter()
        for epoch in range(epochs):
            ds = make_dataset(bundle.train, cfg, batch_size=64, shuffle=True, augment="weak",
                              seed=seed * 100 + epoch, drop_remainder=True)
            hist = keras.Model.fit(trainer, ds, epochs=1, verbose=0, shuffle=False)
            losses.append(round(float(hist.history["loss"][-1]), 4))
        probs, index = predict_probs(trainer.eval_network, val_ds)
        acc = float(np.mean(np.argmax(probs, 1) == bundle.val.labels[index]))
        runs[name] = {"loss_per_epoch": losses, "val_accuracy": round(acc, 4),
                      "seconds": round(time.perf_counter() - start, 1),
                      "finite": bool(np.isfinite(probs).all())}
    noise = abs(runs["float32_seed0"]["val_accuracy"] - runs["float32_seed1"]["val_accuracy"])
    gap = abs(runs["mixed_bfloat16_seed0"]["val_accuracy"] - runs["float32_seed0"]["val_accuracy"])
    loss_noise = max(abs(a - b) for a, b in zip(runs["float32_seed0"]["loss_per_epoch"],
                                                 runs["float32_seed1"]["loss_per_epoch"],
                                                 strict=True))
    loss_gap = max(abs(a - b) for a, b in zip(runs["mixed_bfloat16_seed0"]["loss_per_epoch"],
                                               runs["float32_seed0"]["loss_per_epoch"],
                                               strict=True))
    tolerance = max(noise, 0.02)
    return {"runs": runs, "n_train": n_train, "n_val": n_val, "epochs": epochs,
            "seed_gap_val_accuracy": round(noise, 4), "bf16_gap_val_accuracy": round(gap, 4),
            "seed_gap_loss_max": round(loss_noise, 4), "bf16_gap_loss_max": round(loss_gap, 4),
            "bf16_within_noise": bool(gap <= tolerance and loss_gap <= max(loss_noise, 0.05)
                                      and runs["mixed_bfloat16_seed0"]["finite"]),
            "tolerance_val_accuracy": round(tolerance, 4)}


# ----------------------------------------------------------------------------- summary
def derive(rates, split_rates, schedule, select_s=0.0):
    """Ratios from {model: {row: img/s}} and {model: {impl: img/s}}; a split costs the
    inference pass over n_train images plus `select_s` seconds of selection."""
    out = {"supervised_over_plain_fit": {}, "best_speedup_over_default": {},
           "cycle_over_ce": {}, "split_pass_share": {}, "best_option": {}}
    for model, r in rates.items():
        for tag in ("float32", "mixed_bfloat16", "xla"):
            if r.get(f"plain_fit/{tag}") and r.get(f"supervised/{tag}"):
                out["supervised_over_plain_fit"][f"{model}/{tag}"] = round(
                    r[f"supervised/{tag}"] / r[f"plain_fit/{tag}"], 3)
        base = r.get("default_path/float32")
        candidates = {k: v for k, v in r.items() if k.startswith("default_path/") and v}
        if base and candidates:
            best = max(candidates, key=candidates.get)
            out["best_speedup_over_default"][model] = round(candidates[best] / base, 3)
            out["best_option"][model] = best.split("/", 1)[1]
        n, e = schedule["n_train"], schedule["epochs_per_cycle"]
        split_rate = split_rates.get(model, {}).get("predict_probs/float32")
        for tag in ("float32", "mixed_bfloat16"):
            ce, ssl = r.get(f"default_path/{tag}"), r.get(f"cycle/{tag}")
            if not (ce and ssl and split_rate):
                continue
            split_key = f"predict_probs/{tag}"
            split_s = n / split_rates[model].get(split_key, split_rate) + select_s
            ce_epoch, ssl_epoch = n / ce, n / ssl
            total_epochs = schedule["warmup_epochs"] + schedule["cycles"] * e
            cycle_run = schedule["warmup_epochs"] * ce_epoch + schedule["cycles"] * (
                split_s + e * ssl_epoch)
            out["cycle_over_ce"][f"{model}/{tag}"] = round(cycle_run / (total_epochs * ce_epoch),
                                                           3)
            out["split_pass_share"][f"{model}/{tag}"] = round(split_s / (split_s + e * ssl_epoch),
                                                              3)
    return out


def headline(derived, models):
    """One number per key: the worst model for the targets, the best for the speed-up."""
    def pick(d, fn):
        vals = {k: v for k, v in d.items() if k.split("/")[0] in models}
        if not vals:
            return None, None
        key = fn(vals, key=vals.get)
        return vals[key], key

    sup, sup_at = pick({k: v for k, v in derived["supervised_over_plain_fit"].items()
                        if k.endswith("/float32")}, min)
    best, best_at = pick(derived["best_speedup_over_default"], max)
    cyc, cyc_at = pick({k: v for k, v in derived["cycle_over_ce"].items()
                        if k.endswith("/float32")}, max)
    share, share_at = pick({k: v for k, v in derived["split_pass_share"].items()
                            if k.endswith("/float32")}, max)
    return {"supervised_over_plain_fit": sup, "supervised_over_plain_fit_at": sup_at,
            "best_speedup_over_default": best,
            "best_speedup_at": f"{best_at}/{derived['best_option'].get(best_at)}",
            "cycle_over_ce": cyc, "cycle_over_ce_at": cyc_at,
            "split_pass_share": share, "split_pass_share_at": share_at}


def markdown(data):
    s = data["settings"]
    lines = ["# Training speed", "",
             f"Command: `{data['command']}`", "",
             "Steady-state images/s, median of "
             f"{s['repeats']} round-robin repeats (first {SKIP} steps of each fit left out). "
             f"Load average at start {data['load_start']}, at end {data['load_end']} on "
             f"{os.cpu_count()} cores: the CPU was shared, so compare rows within a model, "
             "measured side by side, rather than with other files.", "",
             "## Headline", ""]
    h = data["headline"]
    lines += [f"- `supervised_over_plain_fit` = **{h['supervised_over_plain_fit']}** (worst "
              f"model, float32: {h['supervised_over_plain_fit_at']}; target >= 0.95).",
              f"- `best_speedup_over_default` = **{h['best_speedup_over_default']}** "
              f"({h['best_speedup_at']}) over today's default path (float32, weak pipeline, "
              "EMA).",
              f"- `cycle_over_ce` = **{h['cycle_over_ce']}** ({h['cycle_over_ce_at']}; target "
              "<= 1.5): FER2013 recipe schedule from the measured rates.",
              f"- `split_pass_share` = **{h['split_pass_share']}** ({h['split_pass_share_at']};"
              " target <= 0.10).", ""]
    lines += ["## Images/s per row", "", "| model | row | img/s | first step (s) |",
              "|---|---|---|---|"]
    for model, rows in data["rows"].items():
        for name, r in rows.items():
            lines.append(f"| {model} | {name} | {common.fmt(r['img_s'], 1)} | "
                         f"{common.fmt(r['first_step_s'], 2)} |")
    lines += ["", "## Split pass (inference over the training set, img/s)", "",
              "| model | implementation | img/s |", "|---|---|---|"]
    for model, impls in data["split_pass_img_s"].items():
        for impl, v in impls.items():
            lines.append(f"| {model} | {impl} | {v} |")
    d = data["derived"]
    lines += ["", "## Ratios", ""]
    for key in ("supervised_over_plain_fit", "best_speedup_over_default", "cycle_over_ce",
                "split_pass_share"):
        lines.append(f"- `{key}`: " + ", ".join(f"{k} {v}" for k, v in d[key].items()))
    n = data["numerics"]
    lines += ["", "## Is mixed_bfloat16 numerically safe?", "",
              f"small_cnn on {n['n_train']} synthetic faces, {n['epochs']} epochs, validation "
              f"on {n['n_val']}.", "", "| run | loss per epoch | val accuracy | s |",
              "|---|---|---|---|"]
    for name, r in n["runs"].items():
        lines.append(f"| {name} | {r['loss_per_epoch']} | {r['val_accuracy']} | {r['seconds']} |")
    lines += ["", f"Seed-to-seed gap (the noise): accuracy {n['seed_gap_val_accuracy']}, loss "
              f"{n['seed_gap_loss_max']}. bfloat16 vs float32 (same seed): accuracy "
              f"{n['bf16_gap_val_accuracy']}, loss {n['bf16_gap_loss_max']}. Within noise: "
              f"**{n['bf16_within_noise']}**.", ""]
    lines += ["## Not tried here", "", *[f"- {x}" for x in data["not_tried"]], ""]
    return "\n".join(lines)


NOT_TRIED = [
    "Process-wide options (intra/inter-op pools, OMP, oneDNN on/off, tf.data private thread "
    "pools and ordering, NCHW) need one process per setting: bench/speed_options.py "
    "measures them (results/speed_options.md).",
    "XLA for the cycle: the step does not compile (DenseBincount of a dynamic shape in the "
    "FlexMatch count; unlabelled rows gathered with tf.where), so recipes refuse "
    "train.jit_compile with cycle.enabled. XLA for vgg4 and mobilenetv3small: left out for "
    "time (the lead's probe: vgg4 252 img/s with XLA against 375 without).",
]


def main(argv=None):
    args = parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r}; valid: {list(MODELS)}")
    if args.smoke:
        models, args.repeats, args.n_images = ["small_cnn"], 1, 128
        args.numerics_epochs = 1
    xla = set(args.xla_models.split(",")) if not args.smoke else set()
    settings = {"models": {m: dict(zip(("width", "side", "channels", "batch", "steps"),
                                       MODELS[m], strict=True)) for m in models},
                "repeats": args.repeats, "n_images": args.n_images, "skip_steps": SKIP,
                "xla_models": sorted(xla & set(models)), "smoke": args.smoke,
                "numerics_epochs": args.numerics_epochs, "schedule": SCHEDULE}
    t0, load_start = time.time(), os.getloadavg()
    rates, first, split_rates, errors = {}, {}, {}, {}
    for model in models:
        rows = build_rows(model, n_images=args.n_images, xla=model in xla, smoke=args.smoke)
        for row in rows:  # trace and warm each configuration
            try:
                row.run(steps=SKIP + 1)
            except Exception as err:  # a configuration the stack cannot run is reported
                row.error = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            row.rates.clear()
            row.first_step_s.clear()
        for _ in range(args.repeats):
            for row in rows:
                if row.error is None:
                    row.run()
        rates[model] = {r.name: r.img_s for r in rows}
        first[model] = {r.name: round(statistics.median(r.first_step_s), 3)
                        if r.first_step_s else None for r in rows}
        errors[model] = {r.name: r.error for r in rows if r.error}
        split_rates[model] = time_split_pass(model, n_images=args.n_images, smoke=args.smoke,
                                             repeats=args.repeats)
        print(f"{model}: {rates[model]} split {split_rates[model]} "
              f"({time.time() - t0:.0f} s)", flush=True)
    numerics = check_numerics(epochs=args.numerics_epochs, smoke=args.smoke)
    select_s = time_selection(SCHEDULE["n_train"] if not args.smoke else 500)
    derived = derive(rates, split_rates, SCHEDULE, select_s)
    data = {
        "headline": headline(derived, models),
        "rows": {m: {k: {"img_s": rates[m][k], "first_step_s": first[m][k]}
                     for k in rates[m]} for m in models},
        "errors": errors, "split_pass_img_s": split_rates, "derived": derived,
        "split_selection_s": select_s,
        "numerics": numerics, "load_start": [round(v, 2) for v in load_start],
        "load_end": [round(v, 2) for v in os.getloadavg()],
        "wall_s": round(time.time() - t0, 1), "not_tried": NOT_TRIED,
        "command": common.command_line(), "settings": settings,
    }
    data.update({k: data["headline"][k] for k in ("supervised_over_plain_fit",
                                                   "best_speedup_over_default",
                                                   "cycle_over_ce", "split_pass_share")})
    json_path, md_path = common.write_results("training_speed", data, markdown(data), settings,
                                              code_files=[__file__])
    print(f"wrote {json_path} and {md_path} in {data['wall_s']} s")
    return data


if __name__ == "__main__":
    main()
