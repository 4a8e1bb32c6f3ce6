"""PNP (Sun et al., "PNP: Robust Learning From Noisy Labels by Probabilistic Noise
Prediction", CVPR 2022): a noise-type head predicts p(clean), p(ID noise), p(OOD noise) per row;
clean rows train on the label, ID rows on the model's sharpened prediction, OOD rows on a flat
target. The split comes from the head (selector `pnp`); samples.csv gets p_ood.

    core.py     the array functions (targets, pseudo-targets, the split from noise types)
    trainer.py  `PNPTrainer`, its Keras step
    (here)      `PNPConfig`, the recipe section `cycle.pnp`
"""

from __future__ import annotations

import dataclasses

from ferkeras.config import field


@dataclasses.dataclass
class PNPConfig:
    """cycle.method pnp (Sun et al., CVPR 2022); defaults are the authors' scripts'."""

    label_smoothing: float = field(
        0.6, "Label smoothing epsilon of the given labels in PNP's losses and head targets "
        "(authors: 0.6).", min=0.0, max=0.95)
    temperature: float = field(
        0.1, "T of the ID target softmax(m / T) (relabel) and the OOD target softmax(m * T) "
        "(flattened), m the mean of two weak views' predictions and the smoothed label "
        "(authors: 0.1).", min=0.01, max=1.0)
    eta: float = field(
        0.5, "The OOD pseudo-target is eta * JS(predictions of two weak views) + (1 - eta) * "
        "normalised entropy (authors: 0.5).", min=0.0, max=1.0)
    ood_weight: float = field(
        1.0, "beta, weight of the OOD type's flattened-target loss; 0 drops the rows judged "
        "OOD (authors: 1.0).", min=0.0, max=100.0)
    aux_weight: float = field(
        1.0, "gamma, weight of the noise-type head's MAE loss to its pseudo-targets "
        "(authors: 1.0).", min=0.0, max=100.0)
    consistency_weight: float = field(
        1.0, "omega, weight of the symmetric-KL consistency of the two views for clean and "
        "ID rows (authors: 1.0).", min=0.0, max=100.0)
