"""Benchmark: a trust-free checkpoint-selection signal that is not biased toward the noise (#22).

The trust-free protocol picks checkpoints and methods by accuracy on the NOISY validation
labels (FER2013's). That signal pays a model for agreeing with the annotators' mistakes. This
report measures how well each candidate signal ranks checkpoints against their accuracy on
FERPlus (the reported half), by Spearman's rank correlation:

- `noisy_acc`: accuracy on the noisy validation labels (today's protocol);
- `noisy_bal`: balanced accuracy on them;
- `debiased_acc` / `debiased_bal`: the same predictions scored through the estimated
  transition matrix, J = C T^-1 (ferkeras.noise.clean_accuracy), with T estimated ONCE per
  run folder, trust-free, by anchor points on the CE seed-0 run's probabilities of the
  validation half (out of sample; FER2013 labels only, FERPlus never read for it).

Checkpoints:
- Diagnostic, not a candidate: `debiased_acc_true_T`, the same de-biasing with the TRUE
  class-conditional T (counted from the Training rows' FER2013 and FERPlus labels): if even
  it ranks wrongly, the noise is not class-conditional and no T fixes the signal.

- A: every epoch of every run of the proxy grid (bench/results/noisy_grid.json, 13 configs x
  3 seeds x 10 epochs), where only `noisy_acc` was logged: its rank correlation, over all
  checkpoints and over the checkpoint each run selected.
- B: every checkpoint with probabilities on disk: each run's selected checkpoint
  (`<run>.probs.npz`) and, for runs logged since 2026-12-08, every epoch
  (`<run>/epoch_probs.npz`), in each `--work` folder (one T per folder). All four signals.

The signal with the highest rank correlation over B's checkpoints is the one the protocol
fixes for the long-budget runs; both correlations go to
`bench/results/noisy_fer2013.json -> selection_signal`.

Commands (from the repository root; runs from bench/noisy_grid.py; seconds, no training):

    .venv/bin/python bench/selection_signal.py \
        --work bench/.work/noisy_grid --work bench/.work/grid_full
    .venv/bin/python bench/selection_signal.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

SIGNALS = ("noisy_acc", "noisy_bal", "debiased_acc", "debiased_bal")
# Not a trust-free signal: T counted from the Training rows' FER2013 vs FERPlus labels. It
# bounds what any class-conditional de-biasing can do (the best T there is); never chosen.
DIAGNOSTIC = ("debiased_acc_true_T",)


def grid_checkpoints(grid: dict) -> dict:
    """Part A from noisy_grid.json's runs: rank correlations of noisy validation accuracy
    with FERPlus accuracy, over every logged epoch and over each run's selected epoch; and
    per config, the FERPlus accuracy of the epoch the noisy signal keeps vs the run's peak
    (`memorisation`: a drop of 2 points or more is where CE has begun to memorise)."""
    from ferkeras.noise.clean_accuracy import rank_correlation

    every, chosen, memo = [], [], {}
    for name, run in sorted(grid.get("runs", {}).items()):
        recs = [r for r in run.get("ferplus_by_epoch") or []
                if r.get("reported_acc_ferplus") is not None and "val_acc_fer2013" in r]
        if not recs:
            continue
        every += [(r["val_acc_fer2013"], r["reported_acc_ferplus"]) for r in recs]
        best = max(recs, key=lambda r: (r["val_acc_fer2013"], -r["epoch"]))
        chosen.append((name, best["val_acc_fer2013"], best["reported_acc_ferplus"]))
        peak = max(recs, key=lambda r: (r["reported_acc_ferplus"], -r["epoch"]))
        memo.setdefault(run["config"], []).append({
            "run": name, "epochs": max(r["epoch"] for r in recs),
            "peak_epoch": peak["epoch"], "peak": peak["reported_acc_ferplus"],
            "kept_epoch": best["epoch"], "kept": best["reported_acc_ferplus"]})
    out = {"n_checkpoints": len(every), "n_runs": len(chosen),
           "memorisation": {c: {"runs": v, "peak": float(np.mean([x["peak"] for x in v])),
                                "kept": float(np.mean([x["kept"] for x in v])),
                                "drop": float(np.mean([x["peak"] - x["kept"] for x in v])),
                                "epochs": max(x["epochs"] for x in v)}
                            for c, v in sorted(memo.items())}}
    if every:
        a = np.array(every)
        out["noisy_acc_rank_corr_all_epochs"] = rank_correlation(a[:, 0], a[:, 1])
    if chosen:
        out["noisy_acc_rank_corr_selected"] = rank_correlation(
            [c[1] for c in chosen], [c[2] for c in chosen])
        out["runs"] = [c[0] for c in chosen]
    return out


def reference_transition(work: pathlib.Path, val_noisy: np.ndarray) -> tuple[np.ndarray, str]:
    """T by anchor points on the lowest-seeded CE run's validation-half probabilities."""
    from ferkeras.noise.transition import estimate_transition_anchors

    for seed in range(10):
        f = work / f"ce-s{seed}.probs.npz"
        if f.is_file():
            p = np.load(f)["val"].astype(np.float64)
            p /= p.sum(1, keepdims=True)
            return estimate_transition_anchors(p), f.name
    raise SystemExit(f"{work}: no ce-s*.probs.npz, the reference T needs a CE run")


def folder_checkpoints(work: pathlib.Path, t, rows) -> list[dict]:
    """Part B: every checkpoint of one run folder, with all signals and the FERPlus truth."""
    import noisy_fer2013 as nf

    from ferkeras.noise.clean_accuracy import debiased_scores

    val_y = t.fer[rows["val"]]
    scored = t.plus[rows["reported"]] >= 0
    rep_y = t.plus[rows["reported"]][scored]
    T, ref = reference_transition(work, val_y)
    from ferkeras.noise.transition import estimate_transition_counts

    tr = rows["train"]
    known = t.plus[tr] >= 0
    T_true = estimate_transition_counts(t.fer[tr][known], t.plus[tr][known],
                                        num_classes=T.shape[0])
    out = []

    def add(run, epoch, p_val, p_rep):
        pv, pr = p_val.argmax(1), p_rep.argmax(1)
        d = debiased_scores(pv, val_y, T)
        out.append({"folder": work.name, "run": run, "epoch": epoch, "T_from": ref,
                    "noisy_acc": d["noisy_accuracy"],
                    "noisy_bal": nf.balanced_accuracy(val_y, pv),
                    "debiased_acc": d["accuracy"], "debiased_bal": d["balanced_accuracy"],
                    "debiased_acc_true_T": debiased_scores(pv, val_y, T_true)["accuracy"],
                    "ferplus_acc": float((pr == rep_y).mean()),
                    "ferplus_bal": nf.balanced_accuracy(rep_y, pr)})

    for done in sorted(work.glob("*.done.json")):
        run = done.name[:-len(".done.json")]
        d = json.loads(done.read_text())
        if d.get("settings", {}).get("halves") == "swapped":
            raise SystemExit(f"{work}: runs with swapped halves; pass unswapped folders")
        probs = done.with_name(f"{run}.probs.npz")
        if probs.is_file():
            z = np.load(probs)
            add(run, f"selected ({d.get('best_epoch')})", z["val"], z["reported"][scored])
        ep = work / run / "epoch_probs.npz"
        if ep.is_file():
            z = np.load(ep)
            for i, e in enumerate(z["epochs"]):
                add(run, int(e), z["val"][i].astype(np.float32),
                    z["reported"][i].astype(np.float32))
    return out


def correlations(points: list[dict], truth: str) -> dict:
    from ferkeras.noise.clean_accuracy import rank_correlation

    return {s: rank_correlation([p[s] for p in points], [p[truth] for p in points])
            for s in SIGNALS + DIAGNOSTIC}


def assemble(args) -> dict:
    import common
    from noisy_data import load_tables, split_rows

    def shown(path) -> str:  # relative to the repository where it lies inside it
        path = pathlib.Path(path).resolve()
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)

    part_a = {shown(g): grid_checkpoints(json.loads(pathlib.Path(g).read_text()))
              for g in args.grid if pathlib.Path(g).is_file()}
    for w in args.work:  # the run folders' own per-epoch logs (runs since the files above)
        runs = {f.name[:-len(".done.json")]: json.loads(f.read_text())
                for f in sorted(pathlib.Path(w).glob("*.done.json"))}
        if runs:
            part_a[shown(w)] = grid_checkpoints({"runs": runs})
    if args.smoke:
        from noisy_data import fake_tables

        t = fake_tables()
    else:
        t = load_tables(pathlib.Path(args.data), common.WORK / "fer2013_tables.npz")
    rows = split_rows(t, seed=0)
    points = []
    for w in args.work:
        points += folder_checkpoints(pathlib.Path(w), t, rows)
    by_acc = correlations(points, "ferplus_acc") if points else {}
    by_bal = correlations(points, "ferplus_bal") if points else {}
    valid = {s: v for s, v in by_acc.items() if v == v and s in SIGNALS}  # not NaN
    chosen = max(valid, key=valid.get) if valid else None
    return {
        "grid": part_a, "work": [shown(w) for w in args.work],
        "checkpoints": points, "n_checkpoints": len(points),
        "rank_corr_vs_ferplus_acc": by_acc, "rank_corr_vs_ferplus_bal": by_bal,
        "chosen": chosen,
        "selection_signal": {
            "chosen": chosen,
            "chosen_rank_corr": by_acc.get(chosen) if chosen else None,
            "noisy_val_rank_corr": by_acc.get("noisy_acc"),
            "n_checkpoints": len(points),
            "noisy_val_rank_corr_grid": {
                pathlib.Path(g).name: {"all_epochs": v.get("noisy_acc_rank_corr_all_epochs"),
                                       "selected": v.get("noisy_acc_rank_corr_selected")}
                for g, v in part_a.items()},
            "met": bool(chosen and chosen != "noisy_acc"
                        and by_acc[chosen] > by_acc["noisy_acc"])}}


def markdown(out) -> str:
    def f(x):
        return "–" if x is None or x != x else f"{x:+.3f}"

    md = ["# Checkpoint-selection signals without trust (#22)", ""]
    for name, g in out["grid"].items():
        md += [f"Part A, logged epochs of `{name}`: noisy validation accuracy vs FERPlus "
               f"accuracy, Spearman {f(g.get('noisy_acc_rank_corr_all_epochs'))} over "
               f"{g.get('n_checkpoints', 0)} checkpoints, "
               f"{f(g.get('noisy_acc_rank_corr_selected'))} over the {g.get('n_runs', 0)} "
               "checkpoints the runs selected. FERPlus accuracy of the epoch the noisy signal "
               "keeps vs the run's peak (seed means):", "",
               "| config | epochs | peak | kept | drop (points) | peak epochs | kept epochs |",
               "|---|---|---|---|---|---|---|"]
        md += [f"| {c} | {v['epochs']} | {100 * v['peak']:.1f} | {100 * v['kept']:.1f} | "
               f"{100 * v['drop']:+.1f} | {','.join(str(x['peak_epoch']) for x in v['runs'])} "
               f"| {','.join(str(x['kept_epoch']) for x in v['runs'])} |"
               for c, v in g.get("memorisation", {}).items()]
        md.append("")
    md += [
          f"Part B, {out['n_checkpoints']} checkpoints with probabilities on disk "
          f"({', '.join(f'`{w}`' for w in out['work'])}): Spearman rank correlation of each "
          "signal with the checkpoint's FERPlus accuracy (balanced accuracy) on the reported "
          "half.", "", "| signal | vs FERPlus accuracy | vs FERPlus balanced acc. |",
          "|---|---|---|"]
    for s in SIGNALS + DIAGNOSTIC:
        mark = " (chosen)" if s == out["chosen"] else " (diagnostic)" if s in DIAGNOSTIC else ""
        md.append(f"| {s}{mark} | {f(out['rank_corr_vs_ferplus_acc'].get(s))} | "
                  f"{f(out['rank_corr_vs_ferplus_bal'].get(s))} |")
    md += ["", "| folder | run | epoch | noisy acc | de-biased acc | de-biased, true T | "
           "FERPlus acc | FERPlus bal |", "|---|---|---|---|---|---|---|---|"]
    md += [f"| {p['folder']} | {p['run']} | {p['epoch']} | {100 * p['noisy_acc']:.1f} | "
           f"{100 * p['debiased_acc']:.1f} | {100 * p['debiased_acc_true_T']:.1f} | "
           f"{100 * p['ferplus_acc']:.1f} | {100 * p['ferplus_bal']:.1f} |"
           for p in out["checkpoints"]]
    md += ["", "## selection_signal", "", "```json",
           json.dumps(out["selection_signal"], indent=1), "```", "",
           "## Protocol", "", __doc__.split("\n\n", 1)[1].split("Commands")[0].strip(), ""]
    return "\n".join(md)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--work", action="append", default=None,
                   help="a noisy_grid run folder (repeatable; default bench/.work/noisy_grid)")
    p.add_argument("--grid", action="append", default=None,
                   help="a noisy_grid results JSON with every epoch's noisy val and FERPlus "
                   "accuracy (repeatable; default the proxy grid's and the full-size runs')")
    p.add_argument("--smoke", action="store_true", help="fake tables, a 2-epoch smoke grid")
    args = p.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import common

    name = "selection_signal"
    if args.smoke:
        import noisy_grid

        work = common.WORK / "selection_signal_smoke"
        noisy_grid.main(["--smoke", "--configs", "ce", "--work", str(work)])
        args.work, name = [str(work)], "selection_signal_smoke"
    args.work = args.work or [str(common.WORK / "noisy_grid")]
    args.grid = args.grid or [str(ROOT / "bench" / "results" / f) for f in (
        "noisy_grid.json", "noisy_grid_noisy_grid_full.json")]
    out = assemble(args)
    common.write_results(name, out, markdown(out), {"work": args.work, "grid": args.grid,
                                                    "smoke": args.smoke})
    if not args.smoke:
        common.patch_results("noisy_fer2013", "selection_signal", {
            **out["selection_signal"], "source": "bench/results/selection_signal.json"})
    print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
