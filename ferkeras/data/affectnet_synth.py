"""Synthetic faces written in AffectNet's official on-disk layout, at any scale.

`write_affectnet_layout(out_dir, n_train=287651, ...)` writes

    Manually_Annotated_file_lists/training.csv     (n_train rows, AffectNet class proportions)
    Manually_Annotated_file_lists/validation.csv   (n_test rows, balanced: AffectNet's test)
    Manually_Annotated_Images/<sub>/<sha224>.jpg   (RGB JPEG, the face somewhere inside)
    synthetic_true_labels.csv                      (path, true code; differs under noise)

with the official columns subDirectory_filePath, face_x, face_y, face_width, face_height,
facial_landmarks (68 x;y points), expression (codes 0-7), valence, arousal, so the
`affectnet` source reads it exactly as it reads the real dataset. Each image is a face drawn
by `ferkeras.data.draw`, resized to its face box and pasted onto a larger tinted background;
image sides are drawn log-uniformly in [min_side, max_side]. AffectNet's faces average
425 x 425 px (Mollahosseini et al., 2017); the default sides (256-640 px, face box 45-75 %
of the side, ~270 px on average) are close to that at a fraction of the disk.

Chunks of `CHUNK` images are drawn and written by `workers` processes; the output depends
on `seed` only, never on the number of workers. Everything is written into a temporary
folder beside `out_dir` and renamed into place, so a killed run leaves no partial dataset.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pathlib
import shutil
import tempfile
import time

import numpy as np

from ferkeras.data.draw import render_faces, sample_face_params
from ferkeras.data.synthetic import allocate_counts, inject_label_noise, profile_counts
from ferkeras.labels import AFFECTNET_CODES

LISTS_DIR = "Manually_Annotated_file_lists"
IMAGES_DIR = "Manually_Annotated_Images"
HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
          "expression,valence,arousal")
CHUNK = 1000  # images per task; also fixes the random streams, so keep it constant
PER_FOLDER = 500  # images per numbered sub-folder, as AffectNet's few hundred
RENDER_SIDE = 128  # faces are drawn at this side, then resized to their box
# Rough (valence, arousal) centres per expression (Russell's circumplex).
VALENCE_AROUSAL = {
    "neutral": (0.0, 0.0), "happy": (0.7, 0.4), "sad": (-0.6, -0.3),
    "surprise": (0.2, 0.8), "fear": (-0.6, 0.7), "disgust": (-0.7, 0.3),
    "anger": (-0.6, 0.6), "contempt": (-0.4, 0.2),
}


def landmark_template() -> np.ndarray:
    """(68, 2) iBUG-68 landmark positions in unit face-box coordinates (x, y in [0, 1])."""
    t = np.linspace(0.0, 1.0, 17)
    jaw = np.stack([0.08 + 0.84 * t, 0.35 + 0.55 * np.sin(np.pi * t)], 1)
    brows = np.concatenate([np.stack([np.linspace(a, b, 5), 0.3 - 0.04 * np.sin(
        np.pi * np.linspace(0, 1, 5))], 1) for a, b in ((0.17, 0.43), (0.57, 0.83))])
    nose = np.concatenate([np.stack([np.full(4, 0.5), np.linspace(0.38, 0.58, 4)], 1),
                           np.stack([np.linspace(0.41, 0.59, 5), np.full(5, 0.63)], 1)])
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    eyes = np.concatenate([np.stack([cx + 0.09 * np.cos(angles), 0.4 + 0.035 * np.sin(angles)],
                                    1) for cx in (0.32, 0.68)])
    outer = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    inner = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    mouth = np.concatenate([np.stack([0.5 - 0.16 * np.cos(outer), 0.78 + 0.06 * np.sin(outer)], 1),
                            np.stack([0.5 - 0.1 * np.cos(inner), 0.78 + 0.025 * np.sin(inner)], 1)])
    out = np.concatenate([jaw, brows, nose, eyes, mouth]).astype(np.float32)
    if out.shape != (68, 2):
        raise AssertionError(out.shape)
    return out


def file_name(seed: int, split: str, i: int) -> str:
    """`<sub>/<sha224>.jpg`: AffectNet-like relative path of image `i` of `split`."""
    digest = hashlib.sha224(f"{seed}/{split}/{i}".encode()).hexdigest()
    offset = 0 if split == "train" else 5000
    return f"{offset + i // PER_FOLDER + 1}/{digest}.jpg"


def _chunk_task(args) -> list[str]:
    """Draw and write images [start, stop) of one split; return their CSV lines."""
    from PIL import Image

    root, split, start, labels, codes_given, seed, sides, quality = args
    names = list(AFFECTNET_CODES.values())
    class_names = [names[c] for c in range(len(names))]
    n = len(labels)
    rng = np.random.default_rng([seed, 7, start, split == "train"])
    params = sample_face_params(labels, class_names, seed=int(rng.integers(2**31)))
    faces = render_faces(params, size=RENDER_SIDE, start=0, stop=n,
                         seed=int(rng.integers(2**31)))
    lo, hi = np.log(sides[0]), np.log(sides[1])
    side = np.round(np.exp(rng.uniform(lo, hi, n))).astype(int)
    box = np.maximum(np.round(side * rng.uniform(0.45, 0.75, n)).astype(int), 16)
    bx = (rng.uniform(0, 1, n) * (side - box)).astype(int)
    by = (rng.uniform(0, 1, n) * (side - box)).astype(int)
    tint = rng.uniform(0.75, 1.15, (n, 3)).astype(np.float32)
    bg = rng.uniform(30, 220, (n, 3))
    template = landmark_template()
    lines = []
    for j in range(n):
        i = start + j
        rel = file_name(seed, split, i)
        path = pathlib.Path(root) / IMAGES_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        s, b = int(side[j]), int(box[j])
        canvas = np.empty((s, s, 3), np.uint8)
        ramp = np.linspace(0.8, 1.2, s, dtype=np.float32)[:, None, None]
        canvas[:] = np.clip(bg[j] * ramp, 0, 255).astype(np.uint8)
        face = Image.fromarray(faces[j]).resize((b, b), Image.BILINEAR)
        rgb = np.clip(np.asarray(face, np.float32)[..., None] * tint[j], 0, 255)
        canvas[by[j]:by[j] + b, bx[j]:bx[j] + b] = rgb.astype(np.uint8)
        Image.fromarray(canvas).save(path, format="JPEG", quality=quality)
        pts = template * b + np.array([bx[j], by[j]], np.float32)
        marks = ";".join(f"{v:.2f}" for v in pts.ravel())
        name = class_names[labels[j]]
        v, a = VALENCE_AROUSAL[name]
        lines.append(f"{rel},{bx[j]},{by[j]},{b},{b},{marks},{codes_given[j]},"
                     f"{v + rng.normal(0, 0.1):.3f},{a + rng.normal(0, 0.1):.3f}")
    return lines


def write_affectnet_layout(out_dir, *, n_train: int = 287651, n_test: int = 4000,
                           noise: float = 0.0, noise_type: str = "asymmetric", seed: int = 0,
                           sides=(256, 640), quality: int = 90, workers: int | None = None,
                           unique: int | None = None, progress=None) -> dict:
    """Write synthetic faces in AffectNet's official layout into the new folder `out_dir`.

    n_train: training.csv rows, in AffectNet's 8-class training proportions
      (`synthetic.AFFECTNET_COUNTS`; 287651 reproduces the real counts exactly).
    n_test: validation.csv rows, balanced over the 8 classes (the real one has 500 each).
    noise: label-noise rate of training.csv (the true codes go to synthetic_true_labels.csv).
    sides: (min, max) image side in pixels. quality: JPEG quality.
    workers: processes (default: the CPU count). progress: optional callable(done, total).
    unique: draw only this many training images; row i >= unique is a hard link to image
      i % unique under its own name, with that row's box, landmarks and labels (a cheap way
      to get N files and rows when drawing N faces would take too long; disk stays that of
      `unique` images).
    Returns {"n_train", "n_test", "n_unique", "seconds", "bytes", "train_counts"}.
    """
    if n_train < 8 or n_test < 0:
        raise ValueError(f"n_train must be >= 8 and n_test >= 0. Received: n_train={n_train}, "
                         f"n_test={n_test}")
    if not 16 <= sides[0] <= sides[1] <= 4096:
        raise ValueError(f"sides must satisfy 16 <= min <= max <= 4096. Received: sides={sides}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in [1, 100]. Received: quality={quality}")
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"Refusing to write into non-empty {out_dir}; pick a new folder.")
    workers = max(1, workers or os.cpu_count() or 1)
    unique = n_train if unique is None else int(unique)
    if not 8 <= unique <= n_train:
        raise ValueError(f"unique must be in [8, n_train]. Received: unique={unique}")
    class_names = list(AFFECTNET_CODES.values())
    start_time = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        (tmp / LISTS_DIR).mkdir()
        splits = {}
        rng = np.random.default_rng([seed, 1])
        train_counts = profile_counts(n_train, class_names, profile="affectnet")
        true = rng.permutation(np.repeat(np.arange(8), train_counts)).astype(np.int32)
        given = true if noise <= 0 else inject_label_noise(
            true, rate=noise, kind=noise_type, class_names=class_names, seed=seed)
        source = np.arange(n_train) % unique  # the drawn image each row shows
        true, given = true[source], given[source]
        train_counts = np.bincount(given, minlength=8)
        splits["train"] = (true, given)
        if n_test:
            test = rng.permutation(np.repeat(np.arange(8), allocate_counts(n_test, np.ones(8))))
            splits["test"] = (test.astype(np.int32), test.astype(np.int32))
        drawn = {"train": unique, "test": n_test}
        tasks = [(str(tmp), split, start, t[start:min(start + CHUNK, drawn[split])],
                  g[start:min(start + CHUNK, drawn[split])], seed, tuple(sides), quality)
                 for split, (t, g) in splits.items()
                 for start in range(0, drawn[split], CHUNK)]
        total, done = sum(len(t[3]) for t in tasks), 0
        results = {}
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_chunk_task, t): (t[1], t[2]) for t in tasks}
            for fut in concurrent.futures.as_completed(futures):
                results[futures[fut]] = fut.result()
                done += CHUNK
                if progress is not None:
                    progress(min(done, total), total)
        for split, csv_name in (("train", "training.csv"), ("test", "validation.csv")):
            if split not in splits:
                continue
            lines = [line for key in sorted(k for k in results if k[0] == split)
                     for line in results[key]]
            if split == "train":
                lines += _link_copies(tmp, lines, seed=seed, n=n_train)
            (tmp / LISTS_DIR / csv_name).write_text("\n".join([HEADER, *lines]) + "\n")
        truth = ["subDirectory_filePath,expression,true_expression"]
        true, given = splits["train"]
        truth += [f"{file_name(seed, 'train', i)},{g},{t}"
                  for i, (g, t) in enumerate(zip(given, true, strict=True))]
        (tmp / "synthetic_true_labels.csv").write_text("\n".join(truth) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"n_train": n_train, "n_test": n_test, "n_unique": unique,
            "seconds": round(time.perf_counter() - start_time, 2),
            "bytes": folder_bytes(out_dir),
            "train_counts": dict(zip(class_names, train_counts.tolist(), strict=True))}


def _link_copies(root, lines, *, seed, n) -> list[str]:
    """Rows len(lines)..n-1: hard links to the drawn images, each under its own name."""
    root, unique, out = pathlib.Path(root), len(lines), []
    for i in range(unique, n):
        rel_src, rest = lines[i % unique].split(",", 1)
        rel = file_name(seed, "train", i)
        dst = root / IMAGES_DIR / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(root / IMAGES_DIR / rel_src, dst)
        out.append(f"{rel},{rest}")
    return out


def folder_bytes(root) -> int:
    """Bytes of the regular files under `root`, each file (inode) once."""
    total, seen = 0, set()
    for dirpath, _, files in os.walk(root):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def damage_sources(root, *, seed: int = 0, within: int | None = None) -> list[tuple[str, str]]:
    """Break three training sources of an AffectNet-layout folder, as real copies break.

    One image is deleted, one JPEG is cut in half, and one training.csv row gets a
    non-existent sub-folder path; the rows are drawn among the first `within` (default:
    all). A hard-linked image is replaced, not written through, so its other rows stay
    intact. Returns [(relative path, what was done)].
    """
    root = pathlib.Path(root)
    csv_path = root / LISTS_DIR / "training.csv"
    lines = csv_path.read_text().splitlines()
    rng = np.random.default_rng([seed, 99])
    last = len(lines) if within is None else min(len(lines), within + 1)
    if last < 4:
        raise ValueError(f"need 3 training rows to damage. Received: {last - 1}")
    rows = rng.choice(np.arange(1, last), size=3, replace=False)
    done = []
    rel = lines[rows[0]].split(",", 1)[0]
    (root / IMAGES_DIR / rel).unlink()
    done.append((rel, "image deleted"))
    rel = lines[rows[1]].split(",", 1)[0]
    path = root / IMAGES_DIR / rel
    data = path.read_bytes()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data[: len(data) // 2])
    os.replace(tmp, path)
    done.append((rel, "JPEG truncated to half"))
    rel, rest = lines[rows[2]].split(",", 1)
    lines[rows[2]] = f"no_such_folder/{pathlib.Path(rel).name},{rest}"
    csv_path.write_text("\n".join(lines) + "\n")
    done.append((f"no_such_folder/{pathlib.Path(rel).name}", "CSV row names a missing file"))
    return done
