"""`ferkeras data synth` and `ferkeras data sheet`: write a synthetic face folder, view it.

Thin click commands over `ferkeras.data.synthetic` and `ferkeras.data.sheet`; the library
modules are imported inside the commands so `--help` stays fast (no TensorFlow anywhere).
"""

from __future__ import annotations

import pathlib
import time

import click


@click.command("synth")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="New (or empty) folder to write train/val/test image folders into.",
)
@click.option(
    "--n",
    "n_train",
    default=20000,
    show_default=True,
    type=click.IntRange(min=8),
    help="Training images.",
)
@click.option(
    "--n-val",
    default=800,
    show_default=True,
    type=click.IntRange(min=8),
    help="Validation images (balanced, clean).",
)
@click.option(
    "--n-test",
    default=1600,
    show_default=True,
    type=click.IntRange(min=0),
    help="Test images (balanced, clean); 0 for none.",
)
@click.option(
    "--noise",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 0.95),
    help="Label noise rate in the training split.",
)
@click.option(
    "--noise-type",
    default="asymmetric",
    show_default=True,
    type=click.Choice(["symmetric", "asymmetric"]),
)
@click.option(
    "--profile",
    default="affectnet",
    show_default=True,
    type=click.Choice(["affectnet", "uniform", "factor"]),
    help="Class imbalance of the training split.",
)
@click.option(
    "--imbalance",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Head/tail ratio for --profile factor.",
)
@click.option(
    "--class-set",
    default="affectnet8",
    show_default=True,
    type=click.Choice(["affectnet8", "affectnet7"]),
)
@click.option(
    "--size",
    default=48,
    show_default=True,
    type=click.IntRange(16, 512),
    help="Image side in pixels.",
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--layout",
    default="folder",
    show_default=True,
    type=click.Choice(["folder", "affectnet"]),
    help="folder: <split>/<class>/*.png at --size. affectnet: AffectNet's official layout "
    "(file-list CSVs with face boxes and landmarks, RGB JPEGs in numbered sub-folders, "
    "validation.csv = --n-test balanced test rows); --size, --n-val, --profile and "
    "--class-set do not apply (the real 8-class proportions are used).",
)
@click.option(
    "--sides",
    default="256,640",
    show_default=True,
    help="affectnet layout: min,max image side in pixels (drawn log-uniformly).",
)
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="affectnet layout: parallel processes (0: one per CPU).",
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr."
)
def synth(
    out_dir,
    n_train,
    n_val,
    n_test,
    noise,
    noise_type,
    profile,
    imbalance,
    class_set,
    size,
    seed,
    layout,
    sides,
    workers,
    progress,
):
    """Draw a synthetic face dataset and write it as an image folder with true labels."""
    if layout == "affectnet":
        _synth_affectnet(out_dir, n_train=n_train, n_test=n_test, noise=noise,
                         noise_type=noise_type, seed=seed, sides=sides, workers=workers,
                         progress=progress)
        return
    import numpy as np

    from ferkeras.data.synthetic import make_synthetic_bundle, write_image_folder
    from ferkeras.training.recipe import DataConfig, SyntheticConfig

    out = pathlib.Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise click.UsageError(f"--out {out} exists and is not empty; pick a new folder.")
    cfg = DataConfig(
        class_set=class_set,
        image_size=size,
        channels=1,
        synthetic=SyntheticConfig(
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            profile=profile,
            imbalance=imbalance,
            noise=noise,
            noise_type=noise_type,
        ),
    )
    start = time.perf_counter()
    try:
        bundle = make_synthetic_bundle(cfg, seed=seed, progress=progress)
        write_image_folder(bundle, out, progress=progress)
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err).splitlines()[0]) from None
    seconds = time.perf_counter() - start
    train = bundle.train
    given = train.class_counts(bundle.num_classes)
    true = np.bincount(train.true_labels, minlength=bundle.num_classes)
    per_class = ", ".join(
        f"{c} {t}/{g}" for c, t, g in zip(bundle.class_names, true, given, strict=True)
    )
    realised = float((train.labels != train.true_labels).mean())
    n_test_written = 0 if bundle.test is None else len(bundle.test)
    click.echo(
        f"wrote {out}: train {len(train)} (true/given: {per_class}), realised noise {realised:.3f} "
        f"({noise_type}), val {len(bundle.val)}, test {n_test_written}, {seconds:.1f} s"
    )


def _synth_affectnet(out_dir, *, n_train, n_test, noise, noise_type, seed, sides, workers,
                     progress):
    from ferkeras.data.affectnet_synth import write_affectnet_layout

    try:
        lo, hi = (int(v) for v in sides.split(","))
    except ValueError:
        raise click.BadParameter(f"expected two integers min,max. Received: {sides!r}",
                                 param_hint="--sides") from None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_train + n_test, unit="img", desc="synth affectnet")

    def _tick(done, total):
        bar.update(done - bar.n)

    try:
        info = write_affectnet_layout(out_dir, n_train=n_train, n_test=n_test, noise=noise,
                                      noise_type=noise_type, seed=seed, sides=(lo, hi),
                                      workers=workers or None,
                                      progress=_tick if bar is not None else None)
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err).splitlines()[0]) from None
    finally:
        if bar is not None:
            bar.close()
    counts = ", ".join(f"{k} {v}" for k, v in info["train_counts"].items())
    click.echo(f"wrote {out_dir} (AffectNet official layout): training.csv {info['n_train']} "
               f"rows ({counts}), validation.csv {info['n_test']} rows, "
               f"{info['bytes'] / 1e6:.1f} MB, {info['seconds']:.1f} s")


@click.command("sheet")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    "out_png",
    default="sheet.png",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="PNG file to write.",
)
@click.option(
    "--split",
    default="train",
    show_default=True,
    help="Split sub-folder of FOLDER (used when FOLDER has one).",
)
@click.option(
    "--per-class",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images per class row.",
)
def sheet(folder, out_png, split, per_class):
    """Write a PNG contact sheet of FOLDER (a `data synth` output or a class-folder split)."""
    from ferkeras.data.sheet import read_image_folder_for_sheet, write_contact_sheet

    root = pathlib.Path(folder)
    split_dir = root / split
    if not split_dir.is_dir():
        if any((root / s).is_dir() for s in ("train", "val", "test")):
            raise click.UsageError(f"{root} has no split folder {split!r}.")
        split_dir = root
    try:
        data, names = read_image_folder_for_sheet(split_dir, per_class=per_class)
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err).splitlines()[0]) from None
    captions = None
    if data.true_labels is not None and (data.labels != data.true_labels).any():
        captions = [
            f"true: {names[t]}" if t >= 0 and t != g else ""
            for g, t in zip(data.labels, data.true_labels, strict=True)
        ]
    try:
        path = write_contact_sheet(
            data.images,
            data.labels,
            names,
            out_png,
            per_class=per_class,
            title=f"{split_dir} (rows: given label)",
            captions=captions,
        )
    except OSError as err:  # SheetWriteError: read-only path, full disk
        raise click.ClickException(str(err).splitlines()[0]) from None
    click.echo(f"wrote {path}: {len(data)} images, {len(names)} classes")
