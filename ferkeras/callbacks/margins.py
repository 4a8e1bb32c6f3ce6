"""Record every training row's given-label margin at each epoch end (training dynamics for
the area under the margin, `ferkeras.noise.label_issues.area_under_margin`).

The margins go to an `.npz` (`epochs` (E,), `margin` (N, E) float32) rewritten atomically at
each epoch (`ferkeras.io.append_epoch_npz`), so a resumed run keeps the epochs it already
recorded (a later epoch replaces its column)."""

from __future__ import annotations

import pathlib

import keras
import numpy as np

from ferkeras import io
from ferkeras.noise.label_issues import given_label_margins
from ferkeras.training.passes import per_sample_losses


class MarginRecorder(keras.callbacks.Callback):
    """dataset: the training rows, un-augmented, each once (`make_dataset(split, data_cfg)`);
    labels: (N,) their given labels; path: the `.npz` to keep. Uses the trainer's evaluation
    network (the EMA network when there is one), as the split pass does."""

    def __init__(self, dataset, labels, path):
        super().__init__()
        self.dataset, self.labels, self.path = dataset, np.asarray(labels), pathlib.Path(path)

    def load(self) -> dict:
        """{"epochs": (E,), "margin": (N, E)} recorded so far (E = 0 before the first)."""
        if not self.path.is_file():
            return {"epochs": np.zeros(0, np.int64),
                    "margin": np.zeros((len(self.labels), 0), np.float32)}
        with np.load(self.path) as z:
            got = {k: z[k] for k in z.files}
        if got["margin"].shape[0] != len(self.labels):
            raise ValueError(f"{self.path}: margins of {got['margin'].shape[0]} rows, the "
                             f"training set has {len(self.labels)}; use a new run folder.")
        return got

    def on_epoch_end(self, epoch, logs=None):
        net = getattr(self.model, "eval_network", self.model)
        _, probs = per_sample_losses(net, self.dataset, self.labels)
        io.append_epoch_npz(self.path, epoch + 1, axis=1,
                            margin=given_label_margins(self.labels, probs).astype(np.float32))
