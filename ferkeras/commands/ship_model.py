"""`ferkeras ship EXPORT_DIR`: quantize an export to int8 and install it as the shipped model.

    ferkeras ship bench/.work/shipped/export            # data from ../shared/data
    python -m ferkeras.commands.ship_model EXPORT_DIR --data /path/to/data --dest DIR

Steps: calibrate onnxruntime's static int8 quantization on `--calibration-images` FER2013
Training faces (a seeded sample of `fer2013/fer2013.csv.gz` under `--data`); score the float
and the int8 model on the reported half of PublicTest against the FERPlus majority (the
split `bench/noisy_fer2013.py` and `bench/inference.py` report on: `stratified_holdout`
of PublicTest's FER2013 labels, fraction 0.5, seed 0, second half); refuse when int8 loses
more than `--max-drop` points; bake test-time flip averaging into the int8 graph
(`ferkeras.deploy.flip_average`, `--flip-average`, on by default); then write model.onnx +
metadata.json (no machine paths: `run_dir` made relative) + SHA256SUMS into `--dest`
(default: the package's `ferkeras/pretrained/ferplus8/`, next to its MODEL_CARD.md).
"""

from __future__ import annotations

import pathlib

import click
import numpy as np

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
FER2013_FILE = pathlib.Path("fer2013") / "fer2013.csv.gz"
FERPLUS_FILE = pathlib.Path("ferplus") / "fer2013new.csv"


def read_tables(data_root):
    """(FER2013 table, FERPlus table) from a data folder laid out as ../shared/data."""
    from ferkeras.data.fer2013 import read_fer2013_csv, read_ferplus_csv

    root = pathlib.Path(data_root)
    fer_csv, plus_csv = root / FER2013_FILE, root / FERPLUS_FILE
    for path in (fer_csv, plus_csv):
        if not path.is_file():
            raise click.ClickException(f"{path}: not found (pass --data, the folder holding "
                                       f"{FER2013_FILE} and {FERPLUS_FILE})")
    table, plus = read_fer2013_csv(fer_csv), read_ferplus_csv(plus_csv)
    if len(table.emotions) != len(plus.votes):
        raise click.ClickException(f"{fer_csv} and {plus_csv} have different row counts "
                                   f"({len(table.emotions)} vs {len(plus.votes)})")
    return table, plus


def model_inputs(images, *, size: int, channels: int) -> np.ndarray:
    """(N, size, size, channels) float32 model inputs from (N, h, w[, C]) images."""
    from ferkeras.deploy.faces import prepare_face

    return np.stack([prepare_face(image, size=size, channels=channels) for image in images])


def calibration_rows(usage: np.ndarray, *, count: int, seed: int) -> np.ndarray:
    """`count` Training rows (sorted), drawn without replacement with `seed`."""
    train = np.flatnonzero(usage == "Training")
    if not len(train):
        raise ValueError("the FER2013 table has no Training rows to calibrate on")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(train, size=min(count, len(train)), replace=False))


def reported_half(table) -> np.ndarray:
    """Rows of PublicTest's reported half: `stratified_holdout(FER2013 labels of PublicTest,
    fraction=0.5, seed=0)`, second index set (as bench/noisy_fer2013.py)."""
    from ferkeras.data.table import stratified_holdout

    public = np.flatnonzero(table.usage == "PublicTest")
    _, report = stratified_holdout(table.emotions[public], fraction=0.5, seed=0)
    return public[report]


def ferplus_majority(plus, class_names) -> np.ndarray:
    """(N,) FERPlus majority label as ids of `class_names`, -1 where none is in the set."""
    from ferkeras.data.fer2013 import ferplus_labels

    labels, _ = ferplus_labels(plus.votes, class_names=tuple(class_names), mode="majority")
    return labels


@click.command("ship")
@click.argument("export_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--data", "data_root", default=str(DEFAULT_DATA), show_default=True,
              type=click.Path(path_type=str),
              help="Folder with fer2013/fer2013.csv.gz and ferplus/fer2013new.csv.")
@click.option("--dest", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Where to install model.onnx + metadata.json [ferkeras/pretrained/ferplus8].")
@click.option("--calibration-images", default=1024, show_default=True,
              type=click.IntRange(1, None), help="FER2013 Training faces to calibrate on.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the calibration sample.")
@click.option("--method", default="minmax", show_default=True,
              type=click.Choice(["minmax", "entropy", "percentile"]),
              help="Calibration method of onnxruntime.quantization.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True,
              help="Weight scales per output channel or per tensor.")
@click.option("--max-drop", default=0.005, show_default=True, type=click.FloatRange(0, 1),
              help="Refuse to install when int8 accuracy is this much below float's "
                   "(0.005 = half a point).")
@click.option("--no-check", is_flag=True,
              help="Skip the float-vs-int8 accuracy check on PublicTest's reported half.")
@click.option("--flip-average/--no-flip-average", default=True, show_default=True,
              help="Average each face's probabilities with its mirror's inside the model "
                   "(one batch of 2 per face: twice the model's compute).")
def ship(export_dir, data_root, dest, calibration_images, seed, method, per_channel,
         max_drop, no_check, flip_average) -> None:
    """Quantize EXPORT_DIR to int8 (calibrated on FER2013 Training) and install it."""
    import os
    import tempfile

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    from ferkeras.deploy.flip_average import bake_flip_average
    from ferkeras.deploy.inference import ModelFolderError, read_metadata
    from ferkeras.deploy.quantize import quantize_export
    from ferkeras.pretrained import HASH_FILE, SHIPPED_DIR, finalize_shipped

    try:
        meta = read_metadata(export_dir)
    except ModelFolderError as err:
        raise click.ClickException(str(err)) from None
    size, channels, names = meta["image_size"], meta["channels"], meta["class_names"]
    table, plus = read_tables(data_root)
    rows = calibration_rows(table.usage, count=calibration_images, seed=seed)
    calibration = model_inputs(table.images[rows], size=size, channels=channels)
    check = None
    if not no_check:
        half = reported_half(table)
        labels = ferplus_majority(plus, names)[half]
        check = (model_inputs(table.images[half], size=size, channels=channels), labels)
    dest = pathlib.Path(dest) if dest else SHIPPED_DIR
    with tempfile.TemporaryDirectory(prefix="ferkeras-ship-") as tmp:
        staged = pathlib.Path(tmp) / "int8"
        try:
            new_meta = quantize_export(
                export_dir, staged, calibration, method=method, per_channel=per_channel,
                calibration_source=f"{len(rows)} FER2013 Training faces (seed {seed}) from "
                                   f"{FER2013_FILE}", check=check)
        except (ModelFolderError, ValueError, OSError) as err:
            raise click.ClickException(f"quantization failed: {err}") from None
        info = new_meta["quantization"]
        click.echo(f"int8: {info['float_onnx_bytes']} -> {info['int8_onnx_bytes']} bytes, "
                   f"calibrated on {info['calibration_images']} Training faces ({method})")
        result = info.get("check")
        if result:
            click.echo(f"PublicTest reported half vs FERPlus majority (n={result['n']}): float "
                       f"{result['float_acc']:.4f}, int8 {result['int8_acc']:.4f}, int8 - float "
                       f"{result['int8_minus_float_acc']:+.4f}, top-1 agreement "
                       f"{result['top1_agreement']:.4f}")
            if result["int8_minus_float_acc"] < -max_drop:
                raise click.ClickException(
                    f"int8 loses {-result['int8_minus_float_acc']:.4f} accuracy (> --max-drop "
                    f"{max_drop}); not installed. Try --method entropy or more calibration "
                    "images.")
        if flip_average:
            bake_flip_average(staged)
            click.echo("test-time flip averaging baked into the int8 graph")
        finalize_shipped(staged)
        try:
            dest.mkdir(parents=True, exist_ok=True)
            for name in ("model.onnx", "metadata.json", HASH_FILE):
                _copy(staged / name, dest / name)
        except OSError as err:
            raise click.ClickException(f"cannot install into {dest} "
                                       f"({err.strerror or err})") from None
    click.echo(f"installed {dest / 'model.onnx'}, metadata.json and {HASH_FILE}; fill the "
               f"measured figures into {dest / 'MODEL_CARD.md'} (python bench/model_card.py)")


def _copy(src: pathlib.Path, dst: pathlib.Path) -> None:
    import os
    import shutil

    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


if __name__ == "__main__":
    ship()
