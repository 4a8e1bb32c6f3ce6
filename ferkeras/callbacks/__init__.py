"""Keras callbacks: the noise split for your own `fit`, validation + checkpoints, run state,
NaN guard. Imported on first use (they import Keras).

`NoiseSplit` is the keyword-only callback for `CycleTrainer.fit` (`fit_split`); the recipe
path drives the same split through `noise_split.NoiseSplit`.
"""

import importlib

_EXPORTS = {"NoiseSplit": "ferkeras.callbacks.fit_split",
            "ValidationCheckpoint": "ferkeras.callbacks.evaluate",
            "NaNGuard": "ferkeras.callbacks.evaluate"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ferkeras.callbacks' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
