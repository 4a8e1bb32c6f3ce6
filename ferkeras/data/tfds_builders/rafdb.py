"""`ferkeras_rafdb`: RAF-DB basic, aligned 100x100 RGB faces, 7 classes."""

from __future__ import annotations

from ferkeras.data.rafdb import read_rafdb_splits
from ferkeras.data.tfds_builders.common import FerkerasBuilder
from ferkeras.labels import get_class_names


class FerkerasRafdb(FerkerasBuilder):
    """RAF-DB basic emotions: train_* rows are train, test_* rows are test."""

    name = "ferkeras_rafdb"
    CLASS_SET = "rafdb"
    DESCRIPTION = "RAF-DB basic: aligned RGB faces, 7 classes in RAF-DB label order (1-7)."
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Request RAF-DB from its authors. Point manual_dir at the `basic` folder holding
    EmoLabel/list_patition_label.txt and Image/aligned/*_aligned.jpg.
    """

    def _read_splits(self, manual_dir):
        return read_rafdb_splits(
            manual_dir, class_names=get_class_names(self.CLASS_SET), source=self.name
        )
