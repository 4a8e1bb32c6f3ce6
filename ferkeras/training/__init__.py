"""Training: the recipe, the schedule, the strategy, run folders, evaluation and the one
training path (`loop.train`). The names below are imported on first use.

    recipe.py        typed recipe: load, validate, smoke runs (old_keys.py: old spellings)
    loop.py          train(recipe, bundle): strategy -> trainer -> fit per phase -> metrics
    schedule.py      the phases of a run (warm-up, cycles) and their split epochs
    strategy.py      tf.distribute strategies, precision, scaling rule
    runs.py          run folders: prepare, resume, read back (`open_run`)
    passes.py        model passes: probabilities, per-sample losses, features
    evaluation.py    accuracy, balanced accuracy, macro-F1, confusion, noise AUC (NumPy)
    evaluate_run.py  final scores of best and last weights, metric plots
    reports.py       split reports (samples.csv, plots)
    console.py       progress output: the bar on a terminal, a line per epoch otherwise
    audit.py         `ferkeras audit`: a quick label audit of a dataset
"""

import importlib

_FROM_LOOP = ("CycleControl", "NoCycle", "Phase", "build_optimizer", "compare_runs",
              "epoch_stream", "plan_phases", "resolve_strategy", "steps_for", "train",
              "train_recipe", "train_with_baseline")
__all__ = sorted(_FROM_LOOP)


def __getattr__(name):
    if name not in _FROM_LOOP:
        raise AttributeError(f"module 'ferkeras.training' has no attribute {name!r}")
    return getattr(importlib.import_module("ferkeras.training.loop"), name)
