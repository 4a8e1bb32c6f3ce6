"""Dataset statistics: class counts, imbalance and, with true labels, label agreement.

Agreement is measured per GIVEN label: for class k, the share of samples labelled k (with a
known true label) whose true label is also k, i.e. the precision of the given labels. The
overall disagreement is the share of samples with a known true label whose given label
differs. On FER2013 Training vs the FERPlus majority this gives about 0.32.
"""

from __future__ import annotations

import numpy as np

from ferkeras.data.table import DatasetBundle, Split


def imbalance_ratio(class_counts: np.ndarray) -> float:
    """max / min of (K,) class counts; inf when a class is empty, nan when all are."""
    counts = np.asarray(class_counts)
    if counts.size == 0 or counts.max() == 0:
        return float("nan")
    return float("inf") if counts.min() == 0 else float(counts.max() / counts.min())


def label_agreement(labels: np.ndarray, true_labels: np.ndarray, *, num_classes: int) -> dict:
    """Agreement of given vs true labels.

    labels, true_labels: (N,) int; true -1 = unknown (ignored). Returns {"per_class": (K,)
    float, nan for a class with no known sample; "per_class_n": (K,) int; "n_known": int;
    "disagreement": float (nan when nothing is known)}.
    """
    labels, true_labels = np.asarray(labels), np.asarray(true_labels)
    if labels.shape != true_labels.shape:
        raise ValueError(
            f"labels and true_labels must have the same shape. Received: {labels.shape} and "
            f"{true_labels.shape}"
        )
    known = true_labels >= 0
    given, true = labels[known], true_labels[known]
    n = np.bincount(given, minlength=num_classes)
    agree = np.bincount(given[given == true], minlength=num_classes)
    per_class = np.divide(agree, n, out=np.full(num_classes, np.nan), where=n > 0)
    disagreement = float(np.mean(given != true)) if given.size else float("nan")
    return {
        "per_class": per_class,
        "per_class_n": n,
        "n_known": int(known.sum()),
        "disagreement": disagreement,
    }


def split_stats(split: Split, *, num_classes: int) -> dict:
    """Counts, imbalance, skipped files and (if true labels exist) agreement for one split."""
    counts = split.class_counts(num_classes)
    out = {
        "n": len(split),
        "class_counts": counts,
        "imbalance_ratio": imbalance_ratio(counts),
        "skipped": len(split.skipped),
        "agreement": None,
    }
    if split.true_labels is not None:
        out["agreement"] = label_agreement(
            split.labels, split.true_labels, num_classes=num_classes
        )
    return out


def bundle_stats(bundle: DatasetBundle) -> dict:
    """{"source", "class_names", "splits": {name: split_stats}, "notes"} for a bundle."""
    splits = {"train": bundle.train, "val": bundle.val, "test": bundle.test}
    return {
        "source": bundle.source,
        "class_names": list(bundle.class_names),
        "splits": {
            name: split_stats(split, num_classes=bundle.num_classes)
            for name, split in splits.items()
            if split is not None
        },
        "notes": list(bundle.notes),
    }


def format_stats(stats: dict) -> str:
    """Plain-text report of `bundle_stats` output."""
    names = stats["class_names"]
    width = max(len(n) for n in names + ["class"]) + 2
    lines = [f"source: {stats['source']}  classes: {len(names)}"]
    for split, s in stats["splits"].items():
        lines.append("")
        lines.append(
            f"[{split}] {s['n']} samples, imbalance ratio (max/min) "
            f"{s['imbalance_ratio']:.1f}" + (f", {s['skipped']} skipped" if s["skipped"] else "")
        )
        agree = s["agreement"]
        header = f"  {'class':<{width}}{'count':>8}{'share':>8}"
        if agree is not None:
            header += f"{'agree':>8}{'n_true':>8}"
        lines.append(header)
        total = max(s["n"], 1)
        for k, name in enumerate(names):
            row = f"  {name:<{width}}{s['class_counts'][k]:>8d}{s['class_counts'][k] / total:>8.3f}"
            if agree is not None:
                row += f"{agree['per_class'][k]:>8.2f}{agree['per_class_n'][k]:>8d}"
            lines.append(row)
        if agree is not None:
            lines.append(
                f"  noisy vs true: {agree['n_known']} samples with a true label, "
                f"disagreement {agree['disagreement']:.3f}"
            )
    if stats["notes"]:
        lines.append("")
        lines.append("notes:")
        lines += [f"  - {note}" for note in stats["notes"]]
    return "\n".join(lines)
