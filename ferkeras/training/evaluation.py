"""Classification metrics as plain array functions, plus the two standard plots."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels, pred_probs, *, class_names) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class recall and the confusion matrix.

    labels: (N,) int, -1 rows are ignored. pred_probs: (N, K) scores (or (N,) predicted ids).
    Balanced accuracy is the mean recall over the classes present in `labels`; macro-F1
    averages over the same classes.
    """
    labels = np.asarray(labels)
    preds = np.asarray(pred_probs)
    if preds.ndim == 2:
        preds = preds.argmax(axis=1)
    keep = labels >= 0
    labels, preds = labels[keep], preds[keep]
    k = len(class_names)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (labels, preds), 1)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(float)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros(k), where=present)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros(k), where=(precision + recall) > 0)
    n = int(len(labels))
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_recall": {
            name: (float(recall[i]) if present[i] else None) for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
    }


def score_split(split, probs, index, *, class_names) -> dict:
    """`classification_metrics` of a Split's given labels at rows `index`, plus
    `vs_true_labels` when the split carries true labels (noisy-label datasets)."""
    out = classification_metrics(split.labels[index], probs, class_names=class_names)
    truth = split.true_labels
    if truth is not None and (truth >= 0).any():
        out["vs_true_labels"] = classification_metrics(truth[index], probs,
                                                       class_names=class_names)
    return out


def plot_confusion_matrix(confusion, class_names, path, *, title="Confusion matrix") -> None:
    """Row-normalised confusion matrix heat map with counts, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * k, 0.8 + 0.8 * k))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{norm[i, j]:.2f}\n{int(cm[i, j])}", ha="center", va="center",
                    fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_class_recall(recalls: dict, class_names, path, *, title="Per-class recall") -> None:
    """Grouped bars: recalls maps a run name to its per-class recall dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    width = 0.8 / max(len(recalls), 1)
    fig, ax = plt.subplots(figsize=(2 + 0.9 * k, 3.5))
    for r, (name, rec) in enumerate(recalls.items()):
        values = [rec.get(c) or 0.0 for c in class_names]
        ax.bar(np.arange(k) + r * width - 0.4 + width / 2, values, width, label=name)
    ax.set_xticks(range(k), class_names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
