"""Write the methods table of docs/methods.md from `bench/results/noisy_fer2013.json`.

The rows between `<!-- methods table: start -->` and `<!-- methods table: end -->` are
replaced; nothing else in the file changes. Figures are read, never typed:

    .venv/bin/python bench/tools/methods_table.py            # rewrite docs/methods.md's table
    .venv/bin/python bench/tools/methods_table.py --print    # show it only
"""

from __future__ import annotations

import argparse
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
START, END = "<!-- methods table: start -->", "<!-- methods table: end -->"

# name in methods.<name> -> (what it is, paper, recipe key)
ROWS = {
    "cycle_ce": ("Cycle: class-aware GMM split + FixMatch/FlexMatch on the flagged rows",
                 "DivideMix split (Li et al. 2020) + FixMatch (Sohn et al. 2020)",
                 "`cycle.enabled: true`"),
    "elr": ("Early-learning regularisation", "Liu et al., NeurIPS 2020",
            "`train.elr_lambda`, `train.elr_beta`"),
    "self_distill": ("Self-distillation from the EMA teacher",
                     "mean teacher (Tarvainen & Valpola 2017) as soft targets",
                     "`train.distill_alpha`, `train.distill_temperature`"),
    "ema": ("EMA weights only (control for self-distillation)", "", "`train.ema_decay`"),
    "forward": ("Forward loss correction, anchor-point T (trust-free)",
                "Patrini et al., CVPR 2017", "`train.forward_correction: anchors`"),
    "relabel": ("Relabel confident flagged rows instead of FixMatch",
                "SELFIE (Song et al., ICML 2019)", "`cycle.method: relabel`"),
    "co_divide": ("Co-divide: two networks, each split by the other",
                  "DivideMix (Li et al., ICLR 2020)", "`cycle.method: co_divide`"),
    "pnp": ("Noise-type head: clean / in-distribution / out-of-distribution",
            "PNP (Sun et al., CVPR 2022)", "`cycle.method: pnp`"),
    "h2e": ("Hard-but-clean vs noisy, class-invariant identifier",
            "H2E (Yi et al., ECCV 2022)", "`cycle.selector: h2e`"),
    "ada_cm": ("Adaptive confidence margins + contrastive low-confidence term",
               "Ada-CM (Li et al., CVPR 2022)", "`cycle.method: ada_cm`"),
    "crest": ("Class-rebalanced pseudo-label sampling across generations",
              "CReST+ (Wei et al., CVPR 2021)", "`cycle.method: crest`"),
    "mpl": ("Teacher updated from the student's labelled loss (first-order)",
            "Meta Pseudo Labels (Pham et al., CVPR 2021)", "`cycle.method: mpl`"),
}


def _pct(x, sign=False):
    return "" if x is None else (f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}")


def _ci(m, key, low, high):
    if m.get(key) is None:
        return ""
    return f"{_pct(m[key], True)} [{_pct(m[low], True)}, {_pct(m[high], True)}]"


def table(methods: dict) -> list[str]:
    lines = ["| method | paper | recipe key | seeds | accuracy | Δacc vs CE [95% CI] | "
             "Δbal. acc vs CE | Δacc vs cycle [95% CI] | detection AUC |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, (what, paper, key) in ROWS.items():
        m = methods.get(name) or {}
        n = m.get("n_seeds") or 0
        if m.get("status") != "ok" or not n:
            lines.append(f"| {what} | {paper} | {key} | 0 | not run on real noise yet "
                         "| | | | |")
            continue
        seeds = f"{n} (not a result)" if m.get("not_a_result") else str(n)
        vs_cycle = ("" if name == "cycle_ce" else
                    _ci(m, "acc_gain_vs_cycle", "acc_gain_vs_cycle_ci_low",
                        "acc_gain_vs_cycle_ci_high"))
        auc = "" if m.get("detection_auc") is None else f"{m['detection_auc']:.3f}"
        lines.append(f"| {what} | {paper} | {key} | {seeds} | {_pct(m.get('accuracy'))} | "
                     f"{_ci(m, 'acc_gain_vs_ce', 'acc_gain_ci_low', 'acc_gain_ci_high')} | "
                     f"{_pct(m.get('bal_gain_vs_ce'), True)} | {vs_cycle} | {auc} |")
    return lines


def rewrite(readme: str, rows: list[str]) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"markers {START} / {END} not found")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + START + "\n" + "\n".join(rows) + "\n" + END + tail


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(ROOT / "bench" / "results" / "noisy_fer2013.json"))
    p.add_argument("--readme", default=str(ROOT / "docs" / "methods.md"),
                   help="the file holding the table (docs/methods.md)")
    p.add_argument("--print", dest="only_print", action="store_true")
    args = p.parse_args(argv)
    path = pathlib.Path(args.results)
    if not path.is_file():
        raise SystemExit(f"{path}: not found (run bench/noisy_fer2013.py first)")
    rows = table(json.loads(path.read_text()).get("methods") or {})
    if args.only_print:
        print("\n".join(rows))
        return
    readme = pathlib.Path(args.readme)
    new = rewrite(readme.read_text(), rows)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(readme)
    print(f"{readme}: methods table rewritten ({len(rows) - 2} rows)")


if __name__ == "__main__":
    main()
