"""The shipped model's figures for its model card: accuracy and balanced accuracy with
bootstrap CIs, per-class recall, the confusion matrix as a picture; a model before a change
scored on the same rows beside it (paired bootstrap of the difference).

    .venv/bin/python bench/model_card.py [--baseline DIR]      # ~30 s
    .venv/bin/python bench/model_card.py --smoke               # seconds: tiny model, fake rows

Rows: the reported half of FER2013 PublicTest (`ferkeras.commands.ship_model.reported_half`,
the rows bench/inference.py and bench/ship_ferplus.py report on), FERPlus majority over the
model's 8 classes (rows without a majority among them are left out), 48x48 grey pixels as
stored, batch inference through `Predictor.predict_crops`. CIs: 2000 bootstrap draws of the
rows (seed 0), 2.5 and 97.5 percentiles. Writes bench/results/model_card.{json,md} and
ferkeras/pretrained/ferplus8/confusion_matrix.png.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = common.ROOT
SHIPPED = ROOT / "ferkeras" / "pretrained" / "ferplus8"
DRAWS = 2000


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, classes: int) -> float:
    """Mean recall over the classes present in `y`."""
    recalls = [np.mean(pred[y == c] == c) for c in range(classes) if np.any(y == c)]
    return float(np.mean(recalls))


def bootstrap(y, preds: dict, classes: int, *, draws: int = DRAWS, seed: int = 0) -> dict:
    """{name: {acc, acc_ci, balanced, balanced_ci}} and, with two models, the paired
    differences (second minus first) with CIs, from `draws` resamples of the rows."""
    rng = np.random.default_rng(seed)
    n = len(y)
    samples = {name: {"acc": [], "balanced": []} for name in preds}
    for _ in range(draws):
        rows = rng.integers(0, n, n)
        for name, pred in preds.items():
            samples[name]["acc"].append(np.mean(pred[rows] == y[rows]))
            samples[name]["balanced"].append(balanced_accuracy(y[rows], pred[rows], classes))
    out = {}
    for name, pred in preds.items():
        s = samples[name]
        out[name] = {"acc": round(float(np.mean(pred == y)), 4),
                     "acc_ci95": _ci(s["acc"]),
                     "balanced_acc": round(balanced_accuracy(y, pred, classes), 4),
                     "balanced_acc_ci95": _ci(s["balanced"])}
    names = list(preds)
    if len(names) == 2:
        a, b = names
        out["difference"] = {
            "what": f"{b} minus {a}, paired over the same rows",
            "acc": round(out[b]["acc"] - out[a]["acc"], 4),
            "acc_ci95": _ci(np.subtract(samples[b]["acc"], samples[a]["acc"])),
            "balanced_acc": round(out[b]["balanced_acc"] - out[a]["balanced_acc"], 4),
            "balanced_acc_ci95": _ci(np.subtract(samples[b]["balanced"],
                                                 samples[a]["balanced"]))}
    return out


def _fake_rows(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"images": rng.integers(0, 256, (n, 48, 48), np.uint8),
            "labels": rng.integers(-1, 8, n)}


def _ci(values) -> list:
    return [round(float(np.percentile(values, 2.5)), 4),
            round(float(np.percentile(values, 97.5)), 4)]


def plot_confusion(cm: np.ndarray, names, path: pathlib.Path, *, title: str) -> None:
    """Row-normalised confusion matrix (recall on the diagonal), counts in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(cm[i, j])}\n{100 * share[i, j]:.0f}%", ha="center",
                    va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("FERPlus majority")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def markdown(out: dict) -> str:
    s = out["scores"]
    lines = ["# Shipped model on the reported half: the model card's figures", "",
             f"Command: `{out['command']}`. FER2013 PublicTest reported half, FERPlus majority "
             f"over 8 classes, n={out['n']}. 95 % CIs from {DRAWS} bootstrap draws of the "
             "rows.", "", "| model | accuracy | 95 % CI | balanced accuracy | 95 % CI |",
             "|---|---|---|---|---|"]
    for name in out["models"]:
        r = s[name]
        lines.append(f"| {name} | {100 * r['acc']:.2f} % | {_pct_ci(r['acc_ci95'])} | "
                     f"{100 * r['balanced_acc']:.2f} % | {_pct_ci(r['balanced_acc_ci95'])} |")
    if "difference" in s:
        d = s["difference"]
        lines += ["", f"Difference ({d['what']}): accuracy {100 * d['acc']:+.2f} points "
                  f"(CI {_pct_ci(d['acc_ci95'], sign=True)}), balanced accuracy "
                  f"{100 * d['balanced_acc']:+.2f} points "
                  f"(CI {_pct_ci(d['balanced_acc_ci95'], sign=True)})."]
    v = out["validation_half"]
    lines += ["", f"The other half of PublicTest (validation, n={v['n']}; it picked the "
              "training epoch):", "",
              "| model | accuracy | 95 % CI | balanced accuracy | 95 % CI |",
              "|---|---|---|---|---|"]
    for name in out["models"]:
        r = v["scores"][name]
        lines.append(f"| {name} | {100 * r['acc']:.2f} % | {_pct_ci(r['acc_ci95'])} | "
                     f"{100 * r['balanced_acc']:.2f} % | {_pct_ci(r['balanced_acc_ci95'])} |")
    if "difference" in v["scores"]:
        d = v["scores"]["difference"]
        lines += ["", f"Difference there: accuracy {100 * d['acc']:+.2f} points "
                  f"(CI {_pct_ci(d['acc_ci95'], sign=True)}), balanced accuracy "
                  f"{100 * d['balanced_acc']:+.2f} points "
                  f"(CI {_pct_ci(d['balanced_acc_ci95'], sign=True)})."]
    lines += ["", "Per-class recall and precision (" + out["shipped_name"] + "):", "",
              "| class | n | recall | precision |", "|---|---|---|---|"]
    for name, c in out["per_class"].items():
        rec = "-" if c["recall"] is None else f"{100 * c['recall']:.1f} %"
        prec = "-" if c["precision"] is None else f"{100 * c['precision']:.1f} %"
        lines.append(f"| {name} | {c['n']} | {rec} | {prec} |")
    lines += ["", f"Confusion matrix: `{out['confusion_png']}`.", ""]
    return "\n".join(lines) + "\n"


def _pct_ci(ci, sign=False) -> str:
    fmt = "{:+.2f}" if sign else "{:.2f}"
    return f"{fmt.format(100 * ci[0])} to {fmt.format(100 * ci[1])}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model", default=str(SHIPPED))
    p.add_argument("--baseline", default=None,
                   help="an export folder scored beside it on the same rows (e.g. the model "
                        "before a change)")
    p.add_argument("--png", default=str(SHIPPED / "confusion_matrix.png"))
    p.add_argument("--smoke", action="store_true",
                   help="seconds: a tiny random model on random rows, no shared data; the "
                        "picture goes under the work folder")
    args = p.parse_args(argv)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    from inference import per_class, reported_half_crops

    from ferkeras.commands.ship_model import ferplus_majority
    from ferkeras.deploy.inference import Predictor
    from ferkeras.training.evaluation import classification_metrics

    if args.smoke:
        import types

        from inference import tiny_export

        args.model = str(tiny_export(common.WORK / "model_card_smoke" / "model"))
        args.png = str(common.WORK / "model_card_smoke" / "confusion_matrix.png")
        crops, val = _fake_rows(200), _fake_rows(200, seed=1)
        table = types.SimpleNamespace(images=np.concatenate([crops["images"], val["images"]]))
    else:
        crops = reported_half_crops(pathlib.Path(args.data))
    models = {}
    if args.baseline:
        models["baseline"] = Predictor(args.baseline)
    models["shipped"] = Predictor(args.model)
    names = list(models["shipped"].class_names)
    labels = (crops["labels"] if args.smoke
              else ferplus_majority(crops["plus"], names)[crops["rows"]])
    keep = labels >= 0
    batch = crops["images"][..., None].astype(np.float32)
    probs = {k: m.predict_crops(batch) for k, m in models.items()}
    preds = {k: v[keep].argmax(1) for k, v in probs.items()}
    scores = bootstrap(labels[keep], preds, len(names))
    # The other half of PublicTest (validation: it picked the training epoch), for a change
    # judged on more than the reported rows.
    if args.smoke:
        val_rows = np.arange(200, 400)
        val_labels = val["labels"]
    else:
        from ferkeras.commands.ship_model import read_tables
        from ferkeras.data.table import stratified_holdout

        table, plus = read_tables(pathlib.Path(args.data))
        public = np.flatnonzero(table.usage == "PublicTest")
        val_rows = public[stratified_holdout(table.emotions[public], fraction=0.5,
                                             seed=0)[0]]
        val_labels = ferplus_majority(plus, names)[val_rows]
    val_keep = val_labels >= 0
    val_x = table.images[val_rows][..., None].astype(np.float32).reshape(-1, 48, 48, 1)
    val_preds = {k: m.predict_crops(val_x)[val_keep].argmax(1) for k, m in models.items()}
    scores_val = bootstrap(val_labels[val_keep], val_preds, len(names))
    metrics = classification_metrics(labels, probs["shipped"], class_names=names)
    png = pathlib.Path(args.png)
    shipped_meta = models["shipped"].metadata
    flip = " + flip averaging" if shipped_meta.get("test_time_flip") else ""
    plot_confusion(np.asarray(metrics["confusion_matrix"]), names, png,
                   title=f"ferplus8 (int8{flip}), FER2013 PublicTest reported half, "
                         f"n={int(keep.sum())}")

    def where(path) -> str:
        path = pathlib.Path(path).resolve()
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name

    out = {"n": int(keep.sum()),
           "validation_half": {"n": int(val_keep.sum()), "scores": scores_val},
           "models": {k: where(m.path) for k, m in models.items()}, "scores": scores,
           "shipped_name": f"shipped, int8{flip}",
           "per_class": per_class(probs["shipped"], names, labels)["per_class"],
           "confusion_matrix": metrics["confusion_matrix"], "class_names": names,
           "confusion_png": where(png),
           "onnx_sha256": {k: m.metadata["files"].get("onnx_sha256") for k, m in models.items()},
           "command": common.command_line()}
    settings = {"models": out["models"], "draws": DRAWS, "seed": 0, "smoke": args.smoke}
    written = common.write_results("model_card", out, markdown(out), settings)
    print(markdown(out))
    print(f"wrote {', '.join(str(w) for w in written)}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
