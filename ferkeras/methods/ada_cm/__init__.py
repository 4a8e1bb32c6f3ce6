"""Ada-CM (Li et al., "Towards Semi-Supervised Deep Facial Expression Recognition with An
Adaptive Confidence Margin", CVPR 2022): per-class margins = 0.97 / (1 + e^-epoch) x the mean
confidence of correctly predicted labelled samples, floored at cycle.min_threshold (paper
code: 0.8); the low-confidence unlabelled samples train through a contrastive term.

    core.py     margins and the NT-Xent term (`keras.ops`)
    trainer.py  `AdaCMTrainer`, its Keras step
    (here)      `AdaCMConfig`, the recipe section `cycle.ada_cm`
"""

from __future__ import annotations

import dataclasses

from ferkeras.config import field


@dataclasses.dataclass
class AdaCMConfig:
    """cycle.method ada_cm (Li et al., CVPR 2022)."""

    contrastive_weight: float = field(
        0.1, "Weight of the NT-Xent term between two weak views' features of the unlabelled "
        "samples below their class margin (paper code: 0.1).", min=0.0, max=10.0)
    temperature: float = field(
        0.07, "Temperature of the contrastive term (paper code: 0.07).", min=0.01, max=10.0)
