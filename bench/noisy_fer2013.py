"""Benchmark: the noise-robust cycle on FER2013's real label noise, scored against FERPlus.

Command (from the repository root; the shared data is read in place, never copied):

    .venv/bin/python bench/noisy_fer2013.py --runs ce,cycle,oracle,la,cleanlab --epochs 6

Smoke run (about a minute): `--limit-train 512 --epochs 1 --work bench/.work/smoke`.

Protocol
- Train: FER2013 `Training` rows with their original (noisy) labels; true_labels = FERPlus
  majority (-1 where none), joined by ROW POSITION (`ferkeras.data.fer2013`).
- PublicTest is split into two seeded halves, stratified on the FER2013 label
  (`stratified_holdout(fraction=0.5)`):
  * validation half = `bundle.val`, labels = FER2013 labels: it alone picks the best epoch.
  * reported half = `bundle.test`, labels = FERPlus majority (rows without one are dropped and
    counted). It is scored once per run, after training, with the best-on-validation weights,
    against FERPlus majority (headline) and against FER2013 labels, each with and without the
    test images that have a pixel-identical duplicate in Training.
- Runs (same model, augmentation, optimiser, seed, epoch budget): `ce`, `la`
  (train.loss=logit_adjusted), `cycle` (cycle.enabled with logit_adjusted), `oracle` (CE on
  FERPlus majority labels, train rows without one dropped) and `cleanlab` (2-fold
  cross-validated CE models -> out-of-sample pred_probs -> cleanlab).
- Noise detection on training rows that have a FERPlus majority, truth = (FER2013 label ==
  FERPlus majority): the cycle's last split (reports/split-e*/samples.csv, clean_prob) vs
  cleanlab (`get_label_quality_scores` for ROC-AUC, `find_label_issues` for P/R).

How the data reaches `train_recipe`: this script builds the exact `DatasetBundle` itself and
monkeypatches `ferkeras.data.sources.load_bundle` (imported lazily inside `train_recipe`) to
return it. That is a benchmark-only shortcut; the library's own loaders are untouched.

cleanlab is not a project dependency: it is imported from `bench/.work/site`
(`pip install --target bench/.work/site cleanlab`, git-ignored). Without it the cleanlab
step is reported as missing.

Resumable: each run trains into bench/.work/noisy_fer2013/<run>/ and, once scored, writes
<run>.done.json; a rerun skips done runs and resumes a killed one from checkpoints/state.json.
The report (bench/results/noisy_fer2013.{md,json}, plus _recall.png) is assembled from
whatever runs are done; `--report-only` only assembles it.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path("/work/shared/data")
FER_CSV = DATA / "fer2013" / "fer2013.csv.gz"
FERPLUS_CSV = DATA / "ferplus" / "fer2013new.csv"
RESULTS = ROOT / "bench" / "results"
ALL_RUNS = ("ce", "cycle", "oracle", "la", "cleanlab")
MODEL_RUNS = ("ce", "la", "cycle", "oracle")
CLEANLAB_FOLDS = 2
SEED = 0


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class Tables:
    """All rows of the joined files. images (N, 48, 48, 1) uint8; fer, plus (N,) int32
    (plus = FERPlus majority, -1 none); usage (N,) str; dup_in_train (N,) bool."""

    images: np.ndarray
    fer: np.ndarray
    plus: np.ndarray
    usage: np.ndarray
    dup_in_train: np.ndarray


def load_tables(cache: pathlib.Path) -> Tables:
    """Parse both CSVs once (cached as .npz under the work folder)."""
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return Tables(**{k: z[k] for k in z.files})
    from ferkeras.data.fer2013 import ferplus_labels, read_fer2013_csv, read_ferplus_csv
    from ferkeras.data.sources import code_lookup
    from ferkeras.labels import FER2013_CODES, get_class_names

    names = get_class_names("fer2013")
    table = read_fer2013_csv(FER_CSV)
    plus_table = read_ferplus_csv(FERPLUS_CSV)
    if len(plus_table.votes) != len(table.emotions) or (plus_table.usage != table.usage).any():
        raise ValueError("fer2013.csv.gz and fer2013new.csv are not row-aligned.")
    fer = code_lookup(FER2013_CODES, names)[table.emotions].astype(np.int32)
    plus, _ = ferplus_labels(plus_table.votes, class_names=names, mode="majority")
    plus[plus_table.names == ""] = -1
    digests = np.array([hashlib.sha1(img.tobytes()).hexdigest() for img in table.images])
    train_hashes = set(digests[table.usage == "Training"])
    dup = np.array([d in train_hashes for d in digests]) & (table.usage != "Training")
    tables = Tables(images=table.images[..., None], fer=fer, plus=plus.astype(np.int32),
                    usage=table.usage.astype(str), dup_in_train=dup)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "wb") as fh:
        np.savez(fh, **dataclasses.asdict(tables))
    return tables


def split_rows(t: Tables, *, limit_train: int, seed: int) -> dict:
    """Row positions: train, val half, reported half (all, before dropping no-majority)."""
    from ferkeras.data.table import stratified_holdout

    train = np.flatnonzero(t.usage == "Training")
    if limit_train and limit_train < len(train):
        _, pick = stratified_holdout(t.fer[train], fraction=limit_train / len(train), seed=seed)
        train = train[pick]
    public = np.flatnonzero(t.usage == "PublicTest")
    keep, hold = stratified_holdout(t.fer[public], fraction=0.5, seed=seed)
    return {"train": train, "val": public[keep], "reported": public[hold]}


def make_bundle(t: Tables, rows: dict, *, train_labels: str, train_rows=None):
    """DatasetBundle for one run. train_labels: 'fer2013' or 'ferplus' (oracle)."""
    from ferkeras.data.table import DatasetBundle, Split
    from ferkeras.labels import get_class_names

    tr = rows["train"] if train_rows is None else train_rows
    notes = []
    if train_labels == "ferplus":
        dropped = int((t.plus[tr] < 0).sum())
        tr = tr[t.plus[tr] >= 0]
        notes.append(f"oracle: {dropped} train rows without a FERPlus majority dropped.")
        labels = t.plus[tr]
    else:
        labels = t.fer[tr]
    rep = rows["reported"][t.plus[rows["reported"]] >= 0]
    bundle = DatasetBundle(
        class_names=tuple(get_class_names("fer2013")),
        train=Split(images=t.images[tr], labels=labels, true_labels=t.plus[tr]),
        val=Split(images=t.images[rows["val"]], labels=t.fer[rows["val"]]),
        test=Split(images=t.images[rep], labels=t.plus[rep]),
        source="fer2013", notes=notes,
    )
    bundle.check_classes()
    return bundle, tr


# ----------------------------------------------------------------------------- recipes
def cycle_schedule(epochs: int) -> dict:
    """Same total epoch count as CE: 2 cycles of epochs//3 SSL epochs, rest warm-up."""
    per_cycle = max(1, epochs // 3)
    return {"warmup_epochs": max(1, epochs - 2 * per_cycle), "cycles": 2,
            "epochs_per_cycle": per_cycle}


def make_recipe(run: str, args):
    from ferkeras.recipe import recipe_from_dict

    values = {
        "name": f"noisy_fer2013-{run}", "seed": SEED,
        "data": {"source": "fer2013", "root": str(FER_CSV), "class_set": "fer2013",
                 "image_size": 48, "channels": 1},
        "model": {"backbone": args.model, "width": args.width, "dropout": 0.2},
        "train": {"epochs": args.epochs, "batch_size": 128, "learning_rate": 2e-3,
                  "optimizer": "adamw", "weight_decay": 1e-4, "warmup_epochs": 0.5,
                  "augment": "weak", "select_metric": "balanced_accuracy", "ema_decay": 0.0,
                  "loss": "logit_adjusted" if run in ("la", "cycle") else "ce"},
    }
    if run == "cycle":
        values["cycle"] = {"enabled": True, **cycle_schedule(args.epochs),
                           "normalize": "per_class", "gmm_scope": "global", "loss_window": 1,
                           "p_clean": 0.5, "threshold": 0.95, "threshold_mode": "adaptive",
                           "min_threshold": 0.7, "distribution_alignment": True,
                           "lambda_u": 1.0}
    return recipe_from_dict(values)


# ----------------------------------------------------------------------------- training
def predict(recipe, run_dir: pathlib.Path, images: np.ndarray) -> np.ndarray:
    """(N, K) softmax of the best-on-validation weights of `run_dir` on `images`."""
    from ferkeras.callbacks.evaluate import predict_probs
    from ferkeras.data.pipeline import make_dataset
    from ferkeras.data.table import Split
    from ferkeras.models import build_network

    net = build_network(recipe.model, input_shape=(48, 48, 1), num_classes=7, seed=SEED)
    net.load_weights(str(run_dir / "checkpoints" / "best.weights.h5"))
    split = Split(images=images, labels=np.zeros(len(images), np.int32))
    probs, index = predict_probs(net, make_dataset(split, recipe.data, batch_size=512))
    out = np.zeros_like(probs)
    out[index] = probs
    return out


def train_one(recipe, bundle, run_dir: pathlib.Path, log) -> dict:
    """train_recipe on our bundle; resumes from checkpoints/state.json when present."""
    import keras

    import ferkeras.data.sources as sources
    from ferkeras.training import train_recipe

    keras.backend.clear_session()
    original = sources.load_bundle
    sources.load_bundle = lambda cfg, *, seed: bundle
    try:
        resume = (run_dir / "checkpoints" / "state.json").is_file()
        if resume:
            log(f"{run_dir.name}: resuming from {run_dir}/checkpoints/state.json")
        return train_recipe(recipe, run_dir=run_dir, resume=resume, overwrite=not resume,
                            verbose=2, echo=log)
    finally:
        sources.load_bundle = original


def score_reported(t: Tables, rows: dict, probs: np.ndarray) -> dict:
    """probs: (len(rows['reported']), K). Scores vs FERPlus majority and vs FER2013 labels,
    on all reported rows and on those without a duplicate in Training."""
    from ferkeras.evaluation import classification_metrics
    from ferkeras.labels import get_class_names

    names = get_class_names("fer2013")
    rep = rows["reported"]
    plus, fer, dup = t.plus[rep], t.fer[rep], t.dup_in_train[rep]

    def block(labels, mask):
        m = classification_metrics(np.where(mask, labels, -1), probs, class_names=names)
        return {k: m[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1",
                                  "per_class_recall")}

    everything = np.ones(len(rep), bool)
    return {"vs_ferplus": block(plus, everything), "vs_ferplus_no_dup": block(plus, ~dup),
            "vs_fer2013": block(fer, everything), "vs_fer2013_no_dup": block(fer, ~dup)}


def last_split_scores(run_dir: pathlib.Path, t: Tables, train_rows: np.ndarray, p_clean):
    """Detection scores of the cycle's last split from its samples.csv."""
    from ferkeras.selection import score_noise_detection

    reports = sorted((run_dir / "reports").glob("split-e*/samples.csv"))
    if not reports:
        return None
    with open(reports[-1], newline="") as fh:
        table = list(csv.DictReader(fh))
    index = np.array([int(r["index"]) for r in table])
    clean_prob = np.zeros(len(train_rows))
    clean_prob[index] = [float(r["clean_prob"]) for r in table]
    plus, fer = t.plus[train_rows], t.fer[train_rows]
    known = plus >= 0
    s = score_noise_detection(clean_prob[known], (fer == plus)[known], labels=fer[known],
                              num_classes=7, p_clean=p_clean)
    s.pop("per_class", None)
    s["report"] = str(reports[-1].relative_to(ROOT)) if reports[-1].is_relative_to(ROOT) \
        else str(reports[-1])
    return s


def run_model(run: str, args, t: Tables, rows: dict, work: pathlib.Path, log) -> None:
    done = work / f"{run}.done.json"
    if done.is_file():
        log(f"{run}: done already ({done})")
        return
    recipe = make_recipe(run, args)
    bundle, train_rows = make_bundle(t, rows, train_labels="ferplus" if run == "oracle"
                                     else "fer2013")
    run_dir = work / run
    log(f"{run}: training on {len(bundle.train)} images")
    metrics = train_one(recipe, bundle, run_dir, log)
    probs = predict(recipe, run_dir, t.images[rows["reported"]])
    result = {"run": run, "wall_s": metrics["wall_seconds"],
              "train_s": metrics["train_seconds"], "epochs": metrics["epochs"],
              "best_epoch": metrics["best_epoch"], "n_train": len(bundle.train),
              "val_best": {k: metrics["val"]["best"][k]
                           for k in ("accuracy", "balanced_accuracy", "macro_f1")},
              "library_test_best": {k: metrics["test"]["best"][k]
                                    for k in ("n", "accuracy", "balanced_accuracy", "macro_f1")},
              "reported": score_reported(t, rows, probs), "notes": bundle.notes}
    if run == "cycle":
        result["split_s"] = metrics.get("split_seconds")
        result["splits"] = metrics.get("splits")
        result["detection"] = last_split_scores(run_dir, t, train_rows, recipe.cycle.p_clean)
    done.write_text(json.dumps(result, indent=2))
    log(f"{run}: reported vs FERPlus acc {result['reported']['vs_ferplus']['accuracy']:.4f}, "
        f"wall {result['wall_s']:.0f} s")


def run_cleanlab(args, t: Tables, rows: dict, work: pathlib.Path, log) -> None:
    """K-fold CE models -> out-of-sample pred_probs on training -> cleanlab scores."""
    from ferkeras.data.table import stratified_holdout

    done = work / "cleanlab.done.json"
    if done.is_file():
        log(f"cleanlab: done already ({done})")
        return
    train = rows["train"]
    _, fold1 = stratified_holdout(t.fer[train], fraction=0.5, seed=SEED)
    folds = [np.setdiff1d(np.arange(len(train)), fold1), fold1]
    probs = np.zeros((len(train), 7))
    wall = 0.0
    recipe = make_recipe("ce", args)
    for f in range(CLEANLAB_FOLDS):
        fold_file = work / f"cleanlab_f{f}.probs.npy"
        held = folds[f]
        if not fold_file.is_file():
            fit_rows = train[np.setdiff1d(np.arange(len(train)), held)]
            bundle, _ = make_bundle(t, rows, train_labels="fer2013", train_rows=fit_rows)
            log(f"cleanlab fold {f}: training on {len(fit_rows)}, predicting {len(held)}")
            metrics = train_one(recipe, bundle, work / f"cleanlab_f{f}", log)
            np.save(fold_file, predict(recipe, work / f"cleanlab_f{f}", t.images[train[held]]))
            (work / f"cleanlab_f{f}.wall.json").write_text(
                json.dumps({"wall_s": metrics["wall_seconds"]}))
        probs[held] = np.load(fold_file)
        wall += json.loads((work / f"cleanlab_f{f}.wall.json").read_text())["wall_s"]
    result = {"folds": CLEANLAB_FOLDS, "wall_s": wall, **cleanlab_scores(t, train, probs)}
    done.write_text(json.dumps(result, indent=2))
    log(f"cleanlab: AUC {result.get('auc')}")


def cleanlab_scores(t: Tables, train: np.ndarray, probs: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    site = str(ROOT / "bench" / ".work" / "site")
    if site not in sys.path:
        sys.path.append(site)
    import cleanlab
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = t.fer[train]
    quality = get_label_quality_scores(labels, probs)
    issues = find_label_issues(labels, probs)  # defaults: filter_by="prune_by_noise_rate"
    plus = t.plus[train]
    known = plus >= 0
    clean = (labels == plus)[known]
    flagged, noisy = issues[known], ~clean
    hits = int((flagged & noisy).sum())
    return {"cleanlab_version": cleanlab.__version__, "n": int(known.sum()),
            "noise_rate": float(noisy.mean()),
            "auc": float(roc_auc_score(clean, quality[known])),
            "precision": hits / max(int(flagged.sum()), 1),
            "recall": hits / max(int(noisy.sum()), 1),
            "flagged": int(flagged.sum()),
            "oof_accuracy_vs_fer2013": float((probs.argmax(1) == labels).mean())}


# ----------------------------------------------------------------------------- report
def _pct(x):
    return "—" if x is None else f"{100 * x:.1f}"


def assemble_report(args, work: pathlib.Path, t: Tables, rows: dict, command: str,
                    total_wall: float | None) -> dict:
    runs = {}
    for run in MODEL_RUNS:
        f = work / f"{run}.done.json"
        runs[run] = json.loads(f.read_text()) if f.is_file() else None
    cl_file = work / "cleanlab.done.json"
    cl = json.loads(cl_file.read_text()) if cl_file.is_file() else None
    rep = rows["reported"]
    out = {
        "command": command, "benchmark_wall_s": total_wall,
        "setup": {"model": args.model, "width": args.width, "epochs": args.epochs,
                  "cycle_schedule": cycle_schedule(args.epochs), "batch_size": 128,
                  "image_size": 48, "augment": "weak", "ema_decay": 0.0, "seed": SEED,
                  "limit_train": args.limit_train, "cleanlab_folds": CLEANLAB_FOLDS,
                  "cycle_loss": "logit_adjusted", "select_metric": "balanced_accuracy on the "
                  "validation half vs FER2013 labels"},
        "data": {"n_train": int(len(rows["train"])), "n_val_half": int(len(rows["val"])),
                 "n_reported_half": int(len(rep)),
                 "reported_dropped_no_majority": int((t.plus[rep] < 0).sum()),
                 "reported_scored_vs_ferplus": int((t.plus[rep] >= 0).sum()),
                 "reported_with_train_duplicate": int(t.dup_in_train[rep].sum()),
                 "train_ferplus_noise_rate": float(
                     (t.fer[rows["train"]] != t.plus[rows["train"]])[t.plus[rows["train"]] >= 0]
                     .mean())},
        "runs": {}, "missing_runs": [r for r in MODEL_RUNS if runs[r] is None] +
        ([] if cl else ["cleanlab"]),
    }
    for run, r in runs.items():
        if r is None:
            out["runs"][run] = None
            continue
        v = r["reported"]["vs_ferplus"]
        out["runs"][run] = {"accuracy": v["accuracy"], "balanced_accuracy":
                            v["balanced_accuracy"], "macro_f1": v["macro_f1"],
                            "wall_s": r["wall_s"], "epochs": r["epochs"],
                            "best_epoch": r["best_epoch"], "details": r}
    c = runs["cycle"]
    out["noise_detection"] = {
        "cycle_auc": c["detection"]["auc"] if c and c.get("detection") else None,
        "cycle_precision": c["detection"]["precision"] if c and c.get("detection") else None,
        "cycle_recall": c["detection"]["recall"] if c and c.get("detection") else None,
        "cleanlab_auc": cl["auc"] if cl else None,
        "cleanlab_precision": cl["precision"] if cl else None,
        "cleanlab_recall": cl["recall"] if cl else None,
        "cycle": c.get("detection") if c else None, "cleanlab": cl,
    }
    ce = runs["ce"]
    out["cost"] = {
        "cycle_over_ce": c["wall_s"] / ce["wall_s"] if c and ce else None,
        "split_pass_share": (c["split_s"] / c["wall_s"]) if c and c.get("split_s") is not None
        else None,
    }
    out["targets"] = targets(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "noisy_fer2013.json").write_text(json.dumps(out, indent=2))
    plot_recalls(out)
    (RESULTS / "noisy_fer2013.md").write_text(markdown(out))
    return out


def targets(out) -> dict:
    r, nd, cost = out["runs"], out["noise_detection"], out["cost"]
    t = {}
    if r["ce"] and r["oracle"] and r["cycle"]:
        gap = r["oracle"]["accuracy"] - r["ce"]["accuracy"]
        rec = (r["cycle"]["accuracy"] - r["ce"]["accuracy"]) / gap if gap > 0 else None
        t["gap_recovered"] = {"value": rec, "target": 0.70, "met": rec is not None and rec >= .7}
    if r["ce"] and r["cycle"]:
        d = r["cycle"]["balanced_accuracy"] - r["ce"]["balanced_accuracy"]
        t["balanced_accuracy_gain"] = {"value": d, "target": 0.05, "met": d >= 0.05}
    if nd["cycle_auc"] is not None:
        t["detection_auc"] = {"value": nd["cycle_auc"], "target": 0.90,
                              "met": nd["cycle_auc"] >= 0.90}
        if nd["cleanlab_auc"] is not None:
            t["detection_ahead_of_cleanlab"] = {"value": nd["cycle_auc"] - nd["cleanlab_auc"],
                                                "target": 0.0,
                                                "met": nd["cycle_auc"] > nd["cleanlab_auc"]}
    if cost["cycle_over_ce"] is not None:
        t["cycle_over_ce"] = {"value": cost["cycle_over_ce"], "target": 2.0,
                              "met": cost["cycle_over_ce"] <= 2.0}
    if cost["split_pass_share"] is not None:
        t["split_pass_share"] = {"value": cost["split_pass_share"], "target": 0.15,
                                 "met": cost["split_pass_share"] <= 0.15}
    return t


def plot_recalls(out) -> None:
    from ferkeras.evaluation import plot_per_class_recall
    from ferkeras.labels import get_class_names

    recalls = {run: r["details"]["reported"]["vs_ferplus"]["per_class_recall"]
               for run, r in out["runs"].items() if r}
    if recalls:
        plot_per_class_recall(recalls, get_class_names("fer2013"),
                              RESULTS / "noisy_fer2013_recall.png",
                              title="Reported half of PublicTest vs FERPlus majority")


def markdown(out) -> str:
    s, d = out["setup"], out["data"]
    wall = "—" if out["benchmark_wall_s"] is None else f"{out['benchmark_wall_s'] / 60:.1f} min"
    ratio = "—" if out["cost"]["cycle_over_ce"] is None else f"{out['cost']['cycle_over_ce']:.2f}×"
    lines = [
        "# Noisy FER2013 benchmark", "",
        f"Command: `{out['command']}`", "",
        f"Benchmark wall time (this invocation): {wall}",
        "",
        f"Setup: `{s['model']}` width {s['width']}, 48×48 grey, batch 128, AdamW 2e-3 cosine, "
        f"weak augmentation, EMA off, seed {s['seed']}, {s['epochs']} epochs per run; the "
        f"cycle uses the same total: {s['cycle_schedule']} with `logit_adjusted`. Best epoch "
        f"by {s['select_metric']}. cleanlab: {s['cleanlab_folds']}-fold cross-validated CE "
        f"models.", "",
        f"Data: {d['n_train']} training rows (FER2013 labels; "
        f"{_pct(d['train_ferplus_noise_rate'])}% "
        f"of those with a FERPlus majority disagree). PublicTest halves: validation "
        f"{d['n_val_half']}, reported {d['n_reported_half']} "
        f"({d['reported_dropped_no_majority']} without a FERPlus majority dropped -> "
        f"{d['reported_scored_vs_ferplus']} scored; "
        f"{d['reported_with_train_duplicate']} have a pixel-identical duplicate in Training).",
        "", "## Reported half vs FERPlus majority (%)", "",
        "| run | accuracy | balanced acc. | macro-F1 | acc. w/o dups | acc. vs FER2013 "
        "| acc. vs FER2013 w/o dups | best epoch | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in MODEL_RUNS:
        r = out["runs"][run]
        if r is None:
            lines.append(f"| {run} | missing | | | | | | | |")
            continue
        rep = r["details"]["reported"]
        lines.append(
            f"| {run} | {_pct(r['accuracy'])} | {_pct(r['balanced_accuracy'])} | "
            f"{_pct(r['macro_f1'])} | {_pct(rep['vs_ferplus_no_dup']['accuracy'])} | "
            f"{_pct(rep['vs_fer2013']['accuracy'])} | {_pct(rep['vs_fer2013_no_dup']['accuracy'])}"
            f" | {r['best_epoch']}/{r['epochs']} | {r['wall_s']:.0f} |")
    nd, cost = out["noise_detection"], out["cost"]
    lines += [
        "", "Per-class recall: `noisy_fer2013_recall.png`.", "",
        "## Noise detection (training rows with a FERPlus majority; positive = noisy)", "",
        "| detector | ROC-AUC | precision | recall |", "|---|---|---|---|",
        f"| cycle, last split (clean_prob, flagged when <= p_clean) | {_pct(nd['cycle_auc'])} | "
        f"{_pct(nd['cycle_precision'])} | {_pct(nd['cycle_recall'])} |",
        f"| cleanlab {(nd['cleanlab'] or {}).get('cleanlab_version', '')} "
        f"(label-quality AUC; find_label_issues P/R) | {_pct(nd['cleanlab_auc'])} | "
        f"{_pct(nd['cleanlab_precision'])} | {_pct(nd['cleanlab_recall'])} |",
        "", "## Cost", "",
        f"- cycle / CE wall time: {ratio}",
        f"- split passes share of cycle wall time: {_pct(cost['split_pass_share'])}%",
        "", "## Targets", "", "| target | value | goal | met |", "|---|---|---|---|",
    ]
    for name, tg in out["targets"].items():
        v = tg["value"]
        lines.append(f"| {name} | {'—' if v is None else f'{v:.3f}'} | {tg['target']} | "
                     f"{'yes' if tg['met'] else 'NO'} |")
    if out["missing_runs"]:
        lines += ["", f"Missing (not finished): {', '.join(out['missing_runs'])}."]
    lines += ["", "## Diagnosis", ""] + diagnosis(out) + [""]
    return "\n".join(lines)


NEXT_STEPS = {
    "gap_recovered": "accuracy: FixMatch trains the flagged rows only during the SSL epochs "
    "of a short, CPU-sized budget, and the cycle trades plain accuracy for balanced accuracy "
    "(its prior is re-estimated from the clean set, shifting predictions toward tail "
    "classes); with a longer budget try a longer warm-up and more SSL epochs per cycle, loss "
    "averaging over epochs (cycle.loss_window 3), and co-divide so each net's split trains "
    "the other.",
    "balanced_accuracy_gain": "balanced accuracy: check whether `la` alone already moves it "
    "(then the cycle's extra gain is the SSL part); try balanced_softmax, per-class GMM "
    "(cycle.gmm_scope per_class) so tail classes (disgust, fear) keep clean samples.",
    "detection_auc": "detection: FER2013's noise is asymmetric and class-concentrated (fear "
    "14% agreement, happy 93%); per-class normalised losses from an under-trained model rank "
    "hard-but-clean faces with wrong ones. Try loss averaging (loss_window 3), per-class GMM, "
    "or detecting with out-of-sample models (co-divide).",
    "detection_ahead_of_cleanlab": "detection vs cleanlab: cleanlab uses out-of-sample "
    "probabilities from 2 CE folds; the cycle uses in-sample losses of one net. Co-divide "
    "gives the cycle the same out-of-sample advantage.",
    "cycle_over_ce": "cost: SSL epochs push weak+strong views of the noisy part through the "
    "net (cycle.mu, share unlabelled); fewer SSL epochs per cycle or mu 1 cut it.",
    "split_pass_share": "cost: a split is one inference pass over the training set plus a "
    "GMM; with few epochs per cycle it weighs more; split less often or on a subsample.",
}


def diagnosis(out) -> list[str]:
    """One line per missed target: the honest figure is in the table above."""
    lines = []
    for name, tg in out["targets"].items():
        if not tg["met"]:
            value = "—" if tg["value"] is None else f"{tg['value']:.3f}"
            lines.append(f"- {name} missed ({value}"
                         f" vs {tg['target']}): {NEXT_STEPS[name]}")
    if not lines:
        lines.append("- All measured targets met.")
    det, runs = out["noise_detection"]["cycle"], out["runs"]
    if det and det.get("precision") and det.get("recall") is not None:
        flagged = det["recall"] * det["noise_rate"] / det["precision"]
        lines.append(f"- The last split flagged {_pct(flagged)}% of the training rows as noisy "
                     f"while {_pct(det['noise_rate'])}% are (vs FERPlus): the GMM threshold "
                     "(p_clean 0.5) under-flags, so recall stays low even at fair precision.")
    if runs.get("la") and runs.get("cycle"):
        lines.append(
            f"- Ablation at equal budget: `la` alone gives balanced accuracy "
            f"{_pct(runs['la']['balanced_accuracy'])}% vs the cycle's "
            f"{_pct(runs['cycle']['balanced_accuracy'])}%, so here the split + FixMatch part "
            "adds {:+.1f} points on top of logit adjustment.".format(
                100 * (runs["cycle"]["balanced_accuracy"] - runs["la"]["balanced_accuracy"])))
    lines.append(f"- Budget caveat: {out['setup']['model']} width {out['setup']['width']}, "
                 f"{out['setup']['epochs']} epochs per run on a shared 2-core CPU; the "
                 "reference numbers (CE ~69%, oracle ~84%) are for a 12-epoch vgg4.")
    return lines


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=",".join(ALL_RUNS))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--model", default="small_cnn", choices=("small_cnn", "vgg4"))
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--work", default=str(ROOT / "bench" / ".work" / "noisy_fer2013"))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    bad = [r for r in runs if r not in ALL_RUNS]
    if bad:
        p.error(f"--runs: unknown {bad}; valid: {list(ALL_RUNS)}")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    def log(msg):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(work / "log.txt", "a") as fh:
            fh.write(line + "\n")

    command = "python bench/noisy_fer2013.py " + " ".join(argv if argv is not None
                                                          else sys.argv[1:])
    t0 = time.time()
    tables = load_tables(ROOT / "bench" / ".work" / "noisy_fer2013_tables.npz")
    rows = split_rows(tables, limit_train=args.limit_train, seed=SEED)
    if not args.report_only:
        for run in runs:
            try:
                if run == "cleanlab":
                    run_cleanlab(args, tables, rows, work, log)
                else:
                    run_model(run, args, tables, rows, work, log)
            except Exception as err:  # keep going: the report marks the run missing
                import traceback

                log(f"{run}: FAILED {type(err).__name__}: {err}\n{traceback.format_exc()}")
            assemble_report(args, work, tables, rows, command, time.time() - t0)
    wall = time.time() - t0
    previous = RESULTS / "noisy_fer2013.json"
    if args.report_only and previous.is_file():  # keep the training invocation's record
        old = json.loads(previous.read_text())
        if "--report-only" not in old.get("command", "--report-only"):
            command, wall = old["command"], old["benchmark_wall_s"]
        else:
            wall = None
    elif args.report_only:
        wall = None
    out = assemble_report(args, work, tables, rows, command, wall)
    log(f"report: {RESULTS / 'noisy_fer2013.md'} (missing: {out['missing_runs']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
