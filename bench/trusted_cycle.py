"""Benchmark report: the cycle with a trusted anchor (#21) on FER2013's real label noise.

Commands (from the repository root; runs come from bench/noisy_grid.py, resumable):

    .venv/bin/python bench/noisy_grid.py --configs ce,oracle --seeds 0,1,2
    .venv/bin/python bench/noisy_grid.py --configs t_soft,t_split,t_rows,glc,t_soft_rows \
        --seeds 0,1,2
    .venv/bin/python bench/trusted_cycle.py            # this report
    .venv/bin/python bench/trusted_cycle.py --smoke    # a minute, fake tables

Full size (vgg4 w32, 12 epochs; ~25-35 min a run on 2 idle cores), then its report
(bench/results/trusted_cycle_full.{md,json}; the oracle's accuracy recorded by the earlier
full-size runs of the same settings stands in until an oracle run is in the folder):

    F="--model vgg4 --width 32 --epochs 12"
    .venv/bin/python bench/noisy_grid.py --configs ce,t_soft_rows --seeds 0,1,2 $F \
        --work bench/.work/grid_full
    .venv/bin/python bench/noisy_grid.py --configs ce,t_soft_rows --seeds 0 $F --swap-halves \
        --work bench/.work/grid_full_swap
    .venv/bin/python bench/trusted_cycle.py --work bench/.work/grid_full \
        --oracle-record bench/results/noisy_grid_noisy_grid_full.json \
        [--swap-work bench/.work/grid_full_swap]

Protocol (fixed before any trusted-track result was seen)
- Rows: as bench/noisy_fer2013.py (bench/noisy_data.py): Training rows with FER2013 labels;
  the validation half of PublicTest with FERPlus majority labels is the trusted set; the
  reported half is scored once against FERPlus.
- Candidates: the trusted-track configurations of noisy_grid (`TRUSTED_TRACK`), each under
  the decision rules fitted IN THE RUN on its trusted validation rows (decision_rules.json):
  `argmax`, `rule@accuracy` (recalibration fitted for accuracy), `rule@balanced` (fitted for
  balanced accuracy, rows weighted by inverse class frequency). Added after CE seed 0 had
  been scored, last changed after seed 1 (so not part of the fixed protocol, reported
  beside it): `rule@constrained`, the most accurate recalibration whose cross-validated balanced
  accuracy on the trusted rows is not below the argmax's (ferkeras.noise.trusted.fit_decision).
- References: CE (noisy-selected, recipes/fer2013.yaml), CE + the same recalibrations fitted
  post hoc on all trusted rows (`ce+recal@*`: today's recipes/fer2013_trusted.yaml), oracle
  (CE on FERPlus labels).
- Winner: the candidate configuration with the highest seed mean of the SELECTION SCORE:
  the mean of accuracy and balanced accuracy on its trusted validation rows (the ones it
  did not train on) of its `rule@accuracy`, cross-fitted (5 folds: each fold predicted by a
  recalibration fitted on the other four). The reported half is never read for it. Its
  `rule@accuracy` line gives `targets_trusted_cycle`, its `rule@balanced` line the balanced
  figures.
- Comparisons: paired bootstrap over the same reported rows (2000 draws), seeds paired by
  number; gap recovered = (line - CE) / (oracle - CE) in accuracy, with its bootstrap CI.
- Detection per split: the run's ROC-AUC of clean_prob on Training rows with a FERPlus
  majority (truth: FER2013 == FERPlus), one per split (`detection_auc_by_split`).
- Cost: wall seconds net of the per-epoch FERPlus logging over CE's; the machine load at the
  end of each run is in its done.json (a shared machine inflates both).
- Full size (`--work bench/.work/grid_full`, vgg4 w32, 12 epochs; fixed on 2026-12-08
  before any full-size run had finished): the proxy's winner (t_soft_rows) and CE with every
  rule, and the oracle. The HEADLINE line (what `targets_trusted_cycle` reports) is chosen on
  the trusted rows only: every line (config x rule) is scored by its 5-fold cross-fitted
  accuracy and balanced accuracy on the trusted rows it did not train on (each fold
  predicted by its rule refitted on the other four; seed mean); among the lines whose
  trusted balanced accuracy is at least CE argmax's, the most accurate on the trusted rows.
  The protocol's own line (winner + rule@accuracy) is reported beside it.
- Cross-fit of the halves (`--swap-work`, runs made with `noisy_grid.py --swap-halves`):
  the same lines with the two PublicTest halves exchanged (trusted <-> reported), seed 0;
  each half and their mean are reported.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

TRUSTED_TRACK = ("t_split", "t_soft", "t_rows", "glc", "t_soft_rows", "t_soft_rows_la")
RULES = ("argmax", "rule@accuracy", "rule@balanced", "rule@constrained")
SELECTION = ("mean of accuracy and balanced accuracy, on the run's trusted validation rows, "
             "of its rule@accuracy, 5-fold cross-fitted; seed mean")


def selection_score(val_probs, labels, *, seed=0) -> float:
    """The protocol's signal: (acc + balanced acc) / 2 of a cross-fitted recalibration.
    val_probs: (M, K) the run's probabilities of its trusted validation rows; labels: (M,)."""
    import noisy_fer2013 as nf

    from ferkeras.noise.trusted_split import cross_fit_clean_probs

    pred = cross_fit_clean_probs(val_probs, labels, folds=5, seed=seed).argmax(1)
    return float(((pred == labels).mean() + nf.balanced_accuracy(labels, pred)) / 2)


def trusted_cv(val_probs, labels, objective: str, *, seed=0, folds=5) -> tuple[float, float]:
    """(accuracy, balanced accuracy) on trusted rows of a line's rule, cross-fitted: each of
    `folds` stratified folds is predicted by the rule (`objective`, or the plain argmax for
    None) refitted on the other folds. val_probs: (M, K); labels: (M,) trusted labels."""
    import noisy_fer2013 as nf
    from sklearn.model_selection import StratifiedKFold

    from ferkeras.noise.trusted import apply_decision, fit_decision

    p, y = np.asarray(val_probs, np.float64), np.asarray(labels)
    if objective is None:
        pred = p.argmax(1)
    else:
        pred = np.zeros(len(y), np.int64)
        strata = np.where(np.bincount(y, minlength=p.shape[1])[y] >= folds, y, -1)
        for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(
                p, strata):
            d = fit_decision("recalibrate", p[fit], y[fit], train_prior=None, seed=seed,
                             objective=objective, folds=folds)
            pred[held] = apply_decision(d, p[held]).argmax(1)
    return float((pred == y).mean()), float(nf.balanced_accuracy(y, pred))


def line_predictions(runs, *, scored, plus_val, trusted=None, cv_folds=5
                     ) -> tuple[dict, dict]:
    """({line: {seed: (R,) predictions on the scored reported rows}}, {config: {seed:
    selection score}}) for CE (+ post-hoc rules), the oracle and every trusted-track run.
    trusted: a dict to fill with {line: {seed: (acc, bal) cross-fitted on trusted rows}}
    (`trusted_cv`; the full-size headline's selection), or None to skip that work."""
    from ferkeras.noise.trusted import OBJECTIVES, apply_decision, fit_decision

    preds, select = {}, {}

    def cv(line, seed, probs, labels, objective):
        if trusted is not None:
            trusted.setdefault(line, {})[seed] = trusted_cv(probs, labels, objective,
                                                            folds=cv_folds,
                                                            seed=seed)

    trusted_val = plus_val >= 0
    for config, by_seed in runs.items():
        for seed, run in by_seed.items():
            p = run["probs"]
            if config in ("ce", "oracle"):
                preds.setdefault(config, {})[seed] = p["reported"][scored].argmax(1)
            if config == "ce":
                cv("ce", seed, p["val"][trusted_val], plus_val[trusted_val], None)
                for obj in OBJECTIVES:
                    d = fit_decision("recalibrate", p["val"][trusted_val], plus_val[trusted_val],
                                     train_prior=None, seed=seed, objective=obj)
                    preds.setdefault(f"ce+recal@{obj}", {})[seed] = apply_decision(
                        d, p["reported"])[scored].argmax(1)
                    cv(f"ce+recal@{obj}", seed, p["val"][trusted_val], plus_val[trusted_val],
                       obj)
            if config not in TRUSTED_TRACK or "rules_val_rows" not in p:
                continue
            preds.setdefault(config, {})[seed] = p["reported"][scored].argmax(1)
            val_rows = p["rules_val_rows"].astype(np.int64)
            cv(config, seed, p["val"][val_rows], plus_val[val_rows], None)
            for obj in OBJECTIVES:  # refitted here on the run's own rows: every objective,
                # also for runs older than one of them; equal to the in-run fit where saved
                d = fit_decision("recalibrate", p["val"][val_rows], plus_val[val_rows],
                                 train_prior=None, seed=seed, objective=obj)
                got = apply_decision(d, p["reported"])
                saved = p.get(f"reported_rule_{obj}")
                if saved is not None and not np.allclose(saved, got, atol=1e-3):
                    raise SystemExit(f"{config}-s{seed}: the in-run {obj} rule differs from "
                                     "its refit on the same rows")
                preds.setdefault(f"{config}+rule@{obj}", {})[seed] = got[scored].argmax(1)
                cv(f"{config}+rule@{obj}", seed, p["val"][val_rows], plus_val[val_rows], obj)
            select.setdefault(config, {})[seed] = selection_score(
                p["val"][val_rows], plus_val[val_rows], seed=seed)
    return preds, select


def flagged_table(path: pathlib.Path, class_names) -> list[dict]:
    """Per given class of a split's samples.csv: rows, truly noisy share (FERPlus known),
    flagged share, precision of the flags."""
    by = {c: {"n": 0, "known": 0, "noisy": 0, "flagged": 0, "flagged_noisy": 0,
              "flagged_known": 0} for c in class_names}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            b = by[r["given_label"]]
            b["n"] += 1
            flagged = r["labelled"] == "0"
            b["flagged"] += flagged
            if r["true_label"]:
                b["known"] += 1
                noisy = r["true_label"] != r["given_label"]
                b["noisy"] += noisy
                b["flagged_known"] += flagged
                b["flagged_noisy"] += flagged and noisy
    return [{"class": c, "rows": b["n"],
             "noisy_share": b["noisy"] / b["known"] if b["known"] else None,
             "flagged_share": b["flagged"] / b["n"] if b["n"] else None,
             "flag_precision": (b["flagged_noisy"] / b["flagged_known"]
                                if b["flagged_known"] else None)} for c, b in by.items()]


def assemble(args) -> dict:
    import common
    import noisy_fer2013 as nf
    from noisy_data import load_tables, split_rows

    from ferkeras.labels import get_class_names

    if args.smoke:
        from noisy_data import fake_tables

        t = fake_tables()
    else:
        t = load_tables(pathlib.Path(args.data), common.WORK / "fer2013_tables.npz")
    rows = split_rows(t, seed=0)
    if getattr(args, "swapped", False):  # runs of `noisy_grid.py --swap-halves`
        rows["val"], rows["reported"] = rows["reported"], rows["val"]
    work = pathlib.Path(args.work)
    runs = nf.load_runs(work)
    scored = t.plus[rows["reported"]] >= 0
    y = t.plus[rows["reported"]][scored]
    plus_val = t.plus[rows["val"]]
    trusted = {}
    preds, select = line_predictions(runs, scored=scored, plus_val=plus_val, trusted=trusted,
                                     cv_folds=2 if args.smoke else 5)
    oracle_acc, oracle_seeds = None, []
    if "oracle" not in preds and getattr(args, "oracle_record", None):
        oracle_acc, oracle_seeds = recorded_oracle(pathlib.Path(args.oracle_record))
    lines = {}
    for name, by_seed in preds.items():
        s = [nf.scores(y, np.eye(nf.K)[by_seed[k]]) for k in sorted(by_seed)]
        line = {"seeds": sorted(by_seed),
                "accuracy": float(np.mean([x["accuracy"] for x in s])),
                "balanced_accuracy": float(np.mean([x["balanced_accuracy"] for x in s])),
                "by_seed": {str(k): [x["accuracy"], x["balanced_accuracy"]]
                            for k, x in zip(sorted(by_seed), s, strict=True)}}
        if name != "ce" and "ce" in preds:
            c = nf.compare_seeds(y, by_seed, preds["ce"])
            line.update({"acc_gain": c["acc_diff"], "acc_gain_ci": c["acc_ci"],
                         "bal_gain": c["bal_diff"], "bal_gain_ci": c["bal_ci"],
                         "vs_ce_seeds": c["seeds"]})
        if name not in ("ce", "oracle") and "ce" in preds and "oracle" in preds:
            line["acc_gap_recovered"] = nf.gap_recovered_bootstrap(
                y, *[[p[k] for k in sorted(p)] for p in (by_seed, preds["ce"],
                                                          preds["oracle"])])
        elif name != "ce" and "ce" in preds and oracle_acc is not None:
            line["acc_gap_recovered"] = nf.gap_recovered_bootstrap(
                y, [by_seed[k] for k in sorted(by_seed)],
                [preds["ce"][k] for k in sorted(preds["ce"])], oracle_acc)
        lines[name] = line
    if "oracle" not in preds and oracle_acc is not None:
        lines["oracle (recorded)"] = {"seeds": oracle_seeds, "accuracy": oracle_acc,
                                      "balanced_accuracy": None, "by_seed": {},
                                      "source": args.oracle_record}
    configs = {}
    wall_ce = None
    if "ce" in runs:
        wall_ce = float(np.mean([nf.net_wall_s(r) for r in nf.timed_runs(runs["ce"])]))
    for config in TRUSTED_TRACK:
        if config not in runs:
            continue
        done = [r["done"] for r in runs[config].values()]
        by_split = [d.get("detection_auc_by_split") or [] for d in done]
        n = min((len(b) for b in by_split), default=0)
        wall = float(np.mean([nf.net_wall_s(r) for r in nf.timed_runs(runs[config])]))
        configs[config] = {
            "seeds": sorted(runs[config]),
            "selection_score": float(np.mean(list(select.get(config, {}).values())))
            if select.get(config) else None,
            "detection_auc_by_split": [float(np.mean([b[i] for b in by_split
                                                      if b[i] is not None]))
                                       for i in range(n)] or None,
            "trusted_auc_by_split": [float(np.mean(v)) for v in zip(
                *[d.get("trusted_auc_by_split") or [] for d in done], strict=False)] or None,
            "wall_s": wall, "cost_ratio": wall / wall_ce if wall_ce else None,
            # back to back: each seed's run over CE's of the same seed, with both runs' load
            "cost_ratio_by_seed": {
                str(seed): {"ratio": nf.net_wall_s(r) / nf.net_wall_s(runs["ce"][seed]),
                            "loadavg_end": [r["done"].get("loadavg_end"),
                                            runs["ce"][seed]["done"].get("loadavg_end")]}
                for seed, r in sorted(runs[config].items())
                if "ce" in runs and seed in runs["ce"]},
            "loadavg_end": [d.get("loadavg_end") for d in done]}
    scored_configs = {c: v for c, v in configs.items() if v["selection_score"] is not None}
    winner = max(scored_configs, key=lambda c: scored_configs[c]["selection_score"],
                 default=None)
    out = {"protocol": __doc__.split("Protocol (fixed before any trusted-track result was "
                                     "seen)\n")[1].split('"""')[0].strip(),
           "selection": SELECTION, "work": str(work), "n_reported_scored": int(len(y)),
           "trusted_rows": int((plus_val >= 0).sum()), "lines": lines, "configs": configs,
           "winner": winner, "class_names": list(get_class_names("fer2013")),
           "size": run_size(runs), "swapped_halves": bool(getattr(args, "swapped", False)),
           "trusted_cv": {line: {"seeds": sorted(v),
                                 "accuracy": float(np.mean([a for a, _ in v.values()])),
                                 "balanced_accuracy": float(np.mean([b for _, b in v.values()]))}
                          for line, v in sorted(trusted.items())}}
    out["headline"] = headline(out["trusted_cv"])
    if winner:
        samples = sorted((work / f"{winner}-s{min(runs[winner])}" / "reports").glob(
            "split-e*/samples.csv"))
        if samples:
            out["winner_last_split"] = {"file": samples[-1].name,
                                        "per_class": flagged_table(samples[-1],
                                                                   out["class_names"])}
    out["targets_trusted_cycle"] = targets(out)
    return out


def recorded_oracle(path: pathlib.Path) -> tuple[float | None, list]:
    """The oracle's FERPlus accuracy on the reported half from an earlier noisy_grid results
    file (`noisy_grid_<folder>.json`, same settings): at each oracle run's selected epoch,
    from its per-epoch log; mean over the seeds that logged it."""
    runs = json.loads(path.read_text())
    runs = runs.get("runs") or runs.get("results", {}).get("runs", {})
    accs = {}
    for r in runs.values():
        if r.get("config") != "oracle":
            continue
        rec = [x for x in r.get("ferplus_by_epoch") or [] if x.get("epoch") == r["best_epoch"]]
        if rec and rec[0].get("reported_acc_ferplus") is not None:
            accs[r["seed"]] = rec[0]["reported_acc_ferplus"]
    return (float(np.mean(list(accs.values()))) if accs else None), sorted(accs)


def run_size(runs) -> str:
    """'proxy (small_cnn w16, 10 epochs)' etc., from the runs' settings (all must agree)."""
    sizes = {(r["done"]["settings"]["model"], r["done"]["settings"]["width"],
              r["done"]["settings"]["epochs"]) for v in runs.values() for r in v.values()}
    if len(sizes) > 1:
        raise SystemExit(f"runs of several sizes in one folder: {sorted(sizes)}")
    if not sizes:
        return "no runs"
    model, width, epochs = sizes.pop()
    kind = "proxy" if (model, width) == ("small_cnn", 16) else "full size"
    return f"{kind} ({model} w{width}, {epochs} epochs)"


def headline(trusted_cv: dict) -> str | None:
    """The protocol's headline line, chosen on trusted rows only: among the lines whose
    cross-fitted trusted balanced accuracy is at least CE argmax's, the most accurate there."""
    if "ce" not in trusted_cv:
        return None
    floor = trusted_cv["ce"]["balanced_accuracy"]
    ok = {k: v for k, v in trusted_cv.items() if k != "oracle"
          and v["balanced_accuracy"] >= floor}
    return max(ok, key=lambda k: ok[k]["accuracy"]) if ok else None


def targets(out) -> dict:
    """The issue's targets for ONE line (configuration + rule). At proxy size: the protocol's
    winner with its rule@accuracy (fixed before any trusted-track result). At full size: the
    headline line (`headline`, chosen on trusted rows; fixed before any full-size result),
    the protocol's line beside it. Detection AUC and cost are the trusted cycle's (winner)."""
    w = out["winner"]
    if not w:
        return {"winner": None, "note": "no trusted-track runs yet"}
    full = out["size"].startswith("full")
    line = out["headline"] if full and out.get("headline") else f"{w}+rule@accuracy"
    config = line.split("+")[0]
    bal_line = "ce+recal@balanced" if config == "ce" else f"{config}+rule@balanced"
    main, bal = out["lines"].get(line, {}), out["lines"].get(bal_line, {})
    gap = main.get("acc_gap_recovered") or {}
    det = out["configs"][w]["detection_auc_by_split"] or []

    def figures(v):
        g = v.get("acc_gap_recovered") or {}
        return {"acc_gap_recovered": g.get("ratio"), "acc_gap_recovered_ci": g.get("ci"),
                "acc_gain": v.get("acc_gain"), "acc_gain_ci": v.get("acc_gain_ci"),
                "bal_gain": v.get("bal_gain"), "bal_gain_ci": v.get("bal_gain_ci"),
                "bal_gain_ci_low": (v.get("bal_gain_ci") or [None])[0]}

    res = {
        "line": line, "winner": w, "rule": line.split("@")[1] if "@" in line else "argmax",
        "chosen_by": ("headline: on trusted rows (see the protocol)" if full else
                      "the proxy protocol: winner + rule@accuracy"),
        "seeds": main.get("seeds"), "size": out["size"], **figures(main),
        "balanced_rule": {"line": bal_line, **figures(bal)},
        "detection_auc_by_split": det, "detection_of": w,
        "cost_ratio": out["configs"][w]["cost_ratio"]}
    if full:
        res["protocol_line"] = {"line": f"{w}+rule@accuracy",
                                **figures(out["lines"].get(f"{w}+rule@accuracy", {}))}
    else:
        res["constrained_rule"] = {  # beside the protocol, not part of it (see the protocol)
            "line": f"{w}+rule@constrained",
            **figures(out["lines"].get(f"{w}+rule@constrained", {}))}
    seeds = main.get("seeds") or []
    res["met"] = {
        "acc_gap_recovered>=0.80": bool(gap.get("ratio") is not None and gap["ratio"] >= 0.8),
        "bal_gain>=0_and_ci_low>-1.5": bool(
            main.get("bal_gain") is not None and main["bal_gain"] >= 0
            and main["bal_gain_ci"][0] > -0.015),
        "balanced_rule_bal_gain>=+2_ci_low>0": bool(
            bal.get("bal_gain") is not None and bal["bal_gain"] >= 0.02
            and bal["bal_gain_ci"][0] > 0),
        "detection_last>=0.92_and_rising": bool(len(det) >= 2 and det[-1] >= 0.92
                                                and det[-1] > det[0]),
        "cost_ratio<=2": bool(res["cost_ratio"] is not None and res["cost_ratio"] <= 2.0),
        "full_size_3_seeds": bool(full and len(seeds) >= 3)}
    return res


def markdown(out) -> str:
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}"

    def ci(v):
        return "" if not v else f" [{100 * v[0]:+.1f}, {100 * v[1]:+.1f}]"

    def gain(v, key):
        return "–" if v.get(key) is None else f"{100 * v[key]:+.1f}{ci(v.get(key + '_ci'))}"

    md = ["# The cycle with a trusted anchor (#21): FER2013 real noise vs FERPlus", "",
          f"Reported half: {out['n_reported_scored']} rows with a FERPlus majority; trusted "
          f"rows: {out['trusted_rows']} (validation half). Work: `{out['work']}`.", "",
          "| line | seeds | accuracy | balanced acc. | Δacc vs CE [95% CI] | Δbal vs CE "
          "[95% CI] | gap recovered [95% CI] |", "|---|---|---|---|---|---|---|"]
    for name, v in sorted(out["lines"].items()):
        gap = v.get("acc_gap_recovered") or {}
        g = "–" if gap.get("ratio") is None else (
            f"{gap['ratio']:.2f}" + (f" [{gap['ci'][0]:.2f}, {gap['ci'][1]:.2f}]"
                                     if gap.get("ci") else ""))
        md.append(f"| {name} | {','.join(map(str, v['seeds']))} | {pct(v['accuracy'])} | "
                  f"{pct(v['balanced_accuracy'])} | {gain(v, 'acc_gain')} | "
                  f"{gain(v, 'bal_gain')} | {g} |")
    md += ["", f"Winner by the protocol ({out['selection']}): **{out['winner']}**.", "",
           "| config | seeds | selection score | detection AUC by split | trusted-row AUC "
           "by split (out of fold) | wall (s) | cost × CE |", "|---|---|---|---|---|---|---|"]
    for c, v in out["configs"].items():
        fmt = lambda xs: " → ".join(f"{x:.3f}" for x in xs) if xs else "–"  # noqa: E731
        cost = "–" if v["cost_ratio"] is None else f"{v['cost_ratio']:.2f}"
        by_seed = ", ".join(f"s{k} {x['ratio']:.2f}" for k, x in
                            v.get("cost_ratio_by_seed", {}).items())
        md.append(f"| {c} | {','.join(map(str, v['seeds']))} | "
                  f"{pct(v['selection_score'])} | {fmt(v['detection_auc_by_split'])} | "
                  f"{fmt(v['trusted_auc_by_split'])} | {v['wall_s']:.0f} | {cost}"
                  + (f" ({by_seed})" if by_seed else "") + " |")
    if out.get("winner_last_split"):
        md += ["", f"Winner's last split ({out['winner_last_split']['file']}, seed "
               f"{out['lines'].get(out['winner'], {}).get('seeds', ['?'])[0]}): per given "
               "class", "", "| class | rows | truly noisy | flagged | precision of flags |",
               "|---|---|---|---|---|"]
        md += [f"| {r['class']} | {r['rows']} | {pct(r['noisy_share'])} | "
               f"{pct(r['flagged_share'])} | {pct(r['flag_precision'])} |"
               for r in out["winner_last_split"]["per_class"]]
    if out.get("trusted_cv"):
        md += ["", "Lines scored on the trusted rows only (5-fold cross-fitted, seed mean): "
               f"the headline is **{out.get('headline')}** (the most accurate line whose "
               "trusted balanced accuracy is at least CE argmax's).", "",
               "| line | trusted accuracy | trusted balanced acc. |", "|---|---|---|"]
        md += [f"| {k}{' (headline)' if k == out.get('headline') else ''} | "
               f"{pct(v['accuracy'])} | {pct(v['balanced_accuracy'])} |"
               for k, v in out["trusted_cv"].items()]
    if out.get("cross_fit"):
        cf = out["cross_fit"]
        md += ["", f"## Cross-fit of the halves (seed {cf['seed']})", "",
               "Half A is reported above (trusted: the validation half); half B swaps them "
               f"(`{cf['work']}`). Accuracy / balanced accuracy vs FERPlus.", "",
               "| line | half A | half B | mean | Δ mean vs CE |", "|---|---|---|---|---|"]
        for k, v in cf["lines"].items():
            d = v.get("vs_ce")
            md.append(f"| {k} | {pct(v['a'][0])} / {pct(v['a'][1])} | {pct(v['b'][0])} / "
                      f"{pct(v['b'][1])} | {pct(v['mean'][0])} / {pct(v['mean'][1])} | " +
                      ("–" if d is None else f"{100 * d[0]:+.1f} / {100 * d[1]:+.1f}") + " |")
    md += ["", "## targets_trusted_cycle", "", "```json",
           json.dumps(out["targets_trusted_cycle"], indent=1), "```", "",
           "## Protocol", "", out["protocol"], ""]
    return "\n".join(md)


def cross_fit(a: dict, b: dict, work_b: str) -> dict:
    """Seed-0 figures of every line present on both halves: half A (a), half B (b, the
    halves swapped), their mean, and the mean's difference from CE's."""
    seed = "0"
    lines = {}
    for k in sorted(set(a["lines"]) & set(b["lines"])):
        fa, fb = a["lines"][k]["by_seed"].get(seed), b["lines"][k]["by_seed"].get(seed)
        if fa and fb:
            lines[k] = {"a": fa, "b": fb, "mean": [(fa[0] + fb[0]) / 2, (fa[1] + fb[1]) / 2]}
    if "ce" in lines:
        for v in lines.values():
            v["vs_ce"] = [v["mean"][0] - lines["ce"]["mean"][0],
                          v["mean"][1] - lines["ce"]["mean"][1]]
    return {"seed": int(seed), "work": work_b, "lines": lines,
            "headline_b": b.get("headline")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--work", default=None, help="noisy_grid runs (default bench/.work/"
                   "noisy_grid)")
    p.add_argument("--oracle-record", default=None,
                   help="without an oracle run in --work: its accuracy from an earlier "
                   "noisy_grid results file with the same settings (a constant in the gap)")
    p.add_argument("--swap-work", default=None,
                   help="runs of `noisy_grid.py --swap-halves` (the cross-fit of the halves)")
    p.add_argument("--smoke", action="store_true", help="fake tables: a smoke grid, then this")
    args = p.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import common

    name = "trusted_cycle"
    if args.smoke:
        import noisy_grid

        noisy_grid.main(["--smoke", "--configs", "ce,t_soft_rows"])
        args.work, name = str(common.WORK / "noisy_grid_smoke"), "trusted_cycle_smoke"
        swap = common.WORK / "noisy_grid_smoke_swap"
        noisy_grid.main(["--smoke", "--configs", "ce,t_soft_rows", "--swap-halves",
                         "--work", str(swap)])
        args.swap_work = str(swap)
    args.work = args.work or str(common.WORK / "noisy_grid")
    out = assemble(args)
    full = out["size"].startswith("full")
    if full and not args.smoke:
        name = "trusted_cycle_full"
    if args.swap_work:
        other = assemble(argparse.Namespace(**{**vars(args), "work": args.swap_work,
                                               "swapped": True}))
        out["cross_fit"] = cross_fit(out, other, args.swap_work)
    common.write_results(name, out, markdown(out), {"work": args.work, "smoke": args.smoke,
                                                    "selection": SELECTION})
    if not args.smoke:  # the home for the targets: the real-noise report's JSON
        common.patch_results(
            "noisy_fer2013", "targets_trusted_cycle" if full else "targets_trusted_cycle_proxy",
            {**out["targets_trusted_cycle"], "source": f"bench/results/{name}.json"})
    print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
