"""Per-split noise reports: counts, histogram with the GMM fit, per-sample CSV, detection
scores (when true labels exist) and a contact sheet of the most suspected label errors."""

from __future__ import annotations

import csv
import io as _io
import pathlib

import numpy as np

from ferkeras import io
from ferkeras.noise import selection


def write_split_report(out_dir, *, split, data_cfg, class_names, result, pred_probs,
                       sheet_size=48, relabels=None, rank_scores=None) -> pathlib.Path:
    """Write the report folder for one split.

    result: the `selection.SplitResult` (arrays (N,) over the training split `split`);
    pred_probs: (N, K) model probabilities; relabels: optional (N,) new labels of the rows
    the split relabelled (-1 = none; cycle.method relabel): samples.csv gets a
    `relabel` column (the new class name, or empty); rank_scores: optional (N,) area under
    the margin (`ferkeras audit`): the contact sheet ranks by it (lowest first) instead of
    clean_prob, and says so.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(split.labels)
    labelled, clean_prob, losses = result.labelled, result.clean_prob, result.losses
    preds = pred_probs.argmax(axis=1)
    # counts per class
    rows = ["class,given,clean,noisy,clean_share"]
    for c, name in enumerate(class_names):
        n = int((labels == c).sum())
        clean = int((labelled & (labels == c)).sum())
        rows.append(f"{name},{n},{clean},{n - clean},{clean / n if n else 0:.4f}")
    io.atomic_write_text(out / "counts.csv", "\n".join(rows) + "\n")
    # every sample
    buf = _io.StringIO()
    writer = csv.writer(buf)
    header = ["index", "given_label", "predicted_label", "clean_prob", "loss", "labelled"]
    truth = split.true_labels
    if truth is not None:
        header.append("true_label")
    if relabels is not None:
        header.append("relabel")
        relabels = np.asarray(relabels).astype(np.int64)
    p_ood = getattr(result, "p_ood", None)  # PNP's noise-type head (ferkeras.methods.pnp.core)
    if p_ood is not None:
        header.append("p_ood")
    writer.writerow(header)
    for i in range(len(labels)):
        row = [i, class_names[labels[i]], class_names[preds[i]], f"{clean_prob[i]:.5f}",
               f"{losses[i]:.5f}", int(labelled[i])]
        if truth is not None:
            row.append(class_names[truth[i]] if truth[i] >= 0 else "")
        if relabels is not None:
            row.append(class_names[relabels[i]] if relabels[i] >= 0 else "")
        if p_ood is not None:
            row.append(f"{p_ood[i]:.5f}")
        writer.writerow(row)
    io.atomic_write_text(out / "samples.csv", buf.getvalue())
    if result.scores is not None:
        io.atomic_write_json(out / "detection.json", result.scores)
    io.atomic_savefig(lambda p: plot_loss_histogram(result, labels, p), out /
                      "loss_histogram.png")
    write_suspects_sheet(out / "suspected_errors.png", split=split, data_cfg=data_cfg,
                         class_names=class_names, clean_prob=clean_prob, losses=losses,
                         preds=preds, limit=sheet_size, aum=rank_scores)
    return out


def plot_loss_histogram(result, labels, path) -> None:
    """Histogram of a split's normalised losses, clean vs noisy, with the density of the GMM
    that made the split (`result.gmm`; none for selectors without one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, labelled = np.asarray(result.normalized, float), result.labelled
    fig, ax = plt.subplots(figsize=(6, 3.4))
    bins = np.linspace(0, 1, 51)
    ax.hist(x[labelled], bins=bins, alpha=0.6, density=True, label="judged clean")
    ax.hist(x[~labelled], bins=bins, alpha=0.6, density=True, label="judged noisy")
    grid = np.linspace(0, 1, 200)
    density = selection.gmm_density(result.gmm, grid, labels)
    if density is not None:
        scope = "global" if None in result.gmm else "per class"
        ax.plot(grid, density, "k-", lw=1.2, label=f"GMM that split ({scope})")
    ax.set_xlabel("normalised per-sample loss")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_suspects_sheet(path, *, split, data_cfg, class_names, clean_prob, losses, preds,
                         limit=48, aum=None) -> None:
    """Contact sheet of the `limit` most suspected label errors, given vs predicted label,
    ranked by clean_prob (ties: loss), or by the area under the margin `aum` when given."""
    from ferkeras.data.pipeline import collect_images
    from ferkeras.data.sheet import write_contact_sheet

    if aum is None:
        ranked, by = selection.rank_label_issues(clean_prob, losses), "clean probability"
    else:
        ranked, by = np.argsort(np.asarray(aum), kind="stable"), "area under the margin"
    per_class = max(limit // len(class_names), 1)
    order = np.concatenate([ranked[split.labels[ranked] == c][:per_class]
                            for c in range(len(class_names))])
    if not len(order):
        return
    images = collect_images(split.subset(order), data_cfg)
    images = np.clip(images, 0, 255).astype(np.uint8)
    captions = suspect_captions(order, split=split, preds=preds, class_names=class_names)
    io.atomic_savefig(lambda p: write_contact_sheet(
        images, split.labels[order], class_names, p, per_class=per_class,
        title=f"most suspected label errors (ranked by {by}), by given label",
        captions=captions), path)


def suspect_captions(order, *, split, preds, class_names) -> list[str]:
    """'given: X / pred: Y', plus ' / true: Z' where the split knows the true label."""
    truth = split.true_labels
    out = []
    for i in order:
        text = f"given: {class_names[split.labels[i]]} / pred: {class_names[preds[i]]}"
        if truth is not None and truth[i] >= 0:
            text += f" / true: {class_names[truth[i]]}"
        out.append(text)
    return out
