"""Train the shipped FERPlus model (recipes/ferplus8.yaml) with the benchmark's fixed halves.

    .venv/bin/python bench/ship_ferplus.py [--data ../shared/data] [--smoke]

Train: FER2013 Training faces with FERPlus vote distributions over the 8 expressions
(rows whose top vote is unknown / not-a-face are dropped). Validation: the first half of
PublicTest (the split bench/noisy_data.py defines), FERPlus majority, picks the epoch.
Reported: the second half, scored once (8 classes, and 7 classes without contempt to compare
with FER2013-trained models and `fer`). Writes bench/results/ship_ferplus.{json,md}.
Resumable: the run folder keeps its state; a finished run is only re-scored.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def _recalls(names, recall):
    if isinstance(recall, dict):
        return [(n, recall[n]) for n in names if n in recall and recall[n] is not None]
    return list(zip(names, recall, strict=True))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "ferplus8.yaml"))
    p.add_argument("--work", default=None,
                   help="default bench/.work/ship_ferplus (or $FERKERAS_BENCH_WORK/...)")
    p.add_argument("--smoke", action="store_true", help="1 epoch on 512 rows, tiny model")
    p.add_argument("--set", action="append", default=[], help="recipe override key=value")
    args = p.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import common
    from noisy_data import fake_tables, load_tables, split_rows

    from ferkeras.data.fer2013 import ferplus_labels
    from ferkeras.data.table import DatasetBundle, Split
    from ferkeras.labels import get_class_names
    from ferkeras.training import train
    from ferkeras.training.evaluation import classification_metrics
    from ferkeras.training.recipe import load_recipe

    overrides = list(args.set)
    if args.smoke:
        overrides += ["train.epochs=1", "model.width=4", "model.backbone=small_cnn"]
    recipe = load_recipe(args.recipe, overrides=overrides)
    names = get_class_names(recipe.data.class_set)
    if args.smoke:
        t = fake_tables()
    else:
        t = load_tables(pathlib.Path(args.data), common.WORK / "fer2013_tables.npz")
    rows = split_rows(t, seed=0)
    has = np.asarray(t.votes).sum(1) > 0
    soft_lab, soft = ferplus_labels(t.votes, class_names=names, mode="probability")
    major, _ = ferplus_labels(t.votes, class_names=names, mode="majority")
    soft_lab[~has], major[~has] = -1, -1
    tr = rows["train"][soft_lab[rows["train"]] >= 0]
    va = rows["val"][major[rows["val"]] >= 0]
    rep = rows["reported"][major[rows["reported"]] >= 0]
    bundle = DatasetBundle(
        class_names=tuple(names),
        train=Split(images=t.images[tr], labels=soft_lab[tr], true_labels=major[tr],
                    soft_labels=soft[tr]),
        val=Split(images=t.images[va], labels=major[va]),
        test=Split(images=t.images[rep], labels=major[rep]),
        source="ferplus", notes=[f"ship_ferplus: {len(rows['train']) - len(tr)} train rows "
                                 "without an expression label dropped"],
    )
    work = pathlib.Path(args.work) if args.work else common.WORK / (
        "ship_ferplus_smoke" if args.smoke else "ship_ferplus")
    run_dir = work / "run"
    resume = (run_dir / "checkpoints" / "state.json").is_file() and not args.smoke
    t0 = time.time()
    metrics = train(recipe, bundle, run_dir=run_dir, resume=resume, overwrite=not resume,
                    verbose=2)
    wall = time.time() - t0

    from ferkeras.training.runs import open_run

    run = open_run(run_dir)
    net = run.build_network()
    import keras

    probs = keras.ops.convert_to_numpy(keras.ops.softmax(
        net.predict(t.images[rep].astype("float32"), batch_size=512, verbose=0), axis=-1))
    y = major[rep]
    m8 = classification_metrics(y, probs, class_names=list(names))
    c = names.index("contempt")
    keep7 = y != c
    p7 = np.delete(probs, c, axis=1)
    names7 = [n for n in names if n != "contempt"]
    y7 = np.array([names7.index(names[v]) for v in y[keep7]])
    m7 = classification_metrics(y7, p7[keep7], class_names=names7)
    pick = ("n", "accuracy", "balanced_accuracy", "macro_f1", "per_class_recall")
    out = {"command": "python bench/ship_ferplus.py " + " ".join(argv or sys.argv[1:]),
           "recipe": str(pathlib.Path(args.recipe).relative_to(ROOT))
           if pathlib.Path(args.recipe).is_relative_to(ROOT) else args.recipe,
           "overrides": overrides, "run_dir": str(run_dir), "n_train": len(tr),
           "n_val": len(va), "n_reported": len(rep), "best_epoch": metrics["best_epoch"],
           "epochs": metrics["epochs"], "wall_s_this_invocation": round(wall, 1),
           "train_seconds": metrics.get("train_seconds"),
           "val_best": {k: metrics["val"]["best"][k] for k in pick[:4]},
           "reported_8class": {k: m8[k] for k in pick},
           "reported_7class_no_contempt": {k: m7[k] for k in pick},
           "loadavg": list(os.getloadavg()), "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    name = "ship_ferplus_smoke" if args.smoke else "ship_ferplus"
    r8, r7 = out["reported_8class"], out["reported_7class_no_contempt"]
    md = [f"# Shipped FERPlus model ({recipe.model.backbone} w{recipe.model.width})", "",
          f"Command: `{out['command']}`", "",
          f"Train {len(tr)} rows (vote distributions), select on {len(va)} validation-half rows "
          f"(best epoch {out['best_epoch']}/{out['epochs']}), report once on {len(rep)} rows.",
          "", "| scored on reported half vs FERPlus majority | n | accuracy | balanced acc. | "
          "macro-F1 |", "|---|---|---|---|---|",
          f"| 8 classes | {r8['n']} | {r8['accuracy']:.4f} | {r8['balanced_accuracy']:.4f} | "
          f"{r8['macro_f1']:.4f} |",
          f"| 7 classes (contempt rows dropped, contempt logit ignored) | {r7['n']} | "
          f"{r7['accuracy']:.4f} | {r7['balanced_accuracy']:.4f} | {r7['macro_f1']:.4f} |", "",
          "Per-class recall (8 classes): " + ", ".join(
              f"{n} {v:.3f}" for n, v in _recalls(names, r8["per_class_recall"])), ""]
    settings = {"recipe": out["recipe"], "overrides": overrides, "smoke": args.smoke,
                "split": "bench/noisy_data.split_rows seed 0"}
    common.write_results(name, out, "\n".join(md) + "\n", settings)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
