"""Training half of the real-noise benchmark: one resumable run per (config, seed).

Each run trains into `<work>/<config>-s<seed>/` and, once scored, writes
`<config>-s<seed>.done.json` (settings + settings hash + ferkeras version) and
`<config>-s<seed>.probs.npz` (softmax on train / val half / reported half, best-on-val
weights). Post-hoc methods (prior-aware decision rules, transition estimates, trusted
recalibration) and the report are computed from those files by `bench/noisy_fer2013.py`, so
they never need a retrain. A done run is reused only when its settings hash and the ferkeras
version match; otherwise it is refused with a message (`--redo-stale` retrains it).

    .venv/bin/python bench/noisy_grid.py --configs ce,oracle --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

BASE_CONFIGS = ("ce", "la", "cycle", "cycle_ce", "oracle", "ce_trusted", "trusted_ce",
                "trusted_cycle")
# The trusted track's bases (#21): the validation half's FERPlus majority labels are the
# trusted rows; the epoch is picked on them (allowed on this track: they are not the
# reported half) and a recalibration is fitted on them for each objective
# (trusted.decision_objective; decision_rules.json). trusted_cycle is cycle_ce's schedule.
TRUSTED_BASES = ("trusted_ce", "trusted_cycle")
# Trusted rows that join training (t_rows, t_soft_rows): half of them, stratified, each with
# weight 5, so the ~800 rows carry ~12 % of the loss mass of 28.6k noisy rows. Set before any
# result; the other half stays out of training for the split's T and thresholds, the rule
# and the epoch.
TRUSTED_ROWS = {"trusted.train_fraction": 0.5, "trusted.train_weight": 5.0}

# Method variants: name -> (base config, recipe overrides as dotted keys). A variant trains
# like its base (same data, selection and budget) with the overrides applied on top, and its
# settings hash covers the overrides. One line per method; the report picks them up by name.
VARIANTS: dict[str, tuple[str, dict]] = {
    # Forward correction (Patrini et al. 2017), T from anchors after the same 4-epoch warm-up
    # as the cycle's (cycle_ce: 4 of 10), so 6 of 10 epochs train on the corrected loss.
    "forward": ("ce", {"train.forward_correction": "anchors", "train.forward_warmup_epochs": 4}),
    # Relabel instead of FixMatch (SELFIE-style): noisy rows the split model gives >= 0.9
    # (the default, set before any result) take its class; the rest leave the loss.
    "relabel": ("cycle_ce", {"cycle.method": "relabel"}),
    # ELR at the paper's CIFAR-10 setting (Liu et al. 2020): lambda 3, beta 0.7.
    "elr": ("ce", {"train.elr_lambda": 3.0, "train.elr_beta": 0.7}),
    # EMA teacher 0.995: a ~200-step (~1 epoch of 223) average; the bias-corrected warm-up
    # (1+n)/(10+n) governs until step ~1800, so 0.999 would never bind within 10 epochs.
    "self_distill": ("ce", {"train.ema_decay": 0.995, "train.distill_alpha": 0.5,
                            "train.distill_temperature": 1.0}),
    # Control for self_distill: the same EMA (evaluated and checkpointed on the EMA weights)
    # without distillation, so a self_distill gain can be split into EMA and distillation.
    "ema": ("ce", {"train.ema_decay": 0.995}),
    # Ada-CM (Li et al., CVPR 2022) as in the authors' code: margins start at and are floored
    # at 0.8, contrastive weight 0.1, temperature 0.07, no distribution alignment.
    "ada_cm": ("cycle_ce", {"cycle.method": "ada_cm", "cycle.min_threshold": 0.8,
                            "cycle.distribution_alignment": False}),
    # DivideMix co-divide (Li et al., ICLR 2020): two networks, each split by the other's
    # GMM, co-refined / co-guessed targets sharpened at the paper's T 0.5; scored as the
    # ensemble (mean logits). cycle_ce's thresholds and alignment do not apply to it.
    "co_divide": ("cycle_ce", {"cycle.method": "co_divide"}),
    # CReST+ (Wei et al., CVPR 2021): the 2 cycles are 2 generations; alpha 1/3 (the paper's
    # CIFAR-10-LT value), alignment temperature 1 then t_min 0.5.
    "crest": ("cycle_ce", {"cycle.method": "crest", "cycle.crest.alpha": 1 / 3,
                           "cycle.crest.t_min": 0.5}),
    # Meta Pseudo Labels (Pham et al., CVPR 2021), reduced first-order form: the teacher
    # (from the warmed-up student) at the student's learning rate, as in the paper's CIFAR
    # setting; its FixMatch consistency uses cycle.threshold 0.95, fixed.
    "mpl": ("cycle_ce", {"cycle.method": "mpl", "cycle.mpl.teacher_lr_scale": 1.0}),
    # H2E (Yi et al., ECCV 2022): the split's noise identifier on penultimate features,
    # invariant across original / balanced / reversed class environments (IRM penalty 1),
    # two fits per split (the second without the rows the first flagged).
    "h2e": ("cycle_ce", {"cycle.selector": "h2e", "cycle.h2e.rounds": 2,
                         "cycle.h2e.penalty": 1.0}),
    # PNP (Sun et al., CVPR 2022) at the authors' settings: label smoothing 0.6, T 0.1,
    # eta 0.5, beta (OOD) 1, gamma (head) 1, omega (consistency) 1; samples.csv gets p_ood.
    # --- the trusted track (#21), one factor at a time, then the combination ---
    # The trusted split inside the cycle (T from trusted counts x recalibrated model,
    # per-class thresholds cross-fitted on the trusted rows); flagged rows to FixMatch.
    "t_split": ("trusted_cycle", {"cycle.selector": "trusted"}),
    # The same split; flagged rows train on p(y | x, given) (soft relabelling) instead.
    "t_soft": ("trusted_cycle", {"cycle.selector": "trusted", "cycle.method": "soft"}),
    # CE with half the trusted rows in training (weight 5).
    "t_rows": ("trusted_ce", dict(TRUSTED_ROWS)),
    # Gold loss correction (Hendrycks et al. 2018) in one run: T from the trusted rows after
    # the same 4-epoch warm-up as the cycle's; the classic baseline of this track.
    "glc": ("trusted_ce", {"train.forward_correction": "gold",
                           "train.forward_warmup_epochs": 4}),
    # The combination: soft relabelling with half the trusted rows in training.
    "t_soft_rows": ("trusted_cycle", {"cycle.selector": "trusted", "cycle.method": "soft",
                                      **TRUSTED_ROWS}),
    # The same with the product's long-tail loss: logit adjustment (tau 1) on the soft
    # targets learns prior-free logits; the decision rule puts a prior back per objective.
    "t_soft_rows_la": ("trusted_cycle", {"cycle.selector": "trusted",
                                         "cycle.method": "soft", "train.loss":
                                         "logit_adjusted", **TRUSTED_ROWS}),
    "pnp": ("cycle_ce", {"cycle.method": "pnp", "cycle.pnp.label_smoothing": 0.6,
                         "cycle.pnp.temperature": 0.1, "cycle.pnp.eta": 0.5,
                         "cycle.pnp.ood_weight": 1.0, "cycle.pnp.aux_weight": 1.0,
                         "cycle.pnp.consistency_weight": 1.0}),
}

CONFIGS = BASE_CONFIGS + tuple(VARIANTS)


def base_of(config: str) -> str:
    return VARIANTS[config][0] if config in VARIANTS else config


def settings_for(config: str, args, seed: int) -> dict:
    """Every setting that changes a run's result (what the hash covers)."""
    if config in VARIANTS:
        base, overrides = VARIANTS[config]
        s = settings_for(base, args, seed)
        s.update(config=config, base=base, overrides=hashed_overrides(overrides))
        return s
    s = {
        "config": config, "seed": seed, "model": args.model, "width": args.width,
        "epochs": args.epochs, "batch_size": 128, "learning_rate": 2e-3, "optimizer": "adamw",
        "weight_decay": 1e-4, "warmup_epochs": 0.5, "augment": "weak", "dropout": 0.2,
        "precision": "float32", "limit_train": args.limit_train, "split_seed": 0,
        "select": "accuracy on the validation half vs FER2013 labels"
        if config not in ("oracle", "ce_trusted") + TRUSTED_BASES else
        "accuracy on the validation half vs FERPlus majority (trusted)",
    }
    if config == "oracle":
        s["select"] = "accuracy on the validation half vs FERPlus majority"
    if getattr(args, "swap_halves", False):  # only when set, so older runs' hashes stay
        s["halves"] = "swapped"
    if getattr(args, "fold", None):
        s["fold"] = args.fold  # "i/K": trained without fold i of K of the Training rows
    return s


def hashed_overrides(overrides: dict) -> dict:
    """The overrides as the settings hash has always seen them: in the recipe spelling from
    before `cycle.method` (ferkeras.training.old_keys), so runs done then stay valid (the
    two spellings give bit-identical runs: tools/method_parity.py)."""
    from ferkeras.training.old_keys import METHOD_FLAGS, OPTIONS

    old_option = {f"cycle.{section}.{option}": f"cycle.{key}"
                  for key, (section, option) in OPTIONS.items()}
    out = {}
    for key, value in overrides.items():
        if key == "cycle.method":
            key, value = next((f"cycle.{flag}", on) for flag, named in METHOD_FLAGS.items()
                              for on, method in named.items() if method == value)
        out[old_option.get(key, key)] = value
    return dict(sorted(out.items()))


def settings_hash(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def make_recipe(config: str, s: dict, data_root: str):
    from ferkeras.training.recipe import apply_overrides, recipe_from_dict

    if config in VARIANTS:
        base, overrides = VARIANTS[config]
        values = _recipe_values(base, s, data_root)
        values["name"] = f"noisy-{config}-s{s['seed']}"
        return recipe_from_dict(apply_overrides(
            values, [f"{k}={json.dumps(v)}" for k, v in sorted(overrides.items())]))
    return recipe_from_dict(_recipe_values(config, s, data_root))


def _recipe_values(config: str, s: dict, data_root: str) -> dict:
    values = {
        "name": f"noisy-{config}-s{s['seed']}", "seed": s["seed"],
        "data": {"source": "fer2013", "root": data_root, "class_set": "fer2013",
                 "image_size": 48, "channels": 1},
        "model": {"backbone": s["model"], "width": s["width"], "dropout": s["dropout"]},
        "train": {"epochs": s["epochs"], "batch_size": s["batch_size"],
                  "learning_rate": s["learning_rate"], "optimizer": s["optimizer"],
                  "weight_decay": s["weight_decay"], "warmup_epochs": s["warmup_epochs"],
                  "augment": s["augment"], "select_metric": "accuracy", "ema_decay": 0.0,
                  "loss": "logit_adjusted" if config in ("la", "cycle") else "ce"},
    }
    if config in TRUSTED_BASES:
        values["trusted"] = {"source": "val_true_labels", "select": True,
                             "decision": "recalibrate", "decision_objective": "accuracy"}
    if config in ("cycle", "cycle_ce", "trusted_cycle"):
        per_cycle = max(1, s["epochs"] // 3)
        values["cycle"] = {"enabled": True, "warmup_epochs": max(1, s["epochs"] - 2 * per_cycle),
                           "cycles": 2, "epochs_per_cycle": per_cycle,
                           "normalize": "per_class", "gmm_scope": "global", "loss_window": 1,
                           "p_clean": 0.5, "threshold": 0.95, "threshold_mode": "adaptive",
                           "min_threshold": 0.7, "distribution_alignment": True,
                           "lambda_u": 1.0}
    return values


def make_bundle(t, rows, config):
    config = base_of(config)
    from ferkeras.data.table import DatasetBundle, Split
    from ferkeras.labels import get_class_names

    tr = rows["train"]
    notes = []
    val_labels = t.fer[rows["val"]]
    if config == "oracle":
        dropped = int((t.plus[tr] < 0).sum())
        tr = tr[t.plus[tr] >= 0]
        notes.append(f"oracle: {dropped} train rows without a FERPlus majority dropped.")
    if config in ("oracle", "ce_trusted"):
        # the trusted rows (validation half, FERPlus majority) select the epoch
        val_rows = rows["val"][t.plus[rows["val"]] >= 0]
        val_labels = t.plus[val_rows]
    else:
        val_rows = rows["val"]
    # the trusted track reads the trusted labels itself (trusted.source val_true_labels)
    val_truth = t.plus[val_rows] if config in TRUSTED_BASES else None
    labels = t.plus[tr] if config == "oracle" else t.fer[tr]
    rep = rows["reported"][t.plus[rows["reported"]] >= 0]
    bundle = DatasetBundle(
        class_names=tuple(get_class_names("fer2013")),
        train=Split(images=t.images[tr], labels=labels, true_labels=t.plus[tr]),
        val=Split(images=t.images[val_rows], labels=val_labels, true_labels=val_truth),
        test=Split(images=t.images[rep], labels=t.plus[rep]),
        source="fer2013", notes=notes,
    )
    bundle.check_classes()
    return bundle, tr


def predict(net, images: np.ndarray) -> np.ndarray:
    import keras

    out = []
    for i in range(0, len(images), 1024):
        logits = net(images[i:i + 1024].astype("float32"), training=False)
        out.append(keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1)))
    return np.concatenate(out).astype(np.float32)


def features(net, images: np.ndarray) -> np.ndarray:
    """(N, D) penultimate features (the input of the head's dropout), float16 to save space."""
    import keras

    if "net_a" in [layer.name for layer in net.layers]:  # a co-divide ensemble: A's features
        net = net.get_layer("net_a")
    head = net.get_layer("head_dropout")
    sub = keras.Model(net.input, head.input)
    out = [keras.ops.convert_to_numpy(sub(images[i:i + 1024].astype("float32"), training=False))
           for i in range(0, len(images), 1024)]
    return np.concatenate(out).astype(np.float16)


def save_probs(net, t, rows, path, run_dir=None) -> float:
    """Write the run's probabilities; returns the seconds of the pass over the training set
    (what a post-hoc rule costs on top of training). A trusted-track run also gets each
    in-run decision rule applied to the reported half (`reported_rule_<objective>`) and the
    validation rows the rules were fitted on (`rules_val_rows`), from decision_rules.json."""
    t0 = time.time()
    train = predict(net, t.images[rows["train"]])
    seconds = time.time() - t0
    reported = predict(net, t.images[rows["reported"]])
    extra = {}
    if "heldout" in rows:  # a K-fold run: out-of-sample probabilities of its held-out fold
        extra["heldout"] = predict(net, t.images[rows["heldout"]])
        extra["heldout_rows"] = np.asarray(rows["heldout"], np.int64)
    rules_file = None if run_dir is None else pathlib.Path(run_dir) / "decision_rules.json"
    if rules_file is not None and rules_file.is_file():
        from ferkeras.noise.trusted import OBJECTIVES, apply_decision

        rules = json.loads(rules_file.read_text())
        for obj in (o for o in OBJECTIVES if o in rules):
            extra[f"reported_rule_{obj}"] = apply_decision(rules[obj], reported).astype(
                np.float32)
        extra["rules_val_rows"] = np.asarray(rules["trusted_val_rows"], np.int64)
    np.savez_compressed(path, train=train,
                        val=predict(net, t.images[rows["val"]]),
                        reported=reported,
                        feats_val=features(net, t.images[rows["val"]]),
                        feats_reported=features(net, t.images[rows["reported"]]), **extra)
    return seconds


def ferplus_logger(t, rows, path: pathlib.Path, *, resume: bool, dynamics: bool = False):
    """A Keras callback that, at each epoch end, scores the eval network on the reported half
    against FERPlus (rows with a majority) and on the validation half against the FER2013
    labels, and appends {epoch, reported_acc_ferplus, val_acc_fer2013} to `path` (JSON, kept
    across a resume). LOGGING ONLY: nothing reads it during training, the epoch is still
    selected by ValidationCheckpoint; the report draws it (memorisation curves). Its seconds
    are kept (`seconds`) so the report can take them out of the run's wall time. Each epoch's
    probabilities of the validation half and of the reported rows go to `epoch_probs.npz`
    beside `path` (float16), for checkpoint-selection signals scored offline.

    dynamics: also record the training dynamics of every training row (eval network,
    un-augmented): the probability of its FER2013 label and its margin (that probability
    minus the largest other), one column per epoch, in `dynamics.npz` beside `path` (float16;
    epochs as `epochs`). Label-error detectors from training dynamics (area under the margin,
    Pleiss et al. 2020) are scored from it (bench/audit_dynamics.py)."""
    import keras

    from ferkeras import io
    from ferkeras.noise.label_issues import given_label_margins

    rep = rows["reported"][t.plus[rows["reported"]] >= 0]
    rep_x, rep_y = t.images[rep], t.plus[rep]
    val_x, val_y = t.images[rows["val"]], t.fer[rows["val"]]
    tr_x, tr_y = t.images[rows["train"]], t.fer[rows["train"]]
    old = json.loads(path.read_text()) if resume and path.is_file() else {}
    dyn_path = path.with_name("dynamics.npz")
    probs_path = path.with_name("epoch_probs.npz")

    class FerplusByEpoch(keras.callbacks.Callback):
        records = list(old.get("records", []))
        seconds = float(old.get("seconds", 0.0))

        def on_epoch_end(self, epoch, logs=None):
            t0 = time.time()
            net = getattr(self.model, "eval_network", self.model)
            try:  # a logging failure must not end an hour of training
                p_rep, p_val = predict(net, rep_x), predict(net, val_x)
                rec = {"epoch": epoch + 1, "reported_acc_ferplus": float(
                    (p_rep.argmax(1) == rep_y).mean()), "val_acc_fer2013": float(
                    (p_val.argmax(1) == val_y).mean())}
                self._epoch_probs(epoch + 1, val=p_val, reported=p_rep)
                if dynamics:
                    self._dynamics(net, epoch + 1)
            except Exception as err:  # noqa: BLE001
                rec = {"epoch": epoch + 1, "error": f"{type(err).__name__}: {err}"[:300]}
            self.records = [r for r in self.records if r["epoch"] < epoch + 1] + [rec]
            self.seconds += time.time() - t0
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"records": self.records, "seconds": self.seconds}))
            tmp.replace(path)

        def _epoch_probs(self, epoch, **probs):
            """Every epoch's probabilities of the validation half and of the reported rows
            (float16, `<run>/epoch_probs.npz`): checkpoint-selection signals are scored
            offline from them (bench/selection_signal.py)."""
            io.append_epoch_npz(probs_path, epoch, axis=0,
                                **{k: v.astype(np.float16) for k, v in probs.items()})

        def _dynamics(self, net, epoch):
            p = predict(net, tr_x)
            io.append_epoch_npz(dyn_path, epoch, axis=1,
                                prob=p[np.arange(len(tr_y)), tr_y].astype(np.float16),
                                margin=given_label_margins(tr_y, p).astype(np.float16))

    return FerplusByEpoch()


def train_one(recipe, bundle, run_dir, log, callbacks=()):
    import keras

    import ferkeras.training as training

    keras.backend.clear_session()
    resume = (run_dir / "checkpoints" / "state.json").is_file()
    if resume:
        log(f"{run_dir.name}: resuming")
    return training.train(recipe, bundle, run_dir=run_dir, resume=resume,
                          overwrite=not resume, verbose=2, echo=log, callbacks=callbacks)


def run(config, seed, args, t, rows, work, log):
    import ferkeras
    from ferkeras.methods.co_divide.core import build_run_network

    name = f"{config}-s{seed}" + (f"-fold{args.fold.replace('/', 'of')}" if args.fold else "")
    s = settings_for(config, args, seed)
    h = settings_hash(s)
    done = work / f"{name}.done.json"
    if done.is_file():
        old = json.loads(done.read_text())
        if old.get("settings_hash") == h and old.get("ferkeras_version") == ferkeras.__version__:
            log(f"{name}: done already")
            return
        if not args.redo_stale:
            raise SystemExit(f"{done}: settings or version differ from this invocation's "
                             f"({old.get('settings_hash')} vs {h}); pass --redo-stale to "
                             "retrain it or use another --work folder.")
        done.unlink()
    recipe = make_recipe(config, s, str(pathlib.Path(args.data) / "fer2013" /
                                         "fer2013.csv.gz"))
    bundle, train_rows = make_bundle(t, rows, config)
    run_dir = work / name
    log(f"{name}: training on {len(bundle.train)} images")
    resumed = (run_dir / "checkpoints" / "state.json").is_file()
    curve = ferplus_logger(t, rows, run_dir / "ferplus_by_epoch.json", resume=resumed,
                           dynamics=args.dynamics)
    metrics = train_one(recipe, bundle, run_dir, log, callbacks=(curve,))
    # the recipe's network; for co_divide the ensemble of both (what best.weights.h5 holds)
    net = build_run_network(recipe, input_shape=(48, 48, 1), num_classes=7,
                            weights=run_dir / "checkpoints" / "best.weights.h5")
    train_pass_s = save_probs(net, t, rows, work / f"{name}.probs.npz", run_dir=run_dir)
    history = []
    hist_file = run_dir / "history.csv"
    if hist_file.is_file():
        history = hist_file.read_text().splitlines()
    result = {"run": name, "config": config, "seed": seed, "settings": s, "settings_hash": h,
              "ferkeras_version": ferkeras.__version__, "wall_s": metrics["wall_seconds"],
              "resumed": resumed,  # then wall_s covers only this process's part
              "train_s": metrics["train_seconds"], "epochs": metrics["epochs"],
              "best_epoch": metrics["best_epoch"], "n_train": len(bundle.train),
              "split_s": metrics.get("split_seconds"), "history_csv": history,
              "train_pass_s": round(train_pass_s, 2),
              "notes": bundle.notes, "loadavg_end": list(os.getloadavg()),
              "ferplus_by_epoch": curve.records,  # logging only (see ferplus_logger)
              "ferplus_by_epoch_s": round(curve.seconds, 2),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for key in ("detection_auc_by_split", "trusted_auc_by_split", "decision",
                "forward_correction"):
        if key in metrics:
            result[key] = metrics[key]
    if base_of(config) in ("cycle", "cycle_ce", "trusted_cycle"):
        reports = sorted((run_dir / "reports").glob("split-e*/samples.csv"))
        result["last_split_csv"] = str(reports[-1]) if reports else None
    done.write_text(json.dumps(result, indent=2))
    log(f"{name}: done, wall {result['wall_s']:.0f} s, best epoch {result['best_epoch']}")


def rescore(config, seed, args, t, rows, work, log):
    from ferkeras.methods.co_divide.core import build_run_network

    name = f"{config}-s{seed}"
    if not (work / f"{name}.done.json").is_file():
        log(f"{name}: not done, nothing to rescore")
        return
    recipe = make_recipe(config, settings_for(config, args, seed), "unused")
    net = build_run_network(recipe, input_shape=(48, 48, 1), num_classes=7,
                            weights=work / name / "checkpoints" / "best.weights.h5")
    seconds = save_probs(net, t, rows, work / f"{name}.probs.npz", run_dir=work / name)
    done = json.loads((work / f"{name}.done.json").read_text())
    done["train_pass_s"] = round(seconds, 2)
    done["train_pass_loadavg"] = list(os.getloadavg())
    (work / f"{name}.done.json").write_text(json.dumps(done, indent=2))
    log(f"{name}: rescored (training-set pass {seconds:.1f} s)")


def main(argv=None) -> int:
    from noisy_data import load_tables, split_rows

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=None,
                   help="comma-separated (default ce; with --smoke ce,oracle)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--model", default="small_cnn", choices=("small_cnn", "vgg4"))
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"),
                   help="folder holding fer2013/fer2013.csv.gz and ferplus/fer2013new.csv")
    p.add_argument("--work", default=None,
                   help="run folder (default bench/.work/noisy_grid, or $FERKERAS_BENCH_WORK)")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: fake FER2013-format tables, ce+oracle, 1 seed, 1 epoch")
    p.add_argument("--redo-stale", action="store_true")
    p.add_argument("--dynamics", action="store_true",
                   help="log every training row's given-label probability and margin per "
                   "epoch (<run>/dynamics.npz; logging only, its seconds are excluded)")
    p.add_argument("--swap-halves", action="store_true",
                   help="cross-fit: the reported half becomes the validation (trusted) half "
                   "and the other way round (use its own --work folder)")
    p.add_argument("--fold", default=None, metavar="I/K",
                   help="K-fold: train without fold I of K of the Training rows (stratified by "
                   "FER2013 label, seed 0) and save the held-out fold's probabilities "
                   "(cleanlab's recommended out-of-sample setting; bench/audit_dynamics.py)")
    p.add_argument("--rescore", action="store_true",
                   help="recompute <run>.probs.npz of done runs from their best weights")
    args = p.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import common

    if args.smoke:
        args.configs = args.configs or "ce,oracle"
        args.seeds, args.epochs, args.width = "0", 1, 4
    args.configs = args.configs or "ce"
    configs = [c for c in args.configs.split(",") if c]
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        p.error(f"--configs: unknown {bad}; valid: {list(CONFIGS)}")
    seeds = [int(x) for x in args.seeds.split(",") if x]
    default_work = common.WORK / ("noisy_grid_smoke" if args.smoke else "noisy_grid")
    work = pathlib.Path(args.work) if args.work else default_work
    work.mkdir(parents=True, exist_ok=True)

    def log(msg):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(work / "log.txt", "a") as fh:
            fh.write(line + "\n")

    if args.smoke:
        from noisy_data import fake_tables

        t = fake_tables()
    else:
        t = load_tables(pathlib.Path(args.data), common.WORK / "fer2013_tables.npz")
    rows = split_rows(t, limit_train=args.limit_train, seed=0)
    if args.swap_halves:
        rows["val"], rows["reported"] = rows["reported"], rows["val"]
    if args.fold:
        from ferkeras.noise.label_issues import stratified_folds

        try:
            i, k = (int(x) for x in args.fold.split("/"))
            assert 0 <= i < k and k >= 2
        except (ValueError, AssertionError):
            p.error(f"--fold must be I/K with 0 <= I < K, K >= 2. Received: {args.fold!r}")
        fold_of = stratified_folds(t.fer[rows["train"]], folds=k, seed=0)
        rows["heldout"] = rows["train"][fold_of == i]
        rows["train"] = rows["train"][fold_of != i]
    for seed in seeds:
        for config in configs:
            if args.rescore:
                rescore(config, seed, args, t, rows, work, log)
            else:
                run(config, seed, args, t, rows, work, log)
    done = {f.name[:-len(".done.json")]: {k: v for k, v in json.loads(f.read_text()).items()
                                          if k not in ("history_csv",)}
            for f in sorted(work.glob("*.done.json"))}
    name = "noisy_grid_smoke" if args.smoke else "noisy_grid"
    settings = {"configs": configs, "seeds": seeds, "epochs": args.epochs, "model": args.model,
                "width": args.width, "limit_train": args.limit_train, "work": str(work),
                "swap_halves": args.swap_halves,
                "smoke": args.smoke}
    md = [f"# Real-noise grid runs ({work})", "", "| run | settings hash | wall (s) | best "
          "epoch | finished |", "|---|---|---|---|---|"]
    md += [f"| {k} | {v['settings_hash']} | {v['wall_s']:.0f} | {v['best_epoch']} | "
           f"{v['finished']} |" for k, v in done.items()]
    if not args.smoke and work != default_work:
        name = f"noisy_grid_{work.name}"
    common.write_results(name, {"runs": done}, "\n".join(md) + "\n", settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
