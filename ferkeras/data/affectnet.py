"""AffectNet, in either of its two common layouts.

official:   Manually_Annotated_file_lists/{training,validation}.csv with columns
            subDirectory_filePath, face_x, face_y, face_width, face_height,
            facial_landmarks, expression, valence, arousal; images under
            Manually_Annotated_Images/<subDirectory_filePath> (also looked for under
            Manually_Annotated/). `boxes` hold the face box grown by `data.face_margin` on
            each side and clipped to the image: the final crop, x, y, w, h in pixels.
            With `data.align_faces` (default), the 68 `facial_landmarks` (x1;y1;...;x68;y68)
            give each face its aligned crop instead (`warps`: eyes level, framed as FER2013
            frames its faces, the crop `ferkeras predict` takes: `ferkeras.data.alignment`);
            a row whose landmarks are missing or malformed keeps its box (counted in notes).
repackaged: {train_set,val_set}/images/<id>.jpg with annotations/<id>_exp.npy (plus _val,
            _aro, _lnd, unused); faces are already cropped, so `boxes` is None. The .npy files
            are loaded with allow_pickle=False.

validation.csv / val_set is the TEST split (AffectNet's test set is private); the validation
split is carved from training (stratified, seeded), whatever `data.missing_split` says.
Codes 8-10 (none, uncertain, no-face) are always excluded and counted; 7 (contempt) is
dropped under affectnet7. A CSV path that is absolute or climbs out of the image folder
(`../`) is refused: the row is skipped, recorded in `Split.skipped` and counted in notes.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from ferkeras.data.images import (
    expand_boxes,
    probe_images,
    read_csv_rows,
    resolve_inside,
    skip_note,
)
from ferkeras.data.sources import assemble_bundle, code_lookup, dropped_note
from ferkeras.data.table import Split
from ferkeras.labels import AFFECTNET_CODES, AFFECTNET_EXCLUDED_CODES, get_class_names

LISTS_DIR = "Manually_Annotated_file_lists"
IMAGE_DIRS = ("Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images")
CSV_SPLITS = {"train": "training.csv", "test": "validation.csv"}
NPY_SPLITS = {"train": "train_set", "test": "val_set"}
_BOX_COLUMNS = ("face_x", "face_y", "face_width", "face_height")
_ALL_CODES = {**AFFECTNET_CODES, **{c: None for c in AFFECTNET_EXCLUDED_CODES}}


def detect_affectnet_layout(root) -> str:
    """'official' or 'repackaged'; ValueError naming `root` when neither is there."""
    root = pathlib.Path(root)
    if (root / LISTS_DIR / CSV_SPLITS["train"]).is_file():
        return "official"
    if (root / NPY_SPLITS["train"] / "annotations").is_dir():
        return "repackaged"
    raise ValueError(
        f"No AffectNet layout found: expected {LISTS_DIR}/training.csv or "
        f"train_set/annotations/ under data.root. Received: root={str(root)!r}"
    )


def _label_rows(codes, class_names, *, source, what):
    """Class ids for AffectNet codes (-1 dropped) and a note counting the drops."""
    ids = code_lookup(_ALL_CODES, class_names)[codes] if len(codes) else np.zeros(0, np.int32)
    names = {**AFFECTNET_CODES, **AFFECTNET_EXCLUDED_CODES}
    dropped = {
        f"code {c} ({names[c]})": int((codes == c).sum())
        for c in np.unique(codes[ids < 0])
    }
    note = dropped_note(source, f"{what} (codes 8-10 are always excluded)", dropped)
    return ids, note


def parse_landmarks(text: str) -> np.ndarray:
    """(68, 2) from AffectNet's 'x1;y1;...;x68;y68'; all NaN when empty or malformed."""
    try:
        values = np.array([float(v) for v in text.strip().split(";")], np.float64)
    except ValueError:
        values = np.zeros(0)
    if values.size != 136 or not np.all(np.isfinite(values)):
        return np.full((68, 2), np.nan)
    return values.reshape(68, 2)


def _read_affectnet_csv(path, images_dir: pathlib.Path):
    """Rows of one official CSV: (paths, boxes (N, 4) float, codes (N,), refused,
    landmarks (N, 68, 2), NaN where missing)."""
    paths, boxes, codes, refused, landmarks = [], [], [], [], []
    for line, row in read_csv_rows(path, ("subDirectory_filePath", "expression") + _BOX_COLUMNS):
        code = row["expression"].strip()
        if not code.lstrip("-").isdigit() or int(code) not in _ALL_CODES:
            raise ValueError(
                f"{path}: row {line}: expression must be an integer code 0-10. "
                f"Received: {code!r}"
            )
        box = []
        for col in _BOX_COLUMNS:
            try:
                value = float(row[col])
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ValueError(f"{path}: row {line}: {col} must be a number. Received: "
                                 f"{row[col]!r}")
            box.append(value)
        target = resolve_inside(images_dir, row["subDirectory_filePath"])
        if target is None:
            refused.append((row["subDirectory_filePath"], "path escapes the dataset root"))
            continue
        paths.append(str(target.absolute()))
        boxes.append(box)
        codes.append(int(code))
        landmarks.append(parse_landmarks(row.get("facial_landmarks", "")))
    return (paths, np.array(boxes, np.float64).reshape(-1, 4), np.array(codes, np.int64),
            refused, np.array(landmarks, np.float64).reshape(-1, 68, 2))


def read_affectnet_official(root, *, class_names, face_margin: float, source="affectnet",
                            align_faces: bool = False):
    """{"train", "test"} Splits with paths and final crop boxes (and, with align_faces,
    aligned-crop `warps` from the landmarks), plus notes."""
    from ferkeras.data.alignment import landmark_warps

    root = pathlib.Path(root)
    images_dir = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), root / IMAGE_DIRS[0])
    splits, notes = {}, []
    for split, name in CSV_SPLITS.items():
        path = root / LISTS_DIR / name
        if not path.is_file():
            notes.append(f"{source}: {path} not found; no {split} split.")
            continue
        paths, boxes, codes, refused, landmarks = _read_affectnet_csv(path, images_dir)
        labels, note = _label_rows(codes, class_names, source=source, what=name)
        notes.append(note)
        keep = labels >= 0
        paths, boxes, labels = np.array(paths, dtype=str)[keep], boxes[keep], labels[keep]
        landmarks = landmarks[keep]
        probe = probe_images(paths)
        crops = expand_boxes(boxes, np.maximum(probe.sizes, 0), margin=face_margin)
        empty = probe.ok & (crops[:, 0] < 0)
        skipped = refused + probe.skipped
        skipped += [(p, "face box outside the image") for p in paths[empty]]
        ok = probe.ok & ~empty
        notes.append(skip_note(source, name, skipped))
        if probe.mismatched:
            notes.append(f"{source} {name}: {probe.mismatched} file(s) whose content format "
                         "differs from the extension (accepted; decoded by content).")
        warps = None
        if align_faces:
            warps = landmark_warps(landmarks[ok])
            boxed = int((warps[:, 0] <= 0).sum())
            notes.append(f"{source} {name}: {int(ok.sum()) - boxed} face(s) aligned from their "
                         f"landmarks" + (f"; {boxed} without usable landmarks keep their face "
                                         "box." if boxed else "."))
        splits[split] = Split(
            labels=labels[ok], paths=paths[ok], boxes=crops[ok], warps=warps, skipped=skipped
        )
    return splits, notes


def _load_code(path: pathlib.Path) -> int:
    value = np.load(path, allow_pickle=False)
    if value.size != 1:
        raise ValueError(f"expected one value, got shape {value.shape}")
    item = value.reshape(()).item()
    if isinstance(item, float) and not item.is_integer():
        raise ValueError(f"non-integer code {item!r}")
    code = int(item)
    if code not in _ALL_CODES:
        raise ValueError(f"code {code} outside 0-10")
    return code


def read_affectnet_repackaged(root, *, class_names, source="affectnet"):
    """{"train", "test"} Splits from train_set/ and val_set/ (pre-cropped), plus notes."""
    root = pathlib.Path(root)
    splits, notes = {}, []
    for split, folder in NPY_SPLITS.items():
        images_dir, ann_dir = root / folder / "images", root / folder / "annotations"
        if not ann_dir.is_dir():
            notes.append(f"{source}: {ann_dir} not found; no {split} split.")
            continue
        images = {p.stem: p for p in images_dir.glob("*") if p.is_file()}
        labels_of = {p.name[: -len("_exp.npy")]: p for p in ann_dir.glob("*_exp.npy")}
        paths, codes, skipped = [], [], []
        for key in sorted(set(images) | set(labels_of)):
            if key not in images:
                skipped.append((str(labels_of[key]), "missing image"))
                continue
            if key not in labels_of:
                skipped.append((str(images[key]), "missing annotation (_exp.npy)"))
                continue
            try:
                codes.append(_load_code(labels_of[key]))
            except (ValueError, OSError, EOFError) as err:
                skipped.append((str(labels_of[key]), f"bad annotation ({err})"))
                continue
            paths.append(str(images[key].absolute()))
        labels, note = _label_rows(np.array(codes, np.int64), class_names, source=source,
                                   what=folder)
        notes.append(note)
        paths = np.array(paths, dtype=str)[labels >= 0]
        labels = labels[labels >= 0]
        probe = probe_images(paths)
        skipped += probe.skipped
        notes.append(skip_note(source, folder, skipped))
        splits[split] = Split(labels=labels[probe.ok], paths=paths[probe.ok], skipped=skipped)
    return splits, notes


def read_affectnet_splits(root, *, class_names, face_margin: float, source="affectnet",
                          align_faces: bool = False):
    """Whichever layout `root` holds, as ({"train", "test"} Splits, notes)."""
    if detect_affectnet_layout(root) == "official":
        return read_affectnet_official(
            root, class_names=class_names, face_margin=face_margin, source=source,
            align_faces=align_faces)
    return read_affectnet_repackaged(root, class_names=class_names, source=source)


def load_affectnet(cfg, *, seed: int):
    """Source `affectnet`: validation.csv is the test split; val is carved from training."""
    class_names = get_class_names(cfg.class_set)
    splits, notes = read_affectnet_splits(
        cfg.root, class_names=class_names, face_margin=cfg.face_margin,
        align_faces=cfg.align_faces)
    return assemble_bundle(
        splits, cfg=cfg, seed=seed, source="affectnet", class_names=class_names, notes=notes,
        always_carve=True,
    )
