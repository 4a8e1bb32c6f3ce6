"""Per-epoch validation, best/last checkpoints, history.csv and the NaN guard."""

from __future__ import annotations

import csv
import io
import math
import pathlib

import keras
import numpy as np

from ferkeras.io import atomic_save_weights, atomic_write_text
from ferkeras.training.evaluation import classification_metrics
from ferkeras.training.passes import predict_probs


class NaNLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class ValidationCheckpoint(keras.callbacks.Callback):
    """At each epoch end: validation metrics, `last` and `best` checkpoints, history.csv.

    `best` is chosen on `select_metric` of the validation split only. Checkpoints hold the
    eval network (EMA when enabled) and are written atomically.
    """

    def __init__(self, *, val_dataset, val_labels, class_names, run_dir, select_metric,
                 history=None, best=None, write=True):
        super().__init__()
        self.val_dataset = val_dataset
        self.val_labels = np.asarray(val_labels)
        self.class_names = tuple(class_names)
        self.run_dir = pathlib.Path(run_dir)
        self.select_metric = select_metric
        self.history = list(history or [])
        self.best = dict(best or {"epoch": -1, "value": -math.inf})
        self.write = write

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        probs, index = predict_probs(self.model.eval_network, self.val_dataset)
        m = classification_metrics(self.val_labels[index], probs, class_names=self.class_names)
        for key in ("accuracy", "balanced_accuracy", "macro_f1"):
            logs[f"val_{key}"] = m[key]
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in logs.items() if np.isscalar(v)})
        self.history.append(row)
        ckpt = self.run_dir / "checkpoints"
        improved = m[self.select_metric] > self.best["value"]
        if improved:
            self.best = {"epoch": epoch + 1, "value": float(m[self.select_metric])}
        if self.write:
            atomic_save_weights(self.model.eval_network, ckpt / "last.weights.h5")
            if improved:
                atomic_save_weights(self.model.eval_network, ckpt / "best.weights.h5")
            write_history(self.history, self.run_dir / "history.csv")
        logs["best_epoch"] = self.best["epoch"]


def write_history(rows, path) -> None:
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


class NaNGuard(keras.callbacks.Callback):
    """Stop with `NaNLossError` naming epoch and step as soon as the loss is not finite."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise NaNLossError(
                f"loss is {float(loss)} at epoch {self.epoch + 1}, step {batch + 1}; "
                "the last good checkpoint is kept. Lower train.learning_rate."
            )
