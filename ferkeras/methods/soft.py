"""Corrected soft targets for the rows judged noisy, from the trusted rows: every noisy row
trains on p(y | x, given) proportional to p_clean(y | x) T[y, given], with T and p_clean
estimated on the trusted rows at each split (`ferkeras.noise.trusted_split.label_posterior`);
no FixMatch term. It needs the trusted split, `cycle.selector: trusted` (and so
`trusted.source`).

The trainer is `CycleTrainer` with `noisy_mode='soft'` (`ferkeras.trainers.cycle`); the
split writes the (N, K) target table (`ferkeras.callbacks.noise_split`).
"""

from __future__ import annotations


def check_recipe(recipe) -> str | None:
    """The soft targets come from the trusted split."""
    if recipe.cycle.selector != "trusted":
        return ("'cycle.method' 'soft' trains on the trusted split's soft targets: set "
                f"cycle.selector=trusted. Received: cycle.selector={recipe.cycle.selector!r}")
    return None
