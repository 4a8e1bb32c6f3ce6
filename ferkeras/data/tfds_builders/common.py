"""The shared base of the ferkeras TFDS builders: examples come from a parser's Splits.

Features: image (uint8), label (ClassLabel with the class set's names), index (the sample's
position in the parsed split, so a loader can restore file order) and, for builders with
HAS_TRUE_LABEL, true_label (int64 class id, -1 where unknown). Splits: train, validation
(only where the data has one) and test.
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from ferkeras.data.table import Split
from ferkeras.labels import get_class_names

SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
_LOG = logging.getLogger(__name__)


class FerkerasBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class; subclasses set CLASS_SET, IMAGE_SHAPE, ENCODING and `_read_splits`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release, built offline from the manual folder."}
    CLASS_SET = "affectnet8"
    IMAGE_SHAPE: tuple = (None, None, 3)
    ENCODING = "jpeg"
    HAS_TRUE_LABEL = False
    DESCRIPTION = ""

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "image": tfds.features.Image(shape=self.IMAGE_SHAPE, encoding_format=self.ENCODING),
            "label": tfds.features.ClassLabel(names=list(get_class_names(self.CLASS_SET))),
            "index": np.int64,
        }
        if self.HAS_TRUE_LABEL:
            features["true_label"] = np.int64
        return self.dataset_info_from_configs(
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "label"),
        )

    def _read_splits(self, manual_dir: pathlib.Path) -> tuple[dict[str, Split], list[str]]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        splits, notes = self._read_splits(pathlib.Path(dl_manager.manual_dir))
        for note in notes:
            if note:
                _LOG.warning("%s: %s", self.name, note)
        return {
            SPLIT_NAMES[key]: self._generate_examples(split)
            for key, split in splits.items()
            if len(split)
        }

    def _generate_examples(self, split: Split):
        for i in range(len(split)):
            example = {"image": _image(split, i), "label": int(split.labels[i]), "index": i}
            if self.HAS_TRUE_LABEL:
                true = -1 if split.true_labels is None else int(split.true_labels[i])
                example["true_label"] = true
            yield i, example


def _image(split: Split, i: int) -> np.ndarray:
    """(H, W, C) uint8: in-memory pixels, or the file decoded to RGB and cropped to its box."""
    if split.images is not None:
        return split.images[i]
    from PIL import Image

    with Image.open(split.paths[i]) as img:
        img = img.convert("RGB")
        if split.boxes is not None and split.boxes[i][0] >= 0:
            x, y, w, h = (int(v) for v in split.boxes[i])
            img = img.crop((x, y, x + w, y + h))
        return np.asarray(img)
