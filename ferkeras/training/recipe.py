"""Typed recipes: dataclasses with a default and a docstring for every field.

`load_recipe(path, overrides, smoke=False)` reads YAML, applies `--set key=value` overrides and
validates everything, raising `RecipeError` that names the key and the value received. Unknown
keys suggest the closest valid one. `smoke_recipe` shrinks a validated recipe to a seconds-long
run. Keys of the flat cycle section from before `cycle.method` load in their new spelling
(`ferkeras.training.old_keys`).

Names (sources, class sets, backbones, losses, selectors, methods) are checked against their
one table, read when a recipe is validated: `ferkeras.data.sources`, `ferkeras.labels`,
`ferkeras.models`, `ferkeras.registry`, `ferkeras.noise.selection` and `ferkeras.methods`.
A method's own options are its section `cycle.<method>`, declared beside the method.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import pathlib
import re
import typing
from typing import Any

import yaml

from ferkeras.config import field as _field
from ferkeras.config import field_choices as _choices
from ferkeras.training.old_keys import translate_old_keys

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class RecipeError(ValueError):
    """A recipe key is unknown, has the wrong type, or is out of range."""


# Keys that existed once: setting one is an error that says why it went.
REMOVED_KEYS = {
    "cycle.mu": "cycle.mu was removed: the unlabelled share equals the noisy share (every "
                "batch covers the whole training set; the split decides which rows are "
                "unlabelled).",
}


# ----------------------------------------------------------------------------- name tables
def _sources():
    from ferkeras.data.sources import list_sources

    return list_sources()


def _class_sets():
    from ferkeras.labels import CLASS_SETS

    return sorted(CLASS_SETS)


def _backbones():
    from ferkeras.models import list_models  # light import: no TensorFlow

    return list_models()


def _losses():
    from ferkeras.registry import list_losses

    return list_losses()


def _selectors():
    from ferkeras.methods import method_selectors
    from ferkeras.noise.selection import list_selectors

    return [s for s in list_selectors() if s not in method_selectors()]


def _methods():
    from ferkeras.methods import list_methods

    return list_methods()


def _normalize_modes():
    from ferkeras.noise.selection import NORMALIZE_MODES

    return NORMALIZE_MODES


def _gmm_scopes():
    from ferkeras.noise.selection import GMM_SCOPES

    return GMM_SCOPES


# ----------------------------------------------------------------------------- sections
@dataclasses.dataclass
class SyntheticConfig:
    """Procedurally drawn faces, generated on the spot (source: synthetic)."""

    n_train: int = _field(6000, "Training images to draw.", min=8)
    n_val: int = _field(800, "Validation images (balanced, clean labels).", min=8)
    n_test: int = _field(1600, "Test images (balanced, clean labels).", min=0)
    profile: str = _field(
        "affectnet",
        "Class imbalance: 'affectnet' (AffectNet training proportions), 'uniform', or "
        "'factor' (geometric decay with `imbalance`).",
        choices=("affectnet", "uniform", "factor"),
    )
    imbalance: float = _field(10.0, "Head/tail ratio when profile is 'factor'.", min=1.0)
    noise: float = _field(0.0, "Label noise rate in the training split.", min=0.0, max=0.95)
    noise_type: str = _field(
        "asymmetric",
        "'symmetric' flips to any other class; 'asymmetric' flips along confusable pairs.",
        choices=("symmetric", "asymmetric"),
    )


@dataclasses.dataclass
class DataConfig:
    """Where the faces come from and how they are shaped."""

    source: str = _field(
        "synthetic",
        "Data source (`ferkeras data stats --help`, ferkeras.data.sources).",
        choices=_sources,
    )
    root: str = _field("", "Dataset folder or file on disk (not used by synthetic).")
    class_set: str = _field(
        "affectnet8",
        "Class set, which fixes class ids (ferkeras.labels.CLASS_SETS).",
        choices=_class_sets,
    )
    class_names: str = _field(
        "",
        "Your own class list, in id order, for folder and CSV (fer2013, ferplus) sources: a "
        "YAML list or 'a,b,c'. Expression names map onto the canonical ones (sadness -> sad); "
        "overrides class_set. E.g. CK+: [anger, contempt, disgust, fear, happy, sadness, "
        "surprise].",
    )
    image_size: int = _field(48, "Side of the square model input, in pixels.", min=16, max=512)
    channels: int = _field(1, "1 for grey, 3 for RGB; sources are converted.", choices=(1, 3))
    val_fraction: float = _field(
        0.1,
        "Share of training carved out (stratified, seeded) for validation when the source "
        "has no validation split.",
        min=0.0,
        max=0.5,
    )
    missing_split: str = _field(
        "carve",
        "When the file lacks the validation split: 'carve' it from training, or 'error'.",
        choices=("carve", "error"),
    )
    label_mode: str = _field(
        "majority",
        "FERPlus label mode: majority, plurality or probability.",
        choices=("majority", "plurality", "probability"),
    )
    ferplus_path: str = _field(
        "", "fer2013new.csv for source fer2013: attaches FERPlus majority as true labels."
    )
    face_margin: float = _field(
        0.1, "AffectNet: margin around the face box, as a share of its size.", min=0.0, max=1.0
    )
    align_faces: bool = _field(
        True, "AffectNet (official layout): crop each face from its 68 landmarks with the eyes "
        "level, framed as FER2013 (the crop `ferkeras predict` takes); false: the face box.")
    noisy_labels: str = _field(
        "", "RAF-DB: a noisy label file (same 'name label' format) replacing train labels."
    )
    tfds_name: str = _field("", "source tfds: the registered dataset name.")
    tfds_data_dir: str = _field("", "source tfds: the TFDS data_dir.")
    cache: str = _field("", "Cache decoded images: '' none, 'memory', or a file path.")
    synthetic: SyntheticConfig = _field(None, "Synthetic faces.", factory=SyntheticConfig)


@dataclasses.dataclass
class ModelConfig:
    """The network."""

    backbone: str = _field(
        "small_cnn", "Backbone from the registry (see `ferkeras models`).", choices=_backbones
    )
    width: int = _field(32, "Base channel width of the in-house CNNs.", min=4, max=512)
    dropout: float = _field(0.2, "Dropout before the classifier.", min=0.0, max=0.9)
    weights: str = _field(
        "",
        "'' for random init, 'imagenet' to download pretrained weights (keras.applications "
        "backbones only, needs internet), or a path to a .weights.h5 file.",
    )


@dataclasses.dataclass
class TrainConfig:
    """Optimisation."""

    epochs: int = _field(
        10, "Epochs of supervised training; with cycle.enabled the schedule is warmup_epochs + "
        "cycles * epochs_per_cycle instead.", min=1)
    batch_size: int = _field(
        128, "Global batch size, summed over replicas and workers.", min=1, max=65536
    )
    optimizer: str = _field("adamw", "adamw or sgd.", choices=("adamw", "sgd"))
    learning_rate: float = _field(
        2e-3, "Peak learning rate for `batch_size` (the global batch).", min=0.0, max=10.0
    )
    weight_decay: float = _field(1e-4, "Decoupled weight decay.", min=0.0, max=1.0)
    warmup_epochs: float = _field(
        0.5, "Linear learning-rate warm-up, in epochs, before cosine decay.", min=0.0
    )
    label_smoothing: float = _field(0.0, "Label smoothing for cross-entropy.", min=0.0, max=0.5)
    loss: str = _field(
        "ce",
        "Supervised loss (ferkeras.registry.LOSSES).",
        choices=_losses,
    )
    tau: float = _field(1.0, "Logit adjustment temperature.", min=0.0, max=10.0)
    cb_beta: float = _field(0.999, "Class-balanced effective-number beta.", min=0.0, max=1.0)
    augment: str = _field(
        "weak", "Training augmentation: none, weak (flip+translate) or strong.",
        choices=("none", "weak", "strong"),
    )
    select_metric: str = _field(
        "balanced_accuracy",
        "Validation metric that picks the best epoch.",
        choices=("balanced_accuracy", "accuracy", "macro_f1"),
    )
    ema_decay: float = _field(
        0.0, "EMA of weights for evaluation and export; 0 turns it off.", min=0.0, max=1.0
    )
    elr_lambda: float = _field(
        0.0, "Early-learning regularisation (ELR; Liu et al., 'Early-Learning Regularization "
        "Prevents Memorization of Noisy Labels', NeurIPS 2020): weight lambda of the added "
        "lambda * mean(log(1 - <p_i, t_i>)), t_i a running average of sample i's predictions "
        "(ferkeras.noise.soft_targets). 0 turns it off; the paper uses 3 on CIFAR-10. Supervised "
        "training only (not with cycle.enabled).", min=0.0, max=100.0)
    elr_beta: float = _field(
        0.7, "ELR (Liu et al., NeurIPS 2020): momentum of each sample's target average, "
        "t <- beta * t + (1 - beta) * p (paper: 0.7 on CIFAR-10, 0.9 on CIFAR-100).",
        min=0.0, max=0.999)
    distill_alpha: float = _field(
        0.0, "Self-distillation from the EMA teacher (mean teacher, Tarvainen & Valpola, "
        "NeurIPS 2017; soft targets, Hinton et al. 2015): the target becomes (1 - alpha) * "
        "label + alpha * softmax(teacher_logits / distill_temperature), the teacher being the "
        "EMA network, so it needs train.ema_decay > 0. 0 turns it off; 0.5 is the suggested "
        "value (an even mix, chosen before any result). Supervised training only.",
        min=0.0, max=1.0)
    distill_temperature: float = _field(
        1.0, "Self-distillation (Hinton et al. 2015): temperature T softening the teacher's "
        "probabilities; 1 keeps them as the teacher predicts.", min=0.05, max=20.0)
    steps_per_epoch: int = _field(
        0, "Cap on steps per epoch; 0 means one pass over the training data.", min=0
    )
    precision: str = _field(
        "float32", "Compute dtype policy: float32, mixed_bfloat16 (bfloat16 compute; float32 "
        "weights, head, losses, EMA and tables), or auto (mixed_bfloat16 where the hardware "
        "has native bfloat16: GPUs of compute capability >= 8.0, CPUs with AVX-512 BF16 or "
        "AMX). See bench/results/training_speed.md.",
        choices=("auto", "float32", "mixed_bfloat16"),
    )
    jit_compile: bool = _field(
        False, "Compile the supervised train step with XLA (false also overrides Keras's "
        "'auto', which turns XLA on with a GPU). Slower on this project's CPU "
        "(bench/results/training_speed.md); not with cycle.enabled (dynamic shapes).")
    nan_policy: str = _field(
        "stop", "On a NaN loss: 'stop' (keep last good checkpoint, exit non-zero).",
        choices=("stop",),
    )
    forward_correction: str = _field(
        "none", "Forward loss correction during training (Patrini et al., 'Making Deep Neural "
        "Networks Robust to Label Noise: a Loss Correction Approach', CVPR 2017): 'none', or "
        "'anchors' (trust-free: after train.forward_warmup_epochs of plain CE, estimate the "
        "noise transition T from the model's training-set probabilities with the anchor-point "
        "rule, then train on CE(noisy label, log(softmax(z) @ T)); T is saved as "
        "forward_transition.csv/png in the run folder); or 'gold' (gold loss correction, "
        "Hendrycks et al., 'Using Trusted Data to Train Deep Networks on Labels Corrupted by "
        "Severe Noise', NeurIPS 2018, in one run: the same, with T[y] = the warm-up model's "
        "mean probabilities over the trusted rows of clean class y; needs trusted.source, "
        "trusted rows not in training). With loss 'ce', without the cycle.",
        choices=("none", "anchors", "gold"))
    forward_warmup_epochs: int = _field(
        3, "Forward correction: epochs of plain CE before T is estimated (the model must fit "
        "the noisy posterior first; must be < train.epochs).", min=1)
    forward_quantile: float = _field(
        0.97, "Forward correction: quantile of the anchor rule (Patrini et al. 2017's robust "
        "97th percentile instead of the arg max).", min=0.5, max=1.0)


@dataclasses.dataclass
class _CycleKeys:
    """The noise-robust cycle: split by per-sample loss, then a method trains the rows judged
    noisy (`cycle.method`, ferkeras.methods); each method's own options are its section
    `cycle.<method>`, each added below from the method table."""

    enabled: bool = _field(False, "Run the cycle after warm-up; false trains supervised only.")
    method: str = _field(
        "fixmatch", "What the rows judged noisy train on (`ferkeras methods` lists them, "
        "ferkeras.methods.METHODS): fixmatch, relabel, soft, co_divide, pnp, crest, ada_cm or "
        "mpl. "
        "Its options are the section cycle.<method>.", choices=_methods)
    warmup_epochs: int = _field(3, "Epochs on all labels before the first split.", min=0)
    cycles: int = _field(2, "Number of (split -> SSL epochs) cycles.", min=0)
    epochs_per_cycle: int = _field(3, "SSL epochs in each cycle.", min=1)
    resplit_every_epoch: bool = _field(False, "Also re-split at every epoch within a cycle.")
    selector: str = _field(
        "gmm", "Selector (ferkeras.noise.selection.SELECTORS): gmm (DivideMix) or small_loss "
        "(Co-teaching); h2e (Yi et al., 'Identifying Hard Noise in Long-Tailed Sample "
        "Distribution', ECCV 2022: a noise identifier on the network's penultimate features, "
        "trained across original / class-balanced / reversed class environments with the IRM "
        "penalty; a row is clean when its class-balanced prediction is its label; "
        "ferkeras.noise.h2e; options cycle.h2e); trusted (needs trusted.source: at each "
        "split, T from the trusted rows' counts and the model recalibrated on them give each "
        "row's posterior that its given label is clean, thresholded per given class at the "
        "threshold that best separates clean from noisy trusted rows, cross-fitted; "
        "ferkeras.noise.trusted_split; option cycle.trusted_folds). cycle.method pnp brings "
        "its own split.", choices=_selectors)
    normalize: str = _field(
        "per_class", "Loss normalisation: global or per_class.", choices=_normalize_modes
    )
    gmm_scope: str = _field(
        "global", "Fit one GMM on all normalised losses, or one per class.",
        choices=_gmm_scopes,
    )
    loss_window: int = _field(1, "Average each sample's loss over the last k evaluations.", min=1)
    p_clean: float = _field(0.5, "Clean-probability threshold for the labelled set.", min=0.0,
                            max=1.0)
    keep_ratio: float = _field(0.7, "small_loss: share kept as clean per class.", min=0.01,
                               max=1.0)
    min_class_samples: int = _field(
        20, "Classes with fewer samples fall back to a rank rule instead of a GMM.", min=2
    )
    lambda_u: float = _field(1.0, "Weight of the unsupervised loss.", min=0.0)
    trusted_folds: int = _field(
        5, "cycle.selector trusted: folds of the cross-fit that calibrates the per-class "
        "thresholds on the trusted rows (ferkeras.noise.trusted_split).", min=2)
    threshold: float = _field(0.95, "FixMatch confidence threshold.", min=0.0, max=1.0)
    threshold_mode: str = _field(
        "adaptive", "fixed (FixMatch) or adaptive (FlexMatch-style, per class). (Ada-CM's "
        "margins are cycle.method ada_cm.)", choices=("fixed", "adaptive"),
    )
    min_threshold: float = _field(
        0.7, "Floor of the adaptive thresholds (FlexMatch's start at 0 lets every "
        "pseudo-label through right after a split); Ada-CM's margin floor.", min=0.0, max=1.0)
    distribution_alignment: bool = _field(
        True, "Align pseudo-label distribution with the estimated clean prior."
    )
    compare_ce: bool = _field(
        False, "Also train a plain cross-entropy baseline with the same data, model and epoch "
        "budget (into <run>/ce_baseline) and report both in metrics.json.")


def _cycle_config_class():
    """CycleConfig: the shared keys, then one section per method that has options (from
    `ferkeras.methods.METHODS`, so a new method needs no edit here) and the h2e selector's."""
    from ferkeras.methods import METHODS
    from ferkeras.noise.h2e import H2EConfig

    sections = [(m.name, m.config, m.description) for m in METHODS.values() if m.config]
    sections.append(("h2e", H2EConfig, "cycle.selector h2e (Yi et al., ECCV 2022)"))
    cls = dataclasses.make_dataclass(
        "CycleConfig",
        [(name, cfg, _field(None, f"cycle.method {name}: {doc}", factory=cfg))
         for name, cfg, doc in sections],
        bases=(_CycleKeys,))
    cls.__module__ = __name__
    cls.__doc__ = _CycleKeys.__doc__
    return cls


CycleConfig = _cycle_config_class()


@dataclasses.dataclass
class TrustedConfig:
    """A small set with clean labels (ferkeras.noise.trusted), and what it is used for."""

    source: str = _field(
        "none", "Where trusted labels come from: 'none'; 'val_true_labels' (the validation "
        "split's true labels, e.g. FERPlus majority for fer2013 with data.ferplus_path); "
        "'val_labels' (the validation split's own labels are clean: AffectNet's hand-annotated "
        "validation set, RAF-DB's curated test set used as validation); 'test_labels' (the "
        "data's test split has clean labels, as AffectNet's hand-annotated validation set and "
        "RAF-DB's test set, which ferkeras loads as their test splits: trusted.fraction of it, "
        "stratified and seeded, moves into validation as the trusted rows, and only the rest "
        "is the reported test).",
        choices=("none", "val_true_labels", "val_labels", "test_labels"))
    fraction: float = _field(
        0.0, "trusted.source test_labels: the share of the test split carved out (stratified "
        "on its labels, seeded) as trusted rows; the reported test is the rest.", min=0.0,
        max=0.9)
    test_fraction: float = _field(
        0.0, "When the data has no test split, hold out this share of the validation split "
        "(stratified on its labels, seeded) as the test split, BEFORE anything is fitted on the "
        "trusted rows, so the reported test never touches them.", min=0.0, max=0.9)
    select: bool = _field(
        False, "Pick the best epoch on the trusted labels (else on the validation labels).")
    decision: str = _field(
        "argmax", "Decision rule fitted on the trusted rows after training and baked into the "
        "export: 'argmax' (none), 'prior' (prior shift to the trusted class prior), "
        "'recalibrate' (logistic recalibration of the log-probabilities).",
        choices=("argmax", "prior", "recalibrate"))
    decision_objective: str = _field(
        "accuracy", "What the baked decision rule is fitted for: 'accuracy' (every trusted row "
        "counts once) or 'balanced' (rows weighted by the inverse of their trusted class's "
        "frequency: balanced accuracy, for long-tailed classes) or 'constrained' (the most "
        "accurate rule whose balanced accuracy does not fall below the model's own argmax: "
        "the rows' class weight frequency^-alpha, alpha chosen by 5-fold cross-validation on "
        "the trusted rows). metrics.json -> decision reports all three.",
        choices=("accuracy", "balanced", "constrained"))
    train_fraction: float = _field(
        0.0, "Share of the trusted rows (stratified, seeded) that JOIN the training set with "
        "their trusted labels; the rest stay in validation and are the only rows the split's "
        "T and thresholds, the decision rule and trusted.select are fitted on.", min=0.0,
        max=0.9)
    train_weight: float = _field(
        1.0, "Per-row weight of the trusted rows that join the training set "
        "(trusted.train_fraction) in the supervised loss.", min=0.0)


@dataclasses.dataclass
class Recipe:
    """A full experiment: data, model, training and the noise-robust cycle."""

    name: str = _field("run", "Run name; the default run folder is runs/<name>.")
    seed: int = _field(0, "Global seed: data, init, augmentation and GMM.", min=0)
    data: DataConfig = _field(None, "Data.", factory=DataConfig)
    model: ModelConfig = _field(None, "Model.", factory=ModelConfig)
    train: TrainConfig = _field(None, "Training.", factory=TrainConfig)
    cycle: CycleConfig = _field(None, "Noise-robust cycle.", factory=CycleConfig)
    trusted: TrustedConfig = _field(None, "Trusted (clean-label) rows.", factory=TrustedConfig)


# ----------------------------------------------------------------------------- building
def _closest(key: str, valid) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


def _coerce(value: Any, typ, key: str):
    """Check `value` against the annotation `typ`; ints are accepted for floats."""
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            # YAML 1.1 reads `1e-3` (no dot) as a string; accept it as the number it is.
            return float(value)
    elif typ is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
    name = getattr(typ, "__name__", str(typ))
    raise RecipeError(
        f"Recipe key '{key}' must be {name}. Received: {value!r} ({type(value).__name__})"
    )


def _build(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise RecipeError(
            f"Recipe key '{prefix.rstrip('.') or '<root>'}' must be a mapping. "
            f"Received: {values!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if prefix + key in REMOVED_KEYS:
            raise RecipeError(f"{REMOVED_KEYS[prefix + key]} Received: {prefix}{key}="
                              f"{values[key]!r}")
        if key not in fields:
            raise RecipeError(
                f"Unknown recipe key '{prefix}{key}'.{_closest(key, fields)} "
                f"Valid keys here: {sorted(fields)}"
            )
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, values.get(name, {}) or {}, key + ".")
            continue
        if name not in values:
            continue
        if name == "class_names" and isinstance(values[name], list):  # a YAML list
            values[name] = ",".join(str(v) for v in values[name])
        value = _coerce(values[name], typ, key)
        meta = f.metadata
        choices = _choices(meta)
        if choices is not None and value not in choices:
            raise RecipeError(
                f"Recipe key '{key}' must be one of {list(choices)}. "
                f"Received: {value!r}.{_closest(str(value), map(str, choices))}"
            )
        if meta.get("min") is not None and value < meta["min"]:
            raise RecipeError(f"Recipe key '{key}' must be >= {meta['min']}. Received: {value!r}")
        if meta.get("max") is not None and value > meta["max"]:
            raise RecipeError(f"Recipe key '{key}' must be <= {meta['max']}. Received: {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise RecipeError(f"--set expects key=value. Received: {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(values: dict, overrides) -> dict:
    """Set dotted keys (`train.epochs=3`) in a nested dict; values are parsed as YAML."""
    for item in overrides or ():
        path, value = _parse_override(item)
        node = values
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"--set {item!r}: '{part}' is not a section.")
            node = child
        node[path[-1]] = value
    return values


def recipe_from_dict(values: dict, overrides=()) -> Recipe:
    """Validate a nested dict (plus overrides) into a Recipe."""
    values = apply_overrides(copy.deepcopy(dict(values or {})), overrides)
    try:
        values = translate_old_keys(values)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    recipe = _build(Recipe, values, "")
    _check_unread_sections(recipe)
    _check_cross_fields(recipe)
    return recipe


def _check_soft_targets(recipe: Recipe) -> None:
    """ELR and self-distillation (ferkeras.noise.soft_targets): supervised path only; the
    distillation teacher is the EMA network."""
    t = recipe.train
    if t.distill_alpha > 0 and t.ema_decay == 0:
        raise RecipeError(
            "Recipe key 'train.distill_alpha' > 0 needs an EMA teacher: set train.ema_decay > 0 "
            f"(e.g. 0.995). Received: train.distill_alpha={t.distill_alpha}, "
            "train.ema_decay=0.0")
    for key in ("elr_lambda", "distill_alpha"):
        if getattr(t, key) > 0 and recipe.cycle.enabled:
            raise RecipeError(
                f"Recipe key 'train.{key}' works with supervised training only, not with "
                f"cycle.enabled. Received: train.{key}={getattr(t, key)}")


def _check_corrections(recipe: Recipe) -> None:
    """Forward correction (ferkeras.trainers.forward): the combinations it supports."""
    t = recipe.train
    if t.forward_correction != "none":
        key = f"Recipe key 'train.forward_correction' ({t.forward_correction!r})"
        if t.forward_correction == "gold" and recipe.trusted.source == "none":
            raise RecipeError(f"{key} estimates T on the trusted rows: set trusted.source. "
                              "Received: trusted.source='none'")
        if t.forward_correction == "gold" and recipe.trusted.train_fraction > 0:
            raise RecipeError(f"{key} would correct the trusted rows' clean labels too: set "
                              "trusted.train_fraction=0. Received: trusted.train_fraction="
                              f"{recipe.trusted.train_fraction}")
        if recipe.cycle.enabled:
            raise RecipeError(f"{key} works with supervised training only, not with "
                              "cycle.enabled. Received: cycle.enabled=True")
        if t.loss != "ce":
            raise RecipeError(f"{key} needs train.loss 'ce'. Received: train.loss={t.loss!r}")
        if recipe.data.label_mode == "probability":
            raise RecipeError(f"{key} needs hard labels. Received: data.label_mode="
                              "'probability'")
        for other in ("elr_lambda", "distill_alpha"):
            if getattr(t, other, 0.0) > 0:
                raise RecipeError(f"{key} cannot be combined with train.{other}. Received: "
                                  f"train.{other}={getattr(t, other)}")
        if t.forward_warmup_epochs >= t.epochs:
            raise RecipeError(
                f"Recipe key 'train.forward_warmup_epochs' must be < train.epochs "
                f"({t.epochs}), or no epoch is corrected. Received: "
                f"train.forward_warmup_epochs={t.forward_warmup_epochs}")


def _check_method(recipe: Recipe) -> None:
    """`cycle.method` (ferkeras.methods): a method other than fixmatch needs the cycle; a
    method with its own split keeps cycle.selector at its default; the method's own rule."""
    from ferkeras.methods import get_method

    c = recipe.cycle
    method = get_method(c.method)
    if c.method != "fixmatch" and not c.enabled:
        raise RecipeError(f"Recipe key 'cycle.method' ({c.method}: {method.description}) needs "
                          "the noise cycle: set cycle.enabled=true. Received: "
                          f"cycle.method={c.method!r}, cycle.enabled=false")
    if method.selector and c.selector != "gmm":
        raise RecipeError(f"Recipe key 'cycle.selector' cannot be set with cycle.method "
                          f"{c.method}: the method splits with its own selector "
                          f"({method.selector}). Received: cycle.selector={c.selector!r}")
    message = method.check(recipe) if method.check else None
    if message:
        raise RecipeError(f"Recipe key {message}")


def _check_unread_sections(recipe: Recipe) -> None:
    """A method's section (`cycle.<name>`) changed from its defaults while another method
    runs would be silently unread: an error (the h2e section likewise needs selector h2e)."""
    c = recipe.cycle
    for f in dataclasses.fields(c):
        section = getattr(c, f.name)
        if not dataclasses.is_dataclass(section) or section == type(section)():
            continue
        used = c.selector == "h2e" if f.name == "h2e" else c.method == f.name
        if not used:
            changed = [k for k, v in dataclasses.asdict(section).items()
                       if v != getattr(type(section)(), k)]
            what = "cycle.selector" if f.name == "h2e" else "cycle.method"
            raise RecipeError(
                f"Recipe key 'cycle.{f.name}.{changed[0]}' is read only with {what} "
                f"{f.name}. Received: cycle.{f.name}.{changed[0]}="
                f"{getattr(section, changed[0])!r}, {what}={getattr(c, what.split('.')[1])!r}")


def _check_trusted_cycle(recipe: Recipe) -> None:
    c, t = recipe.cycle, recipe.trusted
    if c.selector == "trusted" and t.source == "none":
        raise RecipeError("Recipe key 'cycle.selector' 'trusted' splits with the trusted rows: "
                          "set trusted.source. Received: trusted.source='none'")
    if t.train_fraction > 0 and t.source == "none":
        raise RecipeError("Recipe key 'trusted.train_fraction' needs trusted rows. Received: "
                          "trusted.source='none'")
    if (t.train_fraction > 0 and t.train_weight != 1.0 and c.enabled
            and c.method not in ("fixmatch", "relabel", "soft")):
        raise RecipeError("Recipe key 'trusted.train_weight' weighs rows in the supervised and "
                          "cycle (fixmatch, relabel, soft) steps only; set it to 1 with "
                          f"cycle.method {c.method}. Received: "
                          f"trusted.train_weight={t.train_weight}")


def _check_cross_fields(recipe: Recipe) -> None:
    _check_method(recipe)
    _check_trusted_cycle(recipe)
    _check_corrections(recipe)
    if recipe.train.jit_compile and recipe.cycle.enabled:
        raise RecipeError(
            "Recipe key 'train.jit_compile' cannot be true with cycle.enabled: the cycle's "
            "step has data-dependent shapes (unlabelled rows, FlexMatch bincount) that XLA "
            "cannot compile. Received: train.jit_compile=True")
    if recipe.data.source not in ("synthetic", "tfds") and not recipe.data.root:
        raise RecipeError(
            f"Recipe key 'data.root' is required for source {recipe.data.source!r}. "
            "Received: ''"
        )
    _check_soft_targets(recipe)
    if recipe.data.class_names:
        from ferkeras.labels import resolve_class_names

        if recipe.data.source not in ("folder", "fer2013", "ferplus"):
            raise RecipeError(
                "Recipe key 'data.class_names' works with sources folder, fer2013 and ferplus. "
                f"Received: source={recipe.data.source!r}")
        try:
            resolve_class_names(recipe.data.class_names)
        except ValueError as err:
            raise RecipeError(f"Recipe key 'data.class_names': {err}") from None
    if recipe.data.source == "synthetic" and recipe.data.class_set not in (
        "affectnet8",
        "affectnet7",
    ):
        raise RecipeError(
            "Recipe key 'data.class_set' must be affectnet8 or affectnet7 for synthetic "
            f"faces. Received: {recipe.data.class_set!r}"
        )


def load_recipe(path: str | pathlib.Path, overrides=(), *, smoke: bool = False) -> Recipe:
    """Read a YAML recipe file, apply `--set` overrides, validate; with `smoke`, then shrink
    it (`smoke_recipe`), keeping the keys the overrides set."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    try:
        recipe = recipe_from_dict(values, overrides)
        if smoke:
            keep = {".".join(_parse_override(item)[0]) for item in overrides or ()}
            recipe = smoke_recipe(recipe, keep=keep)
        return recipe
    except RecipeError as err:
        raise RecipeError(f"{path}: {err}") from None


# ----------------------------------------------------------------------------- smoke runs
SMOKE = {"train.epochs": 1, "train.steps_per_epoch": 2, "train.batch_size": 32,
         "cycle.warmup_epochs": 1, "cycle.cycles": 1, "cycle.epochs_per_cycle": 1}
# Only for the sources that have the section.
SMOKE_BY_SOURCE = {"synthetic": {"data.synthetic.n_train": 256, "data.synthetic.n_val": 64,
                                 "data.synthetic.n_test": 64}}


def smoke_recipe(recipe: Recipe, *, keep=()) -> Recipe:
    """`recipe` shrunk to a seconds-long smoke run (1 epoch, 2 steps, batch 32, a one-epoch
    cycle, and small synthetic splits for the synthetic source only). Keys in `keep` are left
    as they are. The recipe was validated before and is validated again after."""
    shrink = {**SMOKE, **SMOKE_BY_SOURCE.get(recipe.data.source, {})}
    values = recipe_to_dict(recipe)
    apply_overrides(values, [f"{k}={v}" for k, v in shrink.items() if k not in set(keep)])
    return recipe_from_dict(values)


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)


def recipe_hash(recipe: Recipe) -> str:
    """Short stable hash of the resolved recipe."""
    blob = json.dumps(recipe_to_dict(recipe), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def describe_fields(cls=Recipe, prefix="") -> list[tuple[str, str, Any]]:
    """(dotted key, doc, default) for every field: the recipe reference."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            rows += describe_fields(typ, prefix + f.name + ".")
        else:
            doc = f.metadata.get("doc", "")
            if callable(f.metadata.get("choices")):
                doc += f" One of: {', '.join(map(str, _choices(f.metadata)))}."
            rows.append((prefix + f.name, doc, f.default))
    return rows


