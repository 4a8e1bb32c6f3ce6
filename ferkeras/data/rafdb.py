"""RAF-DB basic: `EmoLabel/list_patition_label.txt` + `Image/aligned/<stem>_aligned.jpg`.

List lines are `train_00001.jpg 5` / `test_0001.jpg 3`, labels 1-7 = surprise, fear,
disgust, happy, sad, anger, neutral (RAFDB_CODES). `test_*` rows are the test split; the
validation split is carved from training (stratified, seeded), whatever
`data.missing_split` says. `data.root` may be the basic/ folder or its parent.

`data.noisy_labels`: a file in the same `name label` format (the flipped-label files FER
noise papers publish). For training rows it lists, its label becomes the training label and
the list's label becomes `true_labels`; training rows it does not list keep their label
(true label = the same, counted in notes); test rows in it are ignored (the test split keeps
the clean labels and has no true_labels). A name it lists that the partition list lacks is a
ValueError (wrong file). Image names must be plain file names: a name with a folder part
(`../x.jpg`) is refused, skipped and counted.
"""

from __future__ import annotations

import pathlib

import numpy as np

from ferkeras.data.images import probe_images, skip_note
from ferkeras.data.sources import assemble_bundle, code_lookup, dropped_note
from ferkeras.data.table import Split
from ferkeras.labels import RAFDB_CODES, get_class_names

LIST_FILE = "EmoLabel/list_patition_label.txt"
ALIGNED_DIRS = ("Image/aligned", "aligned")


def read_rafdb_list(path) -> dict[str, int]:
    """{image name: label code 1-7} from a `name label` file; ValueError naming the row."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"RAF-DB label file not found. Received: {str(path)!r}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason}).") from None
    labels = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        code = fields[1] if len(fields) == 2 else ""
        if not code.isdigit() or int(code) not in RAFDB_CODES:
            raise ValueError(
                f"{path}: row {number}: expected '<name> <label 1-7>'. Received: {line!r}"
            )
        if fields[0] in labels:
            raise ValueError(f"{path}: row {number}: duplicate name {fields[0]!r}.")
        labels[fields[0]] = int(code)
    if not labels:
        raise ValueError(f"{path}: no rows.")
    return labels


def find_rafdb_root(root) -> pathlib.Path:
    """The folder holding EmoLabel/: `root` or `root/basic`."""
    root = pathlib.Path(root)
    for candidate in (root, root / "basic"):
        if (candidate / LIST_FILE).is_file():
            return candidate
    raise ValueError(
        f"No RAF-DB basic layout found: expected {LIST_FILE} under data.root or "
        f"data.root/basic. Received: root={str(root)!r}"
    )


def _apply_noisy(names, codes, noisy_path, all_names, source):
    """(given codes, true codes) for training rows and a note."""
    noisy = read_rafdb_list(noisy_path)
    unknown = sorted(set(noisy) - set(all_names))
    if unknown:
        raise ValueError(
            f"{noisy_path}: {len(unknown)} name(s) not in the RAF-DB partition list, e.g. "
            f"{unknown[:3]}; is this the right noisy-label file?"
        )
    given = np.array([noisy.get(n, c) for n, c in zip(names, codes, strict=True)], np.int64)
    missing = sum(n not in noisy for n in names)
    note = (
        f"{source}: training labels from {noisy_path} ({int((given != codes).sum())} of "
        f"{len(codes)} differ from the original, which become true_labels"
        + (f"; {missing} training rows absent from it keep their label)." if missing else ").")
    )
    return given, note


def read_rafdb_splits(root, *, class_names, noisy_labels="", source="rafdb"):
    """{"train", "test"} Splits of aligned-image paths, plus notes."""
    base = find_rafdb_root(root)
    listing = read_rafdb_list(base / LIST_FILE)
    aligned = next((base / d for d in ALIGNED_DIRS if (base / d).is_dir()), base / ALIGNED_DIRS[0])
    lut = code_lookup(RAFDB_CODES, class_names)
    splits, notes = {}, []
    for split in ("train", "test"):
        names = [n for n in listing if n.startswith(split)]
        codes = np.array([listing[n] for n in names], np.int64)
        true_codes = None
        if split == "train" and noisy_labels:
            codes, note = _apply_noisy(names, codes, noisy_labels, listing, source)
            true_codes = np.array([listing[n] for n in names], np.int64)
            notes.append(note)
        labels = lut[codes] if len(codes) else np.zeros(0, np.int32)
        refused = [(n, "path escapes the dataset root") for n in names if "/" in n or "\\" in n]
        keep = (labels >= 0) & np.array([("/" not in n and "\\" not in n) for n in names], bool)
        notes.append(dropped_note(source, split, {"label not in class set":
                                                  int((labels < 0).sum())}))
        paths = np.array(
            [str((aligned / f"{pathlib.Path(n).stem}_aligned.jpg").absolute()) for n in names],
            dtype=str,
        )[keep]
        probe = probe_images(paths)
        skipped = refused + probe.skipped
        notes.append(skip_note(source, split, skipped))
        true = None if true_codes is None else lut[true_codes][keep][probe.ok]
        splits[split] = Split(
            labels=labels[keep][probe.ok], paths=paths[probe.ok], true_labels=true,
            skipped=skipped,
        )
    unsplit = [n for n in listing if not n.startswith(("train", "test"))]
    if unsplit:
        notes.append(f"{source}: ignored {len(unsplit)} list row(s) named neither train_* nor "
                     f"test_*, e.g. {unsplit[:3]}.")
    return splits, notes


def load_rafdb(cfg, *, seed: int):
    """Source `rafdb`: test_* rows are the test split; val is carved from training."""
    class_names = get_class_names(cfg.class_set)
    splits, notes = read_rafdb_splits(
        cfg.root, class_names=class_names, noisy_labels=cfg.noisy_labels
    )
    return assemble_bundle(
        splits, cfg=cfg, seed=seed, source="rafdb", class_names=class_names, notes=notes,
        always_carve=True,
    )
