"""Relabel the rows judged noisy instead of FixMatch (SELFIE, Song et al., "SELFIE:
Refurbishing Unclean Samples for Robust Deep Learning", ICML 2019, with the split model's
confidence in place of SELFIE's prediction-history entropy): at each split, a noisy row whose
predicted class has probability >= cycle.relabel.threshold under the split model (the EMA
teacher when train.ema_decay > 0) takes that class as its label and stays in the supervised
loss; the other noisy rows leave the loss; no FixMatch term.

The trainer is `CycleTrainer` with `noisy_mode='relabel'` (`ferkeras.trainers.cycle`); the
relabelling core is `ferkeras.noise.correction`.
"""

from __future__ import annotations

import dataclasses

from ferkeras.config import field


@dataclasses.dataclass
class RelabelConfig:
    """cycle.method relabel (SELFIE, Song et al. 2019)."""

    threshold: float = field(
        0.9, "The confidence a noisy row's predicted class needs for the row to be "
        "relabelled.", min=0.01, max=1.0)
