"""Rewrite old ferkeras module paths (before the folders by concern) in the files given.

    python tools/migrate_paths.py FILE...      # rewrites in place, prints what it changed

For work started on the flat layout: `from ferkeras.selection import x` becomes
`from ferkeras.noise.selection import x`, `from ferkeras import pnp` becomes
`from ferkeras.methods.pnp import core as pnp`, dotted names in strings and docs likewise.
`ferkeras.training` and `ferkeras.models` keep their spelling (both are packages now that
export the same names). Recipe keys are not touched: old ones still load
(ferkeras/training/old_keys.py). Read the diff after it runs.
"""

from __future__ import annotations

import pathlib
import re
import sys

MOVES = {
    "training": "training",  # kept: the package exports train, train_recipe, ... (loop.py)
    "recipe": "training.recipe", "schedule": "training.schedule", "strategy": "training.strategy",
    "runs": "training.runs", "evaluation": "training.evaluation",
    "evaluate_run": "training.evaluate_run", "reports": "training.reports",
    "audit": "training.audit", "passes": "training.passes",
    "selection": "noise.selection", "transition": "noise.transition",
    "label_issues": "noise.label_issues", "h2e": "noise.h2e", "trusted": "noise.trusted",
    "correction": "noise.correction", "soft_targets": "noise.soft_targets",
    "trusted_split": "noise.trusted_split",
    "pseudo_labels": "trainers.pseudo_labels",
    "export": "deploy.export", "quantize": "deploy.quantize", "inference": "deploy.inference",
    "detection": "deploy.detection", "faces": "deploy.faces",
    "alignment": "data.alignment", "flip_average": "deploy.flip_average",
    "augment": "data.augment", "preprocess": "data.preprocess",
    "models": "models",
    "codivide": "methods.co_divide.core", "trainers.codivide": "methods.co_divide.trainer",
    "callbacks.co_divide_split": "methods.co_divide.split",
    "pnp": "methods.pnp.core", "trainers.pnp": "methods.pnp.trainer",
    "crest": "methods.crest.core", "trainers.crest": "methods.crest.trainer",
    "mpl": "methods.mpl.core", "trainers.mpl": "methods.mpl.trainer",
    "adacm": "methods.ada_cm.core", "trainers.adacm": "methods.ada_cm.trainer",
}



def sub_dotted(text):
    keys = sorted(MOVES, key=len, reverse=True)
    pat = re.compile(r"ferkeras\.(" + "|".join(re.escape(k) for k in keys) + r")(?![\w])")
    def rep(m):
        old = m.group(1)
        if old == "training" or old == "models":
            return m.group(0)
        return "ferkeras." + MOVES[old]
    return pat.sub(rep, text)



def sub_from_import(text):
    # from ferkeras import a, b as c, d  -> split moved ones out
    pat = re.compile(r"^(\s*)from ferkeras import ([^\n(]+)$", re.M)
    def rep(m):
        indent, names = m.group(1), m.group(2)
        comment = ""
        if "#" in names:
            names, comment = names.split("#", 1)
            comment = "  #" + comment
        keep, lines = [], []
        for part in [p.strip() for p in names.split(",") if p.strip()]:
            name, _, alias = part.partition(" as ")
            name, alias = name.strip(), alias.strip()
            if name in MOVES and name not in ("training", "models"):
                parent, _, leaf = MOVES[name].rpartition(".")
                asname = alias or name
                tail = f" as {asname}" if asname != leaf else ""
                lines.append(f"{indent}from ferkeras.{parent} import {leaf}{tail}")
            else:
                keep.append(part)
        if keep:
            lines.insert(0, f"{indent}from ferkeras import {', '.join(keep)}")
        if comment and lines:
            lines[0] += comment
        return "\n".join(lines)
    return pat.sub(rep, text)

def main(paths) -> None:
    for path in paths:
        p = pathlib.Path(path)
        old = p.read_text()
        new = sub_dotted(sub_from_import(old)) if p.suffix == ".py" else sub_dotted(old)
        if new != old:
            p.write_text(new)
            print("rewrote", p)


if __name__ == "__main__":
    main(sys.argv[1:])
