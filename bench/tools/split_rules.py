"""Re-score the saved splits of real-noise grid runs under every loss normalisation x GMM scope.

Each cycle run of `bench/noisy_grid.py` keeps its per-sample split losses
(`<work>/<config>-s<seed>/reports/split-eNNN/samples.csv`, with the FERPlus majority as
`true_label` where it exists). This tool re-scores those losses under the four rules of
`ferkeras.noise.selection.clean_probability` (per-class or global normalisation x one global or
per-class GMM), exactly as `bench/quickstart_split.py`'s post-hoc table does on synthetic
noise: the same warm-up model, only the rule differs, so it ranks rules without a retrain.
ROC-AUC and precision are measured on Training rows with a FERPlus majority.

    .venv/bin/python bench/tools/split_rules.py                     # cycle_ce runs
    .venv/bin/python bench/tools/split_rules.py --configs cycle_ce,relabel
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
from quickstart_split import RULES, posthoc_rules  # noqa: E402


def collect(work: pathlib.Path, configs: list[str]) -> dict:
    runs = {}
    for config in configs:
        for run_dir in sorted(work.glob(f"{config}-s*")):
            if run_dir.is_dir() and (run_dir.parent / f"{run_dir.name}.done.json").is_file():
                runs[run_dir.name] = posthoc_rules(run_dir)
    return runs


def summarise(runs: dict) -> dict:
    """Mean over runs of each rule's AUC / precision at the last split."""
    out = {}
    for norm, scope in RULES:
        key = f"{norm}/{scope}"
        last = [splits[-1][key] for splits in runs.values() if splits]
        if last:
            out[key] = {"runs": len(last),
                        "last_auc": round(statistics.mean(x["auc"] for x in last), 4),
                        "last_precision": round(statistics.mean(
                            x["precision"] for x in last if x["precision"] is not None), 4),
                        "last_flagged": round(statistics.mean(x["flagged"] for x in last), 4)}
    return out


def markdown(data: dict) -> str:
    keys = [f"{n}/{s}" for n, s in RULES]
    md = ["# Split rules on real noise: FER2013 split losses re-scored against FERPlus", "",
          "Saved per-sample losses of each run's splits, re-scored under every loss "
          "normalisation x GMM scope (`ferkeras.noise.selection.clean_probability`, p_clean 0.5). "
          "Same model per row, only the rule differs. Cells: ROC-AUC / precision of the "
          "flags / flagged share, on Training rows with a FERPlus majority "
          "(truth: FER2013 label == FERPlus majority).", "",
          "| run | split epoch | train acc. (given labels) | " + " | ".join(
              f"{k.split('/')[0]} norm, {k.split('/')[1]} GMM" for k in keys) + " |",
          "|---|---|---|" + "---|" * len(keys)]
    for name, splits in data["runs"].items():
        for e in splits:
            md.append(f"| {name} | {e['epoch']} | {e['train_acc_given']} | " + " | ".join(
                f"{e[k]['auc']:.3f} / {e[k]['precision']} / {e[k]['flagged']}" for k in keys)
                + " |")
    md += ["", "Mean at the last split:", "", "| rule | runs | ROC-AUC | precision | flagged |",
           "|---|---|---|---|---|"]
    for k, v in data["summary"].items():
        md.append(f"| {k} | {v['runs']} | {v['last_auc']} | {v['last_precision']} | "
                  f"{v['last_flagged']} |")
    return "\n".join(md) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(common.WORK / "noisy_grid"),
                   help="bench/noisy_grid.py's work folder")
    p.add_argument("--configs", default="cycle_ce", help="comma list of grid configs")
    p.add_argument("--name", default="split_rules_fer2013", help="results/<name>.{json,md}")
    args = p.parse_args(argv)
    work = pathlib.Path(args.work)
    if not work.is_dir():
        raise SystemExit(f"--work: {work} is not a folder (run bench/noisy_grid.py first)")
    configs = [c for c in args.configs.split(",") if c]
    runs = collect(work, configs)
    if not any(runs.values()):
        raise SystemExit(f"{work}: no finished run of {configs} with saved splits")
    data = {"runs": runs, "summary": summarise(runs),
            "settings": {"work": str(work), "configs": configs}}
    paths = common.write_results(args.name, data, markdown(data),
                                 code_files=[__file__, str(ROOT / "bench" / "quickstart_split.py")])
    print("\n".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
