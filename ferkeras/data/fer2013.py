"""FER2013 (`emotion,pixels,Usage` CSV) and FERPlus (10 crowd votes per FER2013 row).

The two files are joined by ROW POSITION. FERPlus's `Image name` column is never used for the
join: after row 59 the names drift from the row index. The row counts and the `Usage` column
of every row must agree, otherwise the join is refused.

Splits: `Training` -> train, `PublicTest` -> val, `PrivateTest` -> test. A split absent from
the file is noted; a missing validation split is carved from training or raises (per
`data.missing_split`), a missing test split leaves `bundle.test = None`.

Sources:
  fer2013: labels = FER2013's own (noisy) labels; with `data.ferplus_path`, true_labels =
           the FERPlus majority label (-1 where there is none or it is not in the class set).
  ferplus: labels = the FERPlus label in `data.label_mode`; rows without one are dropped and
           counted. true_labels equal labels (FERPlus is the reference). FER2013's original
           labels against FERPlus: use source fer2013 with `data.ferplus_path`.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from ferkeras.data.images import read_csv_rows
from ferkeras.data.sources import assemble_bundle, code_lookup, dropped_note
from ferkeras.data.table import Split
from ferkeras.labels import FER2013_CODES, FERPLUS_COLUMNS, class_names_for

FER2013_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
FER2013_FILES = ("fer2013.csv", "fer2013.csv.gz")
FERPLUS_FILES = ("fer2013new.csv", "fer2013new.csv.gz")
FERPLUS_VOTE_COLUMNS = tuple(col for col, _ in FERPLUS_COLUMNS)
LABEL_MODES = ("majority", "plurality", "probability")
_SIDE = 48


@dataclasses.dataclass
class FER2013Table:
    """A parsed FER2013 CSV: images (N, 48, 48) uint8, emotions (N,) int8 codes 0-6,
    usage (N,) str."""

    images: np.ndarray
    emotions: np.ndarray
    usage: np.ndarray


@dataclasses.dataclass
class FERPlusTable:
    """A parsed fer2013new.csv: usage (N,) str, names (N,) str ('' where FERPlus has no
    image), votes (N, 10) int32 in FERPLUS_VOTE_COLUMNS order."""

    usage: np.ndarray
    names: np.ndarray
    votes: np.ndarray


def _parse_int(value: str, *, path, line: int, name: str, low: int, high: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ValueError(
            f"{path}: row {line}: {name} must be an integer in [{low}, {high}]. "
            f"Received: {value!r}"
        )
    return number


def _parse_pixels(text: str, *, path, line: int) -> np.ndarray:
    try:
        pixels = np.fromstring(text, dtype=np.int32, sep=" ")
    except ValueError:
        pixels = None
    if pixels is None or pixels.size != _SIDE * _SIDE:
        raise ValueError(
            f"{path}: row {line}: pixels must be {_SIDE * _SIDE} space-separated integers. "
            f"Received: {len(text.split())} token(s) starting {text[:30]!r}"
        )
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(
            f"{path}: row {line}: pixel values must be in [0, 255]. "
            f"Received: min={pixels.min()}, max={pixels.max()}"
        )
    return pixels.astype(np.uint8).reshape(_SIDE, _SIDE)


def read_fer2013_csv(path) -> FER2013Table:
    """Parse a FER2013 CSV (plain or .gz). Raises ValueError naming the file and row of the
    first bad field. Without a `Usage` column every row is `Training`."""
    images, emotions, usage = [], [], []
    for line, row in read_csv_rows(path, ("emotion", "pixels")):
        emotions.append(
            _parse_int(row["emotion"], path=path, line=line, name="emotion", low=0, high=6)
        )
        images.append(_parse_pixels(row["pixels"], path=path, line=line))
        use = row.get("Usage", "Training").strip()
        if use not in FER2013_USAGE:
            raise ValueError(
                f"{path}: row {line}: Usage must be one of {list(FER2013_USAGE)}. "
                f"Received: {use!r}"
            )
        usage.append(use)
    if not images:
        raise ValueError(f"{path}: no data rows.")
    return FER2013Table(
        images=np.stack(images),
        emotions=np.array(emotions, dtype=np.int8),
        usage=np.array(usage),
    )


def read_ferplus_csv(path) -> FERPlusTable:
    """Parse fer2013new.csv; vote counts must be integers in [0, 100]."""
    usage, names, votes = [], [], []
    for line, row in read_csv_rows(path, ("Usage", "Image name") + FERPLUS_VOTE_COLUMNS):
        usage.append(row["Usage"].strip())
        names.append(row["Image name"].strip())
        votes.append(
            [
                _parse_int(row[c], path=path, line=line, name=f"vote {c}", low=0, high=100)
                for c in FERPLUS_VOTE_COLUMNS
            ]
        )
    if not votes:
        raise ValueError(f"{path}: no data rows.")
    return FERPlusTable(
        usage=np.array(usage), names=np.array(names), votes=np.array(votes, dtype=np.int32)
    )


def ferplus_winner(votes: np.ndarray, *, mode: str) -> np.ndarray:
    """Winning FERPlus column per row, or -1 where the row has no label in `mode`.

    votes: (N, 10) int, FERPLUS_VOTE_COLUMNS order. Classes with a single vote are first
    dropped as outliers (FERPlus paper). majority: the column with MORE than half of the
    remaining votes. plurality: the column with the most remaining votes; a tie for the top
    means no label. probability: the top column (ties go to the earlier column, so an
    expression wins a tie with unknown/NF). Returns (N,) int64.
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}. Received: mode={mode!r}")
    v = np.where(np.asarray(votes) <= 1, 0, votes)
    top, arg, total = v.max(axis=1), v.argmax(axis=1), v.sum(axis=1)
    if mode == "majority":
        ok = 2 * top > total
    elif mode == "plurality":
        ok = (top > 0) & ((v == top[:, None]).sum(axis=1) == 1)
    else:
        ok = top > 0
    return np.where(ok, arg, -1)


def ferplus_labels(votes: np.ndarray, *, class_names, mode: str):
    """FERPlus labels as class ids of `class_names`.

    votes: (N, 10) int. Returns (labels (N,) int32, -1 where the row has no label or its
    winner is not in the class set (contempt, unknown, NF); soft (N, K) float32 in
    probability mode, the single-vote-filtered vote share of each class, else None).
    In probability mode labels = argmax(soft).
    """
    winner = ferplus_winner(votes, mode=mode)
    lut = code_lookup(dict(enumerate(canon for _, canon in FERPLUS_COLUMNS)), class_names)
    labels = np.where(winner >= 0, lut[np.maximum(winner, 0)], -1).astype(np.int32)
    if mode != "probability":
        return labels, None
    v = np.where(np.asarray(votes) <= 1, 0, votes).astype(np.float32)
    columns = [int(np.flatnonzero(lut == k)[0]) for k in range(len(class_names))]
    in_set = v[:, columns]
    total = in_set.sum(axis=1, keepdims=True)
    soft = np.divide(in_set, total, out=np.zeros_like(in_set), where=total > 0)
    labels = np.where((labels >= 0) & (total[:, 0] > 0), soft.argmax(axis=1), -1)
    return labels.astype(np.int32), soft


def _check_aligned(table: FER2013Table, plus: FERPlusTable, csv_path, plus_path) -> None:
    if len(plus.votes) != len(table.emotions):
        raise ValueError(
            f"{plus_path} has {len(plus.votes)} rows but {csv_path} has {len(table.emotions)}; "
            "FERPlus joins FER2013 by row position, so both must list the same rows in order."
        )
    bad = np.flatnonzero(plus.usage != table.usage)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{plus_path} row {i + 2} has Usage {str(plus.usage[i])!r} but {csv_path} row {i + 2} "
            f"has {str(table.usage[i])!r}: the files are not row-aligned ({bad.size} rows differ)."
        )


def _drop_reasons(winner, labels, has_image, mode) -> dict[str, int]:
    reasons = {"no FERPlus image": int((~has_image).sum())}
    reasons[f"no {mode} label"] = int((has_image & (winner < 0)).sum())
    outside = has_image & (winner >= 0) & (labels < 0)
    for col in np.unique(winner[outside]):
        reasons[f"{mode} is {FERPLUS_VOTE_COLUMNS[col]}"] = int((winner[outside] == col).sum())
    return reasons


def _to_splits(table, keep, labels, *, true_labels=None, soft=None, source, path):
    splits, notes = {}, []
    for usage, name in FER2013_USAGE.items():
        rows = np.flatnonzero((table.usage == usage) & keep)
        if not (table.usage == usage).any():
            notes.append(f"{source}: {pathlib.Path(path).name} has no {usage} rows.")
        if rows.size:
            splits[name] = Split(
                images=table.images[rows][..., None],
                labels=labels[rows],
                true_labels=None if true_labels is None else true_labels[rows],
                soft_labels=None if soft is None else soft[rows],
            )
    return splits, notes


def read_fer2013_splits(csv_path, *, class_names, ferplus_path=None, source="fer2013"):
    """FER2013 rows as {"train", "val", "test"} Splits (present ones only) plus notes.

    Rows whose emotion is not in `class_names` are dropped and counted. With `ferplus_path`,
    true_labels hold the FERPlus majority (-1 where none or not in the class set).
    """
    table = read_fer2013_csv(csv_path)
    labels = code_lookup(FER2013_CODES, class_names)[table.emotions]
    notes = [
        dropped_note(source, "rows", {"emotion not in class set": int((labels < 0).sum())})
    ]
    true_labels = None
    if ferplus_path:
        plus = read_ferplus_csv(ferplus_path)
        _check_aligned(table, plus, csv_path, ferplus_path)
        true_labels, _ = ferplus_labels(plus.votes, class_names=class_names, mode="majority")
        true_labels[plus.names == ""] = -1
        notes.append(
            f"{source}: true_labels = FERPlus majority from {ferplus_path}; "
            f"{int((true_labels < 0).sum())} of {len(true_labels)} rows have none (-1)."
        )
    splits, more = _to_splits(
        table, labels >= 0, labels, true_labels=true_labels, source=source, path=csv_path
    )
    return splits, notes + more


def read_ferplus_splits(csv_path, ferplus_path, *, class_names, mode, source="ferplus"):
    """FER2013 images labelled by FERPlus votes in `mode`; rows without a label are dropped
    and counted. true_labels equal labels; soft_labels are set in probability mode."""
    table = read_fer2013_csv(csv_path)
    plus = read_ferplus_csv(ferplus_path)
    _check_aligned(table, plus, csv_path, ferplus_path)
    labels, soft = ferplus_labels(plus.votes, class_names=class_names, mode=mode)
    has_image = plus.names != ""
    keep = has_image & (labels >= 0)
    winner = ferplus_winner(plus.votes, mode=mode)
    notes = [dropped_note(source, "rows", _drop_reasons(winner, labels, has_image, mode))]
    notes.append(f"{source}: labels are FERPlus {mode} labels; true_labels equal them.")
    splits, more = _to_splits(
        table, keep, labels, true_labels=labels, soft=soft, source=source, path=csv_path
    )
    return splits, notes + more


def find_first(root: pathlib.Path, names, subdirs=("", "fer2013", "ferplus")):
    """The first existing file root/<subdir>/<name>, or None."""
    for sub in subdirs:
        for name in names:
            candidate = root / sub / name
            if candidate.is_file():
                return candidate
    return None


def load_fer2013(cfg, *, seed: int):
    """Source `fer2013`: a FER2013 CSV file, a folder holding one, or the Kaggle image
    folders (`train/<class>/*.jpg`, `test/<class>/*.jpg`)."""
    class_names = class_names_for(cfg)
    root = pathlib.Path(cfg.root)
    csv_path = root if root.is_file() else None
    if root.is_dir():
        csv_path = find_first(root, FER2013_FILES, subdirs=("", "fer2013"))
        if csv_path is None and any((root / d).is_dir() for d in ("train", "Training")):
            if cfg.ferplus_path:
                raise ValueError(
                    "data.ferplus_path needs the FER2013 CSV (rows align by position); image "
                    f"folders cannot be aligned. Received: root={cfg.root!r}"
                )
            from ferkeras.data.folder import load_folder

            return load_folder(cfg, seed=seed, source="fer2013")
    if csv_path is None:
        raise ValueError(
            "source fer2013 needs data.root = fer2013.csv(.gz), a folder holding it, or "
            f"Kaggle train/<class>/ folders. Received: root={cfg.root!r}"
        )
    splits, notes = read_fer2013_splits(
        csv_path, class_names=class_names, ferplus_path=cfg.ferplus_path or None
    )
    return assemble_bundle(
        splits, cfg=cfg, seed=seed, source="fer2013", class_names=class_names, notes=notes
    )


def find_ferplus_files(root, ferplus_path="") -> tuple[pathlib.Path, pathlib.Path]:
    """(fer2013.csv(.gz), fer2013new.csv) from a root folder or file plus optional path."""
    root = pathlib.Path(root)
    csv_path = root if root.is_file() else None
    if root.is_dir():
        csv_path = find_first(root, FER2013_FILES)
    plus = pathlib.Path(ferplus_path) if ferplus_path else None
    if plus is None and root.is_dir():
        plus = find_first(root, FERPLUS_FILES)
    if csv_path is None or plus is None or not plus.is_file():
        raise ValueError(
            "source ferplus needs fer2013.csv(.gz) and fer2013new.csv: data.root = a folder "
            "holding both (also searched in its fer2013/ and ferplus/ subfolders), or "
            "data.root = the CSV and data.ferplus_path = fer2013new.csv. "
            f"Received: root={str(root)!r}, ferplus_path={ferplus_path!r}"
        )
    return csv_path, plus


def load_ferplus(cfg, *, seed: int):
    """Source `ferplus`: FER2013 images with FERPlus labels in `cfg.label_mode`."""
    class_names = class_names_for(cfg)
    csv_path, plus = find_ferplus_files(cfg.root, cfg.ferplus_path)
    splits, notes = read_ferplus_splits(
        csv_path, plus, class_names=class_names, mode=cfg.label_mode
    )
    return assemble_bundle(
        splits, cfg=cfg, seed=seed, source="ferplus", class_names=class_names, notes=notes
    )
