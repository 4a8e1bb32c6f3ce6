"""CReSTTrainer: the cycle's trainer with CReST's pseudo-labelled rows in the labelled set.

Wei et al., "CReST: A Class-Rebalancing Self-Training Framework for Imbalanced
Semi-Supervised Learning", CVPR 2021 (`cycle.method: crest`). The split (`NoiseSplit`, with
`ferkeras.methods.crest.core`) picks pseudo-labelled rows at class-rebalancing rates and installs
them
here before each generation's `set_split`:

- `crest_labels`, a per-sample `tf.Variable` table (-1 = none): a picked row is in
  `labelled_mask` and its supervised loss uses this label instead of the given one;
- the generation's alignment temperature t (CReST+): the distribution-alignment target
  becomes clean_prior^t / sum(clean_prior^t) (`ferkeras.methods.crest.core.temper_prior`), written
  into
  the `target_prior` table the step already reads.

The step is `CycleTrainer`'s, on the substituted labels.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ferkeras.methods.crest.core import temper_prior
from ferkeras.trainers.cycle import CycleTrainer


@keras.saving.register_keras_serializable(package="ferkeras")
class CReSTTrainer(CycleTrainer):
    """`CycleTrainer` plus the CReST label table and the CReST+ alignment temperature."""

    def __init__(self, network, **kwargs):
        super().__init__(network, **kwargs)
        self.alignment_temperature = 1.0  # host side: set_crest -> set_split

    def _create_tables(self, n, true_labels=None):
        super()._create_tables(n, true_labels)
        # float32 like selected_labels; values -1..K-1, written from the host only.
        self.crest_labels = self.add_weight(
            shape=(n,), initializer=keras.initializers.Constant(-1.0), name="crest_labels",
            trainable=False, aggregation="only_first_replica")

    def set_crest(self, labels, *, temperature: float = 1.0) -> None:
        """Install a generation's picked rows (host side, before `set_split`).

        labels: (N,) the pseudo-label of each picked row, -1 elsewhere.
        temperature: CReST+'s alignment temperature t in [0, 1] for this generation.
        """
        labels = np.asarray(labels, np.float64)
        if labels.shape != (self.num_samples,) or labels.max(initial=-1) >= self.num_classes:
            raise ValueError(f"crest labels must be ({self.num_samples},) values in "
                             f"[-1, {self.num_classes}). Received: shape={labels.shape}")
        if not 0.0 <= temperature <= 1.0:
            raise ValueError(f"temperature must be in [0, 1]. Received: "
                             f"temperature={temperature!r}")
        self.crest_labels.assign(labels.astype(np.float32))
        self.alignment_temperature = float(temperature)

    def set_split(self, labelled_mask, clean_prob, clean_prior, **kwargs):
        """`CycleTrainer.set_split` with the target prior tempered (CReST+)."""
        prior = temper_prior(np.maximum(np.asarray(clean_prior, np.float64), 0.0),
                             temperature=self.alignment_temperature)
        super().set_split(labelled_mask, clean_prob, prior.astype(np.float32), **kwargs)

    def train_step(self, data):
        views, labels, index = data
        new = tf.gather(self.crest_labels, index)
        labels = tf.where(new >= 0.0, tf.cast(tf.round(new), labels.dtype), labels)
        return super().train_step((views, labels, index))
