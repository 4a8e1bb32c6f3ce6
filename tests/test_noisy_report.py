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
    assert got["recipe"] == "ce"          # CE's own 0.9 on the same signal beats elr's 0.62
    methods["elr"]["val_acc_fer2013"] = 0.95
    assert trust_free_choice(methods, {}, fer_train=np.zeros(3, int),
                             fer_val=np.zeros(3, int))["recipe"] == "elr"


def test_a_killed_and_resumed_run_is_left_out_of_the_wall_time(tmp_path):
    from noisy_fer2013 import timed_runs, was_resumed

    def run(name, pids):
        d = tmp_path / name / "tensorboard" / "train"
        d.mkdir(parents=True)
        for i, pid in enumerate(pids):
            (d / f"events.out.tfevents.17961{i}.vm.{pid}.{i}.v2").write_bytes(b"")
        return tmp_path / name

    assert not was_resumed(run("one", [30777, 30777]))
    assert was_resumed(run("two", [30777, 13115]))
    assert not was_resumed(tmp_path / "absent")
    by_seed = {0: {"done": {"seed": 0, "wall_s": 900.0}, "resumed": False},
               2: {"done": {"seed": 2, "wall_s": 440.0}, "resumed": True}}
    assert [r["done"]["seed"] for r in timed_runs(by_seed)] == [0]
    # every seed resumed: all of them (a lower bound) rather than nothing
    assert len(timed_runs({2: by_seed[2]})) == 1


def test_gap_recovered_is_the_share_of_the_oracle_gap_with_a_paired_ci():
    from noisy_fer2013 import gap_recovered_bootstrap

    y = np.arange(1000) % 7
    wrong = (y + 1) % 7
    # CE right on rows 0-599, oracle on 0-899, winner on 0-749: gap 300 rows, 150 recovered
    ce, oracle, winner = (np.where(np.arange(1000) < k, y, wrong) for k in (600, 900, 750))
    got = gap_recovered_bootstrap(y, [winner], [ce], [oracle])
    assert got["ratio"] == 0.5 and got["seeds"] == [1, 1, 1]
    assert got["ci"][0] < 0.5 < got["ci"][1] and got["ci"][1] - got["ci"][0] < 0.15
    # two seeds per arm average before the ratio: (0.7 - 0.6) / (0.9 - 0.6)
    winner2 = np.where(np.arange(1000) < 650, y, wrong)
    assert abs(gap_recovered_bootstrap(y, [winner2, winner2], [ce, ce], [oracle, oracle])
               ["ratio"] - 1 / 6) < 1e-12


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


def _split_folder(root, epoch, given, true, labelled, scores):
    folder = root / "reports" / f"split-e{epoch:03d}"
    folder.mkdir(parents=True)
    (folder / "detection.json").write_text(json.dumps(scores))
    rows = ["index,given_label,predicted_label,clean_prob,loss,labelled,true_label"]
    rows += [f"{i},{g},{g},0.5,0.1,{int(m)},{t}"
             for i, (g, t, m) in enumerate(zip(given, true, labelled, strict=True))]
    (folder / "samples.csv").write_text("\n".join(rows) + "\n")


def test_quickstart_split_reads_flagged_share_against_true_noise_per_class(tmp_path):
    from quickstart_split import read_splits

    given = ["a"] * 4 + ["b"] * 2
    true = ["a", "a", "b", "b", "b", "b"]          # class a: half noisy; b: clean
    labelled = [1, 1, 0, 1, 1, 1]                   # one a row flagged
    _split_folder(tmp_path, 4, given, true, labelled, {"auc": 0.8, "precision": 1.0,
                                                       "recall": 0.5})
    _split_folder(tmp_path, 7, given, true, [1, 1, 0, 0, 1, 0], {"auc": 0.9, "precision": 0.67,
                                                                  "recall": 1.0})
    got = read_splits(tmp_path, ["a", "b", "c"])
    assert [s["epoch"] for s in got] == [4, 7]
    assert got[0]["per_class"] == {"a": {"n": 4, "true_noise": 0.5, "flagged": 0.25},
                                   "b": {"n": 2, "true_noise": 0.0, "flagged": 0.0}}
    assert got[1]["per_class"]["b"]["flagged"] == 0.5 and got[1]["auc"] == 0.9


def test_posthoc_rules_score_only_rows_whose_truth_is_known(tmp_path):
    from quickstart_split import RULES, posthoc_rules

    rng = np.random.default_rng(0)
    rows = ["index,given_label,predicted_label,clean_prob,loss,labelled,true_label"]
    for i in range(160):
        given = "ab"[i % 2]
        noisy, unknown = i % 4 in (0, 1) and i < 48, i >= 140   # 24 noisy, 20 without truth
        true = "" if unknown else ("ba"[i % 2] if noisy else given)
        high = noisy or (unknown and i % 4 < 2)    # half the rows without truth look noisy
        loss = (3.0 if high else 0.1) + rng.uniform(0, 0.05)
        rows.append(f"{i},{given},{given},0.5,{loss:.4f},1,{true}")
    folder = tmp_path / "reports" / "split-e005"
    folder.mkdir(parents=True)
    (folder / "samples.csv").write_text("\n".join(rows) + "\n")
    (got,) = posthoc_rules(tmp_path)
    assert got["epoch"] == 5
    for norm, scope in RULES:
        r = got[f"{norm}/{scope}"]
        # the rows without truth are ranked and flagged too, but neither scored nor counted
        assert r["auc"] == 1.0 and r["precision"] == 1.0, (norm, scope, r)
        assert r["flagged"] == round(24 / 140, 4)


def test_quickstart_protocol_needs_both_auc_and_precision_on_the_selection_seeds():
    from quickstart_split import choose, summarize

    def run(variant, seed, auc, precision):
        return {"variant": variant, "seed": seed, "test_accuracy": 0.5,
                "test_balanced_accuracy": 0.5, "wall_s": 1.0,
                "splits": [{"epoch": 4, "auc": auc, "precision": precision, "recall": 0.5,
                            "per_class": {}}]}

    runs = [run("recipe", s, 0.6, 0.4) for s in (0, 1, 2)]
    runs += [run("warm6_window3", s, 0.7, 0.35) for s in (0, 1, 2)]   # AUC up, precision down
    runs += [run("global_norm", s, 0.65, 0.5) for s in (0, 1)]         # only two seeds
    runs += [run("global_norm", 3, 0.99, 0.99)]                        # confirmation seed
    summary = summarize(runs)
    assert summary["global_norm"]["selection"]["seeds"] == [0, 1]
    assert summary["global_norm"]["confirmation"]["last_auc"] == 0.99
    assert choose(summary)["chosen"] == "recipe"
    runs += [run("global_norm", 2, 0.65, 0.5)]
    assert choose(summarize(runs))["chosen"] == "global_norm"
