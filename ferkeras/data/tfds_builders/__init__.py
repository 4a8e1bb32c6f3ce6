"""TFDS builders that prepare FER2013, AffectNet and RAF-DB offline from a manual folder.

Importing this package imports tensorflow_datasets and registers `ferkeras_fer2013`,
`ferkeras_affectnet` and `ferkeras_rafdb`; nothing is downloaded. The builders reuse the
parsers of `ferkeras.data` (same checks, same skipped files). Build and load, e.g.:

    import tensorflow_datasets as tfds
    import ferkeras.data.tfds_builders  # registers the names
    tfds.load("ferkeras_rafdb", data_dir=DATA_DIR, download_and_prepare_kwargs={
        "download_config": tfds.download.DownloadConfig(manual_dir=RAFDB_BASIC)})

then train on it with `data.source: tfds`, `data.tfds_name: ferkeras_rafdb`,
`data.tfds_data_dir: DATA_DIR` (see `ferkeras.data.tfds_builders.load`).
"""

from ferkeras.data.tfds_builders.affectnet import FerkerasAffectnet
from ferkeras.data.tfds_builders.fer2013 import FerkerasFer2013
from ferkeras.data.tfds_builders.rafdb import FerkerasRafdb

__all__ = ["FerkerasAffectnet", "FerkerasFer2013", "FerkerasRafdb"]
