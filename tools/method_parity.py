"""Behaviour check for refactors: train one tiny recipe per method and compare the metrics.

    python tools/method_parity.py record OUT.json      # on the reference tree
    python tools/method_parity.py check REF.json       # on the changed tree: exit 1 on a diff
    python tools/method_parity.py check REF.json fixmatch pnp   # some runs only

Each method's run is its own process (the same seeds, no state carried between runs), on
the synthetic source: 128 training faces of 16 px, a width-8 CNN, 1 warm-up epoch and
2 cycles of 2 epochs; about 15-40 s a method on a 2-core CPU. The recipes are written in
the original (flat) key spelling on purpose: the check then also proves that old recipes
load into the same runs. Timings and the recipe hash are left out of the comparison;
everything else in metrics.json must be bit-identical.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import subprocess
import sys
import tempfile

TINY = {
    "name": "parity", "seed": 3,
    "data": {"source": "synthetic", "image_size": 16,
             "synthetic": {"n_train": 128, "n_val": 32, "n_test": 32, "noise": 0.25,
                           "profile": "uniform"}},
    "model": {"backbone": "small_cnn", "width": 8, "dropout": 0.2},
    "train": {"batch_size": 32, "learning_rate": 0.005, "ema_decay": 0.9, "loss": "ce",
              "epochs": 4},
    "cycle": {"enabled": True, "warmup_epochs": 1, "cycles": 2, "epochs_per_cycle": 2,
              "min_class_samples": 8},
}

# method -> changes to TINY, in the original spelling (section -> {key: value}).
RUNS = {
    "fixmatch": {},
    "relabel": {"cycle": {"noisy_mode": "relabel", "relabel_threshold": 0.5}},
    "co_divide": {"cycle": {"co_divide": True}, "train": {"ema_decay": 0.0}},
    "pnp": {"cycle": {"selector": "pnp"}},
    "crest": {"cycle": {"crest": True}},
    "ada_cm": {"cycle": {"threshold_mode": "ada_cm"}},
    "mpl": {"cycle": {"mpl": True}},
    "h2e_selector": {"cycle": {"selector": "h2e"}},
    "small_loss_selector": {"cycle": {"selector": "small_loss", "threshold_mode": "fixed"}},
    "supervised": {"cycle": {"enabled": False}},
    "supervised_la_elr": {"cycle": {"enabled": False},
                          "train": {"loss": "logit_adjusted", "elr_lambda": 1.0}},
    "supervised_distill": {"cycle": {"enabled": False}, "train": {"distill_alpha": 0.5}},
    "forward_correction": {"cycle": {"enabled": False},
                           "train": {"forward_correction": "anchors", "ema_decay": 0.0,
                                     "forward_warmup_epochs": 2}},
    # added after a0dbcba (the trusted cycle): checked against references recorded since
    "trusted_soft": {"cycle": {"selector": "trusted", "noisy_mode": "soft"},
                     "trusted": {"source": "val_labels"}},
}
DROP = ("seconds", "recipe_hash", "recipe")


def recipe_for(name: str) -> dict:
    values = copy.deepcopy(TINY)
    for section, changes in RUNS[name].items():
        values.setdefault(section, {}).update(changes)
    return values


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not any(d in k for d in DROP)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def run_one(name: str) -> dict:
    """Train RUNS[name] in a fresh process; its metrics.json, without timings."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "r.yaml").write_text(yaml.safe_dump(recipe_for(name)))
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
               "CUDA_VISIBLE_DEVICES": "", "KERAS_HOME": str(tmp / "kh")}
        proc = subprocess.run(
            [sys.executable, "-m", "ferkeras.cli", "train", str(tmp / "r.yaml"),
             "--run-dir", str(tmp / "run"), "-q"],
            env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{name}: training failed:\n"
                             f"{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
        return _strip(json.loads((tmp / "run" / "metrics.json").read_text()))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in ("record", "check"):
        raise SystemExit(__doc__)
    mode, path, names = argv[0], pathlib.Path(argv[1]), argv[2:]
    if mode == "record":
        names = names or list(RUNS)
        out = {}
        for name in names:
            out[name] = run_one(name)
            print(f"{name}: recorded", flush=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=pathlib.Path(__file__).parent).stdout.strip()
        record = {"commit": {"sha": commit}, "command": " ".join(["python", *sys.argv]),
                  "settings": {"tiny": TINY, "runs": RUNS, "dropped": list(DROP)}, "runs": out}
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        return
    ref, bad = json.loads(path.read_text())["runs"], []
    names = names or list(ref)  # the runs the reference holds
    for name in names:
        got = run_one(name)
        same = got == ref[name]
        print(f"{name}: {'identical' if same else 'DIFFERENT'}", flush=True)
        if not same:
            bad.append(name)
    if bad:
        raise SystemExit(f"metrics differ for: {', '.join(bad)}")
    print(f"all {len(names)} runs bit-identical to {path}")


if __name__ == "__main__":
    main()
