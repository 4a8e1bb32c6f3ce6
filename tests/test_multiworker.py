"""Multi-worker training: two worker processes on 127.0.0.1 against a one-worker run.

The reference is one worker with two replicas (MirroredStrategy over two logical CPUs, set
up by TINY_CPU_DEVICES=2 in its process): the same global batch 32 split into two
per-replica batches of 16, as the two workers split it. BatchNorm statistics are per
replica, so this is the run the two workers must reproduce; a one-replica run normalises
over all 32 images and differs (measured: epoch-1 training loss 1.673 vs 1.704).
Tolerance: 1e-6 relative on history.csv and metrics.json numbers (measured difference: 0;
the all-reduce of two float32 addends is exact in any order). All processes run
`tests/tiny_recipe.py` (strong views computed for every sample, see its docstring), so the
comparison is exact rather than statistical.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from tiny_recipe import (
    TINY_RECIPE,
    cli_env,
    free_port,
    read_history,
    read_metrics,
    report_mask,
    train_command,
    write_recipe,
)

TIMEOUT = 300
# No warm-up: one `fit` call (one trace of the distributed step), a split at epoch 1.
RECIPE = {**TINY_RECIPE, "cycle": {**TINY_RECIPE["cycle"], "warmup_epochs": 0, "cycles": 1}}


def _split_lines(output: str) -> list[str]:
    return [line.split(" (")[0] + " " + line.split("mask ")[1].split(")")[0]
            for line in output.splitlines() if line.startswith("split at epoch")]


@pytest.mark.slow
def test_two_workers_match_one_worker_with_two_replicas(tmp_path):
    from ferkeras.training.passes import mask_digest

    recipe = write_recipe(tmp_path / "tiny.yaml", RECIPE)
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    chief_dir = tmp_path / "chief_run"
    procs = []
    for index in range(2):
        tmp = tmp_path / f"tmp{index}"
        tmp.mkdir()
        env = cli_env(tmp_path, TMPDIR=str(tmp), TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        # On a second machine the path would be the same; here a distinct one shows that
        # worker 1 writes nothing there.
        run_dir = chief_dir if index == 0 else tmp_path / "worker1_run"
        procs.append(subprocess.Popen(train_command(recipe, "--run-dir", run_dir, "-q",
                                                    exact=True),
                                      env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    # The reference, while the workers run: one worker, two logical CPUs, MirroredStrategy.
    # In its own process: collective instance keys of a MirroredStrategy would clash with
    # those of later strategies in this one (TF: "Shape mismatch in the collective instance").
    ref_dir = tmp_path / "reference"
    procs.append(subprocess.Popen(
        train_command(recipe, "--run-dir", ref_dir, "-q", "--strategy", "mirrored", exact=True),
        env=cli_env(tmp_path, TINY_CPU_DEVICES="2"), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    ref_output = outputs[2]

    # The split: the same on both workers (they print the digest of the mask they train
    # with), equal to the chief's report, and to the one-worker run's.
    chief_splits, worker_splits = _split_lines(outputs[0]), _split_lines(outputs[1])
    assert chief_splits and chief_splits == worker_splits, outputs[0][-2000:]
    digest = chief_splits[0].rsplit(" ", 1)[1]
    assert digest == mask_digest(report_mask(chief_dir, 1))
    assert chief_splits == _split_lines(ref_output)

    # Chief-only output; the worker's temporary folder is gone.
    assert (chief_dir / "metrics.json").is_file() and (chief_dir / "reports").is_dir()
    assert not (tmp_path / "worker1_run").exists()
    assert not any((tmp_path / "tmp1").iterdir())
    info = json.loads((chief_dir / "run_info.json").read_text())["scaling"]
    assert info["strategy"] == "MultiWorkerMirroredStrategy"
    assert (info["workers"], info["replicas"], info["global_batch"],
            info["per_replica_batch"]) == (2, 2, 32, 16)
    assert info["learning_rate"] == RECIPE["train"]["learning_rate"]

    # Same training and same final metrics as one worker with two replicas.
    rows, ref_rows = read_history(chief_dir), read_history(ref_dir)
    assert len(rows) == len(ref_rows) == 2
    for row, ref_row in zip(rows, ref_rows, strict=True):
        assert row == pytest.approx(ref_row, rel=1e-6)
    metrics, ref_metrics = read_metrics(chief_dir), read_metrics(ref_dir)
    for split in ("val", "test"):
        for which in ("best", "last"):
            for key in ("accuracy", "balanced_accuracy", "macro_f1"):
                assert metrics[split][which][key] == pytest.approx(
                    ref_metrics[split][which][key], rel=1e-6), (split, which, key)
    assert metrics["replicas"] == 2


# ----------------------------------------------------------------------------- fast
def test_strategy_choice(monkeypatch, two_cpu_devices):
    import tensorflow as tf

    from ferkeras.training import strategy as S

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert not S._tf_config_cluster()
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}))
    assert not S._tf_config_cluster()  # one task is no cluster
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief"}}))
    assert S._tf_config_cluster()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        S.choose_strategy("auto")
    monkeypatch.delenv("TF_CONFIG")
    with pytest.raises(ValueError, match="Valid strategies"):
        S.choose_strategy("tpu")
    default = S.choose_strategy("auto")  # no GPUs here
    assert default.num_replicas_in_sync == 1 and S.is_chief(default)
    mirrored = S.choose_strategy("mirrored")  # the 2 logical CPUs of conftest
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == len(two_cpu_devices) == 2
    rule = S.scaling_rule(mirrored, global_batch=64, learning_rate=0.1)
    assert (rule["per_replica_batch"], rule["learning_rate"]) == (32, 0.1)
    with pytest.raises(ValueError, match="not divisible by the 2 replicas"):
        S.scaling_rule(mirrored, global_batch=33, learning_rate=0.1)


def test_broadcast_and_agreement_are_identity_on_one_worker():
    import numpy as np
    import tensorflow as tf

    from ferkeras.training import strategy as S

    arrays = [np.array([True, False]), np.arange(3, dtype=np.int32), np.ones((2, 2))]
    out = S.broadcast_from_chief(tf.distribute.get_strategy(), arrays)
    for a, b in zip(arrays, out, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert S.any_worker(tf.distribute.get_strategy(), True)
    assert not S.any_worker(tf.distribute.get_strategy(), False)
