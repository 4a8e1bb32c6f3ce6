"""Per-split noise reports: counts, histogram with the GMM fit, per-sample CSV, detection
scores (when true labels exist) and a contact sheet of the most suspected label errors."""

from __future__ import annotations

import csv
import io as _io
import pathlib

import numpy as np

from ferkeras import io, selection


def write_split_report(out_dir, *, split, data_cfg, class_names, losses, normalized, clean_prob,
                       labelled, pred_probs, scores=None, sheet_size=48) -> pathlib.Path:
    """Write the report folder for one split. Arrays are (N,) over the training split."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(split.labels)
    preds = pred_probs.argmax(axis=1)
    k = len(class_names)
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
    writer.writerow(header)
    for i in range(len(labels)):
        row = [i, class_names[labels[i]], class_names[preds[i]], f"{clean_prob[i]:.5f}",
               f"{losses[i]:.5f}", int(labelled[i])]
        if truth is not None:
            row.append(class_names[truth[i]] if truth[i] >= 0 else "")
        writer.writerow(row)
    io.atomic_write_text(out / "samples.csv", buf.getvalue())
    if scores is not None:
        io.atomic_write_json(out / "detection.json", scores)
    io.atomic_savefig(lambda p: plot_loss_histogram(normalized, labelled, p, k=k), out /
                      "loss_histogram.png")
    write_suspects_sheet(out / "suspected_errors.png", split=split, data_cfg=data_cfg,
                         class_names=class_names, clean_prob=clean_prob, losses=losses,
                         preds=preds, limit=48)
    return out


def plot_loss_histogram(normalized, labelled, path, *, k=None, seed=0) -> None:
    """Histogram of normalised losses, clean vs noisy, with a 2-component GMM density."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.mixture import GaussianMixture

    x = np.asarray(normalized, float)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    bins = np.linspace(0, 1, 51)
    ax.hist(x[labelled], bins=bins, alpha=0.6, density=True, label="judged clean")
    ax.hist(x[~labelled], bins=bins, alpha=0.6, density=True, label="judged noisy")
    if len(np.unique(x)) > 2:
        gmm = GaussianMixture(2, reg_covar=5e-4, random_state=seed).fit(x[:, None])
        grid = np.linspace(0, 1, 200)[:, None]
        ax.plot(grid[:, 0], np.exp(gmm.score_samples(grid)), "k-", lw=1.2, label="GMM fit")
    ax.set_xlabel("normalised per-sample loss")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_suspects_sheet(path, *, split, data_cfg, class_names, clean_prob, losses, preds,
                         limit=48) -> None:
    """Contact sheet of the `limit` most suspected label errors, given vs predicted label."""
    from ferkeras.data.pipeline import collect_images
    from ferkeras.data.sheet import write_contact_sheet

    ranked = selection.rank_label_issues(clean_prob, losses)
    per_class = max(limit // len(class_names), 1)
    order = np.concatenate([ranked[split.labels[ranked] == c][:per_class]
                            for c in range(len(class_names))])
    if not len(order):
        return
    images = collect_images(split.subset(order), data_cfg)
    images = np.clip(images, 0, 255).astype(np.uint8)
    captions = [f"given: {class_names[split.labels[i]]} / pred: {class_names[preds[i]]}"
                for i in order]
    io.atomic_savefig(lambda p: write_contact_sheet(
        images, split.labels[order], class_names, p, per_class=per_class,
        title="most suspected label errors, by given label", captions=captions), path)
