"""The ferkeras TFDS builders build offline from tiny manual folders and load with tfds.load."""

from __future__ import annotations

import socket

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from test_sources import (  # noqa: E402
    FER,
    FER_TRUE,
    write_affectnet_official,
    write_fer2013,
    write_rafdb,
)

from ferkeras.data.sources import load_bundle  # noqa: E402
from ferkeras.training.recipe import DataConfig  # noqa: E402


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: the builders must stay offline."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _prepare(name, manual_dir, data_dir):
    import ferkeras.data.tfds_builders  # noqa: F401  (registers the builders)

    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    return builder


def _examples(ds):
    rows = sorted(tfds.as_numpy(ds), key=lambda ex: int(ex["index"]))
    return rows


def test_fer2013_builder_and_tfds_source(tmp_path):
    manual = tmp_path / "manual"
    write_fer2013(manual / "fer2013", gz=True)
    (manual / "ferplus").mkdir()
    (manual / "fer2013/fer2013new.csv").rename(manual / "ferplus/fer2013new.csv")
    _prepare("ferkeras_fer2013", manual, tmp_path / "tfds")
    datasets, info = tfds.load("ferkeras_fer2013", data_dir=str(tmp_path / "tfds"),
                               with_info=True)
    assert set(datasets) == {"train", "validation"}  # no PrivateTest rows in the fixture
    assert tuple(info.features["label"].names) == FER
    train = _examples(datasets["train"])
    assert len(train) == 13 and train[0]["image"].shape == (48, 48, 1)
    assert [int(ex["label"]) for ex in train] == [0, 1, 2, 3, 4, 5, 6, 3, 3, 6, 2, 4, 6]
    assert [int(ex["true_label"]) for ex in train] == FER_TRUE[:13]
    assert int(train[3]["image"][0, 0, 0]) == 30  # pixels survive the PNG round trip

    cfg = DataConfig(source="tfds", tfds_name="ferkeras_fer2013",
                     tfds_data_dir=str(tmp_path / "tfds"), class_set="fer2013")
    bundle = load_bundle(cfg, seed=0)
    assert bundle.source == "tfds" and bundle.test is None
    assert bundle.train.images.shape == (13, 48, 48, 1)
    assert bundle.train.true_labels.tolist() == FER_TRUE[:13]
    assert bundle.val.labels.tolist() == [0, 3, 6, 4]


def test_affectnet_builder_crops_faces(tmp_path):
    manual = write_affectnet_official(tmp_path / "AffectNet")
    _prepare("ferkeras_affectnet", manual, tmp_path / "tfds")
    datasets = tfds.load("ferkeras_affectnet", data_dir=str(tmp_path / "tfds"))
    assert set(datasets) == {"train", "test"}
    train = _examples(datasets["train"])
    assert sorted(int(ex["label"]) for ex in train) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7]
    shapes = {ex["image"].shape for ex in train}
    assert (24, 24, 3) in shapes and (12, 12, 3) in shapes  # margin crop; clipped crop
    assert "true_label" not in train[0]

    cfg = DataConfig(source="tfds", tfds_name="ferkeras_affectnet", image_size=32,
                     tfds_data_dir=str(tmp_path / "tfds"), class_set="affectnet7",
                     val_fraction=0.2)
    bundle = load_bundle(cfg, seed=0)  # contempt dropped, crops resized to 32x32
    assert bundle.train.images.shape[1:] == (32, 32, 3)
    assert 7 not in bundle.train.labels and len(bundle.test) == 2
    assert any("class not in class set: 1" in n for n in bundle.notes)


def test_rafdb_builder_loads_with_manual_dir_kwargs(tmp_path):
    import ferkeras.data.tfds_builders  # noqa: F401

    manual = write_rafdb(tmp_path / "basic")
    datasets, info = tfds.load(
        "ferkeras_rafdb",
        data_dir=str(tmp_path / "tfds"),
        with_info=True,
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(manual_dir=str(manual))
        },
    )
    assert info.features["label"].names[0] == "surprise"
    train, test = _examples(datasets["train"]), _examples(datasets["test"])
    assert [int(ex["label"]) for ex in train] == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    assert [int(ex["label"]) for ex in test] == [3, 6]
    assert train[0]["image"].shape == (20, 20, 3) and train[0]["image"].dtype == np.uint8


def test_builder_without_data_explains(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual/README").write_text("nothing here")
    with pytest.raises(ValueError, match="no fer2013.csv"):
        _prepare("ferkeras_fer2013", tmp_path / "manual", tmp_path / "tfds")
