"""The methods of the noisy rows: one table, `METHODS`, from the name `cycle.method` takes
to its trainer, its cycle controller, its recipe section and its paper.

Each method sits in its own module or folder here, with its array core, its trainer and its
config (the section `cycle.<name>` of the recipe) together. Training looks the name up
(`get_method(recipe.cycle.method)`); nothing else in the package branches on it.

    fixmatch   FixMatch on the noisy rows (the default; `ferkeras.trainers.cycle`)
    relabel    SELFIE-style relabelling instead of FixMatch
    soft       corrected soft targets from the trusted rows (needs cycle.selector trusted)
    co_divide  DivideMix: two networks, each split by the other
    pnp        PNP: a noise-type head (clean / in-distribution / out-of-distribution)
    crest      CReST: class-rebalancing self-training
    ada_cm     Ada-CM: adaptive confidence margins + a contrastive term
    mpl        Meta Pseudo Labels: a teacher-student step

`COMPOSABLE` lists the losses and regularisers that are not methods: they are recipe keys of
`train` that combine with supervised training (and the long-tail losses with every method).

Adding a method: a module or folder here with its config dataclass and trainer (a
`from_recipe(recipe, network, bundle)` classmethod), and one `Method` row below; the recipe
section `cycle.<name>` follows from the row. Import-light: nothing here imports Keras.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing

from ferkeras.methods.ada_cm import AdaCMConfig
from ferkeras.methods.co_divide import CoDivideConfig
from ferkeras.methods.co_divide import check_recipe as _check_co_divide
from ferkeras.methods.crest import CReSTConfig
from ferkeras.methods.mpl import MPLConfig
from ferkeras.methods.pnp import PNPConfig
from ferkeras.methods.relabel import RelabelConfig
from ferkeras.methods.soft import check_recipe as _check_soft

NOISE_SPLIT = "ferkeras.callbacks.noise_split:NoiseSplit"


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of `METHODS`.

    Attributes:
      name: the value of `cycle.method`.
      description: one line, for `ferkeras methods`.
      paper: authors, title, venue.
      trainer: "module:Class" of its trainer (imported when training starts).
      config: the dataclass of its recipe section `cycle.<name>`, or None (no options).
      split: "module:Class" of its cycle controller (the noise split).
      selector: the split's selector when the method brings its own (PNP's noise-type head);
        None: the recipe's `cycle.selector`.
      check: `check(recipe) -> message | None`, the method's own cross-key rule.
    """

    name: str
    description: str
    paper: str
    trainer: str
    config: type | None = None
    split: str = NOISE_SPLIT
    selector: str | None = None
    check: typing.Callable | None = None

    def trainer_class(self):
        return _load(self.trainer)

    def split_class(self):
        return _load(self.split)


def _load(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("fixmatch", "drop the noisy rows' labels; FixMatch (FlexMatch thresholds) on them",
           "Sohn et al., FixMatch, NeurIPS 2020; Zhang et al., FlexMatch, NeurIPS 2021",
           "ferkeras.trainers.cycle:CycleTrainer"),
    Method("relabel", "relabel confident noisy rows with the prediction; drop the rest",
           "Song et al., SELFIE: Refurbishing Unclean Samples, ICML 2019",
           "ferkeras.trainers.cycle:CycleTrainer", RelabelConfig),
    Method("soft", "noisy rows train on corrected soft targets from the trusted rows' T",
           "forward correction of the targets with a trusted T (cf. Hendrycks et al., GLC, "
           "NeurIPS 2018)", "ferkeras.trainers.cycle:CycleTrainer", check=_check_soft),
    Method("co_divide", "DivideMix: two networks, each split by the other's losses",
           "Li, Socher & Hoi, DivideMix, ICLR 2020",
           "ferkeras.methods.co_divide.trainer:CoDivideTrainer", CoDivideConfig,
           split="ferkeras.methods.co_divide.split:CoDivideSplit", check=_check_co_divide),
    Method("pnp", "a noise-type head: clean rows on labels, ID noise relabelled, OOD flattened",
           "Sun et al., PNP: Probabilistic Noise Prediction, CVPR 2022",
           "ferkeras.methods.pnp.trainer:PNPTrainer", PNPConfig, selector="pnp"),
    Method("crest", "FixMatch + class-rebalanced pseudo-labels join at each split",
           "Wei et al., CReST: Class-Rebalancing Self-Training, CVPR 2021",
           "ferkeras.methods.crest.trainer:CReSTTrainer", CReSTConfig),
    Method("ada_cm", "adaptive per-class confidence margins + contrastive low-confidence rows",
           "Li et al., Ada-CM: Adaptive Confidence Margin, CVPR 2022",
           "ferkeras.methods.ada_cm.trainer:AdaCMTrainer", AdaCMConfig),
    Method("mpl", "Meta Pseudo Labels: a teacher learns from the student's feedback",
           "Pham et al., Meta Pseudo Labels, CVPR 2021",
           "ferkeras.methods.mpl.trainer:MPLTrainer", MPLConfig),
)}

# Not methods of the noisy rows: recipe keys that compose (name -> (keys, what, paper)).
COMPOSABLE: dict[str, tuple[str, str, str]] = {
    "lt_losses": ("train.loss, train.tau, train.cb_beta",
                  "long-tail losses: logit-adjusted, balanced softmax, class-balanced; with "
                  "supervised training and every method",
                  "Menon et al. ICLR 2021; Ren et al. NeurIPS 2020; Cui et al. CVPR 2019"),
    "elr": ("train.elr_lambda, train.elr_beta",
            "early-learning regularisation; supervised, composes with the LT losses",
            "Liu et al., ELR, NeurIPS 2020"),
    "distill": ("train.distill_alpha, train.distill_temperature",
                "self-distillation from the EMA teacher; supervised, composes with ELR",
                "Tarvainen & Valpola NeurIPS 2017; Hinton et al. 2015"),
    "forward": ("train.forward_correction, train.forward_*",
                "forward loss correction, T from anchors or from the trusted rows (gold); "
                "supervised, loss ce",
                "Patrini et al., CVPR 2017; Hendrycks et al. (GLC), NeurIPS 2018"),
    "trusted": ("trusted.*", "a few clean rows: epoch selection, training rows with a weight "
                "(train_fraction, train_weight), the trusted split (cycle.selector trusted), "
                "decision rules for accuracy, balanced accuracy or both (constrained); any run",
                "(ferkeras.noise.trusted, ferkeras.noise.trusted_split)"),
}


def list_methods() -> list[str]:
    """Names of the methods (`cycle.method`), in table order."""
    return list(METHODS)


def get_method(name: str) -> Method:
    """The `Method` row of `name`; a ValueError lists the valid names."""
    if name not in METHODS:
        raise ValueError(f"Unknown method. Valid: {list_methods()}. Received: {name!r}")
    return METHODS[name]


def split_selector(cycle_cfg) -> str:
    """The selector a cycle section splits with: its method's own, else `cycle.selector`."""
    return get_method(cycle_cfg.method).selector or cycle_cfg.selector


def method_selectors() -> set[str]:
    """Selectors that belong to a method (chosen by `cycle.method`, not `cycle.selector`)."""
    return {m.selector for m in METHODS.values() if m.selector}
