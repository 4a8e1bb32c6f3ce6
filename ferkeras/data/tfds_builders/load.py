"""Source `tfds`: any TFDS dataset with `image` and a ClassLabel `label`, as an in-memory bundle.

`tfds.load(cfg.tfds_name, data_dir=cfg.tfds_data_dir)` is read into NumPy: fine for the
sizes of FER datasets at the model's input size. Images that all share one shape are kept
as they are; otherwise every image is resized to `cfg.image_size` square (PIL, bilinear)
so they stack into (N, S, S, C) uint8. Channels stay as stored; the pipeline converts them.

Label names map through `canonical_name` onto the recipe's class set; samples whose class
is not in it are dropped and counted. Splits train / validation (or val) / test; a missing
validation split follows `data.missing_split`. Examples are ordered by their `index` feature
when there is one (the ferkeras builders write it). `true_label` (a class id of the
dataset's ClassLabel, -1 unknown) becomes true_labels.
"""

from __future__ import annotations

import numpy as np

from ferkeras.data.sources import assemble_bundle, dropped_note, names_to_ids
from ferkeras.data.table import Split
from ferkeras.labels import get_class_names

_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}


def _stack_images(images: list[np.ndarray], *, size: int) -> np.ndarray:
    images = [im if im.ndim == 3 else im[..., None] for im in images]
    if len({im.shape for im in images}) <= 1:
        return np.stack(images) if images else np.zeros((0, size, size, 1), np.uint8)
    from PIL import Image

    out = []
    for im in images:
        pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
        resized = np.asarray(pil.resize((size, size), Image.BILINEAR))
        out.append(resized if resized.ndim == 3 else resized[..., None])
    return np.stack(out)


def _read_split(ds, lut: np.ndarray, *, size: int, has_true: bool):
    import tensorflow_datasets as tfds

    images, labels, index, true = [], [], [], []
    for i, example in enumerate(tfds.as_numpy(ds)):
        images.append(example["image"])
        labels.append(int(example["label"]))
        index.append(int(example.get("index", i)))
        true.append(int(example["true_label"]) if has_true else -1)
    order = np.argsort(np.array(index, np.int64), kind="stable")
    labels = lut[np.array(labels, np.int64)[order]] if labels else np.zeros(0, np.int32)
    true = np.array(true, np.int64)[order]
    true = np.where(true >= 0, lut[np.maximum(true, 0)], -1) if has_true else None
    keep = labels >= 0
    split = Split(
        images=_stack_images([images[j] for j in order[keep]], size=size),
        labels=labels[keep],
        true_labels=None if true is None else true[keep],
    )
    return split, int((~keep).sum())


def load_tfds_bundle(cfg, *, seed: int):
    """Source `tfds`: load `cfg.tfds_name` from `cfg.tfds_data_dir` into a DatasetBundle."""
    import tensorflow_datasets as tfds

    import ferkeras.data.tfds_builders  # noqa: F401  (registers the ferkeras_* builders)

    if not cfg.tfds_name:
        raise ValueError(
            "source tfds needs data.tfds_name, e.g. ferkeras_fer2013. Received: tfds_name=''"
        )
    class_names = get_class_names(cfg.class_set)
    datasets, info = tfds.load(
        cfg.tfds_name, data_dir=cfg.tfds_data_dir or None, split=None, with_info=True
    )
    features = dict(info.features.items())  # FeaturesDict has no .get
    label = features.get("label")
    if not isinstance(label, tfds.features.ClassLabel) or "image" not in features:
        raise ValueError(
            f"source tfds needs `image` and a ClassLabel `label` feature. Received: "
            f"{cfg.tfds_name} with features {list(features)}"
        )
    lut = names_to_ids(label.names, class_names)
    has_true = "true_label" in features
    splits, notes = {}, []
    for name, ds in datasets.items():
        if name not in _SPLITS:
            notes.append(f"tfds: ignored split {name!r} of {cfg.tfds_name}.")
            continue
        splits[_SPLITS[name]], dropped = _read_split(
            ds, lut, size=cfg.image_size, has_true=has_true
        )
        notes.append(dropped_note("tfds", name, {"class not in class set": dropped}))
    return assemble_bundle(
        splits, cfg=cfg, seed=seed, source="tfds", class_names=class_names, notes=notes
    )
