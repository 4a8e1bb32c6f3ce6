"""Checks shared by the file-based sources: image headers, decompression bombs, path escapes.

Every image a source lists is probed here before training starts, so a corrupt, empty,
missing, truncated or absurdly large file is skipped and counted up front instead of
crashing `tf.data` halfway through an epoch. The probe reads the header with PIL (which
gives width and height without decoding pixels), rejects huge sizes before any decode, runs
`Image.verify()` and, for JPEG, checks for the end-of-image marker: `tf.io.decode_image`
fails on a JPEG cut short by even two bytes, while PIL's `verify()` accepts it.

Formats: JPEG, PNG, BMP, GIF and WebP are accepted (what `tf.io.decode_image` decodes; the
pipeline must pass `expand_animations=False`). TIFF is refused: TensorFlow cannot decode it.
A file whose content differs from its extension (a PNG named .jpg) is accepted, because
`tf.io.decode_image` reads by content; sources count such files in a note.

`read_csv_rows` is the CSV reader every list file goes through: errors name file and row.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import os
import pathlib
import posixpath
import warnings
import zlib

import numpy as np

# Largest accepted side and area, checked from the header before any pixel is decoded.
MAX_IMAGE_SIDE = 10_000
MAX_IMAGE_PIXELS = 50_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# PIL format name -> extensions it usually carries; these are the formats tf.io decodes.
DECODABLE_FORMATS = {
    "JPEG": (".jpg", ".jpeg"),
    "PNG": (".png",),
    "BMP": (".bmp",),
    "GIF": (".gif",),
    "WEBP": (".webp",),
}
_JPEG_TAIL_BYTES = 4096


class ImageCheckError(ValueError):
    """An image file cannot be used; the message is the reason recorded in `Split.skipped`."""


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What the header says: size in pixels, PIL format, and whether the extension fits."""

    width: int
    height: int
    format: str
    extension_matches: bool


def probe_image(
    path: str | os.PathLike,
    *,
    max_side: int | None = None,
    max_pixels: int | None = None,
) -> ImageInfo:
    """Check one image file without decoding its pixels; raise ImageCheckError if unusable.

    max_side, max_pixels: size limits; None reads MAX_IMAGE_SIDE / MAX_IMAGE_PIXELS.
    """
    from PIL import Image

    max_side = MAX_IMAGE_SIDE if max_side is None else max_side
    max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels

    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageCheckError("missing file") from None
    except OSError as err:
        raise ImageCheckError(f"unreadable file ({err.strerror})") from None
    if not path.is_file():
        raise ImageCheckError("not a regular file")
    if size == 0:
        raise ImageCheckError("empty file (0 bytes)")
    with warnings.catch_warnings():
        # Our own limits are stricter than PIL's bomb warning; its error is caught below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                width, height = img.size
                fmt = img.format or "unknown"
                _check_size(width, height, max_side=max_side, max_pixels=max_pixels)
                img.verify()
        except ImageCheckError:
            raise
        except Image.DecompressionBombError as err:
            raise ImageCheckError(f"image too large, possible decompression bomb ({err})") from None
        except Exception as err:  # PIL raises many types on malformed data; record the reason.
            raise ImageCheckError(f"not a readable image ({type(err).__name__}: {err})") from None
    if fmt not in DECODABLE_FORMATS:
        raise ImageCheckError(f"format {fmt} cannot be decoded by tf.io.decode_image")
    if fmt == "JPEG" and not _has_jpeg_end(path, size):
        raise ImageCheckError("truncated JPEG (no end-of-image marker)")
    return ImageInfo(
        width=width,
        height=height,
        format=fmt,
        extension_matches=path.suffix.lower() in DECODABLE_FORMATS[fmt],
    )


def _check_size(width: int, height: int, *, max_side: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageCheckError(f"invalid image size {width}x{height}")
    if max(width, height) > max_side or width * height > max_pixels:
        raise ImageCheckError(
            f"image too large ({width}x{height} px; limits: side {max_side}, "
            f"area {max_pixels}), possible decompression bomb"
        )


def _has_jpeg_end(path: pathlib.Path, size: int) -> bool:
    # 0xFFD9 cannot occur inside entropy-coded data (0xFF is stuffed), so finding it near the
    # end means the scan was not cut short; trailing bytes after it are tolerated.
    with open(path, "rb") as f:
        f.seek(max(0, size - _JPEG_TAIL_BYTES))
        return b"\xff\xd9" in f.read()


@dataclasses.dataclass
class ProbeResult:
    """Outcome of `probe_images` for N files.

    ok:         (N,) bool, usable files.
    sizes:      (N, 2) int32 width, height; -1 where not ok.
    skipped:    (path, reason) for every file that is not ok, in input order.
    mismatched: number of ok files whose content format differs from the extension.
    """

    ok: np.ndarray
    sizes: np.ndarray
    skipped: list[tuple[str, str]]
    mismatched: int


def probe_images(
    paths,
    *,
    max_side: int | None = None,
    max_pixels: int | None = None,
    workers: int = 8,
) -> ProbeResult:
    """Probe many image files (threads: the work is mostly file I/O). paths: (N,) str."""
    paths = [str(p) for p in paths]
    ok = np.zeros(len(paths), dtype=bool)
    sizes = np.full((len(paths), 2), -1, dtype=np.int32)
    skipped, mismatched = [], 0

    def _one(path):
        try:
            return probe_image(path, max_side=max_side, max_pixels=max_pixels)
        except ImageCheckError as err:
            return str(err)

    if len(paths) > 64 and workers > 1:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_one, paths, chunksize=64))
    else:
        results = [_one(p) for p in paths]
    for i, (path, result) in enumerate(zip(paths, results, strict=True)):
        if isinstance(result, str):
            skipped.append((path, result))
            continue
        ok[i] = True
        sizes[i] = (result.width, result.height)
        mismatched += not result.extension_matches
    return ProbeResult(ok=ok, sizes=sizes, skipped=skipped, mismatched=mismatched)


def resolve_inside(root: str | os.PathLike, relative: str) -> pathlib.Path | None:
    """`root / relative`, or None if `relative` is absolute or climbs out of `root`.

    The check is lexical (backslashes count as separators); symbolic links inside the
    dataset folder are trusted, since datasets are often assembled from linked folders.
    """
    rel = relative.strip().replace("\\", "/")
    if not rel or rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return None
    norm = posixpath.normpath(rel)
    if norm == ".." or norm.startswith("../") or norm == ".":
        return None
    return pathlib.Path(root) / norm


def expand_boxes(boxes: np.ndarray, sizes: np.ndarray, *, margin: float) -> np.ndarray:
    """Grow face boxes by `margin` of their size on each side and clip them to the image.

    boxes: (N, 4) x, y, w, h (float or int); sizes: (N, 2) image width, height.
    Returns (N, 4) int32 x, y, w, h of the final crop; a row of -1 where the clipped box is
    empty or the input box has a non-positive side.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    if margin < 0:
        raise ValueError(f"margin must be >= 0. Received: margin={margin}")
    x, y, w, h = boxes.T
    x0 = np.floor(x - margin * w)
    y0 = np.floor(y - margin * h)
    x1 = np.ceil(x + w + margin * w)
    y1 = np.ceil(y + h + margin * h)
    x0, x1 = np.clip(x0, 0, sizes[:, 0]), np.clip(x1, 0, sizes[:, 0])
    y0, y1 = np.clip(y0, 0, sizes[:, 1]), np.clip(y1, 0, sizes[:, 1])
    out = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    bad = (w <= 0) | (h <= 0) | (out[:, 2] <= 0) | (out[:, 3] <= 0) | ~np.isfinite(out).all(1)
    out[bad] = -1
    return out.astype(np.int32)


def skip_note(source: str, split: str, skipped: list[tuple[str, str]]) -> str | None:
    """One-line note counting skipped samples by reason, or None if nothing was skipped."""
    if not skipped:
        return None
    reasons: dict[str, int] = {}
    for _, reason in skipped:
        key = reason.split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return f"{source} {split}: skipped {len(skipped)} unusable sample(s) ({detail})."


def _read_text(path: pathlib.Path) -> tuple[str, bool]:
    """The file's text (gunzipped by magic number) and whether its gzip stream was cut short."""
    data, truncated = path.read_bytes(), False
    if data[:2] == b"\x1f\x8b":
        parts = []
        while data:
            unzip = zlib.decompressobj(wbits=47)
            try:
                parts.append(unzip.decompress(data))
            except zlib.error as err:
                raise ValueError(f"{path}: corrupt gzip data ({err}).") from None
            truncated, data = not unzip.eof, unzip.unused_data
            if truncated:
                break
        data = b"".join(parts)
    try:
        return data.decode("utf-8"), truncated
    except UnicodeDecodeError as err:
        row = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}: row {row}: not UTF-8 text ({err.reason}).") from None


def read_csv_rows(path, required: tuple[str, ...]):
    """Yield (row number, {column: value}) per data row; the header is row 1, names stripped.

    Lines are split on commas directly (fast); a line holding a quote goes through `csv`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"CSV file not found. Received: {str(path)!r}")
    text, truncated = _read_text(path)
    lines = text.split("\n")
    header = [h.strip() for h in _split_line(lines[0].rstrip("\r"))]
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: row 1 (header) lacks column(s) {missing}. Received: {header}")
    last = 1
    for number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line:
            continue
        row = _split_line(line)
        if len(row) != len(header):
            raise ValueError(
                f"{path}: row {number}: expected {len(header)} fields ({header}), "
                f"got {len(row)} (truncated or malformed row)."
            )
        last = number
        yield number, dict(zip(header, row, strict=True))
    if truncated:
        raise ValueError(f"{path}: gzip stream ends early after row {last} (truncated file).")


def _split_line(line: str) -> list[str]:
    return next(csv.reader([line])) if '"' in line else line.split(",")
