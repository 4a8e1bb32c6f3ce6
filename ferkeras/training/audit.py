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

from ferkeras import io
from ferkeras.noise import selection


def audit_recipe(recipe, *, run_dir, overwrite=False, verbose="auto", echo=print) -> dict:
    """Train the warm-up, split once, write `<run_dir>/audit/`; return a summary dict."""
    from ferkeras.data.pipeline import make_dataset
    from ferkeras.data.sources import load_bundle
    from ferkeras.training import resolve_strategy, train
    from ferkeras.training.passes import per_sample_losses
    from ferkeras.training.reports import write_split_report
    from ferkeras.training.runs import open_run

    run_dir = pathlib.Path(run_dir)
    warm = dataclasses.replace(
        recipe, train=dataclasses.replace(recipe.train, epochs=max(recipe.cycle.warmup_epochs, 1)),
        cycle=dataclasses.replace(recipe.cycle, enabled=False, compare_ce=False))
    strategy = resolve_strategy("auto")
    bundle = load_bundle(recipe.data, seed=recipe.seed)
    train(warm, bundle, run_dir=run_dir, overwrite=overwrite, strategy=strategy,
          verbose=verbose, echo=echo)
    run = open_run(run_dir, weights="last")
    class_names, train_split, k = run.class_names, bundle.train, len(run.class_names)
    losses, probs = per_sample_losses(run.build_network(),
                                      make_dataset(train_split, recipe.data, batch_size=512),
                                      train_split.labels)
    c = recipe.cycle
    result = selection.split_training_set(
        losses, train_split.labels, num_classes=k, selector="gmm", normalize=c.normalize,
        true_labels=train_split.true_labels, seed=recipe.seed, p_clean=c.p_clean,
        gmm_scope=c.gmm_scope, min_class_samples=c.min_class_samples)
    out = run_dir / "audit"
    write_split_report(out, split=train_split, data_cfg=recipe.data, class_names=class_names,
                       result=result, pred_probs=probs)
    order = selection.rank_label_issues(result.clean_prob, result.losses)
    flagged = order[~result.labelled[order]]
    _write_issues(out / "label_issues.csv", flagged, train_split, class_names, probs,
                  result.clean_prob, result.losses)
    summary = {"n": len(train_split), "flagged": int(len(flagged)), "report": str(out),
               "flagged_per_class": {name: int(np.sum(train_split.labels[flagged] == i))
                                     for i, name in enumerate(class_names)}}
    summary["warnings"] = selection.split_warnings(
        result.labelled, train_split.labels, probs, num_classes=k, class_names=class_names)
    for warning in summary["warnings"]:
        echo(f"warning: {warning}")
    if result.scores is not None:
        summary["detection"] = {key: result.scores[key] for key in ("auc", "precision",
                                                                    "recall")}
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
