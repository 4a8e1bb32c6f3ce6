"""ferkeras: facial expression recognition that stays accurate under noisy, long-tailed labels.

The public Python API (see docs/api.md). Names are resolved on first use, so
`import ferkeras` stays light: TensorFlow is imported only when a TF-backed object is used.

    import ferkeras as fk
    net = fk.build_network("resnet18", num_classes=7, input_shape=(48, 48, 1))
    trainer = fk.CycleTrainer(net, num_classes=7, loss=fk.losses.LogitAdjusted(tau=1.0))
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "build_network": "ferkeras.models",
    "list_models": "ferkeras.models",
    "SupervisedTrainer": "ferkeras.trainers.supervised",
    "CycleTrainer": "ferkeras.trainers.cycle",
    "NoiseSplit": "ferkeras.callbacks.fit_split",
    "find_label_issues": "ferkeras.noise.label_issues",
    "find_label_issues_by_loss": "ferkeras.noise.label_issues",
    "find_label_issues_by_aum": "ferkeras.noise.label_issues",
    "area_under_margin": "ferkeras.noise.label_issues",
    "given_label_margins": "ferkeras.noise.label_issues",
    "label_quality_scores": "ferkeras.noise.label_issues",
    "out_of_sample_probs": "ferkeras.noise.label_issues",
    "load_image_folder": "ferkeras.data.folder",
    "Predictor": "ferkeras.deploy.inference",
}
_SUBMODULES = ("losses", "callbacks", "trainers", "selection", "label_issues", "labels", "models")

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"ferkeras.{name}")
    else:
        raise AttributeError(f"module 'ferkeras' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *__all__])
