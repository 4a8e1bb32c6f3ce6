"""DivideMix co-divide (Li, Socher & Hoi, "DivideMix: Learning with Noisy Labels as
Semi-supervised Learning", ICLR 2020): two networks of the recipe's backbone (seeds seed and
seed + 7919); each network's labelled set comes from the GMM on the OTHER network's losses,
labelled targets are co-refined, unlabelled ones co-guessed by both networks, and prediction,
checkpoints and export use the mean of both networks' logits.

    core.py     the array functions (co-divide, co-refine, co-guess, MixMatch, the ensemble)
    trainer.py  `CoDivideTrainer`, its Keras step
    split.py    `CoDivideSplit`, the cycle controller that splits each network by the other
    (here)      `CoDivideConfig`, the recipe section `cycle.co_divide`
"""

from __future__ import annotations

import dataclasses

from ferkeras.config import field


@dataclasses.dataclass
class CoDivideConfig:
    """cycle.method co_divide (Li et al., ICLR 2020)."""

    temperature: float = field(
        0.5, "Sharpening temperature T of label co-refinement and co-guessing (paper: 0.5).",
        min=0.05, max=1.0)
    mixup_alpha: float = field(
        0.0, "> 0 trains with the paper's MixMatch (labelled and unlabelled rows mixed with a "
        "Beta(alpha, alpha) weight; L_x + lambda_u * squared error + a penalty toward the clean "
        "prior; paper: alpha 4 on CIFAR-10, 0.5 on Clothing1M, lambda_u up to 150); 0 uses "
        "ferkeras's FixMatch-style consistency (co-guessed targets on the strong views).",
        min=0.0, max=100.0)
    export: str = field(
        "ensemble", "The network a finished run is evaluated and exported with: 'ensemble' "
        "(mean of both networks' logits, as trained and scored), 'a' or 'b' (one network).",
        choices=("ensemble", "a", "b"))


def check_recipe(recipe) -> str | None:
    """DivideMix keeps no EMA copy of its two networks."""
    if recipe.train.ema_decay:
        return ("cycle.method co_divide (DivideMix) keeps no EMA copy of its two networks: set "
                f"train.ema_decay=0. Received: train.ema_decay={recipe.train.ema_decay}")
    return None
