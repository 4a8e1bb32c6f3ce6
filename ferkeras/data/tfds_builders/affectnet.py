"""`ferkeras_affectnet`: AffectNet face crops (8 classes), from either AffectNet layout."""

from __future__ import annotations

from ferkeras.data.affectnet import read_affectnet_splits
from ferkeras.data.tfds_builders.common import FerkerasBuilder
from ferkeras.labels import get_class_names

# Margin around the official face box for the stored crops (as `data.face_margin`).
FACE_MARGIN = 0.1


class FerkerasAffectnet(FerkerasBuilder):
    """AffectNet manually annotated images, cropped to the face box plus FACE_MARGIN."""

    name = "ferkeras_affectnet"
    CLASS_SET = "affectnet8"
    DESCRIPTION = (
        "AffectNet (manually annotated), face crops with a 10% margin, RGB JPEG, 8 classes "
        "(codes 8-10 excluded). train = training.csv, test = validation.csv."
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Request AffectNet from its authors. Point manual_dir at the folder holding either
    Manually_Annotated_file_lists/{training,validation}.csv and Manually_Annotated_Images/,
    or the re-packaged train_set/ and val_set/ (images/ + annotations/*_exp.npy).
    """

    def _read_splits(self, manual_dir):
        return read_affectnet_splits(
            manual_dir,
            class_names=get_class_names(self.CLASS_SET),
            face_margin=FACE_MARGIN,
            source=self.name,
        )
