"""Contact sheets: a PNG grid of example images, one row per class, optional captions.

`write_contact_sheet` takes arrays (a bundle split, or suspected label errors with captions
such as "given: fear / pred: surprise"); `read_image_folder_for_sheet` reads a split folder
written by `write_image_folder` (plain PIL, independent of the training loaders).
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np

from ferkeras.data.table import Split
from ferkeras.labels import EXPRESSIONS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class SheetWriteError(OSError):
    """The contact sheet could not be written (read-only folder, full disk, bad name)."""

_PAD = 4


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def write_contact_sheet(
    images,
    labels,
    class_names,
    out_png,
    *,
    per_class: int = 8,
    title: str | None = None,
    captions=None,
    cell: int = 96,
) -> pathlib.Path:
    """Write a PNG grid with the first `per_class` images of each class, one row per class.

    images: (N, H, W) or (N, H, W, C) uint8, C in {1, 3}. labels: (N,) class ids; the row
    is the label given here. captions: None or N strings, shown under each image (" / "
    starts a new line). Images are scaled to `cell` pixels. Returns the PNG path.
    """
    from PIL import Image, ImageDraw

    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(f"images must be (N, H, W) or (N, H, W, 1|3). Received: {images.shape}")
    if len(labels) != len(images):
        raise ValueError(f"labels has {len(labels)} rows but images has {len(images)}.")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"captions has {len(captions)} entries but images has {len(images)}.")
    if per_class < 1:
        raise ValueError(f"per_class must be positive. Received: per_class={per_class}")
    font = _font(12)
    lines = 0 if captions is None else max((len(str(c).split(" / ")) for c in captions), default=0)
    label_w = 80
    cap_h = 14 * lines
    title_h = 22 if title else 0
    row_h = cell + cap_h + _PAD
    width = label_w + per_class * (cell + _PAD) + _PAD
    height = title_h + len(class_names) * row_h + _PAD
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((_PAD, 4), title, fill="black", font=_font(14))
    for row, name in enumerate(class_names):
        y0 = title_h + _PAD + row * row_h
        picks = np.flatnonzero(labels == row)[:per_class]
        draw.text((_PAD, y0 + cell // 2 - 7), f"{name}", fill="black", font=font)
        if picks.size == 0:
            draw.text((label_w, y0 + cell // 2 - 7), "(no images)", fill="gray", font=font)
        for col, i in enumerate(picks):
            x0 = label_w + col * (cell + _PAD)
            tile = Image.fromarray(images[i]).convert("RGB").resize((cell, cell), Image.NEAREST)
            sheet.paste(tile, (x0, y0))
            if captions is not None:
                for j, text in enumerate(str(captions[i]).split(" / ")):
                    draw.text((x0, y0 + cell + 1 + 14 * j), text, fill="black", font=_font(10))
    out_png = pathlib.Path(out_png)
    try:
        out_png.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(out_png)
    except (OSError, ValueError) as err:  # read-only or full disk; ValueError: bad suffix
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise SheetWriteError(f"{out_png}: cannot write the contact sheet ({reason})") from None
    return out_png


def _class_order(names) -> tuple[str, ...]:
    """Canonical expression order when every folder is a known expression, else sorted."""
    if all(n in EXPRESSIONS for n in names):
        return tuple(n for n in EXPRESSIONS if n in names)
    return tuple(sorted(names))


def read_image_folder_for_sheet(folder, *, per_class: int | None = None) -> tuple[Split, tuple]:
    """Read `folder`/<class>/*.png (a split of `write_image_folder`) into a Split.

    Returns (split, class_names): split.images is (N, H, W, C) uint8 (all resized to the
    first image's size), labels the folder's class id, true_labels from true_labels.csv
    when the folder has one (-1 where a path is missing from it), else None. per_class
    caps the images read per class (sorted by file name).
    """
    from PIL import Image

    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Not a folder: {folder}")
    names = _class_order([p.name for p in folder.iterdir() if p.is_dir()])
    files, labels = [], []
    for c, name in enumerate(names):
        found = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found[:per_class]
        labels += [c] * len(found[:per_class])
    if not files:
        raise ValueError(f"No images in class sub-folders of {folder}")
    arrays, size = [], None
    for p in files:
        with Image.open(p) as im:
            size = size or im.size
            grey = im.mode in ("1", "L", "LA", "I;16", "I")
            pixels = np.asarray(im.convert("L" if grey else "RGB").resize(size))
            arrays.append(np.atleast_3d(pixels))
    channels = max(a.shape[-1] for a in arrays)
    stacked = np.stack([np.repeat(a, channels // a.shape[-1], axis=-1) for a in arrays])
    true = None
    table = folder / "true_labels.csv"
    if table.is_file():
        with open(table, newline="") as f:
            truth = {row["path"]: row["true_label"] for row in csv.DictReader(f)}
        index = {n: i for i, n in enumerate(names)}
        rel = [f"{p.parent.name}/{p.name}" for p in files]
        true = np.array([index.get(truth.get(r, ""), -1) for r in rel], np.int32)
    return Split(labels=np.array(labels, np.int32), images=stacked, true_labels=true), names
