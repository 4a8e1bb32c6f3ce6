"""CReST (Wei et al., "CReST: A Class-Rebalancing Self-Training Framework for Imbalanced
Semi-Supervised Learning", CVPR 2021): each cycle is a generation; at its split the unlabelled
rows predicted as class l join the labelled set with that pseudo-label at rate
mu_l = (N_{K+1-l} / N_1)^alpha (classes ranked by labelled count, so minority classes more
often), and CReST+'s progressive alignment temperature goes from 1 (first cycle) to t_min
(last cycle).

    core.py     sampling rates, the pick, the alignment temperature (NumPy)
    trainer.py  `CReSTTrainer`, FixMatch with the added pseudo-labelled rows
    (here)      `CReSTConfig`, the recipe section `cycle.crest`
"""

from __future__ import annotations

import dataclasses

from ferkeras.config import field


@dataclasses.dataclass
class CReSTConfig:
    """cycle.method crest (Wei et al., CVPR 2021)."""

    alpha: float = field(
        1.0 / 3.0, "Exponent alpha of the sampling rates (paper: 1/3 or 1/2; 0 = every class "
        "at rate 1).", min=0.0, max=1.0)
    t_min: float = field(
        0.5, "CReST+: the distribution-alignment temperature reached at the last generation, "
        "t = (1 - g/G) + (g/G) t_min (paper: 0.5); the aligned target is prior^t / "
        "sum(prior^t). Used with cycle.distribution_alignment.", min=0.0, max=1.0)
