"""The epoch schedule of a recipe: its phases, and where the noise split happens.

`plan_phases` is the only schedule: training builds one input stream (one `fit`) per phase,
and a phase with `split=True` starts with a fresh split of the training set.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Phase:
    """A contiguous block of epochs [start, end) trained with one dataset layout.

    name: "supervised", "warmup" or "cycle k/n". views: the stream yields FixMatch view
    pairs. split: the noise split runs at `start`, before the phase's stream exists.
    """

    name: str
    start: int
    end: int
    views: bool
    split: bool = False


def plan_cycle_phases(cycle_cfg, *, epochs: int) -> list[Phase]:
    """Phases of a `CycleConfig`; `epochs` is the supervised budget when the cycle is off."""
    c = cycle_cfg
    if not c.enabled:
        return [Phase("supervised", 0, epochs, views=False)]
    phases = []
    if c.warmup_epochs:
        phases.append(Phase("warmup", 0, c.warmup_epochs, views=False))
    # One phase (one `fit`) per cycle, or per epoch when re-splitting every epoch: the split
    # runs before the phase's input stream exists, so no prefetched batch predates it.
    step = 1 if c.resplit_every_epoch else c.epochs_per_cycle
    end = c.warmup_epochs + c.cycles * c.epochs_per_cycle
    for start in range(c.warmup_epochs, end, step):
        k = (start - c.warmup_epochs) // c.epochs_per_cycle + 1
        phases.append(Phase(f"cycle {k}/{c.cycles}", start, start + step, views=True,
                            split=True))
    if not phases:
        raise ValueError("cycle.enabled needs warmup_epochs > 0 or cycles > 0.")
    return phases


def plan_phases(recipe) -> list[Phase]:
    """The phases of `recipe` (warm-up, then one per cycle or per re-split epoch)."""
    return plan_cycle_phases(recipe.cycle, epochs=recipe.train.epochs)


def split_epochs(phases) -> frozenset[int]:
    """The (0-based) epochs at whose start a split runs."""
    return frozenset(p.start for p in phases if p.split)
