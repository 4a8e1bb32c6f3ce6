"""The embedded synthetic face dataset: class profiles, label noise, bundles, image folders.

`make_synthetic_bundle(cfg, seed=...)` draws a long-tailed, optionally noisy training split
and balanced, clean validation and test splits of procedurally drawn faces (see
`ferkeras.data.draw`). True labels are always kept in `Split.true_labels`.
`write_image_folder` writes a bundle in the image-folder layout the folder loader reads.
"""

from __future__ import annotations

import csv
import os
import pathlib
import shutil
import sys
import tempfile

import numpy as np

from ferkeras.data.draw import render_faces, sample_face_params
from ferkeras.data.table import DatasetBundle, Split
from ferkeras.labels import get_class_names

# AffectNet training-set counts per expression (Mollahosseini et al., 2017).
AFFECTNET_COUNTS = {
    "happy": 134415,
    "neutral": 74874,
    "sad": 25459,
    "anger": 24882,
    "surprise": 14090,
    "fear": 6378,
    "disgust": 3803,
    "contempt": 3750,
}
# Head-to-tail order of the 'factor' profile (AffectNet's frequency order).
FACTOR_ORDER = tuple(AFFECTNET_COUNTS)
PROFILES = ("affectnet", "uniform", "factor")
NOISE_KINDS = ("symmetric", "asymmetric")
# Asymmetric noise: each class flips to the first target present in the class set.
ASYMMETRIC_TARGETS = {
    "neutral": ("sad", "anger"),
    "happy": ("contempt", "neutral"),
    "sad": ("neutral",),
    "surprise": ("fear",),
    "fear": ("surprise",),
    "disgust": ("anger",),
    "anger": ("disgust",),
    "contempt": ("happy",),
}


def allocate_counts(n: int, weights) -> np.ndarray:
    """Split `n` into (K,) int64 counts proportional to `weights`, each at least 1.

    Largest-remainder rule (ties to the lower class id), so counts sum exactly to n and
    each is within one of its quota n * w / sum(w); a class whose quota rounds to zero then
    takes one sample from the largest class.
    """
    weights = np.asarray(weights, dtype=np.float64)
    k = len(weights)
    if k == 0 or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum. Received: {weights}")
    if n < k:
        raise ValueError(f"Need at least one sample per class ({k}). Received: n={n}")
    quota = n * weights / weights.sum()
    counts = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    for c in np.flatnonzero(counts == 0):
        counts[np.argmax(counts)] -= 1
        counts[c] = 1
    return counts


def profile_counts(n: int, class_names, *, profile: str, imbalance: float = 10.0) -> np.ndarray:
    """(K,) int64 per-class counts of `n` training samples under a class-imbalance profile.

    affectnet: AffectNet training proportions (AFFECTNET_COUNTS) of the classes present.
    uniform:   equal shares.
    factor:    geometric decay from head to tail in FACTOR_ORDER, head/tail = imbalance.
    """
    if profile == "affectnet":
        weights = [AFFECTNET_COUNTS[c] for c in class_names]
    elif profile == "uniform":
        weights = np.ones(len(class_names))
    elif profile == "factor":
        if imbalance < 1.0:
            raise ValueError(f"imbalance must be >= 1. Received: imbalance={imbalance}")
        ranks = np.argsort(np.argsort([FACTOR_ORDER.index(c) for c in class_names]))
        weights = float(imbalance) ** (-ranks / max(len(class_names) - 1, 1))
    else:
        raise ValueError(f"Unknown profile. Valid: {PROFILES}. Received: profile={profile!r}")
    return allocate_counts(n, weights)


def noise_transitions(class_names, *, kind: str) -> np.ndarray:
    """(K, K) row-stochastic matrix: where a flipped sample of each class goes.

    symmetric: uniformly to any other class. asymmetric: to the first target of
    ASYMMETRIC_TARGETS present in `class_names` (fear<->surprise, disgust<->anger,
    sad<->neutral, contempt<->happy; happy->neutral when there is no contempt).
    """
    k = len(class_names)
    if kind == "symmetric":
        return (np.ones((k, k)) - np.eye(k)) / max(k - 1, 1)
    if kind != "asymmetric":
        raise ValueError(f"Unknown noise kind. Valid: {NOISE_KINDS}. Received: kind={kind!r}")
    names = tuple(class_names)
    out = np.zeros((k, k))
    for i, name in enumerate(names):
        target = next((t for t in ASYMMETRIC_TARGETS.get(name, ()) if t in names), None)
        if target is None:
            raise ValueError(f"No asymmetric noise target for class {name!r} in {names}")
        out[i, names.index(target)] = 1.0
    return out


def inject_label_noise(labels, *, rate: float, kind: str, class_names, seed: int,
                       capacity: float = 0.5) -> np.ndarray:
    """Flip `labels` (N,) at rate `rate`; return (N,) int32 noisy labels.

    symmetric: each sample flips with probability `rate` to a uniformly drawn other class.
    asymmetric: each class spends a flip budget of rate * n_a on its confusable targets
    (ASYMMETRIC_TARGETS, in order), but no class receives more flipped-in samples than
    `capacity` * its own size. Without that cap, under the AffectNet profile, 30% of happy
    flipped into contempt would outnumber the true contempt faces 10 to 1 and "contempt"
    would mean "happy face"; with it, every given label stays mostly right and the excess
    goes to the next confusable target (happy -> neutral). Classes are served smallest
    first. On balanced data the realised rate equals `rate`; on very imbalanced data it can
    fall below it, and the synthetic source reports the realised rate.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1). Received: rate={rate}")
    labels = np.asarray(labels, dtype=np.int32)
    k = len(class_names)
    rng = np.random.default_rng([seed, 2])
    if kind == "symmetric":
        trans = noise_transitions(class_names, kind=kind) * rate + np.eye(k) * (1 - rate)
    else:
        noise_transitions(class_names, kind=kind)  # validates kind and targets
        names = tuple(class_names)
        counts = np.bincount(labels, minlength=k).astype(float)
        room = capacity * counts
        trans = np.eye(k)
        for a in np.argsort(counts, kind="stable"):
            budget = rate * counts[a]
            for target in ASYMMETRIC_TARGETS.get(names[a], ()):
                if target not in names or budget <= 0 or counts[a] == 0:
                    continue
                b = names.index(target)
                take = min(budget, room[b])
                trans[a, b] += take / counts[a]
                trans[a, a] -= take / counts[a]
                room[b] -= take
                budget -= take
    # Inverse-CDF draw of each sample's (possibly unchanged) class from its row.
    cdf = np.cumsum(trans, axis=1)
    pick = rng.random(len(labels))[:, None]
    return np.minimum((pick >= cdf[labels]).sum(axis=1), k - 1).astype(np.int32)


def draw_faces(
    labels,
    class_names,
    *,
    size: int = 48,
    seed: int = 0,
    chunk_size: int = 1000,
    progress: bool = False,
    desc: str = "synth",
) -> np.ndarray:
    """Draw one face per entry of `labels` (N,): (N, size, size) uint8 greyscale images.

    The result depends on `seed` and `labels` only, never on `chunk_size`.
    """
    if not 16 <= size <= 512:
        raise ValueError(f"size must be in [16, 512]. Received: size={size}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive. Received: chunk_size={chunk_size}")
    from tqdm import tqdm

    labels = np.asarray(labels)
    params = sample_face_params(labels, class_names, seed=seed)
    out = np.empty((len(labels), size, size), np.uint8)
    with tqdm(
        total=len(labels), disable=not progress, file=sys.stderr, unit="img", desc=desc
    ) as bar:
        for start in range(0, len(labels), chunk_size):
            stop = min(start + chunk_size, len(labels))
            out[start:stop] = render_faces(params, size=size, start=start, stop=stop, seed=seed)
            bar.update(stop - start)
    return out


def _shuffled_labels(counts, rng) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int32)


def make_synthetic_bundle(cfg, *, seed: int, progress: bool = False) -> DatasetBundle:
    """A DatasetBundle of synthetic faces from a `DataConfig` (uses cfg.synthetic).

    train: profile-imbalanced, labels noisy per cfg.synthetic.noise, true_labels clean.
    val / test: balanced (counts differ by at most one) and clean; test is None when
    n_test is 0. Images are (N, image_size, image_size, channels) uint8.
    """
    syn = cfg.synthetic
    names = get_class_names(cfg.class_set)
    if cfg.channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3. Received: channels={cfg.channels}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative. Received: seed={seed}")
    k = len(names)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(7)]
    splits = {}
    for i, (split, n) in enumerate(
        [("train", syn.n_train), ("val", syn.n_val), ("test", syn.n_test)]
    ):
        if split == "test" and n == 0:
            splits[split] = None
            continue
        if split == "train":
            counts = profile_counts(n, names, profile=syn.profile, imbalance=syn.imbalance)
        else:
            counts = allocate_counts(n, np.ones(k))
        true = _shuffled_labels(counts, np.random.default_rng(seeds[2 * i]))
        images = draw_faces(
            true,
            names,
            size=cfg.image_size,
            seed=seeds[2 * i + 1],
            progress=progress,
            desc=f"synth {split}",
        )[..., None]
        if cfg.channels == 3:
            images = np.repeat(images, 3, axis=-1)
        labels = true
        if split == "train" and syn.noise > 0:
            labels = inject_label_noise(
                true, rate=syn.noise, kind=syn.noise_type, class_names=names, seed=seeds[6]
            )
        splits[split] = Split(labels=labels, images=images, true_labels=true)
    realised = float(np.mean(splits["train"].labels != splits["train"].true_labels))
    n_test = 0 if splits["test"] is None else len(splits["test"])
    note = (
        f"synthetic: {syn.n_train} train (noise {syn.noise:.2f} {syn.noise_type}, "
        f"realised {realised:.3f}), {syn.n_val} val, {n_test} test"
    )
    return DatasetBundle(
        class_names=names,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        source="synthetic",
        notes=[note],
    )


def write_image_folder(bundle: DatasetBundle, out_dir, *, progress: bool = False) -> pathlib.Path:
    """Write `bundle` as out_dir/{train,val,test}/<class>/<index:06d>.png plus true_labels.csv.

    The class folder is the given (possibly noisy) label; each split's true_labels.csv
    has `path,label,true_label` (path relative to the split folder, class names). Built
    in a temporary folder beside out_dir and renamed into place; refuses a non-empty
    out_dir. Returns out_dir.
    """
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"Refusing to write into non-empty {out_dir}; pick a new folder.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        for name in ("train", "val", "test"):
            split = getattr(bundle, name)
            if split is not None:
                _write_split(split, bundle.class_names, tmp / name, progress=progress)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _write_split(split: Split, class_names, root: pathlib.Path, *, progress: bool) -> None:
    """One split folder: a PNG per sample under its given class, and true_labels.csv."""
    from PIL import Image
    from tqdm import tqdm

    if split.images is None:
        raise ValueError(f"write_image_folder needs in-memory images; {root.name} has paths.")
    for c in class_names:
        (root / c).mkdir(parents=True)
    true = split.labels if split.true_labels is None else split.true_labels
    rows = []
    items = tqdm(
        enumerate(split.images),
        total=len(split),
        disable=not progress,
        file=sys.stderr,
        unit="img",
        desc=f"write {root.name}",
    )
    for i, image in items:
        rel = f"{class_names[split.labels[i]]}/{i:06d}.png"
        pixels = image[..., 0] if image.shape[-1] == 1 else image
        Image.fromarray(pixels).save(root / rel, compress_level=1)
        rows.append((rel, class_names[split.labels[i]], class_names[true[i]]))
    with open(root / "true_labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("path", "label", "true_label"))
        writer.writerows(rows)
