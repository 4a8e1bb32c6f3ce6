"""Image folders: `root/<class>/*.jpg`, or split folders `root/{train,val,test}/<class>/...`.

Class folder names map through `ferkeras.labels.class_key`: expressions by their canonical
name (aliases such as angry, happiness, surprised), other names as themselves, so a
user-defined class list (`data.class_names`, e.g. CK+'s 7 classes) matches its folders. A
folder that names no class is reported in notes and skipped, and one naming an expression
outside the class set is dropped and counted. Files are
matched by extension, case-insensitively (IMAGE_EXTENSIONS); other files are counted in a
note, hidden files ignored. Files are listed directly inside each class folder, sorted.

Splits: `train` (or `training`), `val` / `validation` / `valid`, `test` / `testing`. Without
split folders everything is training. A missing validation split is carved from training or
raises, per `data.missing_split`; a missing test split gives `bundle.test = None`. The
Kaggle FER2013 layout (train/ + test/) is the second case.

Sidecar `<split>/true_labels.csv`, header `path,label,true_label` (path relative to the split
folder, names are class names or aliases) -> true_labels; -1 where the row is absent, empty,
or names an expression outside the class set. A `label` that disagrees with the file's class
folder is a ValueError naming the row. This is the layout `synthetic.write_image_folder`
writes.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from ferkeras.data.images import IMAGE_EXTENSIONS, probe_images, read_csv_rows, skip_note
from ferkeras.data.sources import assemble_bundle, dropped_note
from ferkeras.data.table import Split
from ferkeras.labels import canonical_name, class_key, class_names_for, resolve_class_names

SPLIT_FOLDERS = {
    "train": ("train", "training", "Training"),
    "val": ("val", "validation", "valid"),
    "test": ("test", "testing", "Test"),
}
SIDECAR = "true_labels.csv"


def find_split_folders(root) -> dict[str, pathlib.Path]:
    """{split: folder} for the split folders present under `root` (may be empty)."""
    root = pathlib.Path(root)
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found


def _read_sidecar(path: pathlib.Path, files: dict[str, int], labels, class_names):
    """true_labels (N,) int32 for the files {relative path: row}, -1 where unknown."""
    index = {name: i for i, name in enumerate(class_names)}
    true = np.full(len(labels), -1, dtype=np.int32)
    unmatched = 0
    for line, row in read_csv_rows(path, ("path", "label", "true_label")):
        rel = row["path"].strip().replace("\\", "/")
        names = {}
        for col in ("label", "true_label"):
            value = row[col].strip()
            canon = class_key(value) if value else None
            if value and canonical_name(value) is None and canon not in index:
                raise ValueError(
                    f"{path}: row {line}: {col} is not an expression name. Received: {value!r}"
                )
            names[col] = canon
        if rel not in files:
            unmatched += 1
            continue
        i = files[rel]
        if names["label"] is not None and index.get(names["label"], -1) != labels[i]:
            raise ValueError(
                f"{path}: row {line}: label {row['label']!r} disagrees with the class folder "
                f"of {rel!r} ({class_names[labels[i]]!r}); the sidecar is stale."
            )
        true[i] = index.get(names["true_label"], -1) if names["true_label"] else -1
    return true, unmatched


def read_image_folder(folder, *, class_names, source="folder"):
    """One split folder `folder/<class>/*` as (Split with paths, notes)."""
    folder = pathlib.Path(folder)
    index = {name: i for i, name in enumerate(class_names)}
    split_name = folder.name
    paths, labels, rels, notes = [], [], [], []
    unknown, outside, other = [], {}, 0
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        canon = class_key(class_dir.name)
        if canonical_name(class_dir.name) is None and canon not in index:
            unknown.append(class_dir.name)
            continue
        for path in sorted(class_dir.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                other += 1
                continue
            if canon not in index:
                reason = f"class {canon} not in class set"
                outside[reason] = outside.get(reason, 0) + 1
                continue
            paths.append(str(path.absolute()))
            labels.append(index[canon])
            rels.append(f"{class_dir.name}/{path.name}")
    if unknown:
        notes.append(
            f"{source} {split_name}: skipped folder(s) that name no expression: {unknown}."
        )
    if other:
        notes.append(f"{source} {split_name}: ignored {other} file(s) without an image "
                     f"extension {IMAGE_EXTENSIONS}.")
    notes.append(dropped_note(source, split_name, outside))
    paths, labels = np.array(paths, dtype=str), np.array(labels, dtype=np.int32)
    probe = probe_images(paths)
    notes.append(skip_note(source, split_name, probe.skipped))
    if probe.mismatched:
        notes.append(f"{source} {split_name}: {probe.mismatched} file(s) whose content format "
                     "differs from the extension (accepted; decoded by content).")
    true = None
    if (folder / SIDECAR).is_file():
        files = {rel: i for i, rel in enumerate(rels)}
        true, unmatched = _read_sidecar(folder / SIDECAR, files, labels, class_names)
        if unmatched:
            notes.append(f"{source} {split_name}: {unmatched} {SIDECAR} row(s) name no "
                         "listed image (ignored).")
        true = true[probe.ok]
    split = Split(
        labels=labels[probe.ok], paths=paths[probe.ok], true_labels=true, skipped=probe.skipped
    )
    return split, notes


def read_folder_splits(root, *, class_names, source="folder"):
    """All splits under `root` as ({"train", "val"?, "test"?} Splits, notes)."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ValueError(f"{source}: data.root must be a folder. Received: root={str(root)!r}")
    folders = find_split_folders(root)
    if not folders:
        folders = {"train": root}
    elif "train" not in folders:
        raise ValueError(
            f"{source}: split folders {sorted(folders)} found under {root} but no train/ "
            f"(expected one of {SPLIT_FOLDERS['train']})."
        )
    splits, notes = {}, []
    for split, folder in folders.items():
        splits[split], more = read_image_folder(folder, class_names=class_names, source=source)
        notes += more
    return splits, notes


def load_folder(cfg, *, seed: int, source: str = "folder"):
    """Source `folder` (and fer2013's Kaggle image layout): class folders, optionally split."""
    class_names = class_names_for(cfg)
    splits, notes = read_folder_splits(cfg.root, class_names=class_names, source=source)
    return assemble_bundle(
        splits, cfg=cfg, seed=seed, source=source, class_names=class_names, notes=notes
    )


@dataclasses.dataclass
class ImageFolder:
    """`load_image_folder`'s result: class names and (x, y) arrays per split.

    x: (N, S, S, C) float32 pixels in [0, 255]; y: (N,) int32 class ids into `class_names`.
    `test` is None when the folder has no test split. `notes` says what was skipped.
    """

    class_names: tuple[str, ...]
    train: tuple
    val: tuple
    test: tuple | None
    notes: list


def load_image_folder(root, *, class_names, image_size: int = 48, channels: int = 1,
                      val_fraction: float = 0.1, seed: int = 0) -> ImageFolder:
    """Read `root/<class>/*` (or `root/{train,val,test}/<class>/*`) into arrays.

    Args:
        root: the folder.
        class_names: your classes, in id order, e.g. CK+'s `["anger", "contempt", "disgust",
            "fear", "happy", "sadness", "surprise"]`. Names that are expressions map onto the
            canonical names (sadness -> sad); folders are matched the same way. Other names
            (e.g. 'pain') are classes of their own.
        image_size, channels: model input side and channels (1 grey, 3 RGB).
        val_fraction: share of training carved (stratified, seeded) as validation when the
            folder has no validation split.
        seed: the carve's seed.
    """
    from ferkeras.data.pipeline import collect_images
    from ferkeras.training.recipe import DataConfig

    names = resolve_class_names(class_names)
    cfg = DataConfig(source="folder", root=str(root), class_names=",".join(names),
                     image_size=int(image_size), channels=int(channels),
                     val_fraction=float(val_fraction))
    bundle = load_folder(cfg, seed=seed)

    def arrays(split):
        if split is None:
            return None
        return collect_images(split, cfg), split.labels.astype(np.int32)

    return ImageFolder(class_names=bundle.class_names, train=arrays(bundle.train),
                       val=arrays(bundle.val), test=arrays(bundle.test), notes=bundle.notes)
