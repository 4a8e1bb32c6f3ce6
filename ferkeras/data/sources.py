"""Source registry: `load_bundle(cfg, seed=...)` turns a recipe's data section into a bundle.

Each source module is imported only when its source is asked for, so listing sources or
loading a CSV never imports TensorFlow. The helpers here are shared by the loaders: mapping
source codes to the recipe's class ids, carving a validation split, and final assembly
(which calls `DatasetBundle.check_classes`, so an empty class is a ValueError).
"""

from __future__ import annotations

import importlib

import numpy as np

from ferkeras.data.table import DatasetBundle, Split, stratified_holdout
from ferkeras.labels import canonical_name

# The one table of sources: name -> ("module:function", default class set). Every function
# is `fn(cfg, *, seed) -> DatasetBundle`; the class set is what `data stats` uses when none
# is given.
_SOURCES = {
    "synthetic": ("ferkeras.data.synthetic:make_synthetic_bundle", "affectnet8"),
    "fer2013": ("ferkeras.data.fer2013:load_fer2013", "fer2013"),
    "ferplus": ("ferkeras.data.fer2013:load_ferplus", "fer2013"),
    "affectnet": ("ferkeras.data.affectnet:load_affectnet", "affectnet8"),
    "rafdb": ("ferkeras.data.rafdb:load_rafdb", "rafdb"),
    "folder": ("ferkeras.data.folder:load_folder", "affectnet8"),
    "tfds": ("ferkeras.data.tfds_builders.load:load_tfds_bundle", "affectnet8"),
}

DEFAULT_CLASS_SETS = {name: class_set for name, (_, class_set) in _SOURCES.items()}


def list_sources() -> list[str]:
    """Names of the registered data sources."""
    return sorted(_SOURCES)


def load_bundle(cfg, *, seed: int) -> DatasetBundle:
    """Load the data described by `cfg` (a `DataConfig`) as a DatasetBundle.

    seed: fixes every random choice a source makes (carved validation splits, synthetic
    faces). Raises ValueError for unknown sources, malformed files and empty classes.
    """
    if cfg.source not in _SOURCES:
        raise ValueError(
            f"Unknown data source {cfg.source!r}. Valid sources: {list_sources()}"
        )
    module_name, fn_name = _SOURCES[cfg.source][0].split(":")
    fn = getattr(importlib.import_module(module_name), fn_name)
    return fn(cfg, seed=seed)


def code_lookup(code_names: dict[int, str | None], class_names) -> np.ndarray:
    """Lookup table from source codes to class ids of `class_names`.

    code_names: {code: canonical name or None}. Returns (max_code + 1,) int32 with the class
    id for each code and -1 for codes that are no expression or not in the class set.
    """
    index = {name: i for i, name in enumerate(class_names)}
    lut = np.full(max(code_names) + 1, -1, dtype=np.int32)
    for code, name in code_names.items():
        lut[code] = index.get(name, -1) if name is not None else -1
    return lut


def names_to_ids(names, class_names) -> np.ndarray:
    """(N,) int32 class ids for folder/column names via aliases; -1 where not in the set."""
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index.get(canonical_name(n) or "", -1) for n in names], dtype=np.int32)


def dropped_note(source: str, what: str, dropped: dict[str, int]) -> str | None:
    """One-line note for samples dropped per reason, or None if none were dropped."""
    dropped = {k: v for k, v in dropped.items() if v}
    if not dropped:
        return None
    total = sum(dropped.values())
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1]))
    return f"{source} {what}: dropped {total} sample(s) ({detail})."


def carve_validation(train: Split, *, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split `train` into (train, val), stratified by label and seeded.

    Skipped-file records stay with the training split.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(
            "data.val_fraction must be in (0, 1) to carve a validation split from training. "
            f"Received: val_fraction={fraction}"
        )
    keep, hold = stratified_holdout(train.labels, fraction=fraction, seed=seed)
    if hold.size == 0:
        raise ValueError(
            f"Carving a validation split at val_fraction={fraction} left it empty: no class has "
            f"two training samples ({len(train)} in all). Provide a validation split or more data."
        )
    val = train.subset(hold)
    val.skipped = []
    return train.subset(keep), val


def assemble_bundle(
    splits: dict[str, Split],
    *,
    cfg,
    seed: int,
    source: str,
    class_names,
    notes: list[str],
    always_carve: bool = False,
) -> DatasetBundle:
    """Build the bundle from {"train", optional "val", optional "test"} splits.

    A missing validation split is carved from training when `always_carve` (the dataset's
    protocol, e.g. AffectNet) or `cfg.missing_split == "carve"`; with 'error' it raises.
    A missing test split becomes None with a note.
    """
    notes = [n for n in notes if n]
    if "train" not in splits or len(splits["train"]) == 0:
        raise ValueError(f"{source}: no training samples found under {cfg.root!r}.")
    train, val, test = splits["train"], splits.get("val"), splits.get("test")
    if val is None or len(val) == 0:
        if not always_carve and cfg.missing_split == "error":
            raise ValueError(
                f"{source}: the data has no validation split and data.missing_split is "
                "'error'. Set data.missing_split=carve to carve one from training. "
                f"Received: missing_split={cfg.missing_split!r}"
            )
        train, val = carve_validation(train, fraction=cfg.val_fraction, seed=seed)
        notes.append(
            f"{source}: validation split carved from training ({len(val)} samples, "
            f"stratified, val_fraction={cfg.val_fraction}, seed={seed})."
        )
    if test is not None and len(test) == 0:
        test = None
    if test is None:
        notes.append(f"{source}: no test split in the data; bundle.test is None.")
    bundle = DatasetBundle(
        class_names=tuple(class_names),
        train=train,
        val=val,
        test=test,
        source=source,
        notes=notes,
    )
    bundle.check_classes()
    return bundle
