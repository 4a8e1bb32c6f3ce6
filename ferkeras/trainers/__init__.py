"""keras.Model subclasses with custom `train_step`: supervised baseline and the noise cycle.

`SupervisedTrainer` and `CycleTrainer` are imported on first use (they import TensorFlow).
"""

import importlib

_EXPORTS = {"SupervisedTrainer": "ferkeras.trainers.supervised",
            "CycleTrainer": "ferkeras.trainers.cycle"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ferkeras.trainers' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
