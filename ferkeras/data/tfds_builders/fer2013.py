"""`ferkeras_fer2013`: FER2013 (48x48 grey) with FERPlus majority labels as true_label."""

from __future__ import annotations

from ferkeras.data.fer2013 import FER2013_FILES, FERPLUS_FILES, find_first, read_fer2013_splits
from ferkeras.data.tfds_builders.common import FerkerasBuilder
from ferkeras.labels import get_class_names


class FerkerasFer2013(FerkerasBuilder):
    """FER2013 from fer2013.csv(.gz); true_label from fer2013new.csv when present."""

    name = "ferkeras_fer2013"
    CLASS_SET = "fer2013"
    IMAGE_SHAPE = (48, 48, 1)
    ENCODING = "png"
    HAS_TRUE_LABEL = True
    DESCRIPTION = (
        "FER2013: 48x48 grey faces, 7 classes, original (noisy) labels; true_label is the "
        "FERPlus majority label (-1 without one or without fer2013new.csv)."
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put fer2013.csv (or fer2013.csv.gz; header `emotion,pixels,Usage`) in manual_dir, or in
    manual_dir/fer2013/. Optionally add FERPlus's fer2013new.csv (row-aligned with it) in
    manual_dir or manual_dir/ferplus/ to get true_label.
    """

    def _read_splits(self, manual_dir):
        csv_path = find_first(manual_dir, FER2013_FILES)
        if csv_path is None:
            raise ValueError(
                f"{self.name}: no fer2013.csv(.gz) in {manual_dir}.\n"
                f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        return read_fer2013_splits(
            csv_path,
            class_names=get_class_names(self.CLASS_SET),
            ferplus_path=find_first(manual_dir, FERPLUS_FILES),
            source=self.name,
        )
