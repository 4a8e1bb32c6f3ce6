"""Benchmark: label-error detectors from training dynamics vs cleanlab, on FER2013's real
noise scored against FERPlus (#22, the audit).

Commands (from the repository root):

    .venv/bin/python bench/noisy_grid.py --configs ce --seeds 0,1,2 --dynamics
    .venv/bin/python bench/audit_dynamics.py            # this report
    .venv/bin/python bench/audit_dynamics.py --smoke    # a minute, fake tables

Rows: FER2013 Training rows with a FERPlus majority; truth = (FER2013 label == FERPlus
majority). Every detector scores how likely a row's given label is clean (higher = clean);
ROC-AUC, and precision of the k lowest-scored rows at k = the true noisy count.

Detectors, all from the same CE runs (`noisy_grid` config `ce`, weights picked on the noisy
validation half; the dynamics are logged at each epoch end, eval network, un-augmented):
- `self_confidence`: the picked epoch's probability of the given label (in-sample).
- `cleanlab`: cleanlab 2.9 `get_label_quality_scores` (its default self-confidence) and
  `find_label_issues` (its default prune_by_noise_rate) on the same in-sample probabilities.
  cleanlab recommends out-of-sample (K-fold) probabilities; that costs K trainings and is
  reported separately when `--kfold-work` holds them (not run here by default).
- `mean_prob`: the given label's probability averaged over the epochs.
- `aum`: area under the margin (Pleiss et al. 2020): the given label's probability minus the
  largest other, averaged over the epochs (on eval passes rather than on the training
  step's logits).
- `*_class_rank`: the same, ranked within each given class (0..1), so classes with very
  different noise rates are judged against their own rows (the cycle's per-class rule).
- `seeds`: each score averaged over the CE seeds with dynamics (agreement across seeds).
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


def class_rank(scores, labels, num_classes: int) -> np.ndarray:
    """Each row's score as its rank within its given class, in [0, 1]."""
    out = np.zeros(len(scores))
    for k in range(num_classes):
        rows = np.flatnonzero(labels == k)
        if len(rows) > 1:
            out[rows] = np.argsort(np.argsort(scores[rows])) / (len(rows) - 1)
    return out


def precision_at_k(scores, is_clean, k: int) -> float:
    """Share truly noisy among the k lowest-scored rows."""
    return float((~is_clean[np.argsort(scores)[:k]]).mean())


AUM_EPOCHS = (2, 4, 6)  # budgets of `ferkeras audit`'s warm-up


def detectors(runs: dict, labels, num_classes: int) -> dict:
    """{name: (N,) score} for every detector, seed-averaged. runs: {seed: {"train": (N, K)
    probs, "dynamics": {"prob": (N, E), "margin": (N, E)} or None}}."""
    from cleanlab.rank import get_label_quality_scores

    per_seed: dict[str, list] = {}
    for run in runs.values():
        p = run["train"]
        s = {"self_confidence": p[np.arange(len(labels)), labels],
             "cleanlab": get_label_quality_scores(labels, p)}
        d = run.get("dynamics")
        if d is not None:
            s["mean_prob"] = d["prob"].astype(np.float64).mean(1)
            s["aum"] = d["margin"].astype(np.float64).mean(1)
        for name in list(s):
            s[f"{name}_class_rank"] = class_rank(s[name], labels, num_classes)
        if d is not None:  # the audit's budget: the margin over the first E epochs only
            for e in AUM_EPOCHS:
                if e < d["margin"].shape[1]:
                    s[f"aum_first_{e}_epochs"] = d["margin"][:, :e].astype(np.float64).mean(1)
        for name, v in s.items():
            per_seed.setdefault(name, []).append(v)
    return {name: np.mean(v, axis=0) for name, v in per_seed.items()}


def kfold_probs(work: pathlib.Path, train_rows) -> tuple[np.ndarray, int, int] | None:
    """((N, K) out-of-sample probabilities of the Training rows, folds, epochs per fold run)
    from the CE K-fold runs of `noisy_grid.py --fold I/K` in `work`; None unless every fold
    is there."""
    files = sorted(work.glob("ce-s0-fold*of*.probs.npz"))
    if not files:
        return None
    k = int(files[0].name.split("of")[1].split(".")[0])
    if len(files) != k:
        print(f"{work}: {len(files)} of {k} folds done; no K-fold line yet")
        return None
    position = {int(r): i for i, r in enumerate(train_rows)}
    probs = None
    for f in files:
        z = np.load(f)
        if probs is None:
            probs = np.full((len(train_rows), z["heldout"].shape[1]), np.nan)
        probs[[position[int(r)] for r in z["heldout_rows"]]] = z["heldout"]
    if np.isnan(probs).any():
        raise SystemExit(f"{work}: the folds do not cover every Training row")
    epochs = {json.loads(f.with_name(f.name.replace(".probs.npz", ".done.json")).read_text())[
        "settings"]["epochs"] for f in files}
    return probs, k, max(epochs)


def assemble(args) -> dict:
    import common
    from noisy_data import load_tables, split_rows

    if args.smoke:
        from noisy_data import fake_tables

        t = fake_tables()
    else:
        t = load_tables(pathlib.Path(args.data), common.WORK / "fer2013_tables.npz")
    rows = split_rows(t, seed=0)
    fer, plus = t.fer[rows["train"]], t.plus[rows["train"]]
    known = plus >= 0
    is_clean = (fer == plus)[known]
    k_true = int((~is_clean).sum())
    work = pathlib.Path(args.work)
    runs = {}
    for probs_file in sorted(work.glob("ce-s*.probs.npz")):
        seed = int(probs_file.name[len("ce-s"):-len(".probs.npz")])
        dyn = work / f"ce-s{seed}" / "dynamics.npz"
        runs[seed] = {"train": np.load(probs_file)["train"].astype(np.float64),
                      "dynamics": dict(np.load(dyn)) if dyn.is_file() else None}
    with_dyn = {s: r for s, r in runs.items() if r["dynamics"] is not None}
    out = {"rows": int(known.sum()), "noisy": k_true, "noise_rate": k_true / int(known.sum()),
           "seeds_all": sorted(runs), "seeds_dynamics": sorted(with_dyn), "detectors": {}}
    for group, chosen in (("all_seeds", runs), ("dynamics_seeds", with_dyn)):
        if not chosen:
            continue
        from sklearn.metrics import roc_auc_score

        scores = detectors(chosen, fer, 7)
        for name, v in scores.items():
            out["detectors"][f"{name} [{group}]"] = {
                "auc": float(roc_auc_score(is_clean, v[known])),
                "precision_at_k_true": precision_at_k(v[known], is_clean, k_true),
                "seeds": sorted(chosen)}
    oos = kfold_probs(pathlib.Path(args.kfold_work), rows["train"]) if args.kfold_work else None
    if oos is not None:
        from cleanlab.rank import get_label_quality_scores
        from sklearn.metrics import roc_auc_score

        probs, folds, epochs = oos
        v = get_label_quality_scores(fer, probs)
        out["detectors"]["cleanlab [K-fold out-of-sample]"] = {
            "auc": float(roc_auc_score(is_clean, v[known])),
            "precision_at_k_true": precision_at_k(v[known], is_clean, k_true),
            "seeds": [0], "folds": folds,
            "compute": f"{folds} trainings on {folds - 1}/{folds} of the rows, "
                       f"{epochs} epochs each"}
    from cleanlab.filter import find_label_issues

    flagged = [find_label_issues(fer, r["train"]) for r in runs.values()]
    if flagged:
        f = flagged[0][known]
        out["cleanlab_find_label_issues_seed0"] = {
            "flagged": int(f.sum()), "precision": float((~is_clean[f]).mean()) if f.any()
            else None, "recall": float(f[~is_clean].mean())}
    best = max(out["detectors"], key=lambda n: out["detectors"][n]["auc"], default=None)
    cl = [n for n in out["detectors"] if n.startswith("cleanlab")]
    out["best"] = best
    out["auc_cleanlab_best"] = max((out["detectors"][n]["auc"] for n in cl), default=None)
    return out


def markdown(out) -> str:
    md = ["# Label-error detection from training dynamics vs cleanlab (FER2013 vs FERPlus)", "",
          f"{out['rows']} Training rows with a FERPlus majority, {100 * out['noise_rate']:.1f} % "
          f"noisy ({out['noisy']}). CE seeds: {out['seeds_all']}; with dynamics: "
          f"{out['seeds_dynamics']}. Precision@k at k = the true noisy count.", "",
          "| detector | ROC-AUC | precision@k |", "|---|---|---|"]
    for name, v in sorted(out["detectors"].items(), key=lambda kv: -kv[1]["auc"]):
        md.append(f"| {name} | {v['auc']:.3f} | {v['precision_at_k_true']:.3f} |")
    c = out.get("cleanlab_find_label_issues_seed0")
    if c:
        md += ["", f"cleanlab `find_label_issues` (prune_by_noise_rate, seed 0, in-sample): "
               f"{c['flagged']} flagged, precision {c['precision']:.3f}, recall "
               f"{c['recall']:.3f}."]
    md += ["", f"Best: `{out['best']}`; best cleanlab AUC: {out['auc_cleanlab_best']}."]
    kf = out["detectors"].get("cleanlab [K-fold out-of-sample]")
    md += [f"cleanlab's recommended setting, K-fold out-of-sample probabilities: {kf['compute']}."
           if kf else "cleanlab's recommended K-fold out-of-sample probabilities were not "
           "computed (K extra trainings); its in-sample scores above use the same CE runs.", ""]
    return "\n".join(md)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--work", default=None)
    p.add_argument("--kfold-work", default=None,
                   help="CE runs of `noisy_grid.py --fold I/K` (cleanlab's K-fold setting)")
    p.add_argument("--smoke", action="store_true", help="fake tables, one tiny CE run")
    args = p.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import common

    name = "audit_dynamics"
    if args.smoke:
        import noisy_grid

        noisy_grid.main(["--smoke", "--configs", "ce", "--dynamics"])
        args.kfold_work = str(common.WORK / "noisy_grid_smoke_kfold")
        for fold in ("0/2", "1/2"):
            noisy_grid.main(["--smoke", "--configs", "ce", "--fold", fold,
                             "--work", args.kfold_work])
        args.work, name = str(common.WORK / "noisy_grid_smoke"), "audit_dynamics_smoke"
    args.work = args.work or str(common.WORK / "noisy_grid")
    out = assemble(args)
    common.write_results(name, out, markdown(out), {"work": args.work, "smoke": args.smoke})
    print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
