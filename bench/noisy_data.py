"""FER2013 + FERPlus tables and the benchmark's fixed row split, shared by the noise benches.

Joined by ROW POSITION (the data README: names drift after row 59). PublicTest is halved,
stratified on the FER2013 label with seed 0: the first half is validation (and, with FERPlus
labels, the trusted rows), the second the reported half, scored once against FERPlus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib

import numpy as np


@dataclasses.dataclass
class Tables:
    """All rows. images (N, 48, 48, 1) uint8; fer, plus (N,) int32 (plus = FERPlus majority,
    -1 none); usage (N,) str; dup_in_train (N,) bool; votes (N, 10) int FERPlus votes."""

    images: np.ndarray
    fer: np.ndarray
    plus: np.ndarray
    usage: np.ndarray
    dup_in_train: np.ndarray
    votes: np.ndarray


def load_tables(data: pathlib.Path, cache: pathlib.Path) -> Tables:
    """Parse both CSVs under `data` once (cached as .npz at `cache`)."""
    fer_csv = data / "fer2013" / "fer2013.csv.gz"
    plus_csv = data / "ferplus" / "fer2013new.csv"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return Tables(**{k: z[k] for k in z.files})
    for f in (fer_csv, plus_csv):
        if not f.is_file():
            raise SystemExit(f"{f}: not found (pass --data FOLDER holding fer2013/ and ferplus/)")
    from ferkeras.data.fer2013 import ferplus_labels, read_fer2013_csv, read_ferplus_csv
    from ferkeras.data.sources import code_lookup
    from ferkeras.labels import FER2013_CODES, get_class_names

    names = get_class_names("fer2013")
    table = read_fer2013_csv(fer_csv)
    plus_table = read_ferplus_csv(plus_csv)
    if len(plus_table.votes) != len(table.emotions) or (plus_table.usage != table.usage).any():
        raise SystemExit(f"{fer_csv} and {plus_csv} are not row-aligned.")
    fer = code_lookup(FER2013_CODES, names)[table.emotions].astype(np.int32)
    plus, _ = ferplus_labels(plus_table.votes, class_names=names, mode="majority")
    plus[plus_table.names == ""] = -1
    digests = np.array([hashlib.sha1(img.tobytes()).hexdigest() for img in table.images])
    train_hashes = set(digests[table.usage == "Training"])
    dup = np.array([d in train_hashes for d in digests]) & (table.usage != "Training")
    tables = Tables(images=table.images[..., None], fer=fer, plus=plus.astype(np.int32),
                    usage=table.usage.astype(str), dup_in_train=dup,
                    votes=np.asarray(plus_table.votes, dtype=np.int16))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    with open(tmp, "wb") as fh:
        np.savez(fh, **dataclasses.asdict(tables))
    tmp.replace(cache)
    return tables


def split_rows(t: Tables, *, limit_train: int = 0, seed: int = 0) -> dict:
    """Row positions: train, val half, reported half (before dropping no-majority rows)."""
    from ferkeras.data.table import stratified_holdout

    train = np.flatnonzero(t.usage == "Training")
    if limit_train and limit_train < len(train):
        _, pick = stratified_holdout(t.fer[train], fraction=limit_train / len(train), seed=seed)
        train = train[pick]
    public = np.flatnonzero(t.usage == "PublicTest")
    keep, hold = stratified_holdout(t.fer[public], fraction=0.5, seed=seed)
    return {"train": train, "val": public[keep], "reported": public[hold]}


def fake_tables(*, n_train: int = 600, n_public: int = 200, seed: int = 0) -> Tables:
    """Tiny FER2013 + FERPlus tables in the real layout, for smoke runs (no shared data):
    brightness codes the class, 30 % of the FER2013 labels are flipped, FERPlus votes put 8
    of 10 on the true class (one row in 50 without a majority)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_public
    plus = rng.integers(0, 7, n).astype(np.int32)
    base = (plus * 30 + 40).astype(np.float64)
    images = np.clip(base[:, None, None, None] + rng.normal(0, 12, (n, 48, 48, 1)), 0, 255)
    fer = np.where(rng.random(n) < 0.3, (plus + rng.integers(1, 7, n)) % 7, plus)
    # FERPlus vote columns: neutral, happiness, surprise, sadness, anger, disgust, fear, ...
    column = np.array([4, 5, 6, 1, 3, 2, 0])[plus]
    votes = np.zeros((n, 10), np.int16)
    votes[np.arange(n), column] = 8
    votes[np.arange(n), 8] = 2
    none = rng.random(n) < 0.02
    votes[none] = 0
    votes[none, 0], votes[none, 3] = 5, 5
    contempt = (rng.random(n) < 0.05) & ~none  # FERPlus-only class: no FER2013 majority
    votes[contempt] = 0
    votes[contempt, 7], votes[contempt, 8] = 8, 2
    plus = np.where(none | contempt, -1, plus).astype(np.int32)
    usage = np.array(["Training"] * n_train + ["PublicTest"] * n_public)
    return Tables(images=images.astype(np.uint8), fer=fer.astype(np.int32), plus=plus,
                  usage=usage, dup_in_train=np.zeros(n, bool), votes=votes)


def ood_truth(votes: np.ndarray) -> dict:
    """FERPlus's "not a face / unknown" rows, the ground truth of OOD detection (PNP).

    votes: (N, 10) FERPlus vote counts in `FERPLUS_VOTE_COLUMNS` order (8 expressions, then
    `unknown`, `NF`). As for the FERPlus majority label, votes of 1 are first dropped as
    outliers (`ferplus_winner`). With o = unknown + NF votes and T = all remaining votes:
    - strict (N,) bool: 2 * o > T, unknown and NF together hold the majority;
    - blocked (N,) bool: no column has a majority (2 * max < T), yet the top expression holds
      a majority of the expression votes alone (2 * max_expr > T - o): the row has no usable
      majority BECAUSE of its unknown/NF votes;
    - broad = strict | blocked. Rows with no votes left are neither.
    """
    from ferkeras.data.fer2013 import FERPLUS_VOTE_COLUMNS

    cols = list(FERPLUS_VOTE_COLUMNS)
    u, nf = cols.index("unknown"), cols.index("NF")
    v = np.where(np.asarray(votes) <= 1, 0, np.asarray(votes)).astype(np.int64)
    total, o = v.sum(1), v[:, u] + v[:, nf]
    expr = np.delete(v, [u, nf], axis=1)
    strict = 2 * o > total
    blocked = ~strict & (2 * v.max(1) <= total) & (2 * expr.max(1) > total - o) & (o > 0)
    return {"strict": strict, "blocked": blocked, "broad": strict | blocked}
