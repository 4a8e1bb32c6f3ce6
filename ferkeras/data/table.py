"""Host-side sample tables: what every data source returns before tf.data takes over.

A `Split` holds per-sample arrays indexed by sample position; that position is the
`sample_index` the pipeline yields, so per-sample tables (losses, clean probabilities,
true labels) line up with it everywhere.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Split:
    """One split of a dataset.

    Exactly one of `images` or `paths` is set:
      images: (N, H, W, C) uint8, in memory (synthetic faces, FER2013 CSV).
      paths:  (N,) str, image files decoded by the pipeline (AffectNet, RAF-DB, folders).
    labels:      (N,) int32, the given label (possibly noisy), a class id of the bundle.
    true_labels: (N,) int32 or None; -1 where the true label is unknown.
    soft_labels: (N, K) float32 or None (FERPlus vote distribution).
    boxes:       (N, 4) int32 or None; face box x, y, w, h in pixels, -1 row for none.
    weights:     (N,) float32 or None; per-row weight in the supervised loss (None = all 1;
                 trusted rows that join the training set, `trusted.train_weight`).
    warps:       (N, 9) float32 or None; an aligned crop per row (eyes level, FER2013
                 framing: `ferkeras.data.alignment.landmark_warps`), used instead of the
                 box; a row of -1 keeps the box.
    skipped:     (file, reason) for each sample the source dropped (corrupt, missing...).
    """

    labels: np.ndarray
    images: np.ndarray | None = None
    paths: np.ndarray | None = None
    true_labels: np.ndarray | None = None
    soft_labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    weights: np.ndarray | None = None
    warps: np.ndarray | None = None
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int32)
        if (self.images is None) == (self.paths is None):
            raise ValueError("A Split needs exactly one of `images` or `paths`.")
        n = len(self.labels)
        for name in ("images", "paths", "true_labels", "soft_labels", "boxes", "weights",
                     "warps"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(
                    f"Split.{name} has {len(value)} rows but labels has {n}."
                )
        if self.true_labels is not None:
            self.true_labels = np.asarray(self.true_labels, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Split:
        """A new Split with the rows `index` (int array or boolean mask), renumbered from 0."""
        index = np.asarray(index)
        take = {
            f.name: (getattr(self, f.name)[index] if getattr(self, f.name) is not None else None)
            for f in dataclasses.fields(self)
            if f.name != "skipped"
        }
        return Split(**take, skipped=list(self.skipped))

    def concat(self, other: Split) -> Split:
        """This split's rows, then `other`'s (both in memory or both file paths). A per-row
        table only one side has is filled on the other: true_labels / boxes with -1; soft
        labels are kept only when both sides have them."""
        if (self.images is None) != (other.images is None):
            raise ValueError("Split.concat needs both splits in memory or both as file paths.")

        def both(name, fill=None):
            a, b = getattr(self, name), getattr(other, name)
            if a is None and b is None:
                return None
            if a is None or b is None:
                if fill is None:
                    return None
                ref = a if a is not None else b
                pad = lambda n: np.full((n, *ref.shape[1:]), fill, ref.dtype)  # noqa: E731
                a = a if a is not None else pad(len(self))
                b = b if b is not None else pad(len(other))
            return np.concatenate([a, b])

        return Split(labels=np.concatenate([self.labels, other.labels]),
                     images=both("images"), paths=both("paths"),
                     true_labels=both("true_labels", -1), soft_labels=both("soft_labels"),
                     boxes=both("boxes", -1), weights=both("weights", 1.0),
                     warps=both("warps", -1.0),
                     skipped=list(self.skipped) + list(other.skipped))

    def class_counts(self, num_classes: int) -> np.ndarray:
        """(K,) int64 count of given labels per class."""
        return np.bincount(self.labels, minlength=num_classes)


@dataclasses.dataclass
class DatasetBundle:
    """A dataset as the trainer sees it: class names and train / validation / test splits.

    `val` selects models and epochs; `test` is scored once, at the end, and may be None.
    `notes` holds one-line messages for the user (rows dropped, splits that fell back).
    """

    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split | None
    source: str
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def check_classes(self) -> None:
        """Raise if a class has no training sample: class-balanced losses would divide by zero."""
        counts = self.train.class_counts(self.num_classes)
        empty = [name for name, c in zip(self.class_names, counts, strict=True) if c == 0]
        if empty:
            raise ValueError(
                f"{self.source}: class(es) {empty} have no training samples after filtering; "
                "list the classes your data has in data.class_names (e.g. CK+: anger,"
                "contempt,disgust,fear,happy,sadness,surprise) or check the data."
            )


def stratified_holdout(
    labels: np.ndarray, *, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample positions into (keep, holdout), stratified by label and seeded.

    labels: (N,) int. Each class gives round(fraction * count) samples, at least one
    when it has two or more, to the holdout. Returns two sorted int64 index arrays.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1). Received: fraction={fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    hold = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        hold.append(rng.permutation(idx)[:k])
    holdout = np.sort(np.concatenate(hold)) if hold else np.zeros(0, np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), holdout)
    return keep, holdout
