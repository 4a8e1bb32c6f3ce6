"""`ferkeras audit RECIPE`: find likely label errors in a dataset, as cleanlab users do.

Warm-up training (the recipe's `cycle.warmup_epochs`, at least 1) -> one class-aware split of
the per-sample losses -> `audit/label_issues.csv`, ranked most-suspect first, plus the usual
split report (counts, loss histogram, per-sample CSV, contact sheet of suspects, and
detection scores when true labels exist).
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import pathlib

import numpy as np

from ferkeras import io, selection


def audit_recipe(recipe, *, run_dir, overwrite=False, verbose=1, echo=print) -> dict:
    """Train the warm-up, split once, write `<run_dir>/audit/`; return a summary dict."""
    from ferkeras.data.pipeline import make_dataset
    from ferkeras.data.sources import load_bundle
    from ferkeras.evaluate_run import load_network
    from ferkeras.passes import per_sample_losses
    from ferkeras.reports import write_split_report
    from ferkeras.training import train_recipe

    run_dir = pathlib.Path(run_dir)
    warm = dataclasses.replace(
        recipe, train=dataclasses.replace(recipe.train, epochs=max(recipe.cycle.warmup_epochs, 1)),
        cycle=dataclasses.replace(recipe.cycle, enabled=False, compare_ce=False))
    train_recipe(warm, run_dir=run_dir, overwrite=overwrite, verbose=verbose, echo=echo)
    _, network, class_names = load_network(run_dir, weights="last")
    bundle = load_bundle(recipe.data, seed=recipe.seed)
    train = bundle.train
    k = len(class_names)
    losses, probs = per_sample_losses(network,
                                      make_dataset(train, recipe.data, batch_size=512),
                                      train.labels)
    c = recipe.cycle
    clean_prob = selection.clean_probability(
        losses, train.labels, num_classes=k, normalize=c.normalize, gmm_scope=c.gmm_scope,
        min_class_samples=c.min_class_samples, seed=recipe.seed)
    labelled = selection.split_by_threshold(clean_prob, train.labels, p_clean=c.p_clean,
                                            num_classes=k)
    scores = None
    if train.true_labels is not None and (train.true_labels >= 0).any():
        known = train.true_labels >= 0
        scores = selection.score_noise_detection(
            clean_prob[known], (train.true_labels == train.labels)[known],
            labels=train.labels[known], num_classes=k, p_clean=c.p_clean)
    out = run_dir / "audit"
    write_split_report(out, split=train, data_cfg=recipe.data, class_names=class_names,
                       losses=losses,
                       normalized=selection.normalize_losses(losses, train.labels, num_classes=k,
                                                             mode=c.normalize),
                       clean_prob=clean_prob, labelled=labelled, pred_probs=probs,
                       scores=scores)
    order = selection.rank_label_issues(clean_prob, losses)
    flagged = order[~labelled[order]]
    _write_issues(out / "label_issues.csv", flagged, train, class_names, probs, clean_prob,
                  losses)
    summary = {"n": len(train), "flagged": int(len(flagged)), "report": str(out),
               "flagged_per_class": {name: int(np.sum(train.labels[flagged] == i))
                                     for i, name in enumerate(class_names)}}
    if scores is not None:
        summary["detection"] = {key: scores[key] for key in ("auc", "precision", "recall")}
    io.atomic_write_json(out / "summary.json", summary)
    return summary


def _write_issues(path, flagged, split, class_names, probs, clean_prob, losses) -> None:
    buf = _io.StringIO()
    writer = csv.writer(buf)
    header = ["rank", "index", "file", "given_label", "suggested_label", "suggested_prob",
              "clean_prob", "loss"]
    if split.true_labels is not None:
        header.append("true_label")
    writer.writerow(header)
    for rank, i in enumerate(flagged, start=1):
        pred = int(probs[i].argmax())
        row = [rank, int(i), str(split.paths[i]) if split.paths is not None else "",
               class_names[split.labels[i]], class_names[pred], f"{probs[i, pred]:.4f}",
               f"{clean_prob[i]:.5f}", f"{losses[i]:.5f}"]
        if split.true_labels is not None:
            t = split.true_labels[i]
            row.append(class_names[t] if t >= 0 else "")
        writer.writerow(row)
    io.atomic_write_text(path, buf.getvalue())
