"""Helpers for the subprocess tests (resume, multi-worker, bad input): a tiny recipe, the
environment and command line for `ferkeras train`, and readers for what a run folder holds.

Run as a script (`python tests/tiny_recipe.py train ...`) this is the `ferkeras` CLI, the real
code path. With TINY_CPU_DEVICES=N in the environment the process also gets N logical CPUs,
so `--strategy mirrored` has N replicas without a GPU. (It used to swap in strong views for
every sample, because the pipeline's strong-view mask could be read by batches prefetched
before a split; training now splits before building each cycle's stream, so runs are
reproducible through the plain CLI.)
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import socket
import sys

import yaml

TINY_RECIPE = {
    "name": "tiny",
    "seed": 3,
    "data": {"source": "synthetic", "image_size": 16,
             "synthetic": {"n_train": 128, "n_val": 32, "n_test": 32, "noise": 0.25,
                           "profile": "uniform"}},
    "model": {"backbone": "small_cnn", "width": 8, "dropout": 0.2},
    "train": {"batch_size": 32, "learning_rate": 0.005, "ema_decay": 0.9, "loss": "ce"},
    "cycle": {"enabled": True, "warmup_epochs": 1, "cycles": 2, "epochs_per_cycle": 2,
              "min_class_samples": 8},
}


def write_recipe(path, recipe=None) -> pathlib.Path:
    """Write `recipe` (default TINY_RECIPE) as YAML to `path`; returns the path."""
    path = pathlib.Path(path)
    path.write_text("# ferkeras train THIS.yaml -q  (test recipe: seconds)\n" +
                    yaml.safe_dump(recipe or TINY_RECIPE, sort_keys=False))
    return path


def cli_env(tmp_path, **extra) -> dict:
    """Environment for a `ferkeras` subprocess: CPU only, quiet TF, private KERAS_HOME."""
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               KERAS_HOME=str(pathlib.Path(tmp_path) / "keras_home"),
               PYTHONUNBUFFERED="1", **extra)
    return env


def check_in_replica_process(tmp_path, module: str, body: str, *, timeout: int = 300) -> None:
    """Run `body` in a fresh Python process with 2 logical CPU devices and assert it finished.

    `body` is Python run after `import <module> as t` (a test module in this folder), with
    `devices` bound to the 2 logical CPU device names. Replica tests of trainers with extra
    all-reduces (PNP, MPL, co-divide) run this way: MirroredStrategy objects built in one
    process number their collective ops alike, and TF then mixes up a trainer's all-reduces
    with an earlier test's ("Shape mismatch in the collective instance").
    """
    import subprocess

    code = (f"import sys; sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r}); "
            "import tensorflow as tf; cpu = tf.config.list_physical_devices('CPU')[0]; "
            "tf.config.set_logical_device_configuration("
            "cpu, [tf.config.LogicalDeviceConfiguration()] * 2); "
            "devices = [d.name for d in tf.config.list_logical_devices('CPU')][:2]; "
            f"import {module} as t; {body}; print('REPLICAS OK')")
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)
    assert "REPLICAS OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def train_command(*args, exact: bool = False) -> list[str]:
    """`ferkeras train ARGS`; with `exact`, through this file (logical CPU devices)."""
    entry = [__file__] if exact else ["-m", "ferkeras.cli"]
    return [sys.executable, *entry, "train", *map(str, args)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_history(run_dir) -> list[dict]:
    """history.csv rows as dicts of floats."""
    with open(pathlib.Path(run_dir) / "history.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def read_metrics(run_dir) -> dict:
    return json.loads((pathlib.Path(run_dir) / "metrics.json").read_text())


def report_mask(run_dir, epoch: int):
    """The `labelled` column of reports/split-eNNN/samples.csv as a bool array."""
    import numpy as np

    path = pathlib.Path(run_dir) / "reports" / f"split-e{epoch:03d}" / "samples.csv"
    with open(path, newline="") as fh:
        return np.array([row["labelled"] == "1" for row in csv.DictReader(fh)])


def main():
    devices = int(os.environ.get("TINY_CPU_DEVICES", "0") or 0)
    if devices > 1:  # several logical CPUs, so `--strategy mirrored` gets several replicas
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    from ferkeras.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
