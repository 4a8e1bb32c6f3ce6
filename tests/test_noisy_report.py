"""The real-noise report's generic parts on hand-made inputs with known answers: FERPlus's
not-a-face truth, the trust-free winner's protocol, detection from a split's samples.csv."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_ood_truth_counts_unknown_and_nf_after_dropping_single_votes():
    from noisy_data import ood_truth

    votes = np.array([
        [0, 0, 0, 0, 0, 0, 0, 0, 3, 3],   # unknown + NF majority: strict
        [4, 0, 0, 3, 0, 0, 0, 0, 0, 3],   # no majority, neutral has 4/7 without NF: blocked
        [3, 3, 0, 0, 0, 0, 0, 0, 0, 4],   # no majority, a neutral/happy tie: neither
        [6, 0, 0, 0, 0, 0, 0, 0, 2, 2],   # neutral majority: neither
        [4, 0, 0, 0, 0, 0, 0, 0, 1, 1],   # single votes dropped: neutral only: neither
    ])
    got = ood_truth(votes)
    assert got["strict"].tolist() == [True, False, False, False, False]
    assert got["blocked"].tolist() == [False, True, False, False, False]
    assert got["broad"].tolist() == [True, True, False, False, False]


def _methods(**val_acc):
    from noisy_fer2013 import METHOD_KEYS

    out = {}
    for name, (acc, seeds, trusted) in val_acc.items():
        m = {k: None for k in METHOD_KEYS}
        m.update(status="ok", val_acc_fer2013=acc, n_seeds=seeds, trusted=trusted)
        out[name] = m
    return out


def test_trust_free_winner_is_the_best_noisy_validation_accuracy_with_three_seeds():
    from noisy_fer2013 import trust_free_choice

    methods = _methods(ce=(0.9, 3, False), oracle=(0.95, 1, True), ce_trusted=(0.8, 3, True),
                       elr=(0.62, 3, False), pnp=(0.7, 2, False), cycle_ce=(0.6, 3, False))
    got = trust_free_choice(methods, {}, fer_train=np.zeros(3, int), fer_val=np.zeros(3, int))
    # ce is the baseline, oracle/ce_trusted read trusted rows, pnp has 2 seeds
    assert got["winner"] == "elr"
    assert set(got["candidates"]) == {"elr", "pnp", "cycle_ce"}
    assert not got["candidates"]["pnp"]["eligible"]


def test_method_detection_reads_clean_prob_and_p_ood_from_the_split_csv(tmp_path):
    from noisy_fer2013 import method_detection

    rng = np.random.default_rng(0)
    n = 200
    fer = rng.integers(0, 7, n)
    plus = np.where(rng.random(n) < 0.3, (fer + 1) % 7, fer)
    plus[:10] = -1
    ood = {"strict": np.arange(n) % 10 == 0}
    ood["broad"] = ood["strict"] | (np.arange(n) % 10 == 1)
    clean_prob = (fer == plus) * 0.8 + rng.random(n) * 0.1        # separates perfectly
    p_ood = ood["strict"] * 0.9 + rng.random(n) * 0.05           # finds the strict rows
    run_dir = tmp_path / "pnp-s0" / "reports" / "split-e005"
    run_dir.mkdir(parents=True)
    lines = ["index,given_label,predicted_label,clean_prob,loss,labelled,p_ood"]
    lines += [f"{i},a,a,{clean_prob[i]:.5f},0.1,1,{p_ood[i]:.5f}" for i in range(n)]
    (run_dir / "samples.csv").write_text("\n".join(lines) + "\n")
    done = {"run": "pnp-s0", "last_split_csv": str(run_dir / "samples.csv")}
    probs = {"train": np.full((n, 7), 1 / 7)}  # uninformative: the csv must be used
    got = method_detection({0: {"done": done, "probs": probs}}, tmp_path, fer_train=fer,
                           plus_train=plus, ood=ood)
    assert got["detection_auc"] == 1.0 and "clean_prob" in got["detection_source"]
    assert got["ood_auc"] == 1.0 and 0.5 < got["ood_auc_broad"] < 1.0
    json.dumps(got)  # JSON-ready
