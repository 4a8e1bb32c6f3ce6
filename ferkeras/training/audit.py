"""`ferkeras audit RECIPE`: find likely label errors in a dataset, as cleanlab users do.

Warm-up training (the recipe's `cycle.warmup_epochs`, at least 1), then one of two scores:

- `aum` (default): the area under the margin (Pleiss et al. 2020) from the warm-up's
  training dynamics: every epoch, each row's p(given label) minus the largest other
  probability is recorded (`audit/margins.npz`); its mean ranks the rows. How many rows of
  each class are flagged comes from the confident joint of the last epoch's probabilities
  (cleanlab's count). On FER2013 vs FERPlus this ranks label errors ahead of cleanlab's
  self-confidence on the same CE runs (bench/results/audit_dynamics.md).
- `loss`: one class-aware GMM split of the per-sample losses (the cycle's detector).

Writes `audit/label_issues.csv` ranked most-suspect first (its `ranked_by` column names the
score), plus the usual split report (counts, loss histogram, per-sample CSV, contact sheet of
suspects, and detection scores when true labels exist).
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import pathlib

import numpy as np

from ferkeras import io
from ferkeras.noise import selection

SCORES = ("aum", "loss")


def audit_recipe(recipe, *, run_dir, overwrite=False, verbose="auto", echo=print,
                 score: str = "aum") -> dict:
    """Train the warm-up, score every training label once, write `<run_dir>/audit/`; return
    a summary dict. score: 'aum' (area under the margin) or 'loss' (GMM split of losses)."""
    if score not in SCORES:
        raise ValueError(f"Unknown audit score. Valid: {SCORES}. Received: score={score!r}")
    from ferkeras.callbacks.margins import MarginRecorder
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
    train_split = bundle.train
    rows = make_dataset(train_split, recipe.data, batch_size=512)
    out = run_dir / "audit"
    margins_file = out / "margins.npz"
    if overwrite and margins_file.is_file():
        margins_file.unlink()
    recorder = MarginRecorder(rows, train_split.labels, margins_file)
    train(warm, bundle, run_dir=run_dir, overwrite=overwrite, strategy=strategy,
          verbose=verbose, echo=echo, callbacks=(recorder,) if score == "aum" else ())
    run = open_run(run_dir, weights="last")
    class_names, k = run.class_names, len(run.class_names)
    losses, probs = per_sample_losses(run.build_network(), rows, train_split.labels)
    c = recipe.cycle
    result = selection.split_training_set(
        losses, train_split.labels, num_classes=k, selector="gmm", normalize=c.normalize,
        true_labels=train_split.true_labels, seed=recipe.seed, p_clean=c.p_clean,
        gmm_scope=c.gmm_scope, min_class_samples=c.min_class_samples)
    aum = None
    if score == "aum":
        from ferkeras.noise.label_issues import area_under_margin, find_label_issues_by_aum

        margins = recorder.load()
        if not margins["epochs"].size:
            raise ValueError(f"{margins_file}: no epoch's margins were recorded; rerun "
                             "with --overwrite")
        aum = area_under_margin(margins["margin"])
        flagged = find_label_issues_by_aum(train_split.labels, aum, probs,
                                           return_indices_ranked=True)
        labelled = np.ones(len(train_split), bool)  # the report's split is the audit's
        labelled[flagged] = False
        result = dataclasses.replace(result, labelled=labelled)
        if train_split.true_labels is not None:  # AUC of the AUM ranking, (aum + 1) / 2
            result = dataclasses.replace(result, scores=selection.score_split_result(
                dataclasses.replace(result, clean_prob=(aum + 1.0) / 2.0),
                train_split.labels, train_split.true_labels, num_classes=k))
    write_split_report(out, split=train_split, data_cfg=recipe.data, class_names=class_names,
                       result=result, pred_probs=probs, rank_scores=aum)
    if aum is None:
        order = selection.rank_label_issues(result.clean_prob, result.losses)
        flagged = order[~result.labelled[order]]
    _write_issues(out / "label_issues.csv", flagged, train_split, class_names, probs,
                  result.clean_prob, result.losses, aum=aum)
    summary = {"n": len(train_split), "flagged": int(len(flagged)), "report": str(out),
               "ranked_by": "aum" if aum is not None else "loss",
               "flagged_per_class": {name: int(np.sum(train_split.labels[flagged] == i))
                                     for i, name in enumerate(class_names)}}
    if aum is not None:
        summary["aum_epochs"] = [int(e) for e in margins["epochs"]]
    summary["warnings"] = selection.split_warnings(
        result.labelled, train_split.labels, probs, num_classes=k, class_names=class_names)
    for warning in summary["warnings"]:
        echo(f"warning: {warning}")
    if result.scores is not None:
        summary["detection"] = {key: result.scores[key] for key in ("auc", "precision",
                                                                    "recall")}
    io.atomic_write_json(out / "summary.json", summary)
    return summary


def _write_issues(path, flagged, split, class_names, probs, clean_prob, losses, aum=None
                  ) -> None:
    buf = _io.StringIO()
    writer = csv.writer(buf)
    header = ["rank", "index", "file", "given_label", "suggested_label", "suggested_prob",
              "ranked_by", "aum", "clean_prob", "loss"]
    if split.true_labels is not None:
        header.append("true_label")
    writer.writerow(header)
    for rank, i in enumerate(flagged, start=1):
        pred = int(probs[i].argmax())
        row = [rank, int(i), str(split.paths[i]) if split.paths is not None else "",
               class_names[split.labels[i]], class_names[pred], f"{probs[i, pred]:.4f}",
               "loss" if aum is None else "aum", "" if aum is None else f"{aum[i]:.5f}",
               f"{clean_prob[i]:.5f}", f"{losses[i]:.5f}"]
        if split.true_labels is not None:
            t = split.true_labels[i]
            row.append(class_names[t] if t >= 0 else "")
        writer.writerow(row)
    io.atomic_write_text(path, buf.getvalue())
