"""Data sources on tiny fixtures written in each dataset's real format (never the real data)."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from ferkeras.data import images as images_mod
from ferkeras.data.fer2013 import ferplus_labels, ferplus_winner, read_fer2013_csv
from ferkeras.data.images import expand_boxes, probe_image, resolve_inside
from ferkeras.data.sources import load_bundle
from ferkeras.data.stats import imbalance_ratio, label_agreement
from ferkeras.training.recipe import DataConfig

FER = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer2013 class ids
VOTE_COLS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
             "contempt", "unknown", "NF")


# ----------------------------------------------------------------------------- fixtures
def write_image(path, *, size=(16, 16), fmt="JPEG", color=(120, 60, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def votes(**counts):
    return [counts.get(c, 0) for c in VOTE_COLS]


# (FER2013 emotion, Usage, FERPlus votes, FERPlus image name); names drift after row 2.
FER_ROWS = [
    (0, "Training", votes(anger=8, neutral=2), "fer0000000.png"),
    (1, "Training", votes(disgust=6, anger=4), "fer0000001.png"),
    (2, "Training", votes(surprise=7, fear=3), "fer0000002.png"),
    (3, "Training", votes(happiness=10), "fer0000004.png"),
    (4, "Training", votes(neutral=4, sadness=4, anger=2), "fer0000005.png"),
    (5, "Training", votes(surprise=9, unknown=1), "fer0000006.png"),
    (6, "Training", votes(neutral=5, happiness=5), "fer0000007.png"),
    (3, "Training", votes(happiness=5, surprise=1), "fer0000008.png"),
    (3, "Training", votes(contempt=7, neutral=3), "fer0000009.png"),
    (6, "Training", votes(neutral=10), ""),
    (2, "Training", votes(fear=8, surprise=2), "fer0000011.png"),
    (4, "Training", votes(sadness=7, neutral=3), "fer0000012.png"),
    (6, "Training", votes(neutral=9, sadness=1), "fer0000013.png"),
    (0, "PublicTest", votes(anger=10), "fer0000014.png"),
    (3, "PublicTest", votes(neutral=6, happiness=4), "fer0000015.png"),
    (6, "PublicTest", votes(neutral=10), "fer0000016.png"),
    (4, "PublicTest", votes(sadness=9, NF=1), "fer0000017.png"),
]
# FERPlus majority per row, as fer2013 class ids, computed by hand.
FER_TRUE = [0, 1, 5, 3, -1, 5, -1, 3, -1, -1, 2, 4, 6, 0, 6, 6, 4]


def fer_csv_text(rows=FER_ROWS):
    lines = ["emotion,pixels,Usage"]
    for i, (emotion, usage, _, _) in enumerate(rows):
        lines.append(f"{emotion},{' '.join([str(i * 10)] * 2304)},{usage}")
    return "\n".join(lines) + "\n"


def write_fer2013(folder, rows=FER_ROWS, *, gz=False):
    """fer2013.csv(.gz) and fer2013new.csv in `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / ("fer2013.csv.gz" if gz else "fer2013.csv")
    text = fer_csv_text(rows)
    csv_path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    plus = ["Usage,Image name," + ",".join(VOTE_COLS)]
    plus += [f"{u},{name}," + ",".join(map(str, v)) for _, u, v, name in rows]
    plus_path = folder / "fer2013new.csv"
    plus_path.write_text("\n".join(plus) + "\n")
    return csv_path, plus_path


def write_affectnet_official(root):
    imgs = root / "Manually_Annotated_Images"
    rows = []
    for code in range(11):
        rel = f"{code % 4}/img{code}.jpg"
        write_image(imgs / rel, size=(40, 30))
        rows.append((rel, 5, 5, 20, 20, code))
    for code in range(4):  # a second face for four classes, so validation can be carved
        write_image(imgs / f"5/img{code}b.jpg", size=(40, 30))
        rows.append((f"5/img{code}b.jpg", 5, 5, 20, 20, code))
    rows[1] = (rows[1][0], 30, 20, 20, 20, 1)  # box runs off the image: clipped
    rows.append(("../../etc/passwd", 0, 0, 10, 10, 0))
    rows.append(("/etc/passwd", 0, 0, 10, 10, 0))
    rows.append(("4/missing.jpg", 0, 0, 10, 10, 1))
    (imgs / "4").mkdir()
    (imgs / "4/bad.jpg").write_bytes(b"this is not a jpeg at all")
    rows.append(("4/bad.jpg", 0, 0, 10, 10, 2))
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    header = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
              "expression,valence,arousal")

    def csv_text(rs):
        return "\n".join(
            [header] + [f'{p},{x},{y},{w},{h},"1.0;2.0;3.0",{c},0.1,-0.2'
                        for p, x, y, w, h, c in rs]
        ) + "\n"

    (lists / "training.csv").write_text(csv_text(rows))
    (lists / "validation.csv").write_text(csv_text(rows[:2]))
    return root


def write_rafdb(root, *, n_train=9):
    lines = []
    for i in range(1, n_train + 1):
        lines.append(f"train_{i:05d}.jpg {(i - 1) % 7 + 1}")
    lines += ["test_0001.jpg 4", "test_0002.jpg 7"]
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel/list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        stem = line.split()[0][:-4]
        write_image(root / f"Image/aligned/{stem}_aligned.jpg", size=(20, 20))
    return root


def cfg(**kw):
    kw.setdefault("val_fraction", 0.25)
    return DataConfig(**kw)


# ----------------------------------------------------------------------------- FER2013
@pytest.mark.parametrize("gz", [False, True])
def test_fer2013_parses_csv_and_splits(tmp_path, gz):
    csv_path, _ = write_fer2013(tmp_path, gz=gz)
    bundle = load_bundle(cfg(source="fer2013", root=str(csv_path), class_set="fer2013"), seed=0)
    assert bundle.class_names == FER
    assert bundle.train.images.shape == (13, 48, 48, 1) and bundle.train.images.dtype == np.uint8
    assert bundle.train.paths is None and bundle.train.true_labels is None
    assert bundle.train.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 3, 3, 6, 2, 4, 6]
    assert bundle.train.images[3, 0, 0, 0] == 30  # row order and pixel values kept
    assert bundle.val.labels.tolist() == [0, 3, 6, 4] and bundle.val.images[0, 5, 5, 0] == 130
    assert bundle.test is None
    assert any("no PrivateTest rows" in n for n in bundle.notes)


def test_fer2013_class_map_to_another_set(tmp_path):
    csv_path, _ = write_fer2013(tmp_path)
    bundle = load_bundle(cfg(source="fer2013", root=str(csv_path), class_set="affectnet7"),
                         seed=0)
    names = [bundle.class_names[k] for k in bundle.train.labels[:7]]
    assert names == list(FER)


def test_fer2013_missing_validation_carves_or_errors(tmp_path):
    rows = [r for r in FER_ROWS if r[1] == "Training"] * 2
    csv_path, _ = write_fer2013(tmp_path, rows)
    bundle = load_bundle(cfg(source="fer2013", root=str(csv_path), class_set="fer2013"), seed=3)
    assert len(bundle.train) + len(bundle.val) == 26 and len(bundle.val) > 0
    assert any("carved" in n for n in bundle.notes)
    again = load_bundle(cfg(source="fer2013", root=str(csv_path), class_set="fer2013"), seed=3)
    assert np.array_equal(again.val.images, bundle.val.images)  # seeded
    with pytest.raises(ValueError, match="missing_split"):
        load_bundle(cfg(source="fer2013", root=str(csv_path), class_set="fer2013",
                        missing_split="error"), seed=0)


def _bad_pixels(n=2304, token="7"):
    return " ".join([token] * n)


@pytest.mark.parametrize(
    "line, match",
    [
        (f"0,{_bad_pixels(2303)},Training", "row 3: pixels must be 2304"),
        (f"0,{_bad_pixels(2303)} x,Training", "row 3: pixels must be 2304"),
        (f"0,{_bad_pixels(2303)} 1.5,Training", "row 3: pixels must be 2304"),
        (f"0,{_bad_pixels(2303)} 256,Training", r"row 3: pixel values must be in \[0, 255\]"),
        (f"7,{_bad_pixels()},Training", "row 3: emotion must be an integer"),
        (f"x,{_bad_pixels()},Training", "row 3: emotion must be an integer"),
        (f"0,{_bad_pixels()},Train", "row 3: Usage must be one of"),
        (f"0,{_bad_pixels()}", "row 3: expected 3 fields"),
        (f"0,{_bad_pixels()[:3000]}", "row 3: expected 3 fields"),  # truncated last row
    ],
)
def test_fer2013_bad_rows_name_file_and_row(tmp_path, line, match):
    path = tmp_path / "fer2013.csv"
    path.write_text(f"emotion,pixels,Usage\n0,{_bad_pixels()},Training\n{line}")
    with pytest.raises(ValueError, match=match) as err:
        read_fer2013_csv(path)
    assert str(path) in str(err.value)


def test_fer2013_missing_column_and_truncated_gzip(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("emotion,Usage\n0,Training\n")
    with pytest.raises(ValueError, match=r"a.csv: row 1 \(header\) lacks column"):
        read_fer2013_csv(path)
    gz = tmp_path / "b.csv.gz"
    data = gzip.compress(fer_csv_text().encode())
    gz.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"b.csv.gz: (row \d+|gzip stream ends early)"):
        read_fer2013_csv(gz)


def test_fer2013_empty_class_is_an_error(tmp_path):
    rows = [r for r in FER_ROWS if r[0] != 1]  # no disgust
    csv_path, _ = write_fer2013(tmp_path, rows)
    with pytest.raises(ValueError, match="disgust"):
        load_bundle(cfg(source="fer2013", root=str(csv_path), class_set="fer2013"), seed=0)


# ----------------------------------------------------------------------------- FERPlus
def test_ferplus_vote_rules_by_hand():
    v = np.array([
        votes(neutral=4, happiness=4),              # 4 of 8: no majority; plurality tie
        votes(happiness=5, surprise=1),             # single vote dropped: happy 5/5
        votes(neutral=5, happiness=3, sadness=2),   # 5 of 10 is not MORE than half
        votes(neutral=6, happiness=3, fear=1),      # 6 of 9 after dropping the single
        votes(neutral=1, happiness=1, surprise=1),  # every class a single vote
        votes(unknown=8, NF=2),                     # winner is no expression
        votes(contempt=7, neutral=3),               # contempt
    ])
    assert ferplus_winner(v, mode="majority").tolist() == [-1, 1, -1, 0, -1, 8, 7]
    assert ferplus_winner(v, mode="plurality").tolist() == [-1, 1, 0, 0, -1, 8, 7]
    assert ferplus_winner(v, mode="probability").tolist() == [0, 1, 0, 0, -1, 8, 7]
    labels, soft = ferplus_labels(v, class_names=FER, mode="majority")
    assert labels.tolist() == [-1, 3, -1, 6, -1, -1, -1] and soft is None
    labels8, _ = ferplus_labels(v, class_names=("neutral", "happy", "sad", "surprise", "fear",
                                                "disgust", "anger", "contempt"), mode="majority")
    assert labels8[6] == 7  # contempt kept when the class set has it
    labels, soft = ferplus_labels(v, class_names=FER, mode="probability")
    assert soft.shape == (7, 7)
    np.testing.assert_allclose(soft[3], [0, 0, 0, 3 / 9, 0, 0, 6 / 9], atol=1e-6)
    assert labels.tolist() == [3, 3, 6, 6, -1, -1, -1]  # tie 4/4: happy comes first in FER order
    with pytest.raises(ValueError, match="mode='vote'"):
        ferplus_winner(v, mode="vote")


def test_fer2013_with_ferplus_aligns_by_position(tmp_path):
    csv_path, plus_path = write_fer2013(tmp_path)
    bundle = load_bundle(cfg(source="fer2013", root=str(csv_path), class_set="fer2013",
                             ferplus_path=str(plus_path)), seed=0)
    assert bundle.train.true_labels.tolist() == FER_TRUE[:13]
    assert bundle.val.true_labels.tolist() == FER_TRUE[13:]
    agree = label_agreement(bundle.train.labels, bundle.train.true_labels, num_classes=7)
    assert agree["n_known"] == 9 and agree["disagreement"] == pytest.approx(1 / 9)
    assert agree["per_class"][2] == pytest.approx(0.5)  # fear: one of two agrees


def test_ferplus_alignment_errors(tmp_path):
    csv_path, plus_path = write_fer2013(tmp_path)
    lines = plus_path.read_text().splitlines()
    plus_path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="has 16 rows but .* has 17"):
        load_bundle(cfg(source="fer2013", root=str(csv_path), class_set="fer2013",
                        ferplus_path=str(plus_path)), seed=0)
    lines[5] = lines[5].replace("Training", "PublicTest")
    plus_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="row 6 has Usage 'PublicTest'.*not row-aligned"):
        load_bundle(cfg(source="ferplus", root=str(csv_path), class_set="fer2013",
                        ferplus_path=str(plus_path)), seed=0)


@pytest.mark.parametrize(
    "mode, train_labels",
    [
        ("majority", [0, 1, 5, 3, 5, 3, 2, 4, 6]),
        ("plurality", [0, 1, 5, 3, 5, 3, 2, 4, 6]),
        ("probability", [0, 1, 5, 3, 4, 5, 3, 3, 2, 4, 6]),
    ],
)
def test_ferplus_source_label_modes(tmp_path, mode, train_labels):
    write_fer2013(tmp_path / "fer2013")
    (tmp_path / "ferplus").mkdir()
    (tmp_path / "fer2013/fer2013new.csv").rename(tmp_path / "ferplus/fer2013new.csv")
    bundle = load_bundle(cfg(source="ferplus", root=str(tmp_path), class_set="fer2013",
                             label_mode=mode), seed=0)
    assert bundle.train.labels.tolist() == train_labels
    assert np.array_equal(bundle.train.true_labels, bundle.train.labels)
    assert any(f"{mode} labels" in n for n in bundle.notes)
    assert any("no FERPlus image: 1" in n for n in bundle.notes)
    if mode == "probability":
        assert bundle.train.soft_labels.shape == (11, 7)
        np.testing.assert_allclose(bundle.train.soft_labels.sum(1), 1.0, atol=1e-6)
    else:
        assert bundle.train.soft_labels is None
        assert any(f"{mode} is contempt: 1" in n for n in bundle.notes)


# ----------------------------------------------------------------------------- AffectNet
def test_affectnet_official_layout(tmp_path):
    root = write_affectnet_official(tmp_path / "AffectNet")
    bundle = load_bundle(cfg(source="affectnet", root=str(root), class_set="affectnet8",
                             face_margin=0.1, val_fraction=0.1), seed=0)
    train, val = bundle.train, bundle.val
    assert bundle.class_names[7] == "contempt"
    assert sorted(val.labels.tolist()) == [0, 1, 2, 3]  # one of each pair, stratified
    assert sorted(train.labels.tolist()) == list(range(8))
    assert train.images is None and all(p.startswith("/") for p in train.paths)
    paths, boxes = np.r_[train.paths, val.paths], np.r_[train.boxes, val.boxes]
    by_name = dict(zip([p.rsplit("/", 1)[1] for p in paths], boxes.tolist(), strict=True))
    assert by_name["img0.jpg"] == [3, 3, 24, 24]  # 10% margin on each side
    assert by_name["img1.jpg"] == [28, 18, 12, 12]  # clipped to the 40x30 image
    reasons = dict(train.skipped)
    assert reasons["../../etc/passwd"] == reasons["/etc/passwd"] == "path escapes the dataset root"
    assert any(p.endswith("missing.jpg") and r == "missing file" for p, r in train.skipped)
    assert any(p.endswith("bad.jpg") and r.startswith("not a readable image")
               for p, r in train.skipped)
    assert any("code 8 (none): 1" in n and "code 10 (no-face): 1" in n for n in bundle.notes)
    assert any("skipped 4 unusable" in n for n in bundle.notes)
    assert bundle.test.labels.tolist() == [0, 1]  # validation.csv is the test split
    seven = load_bundle(cfg(source="affectnet", root=str(root), class_set="affectnet7",
                            val_fraction=0.1), seed=0)
    assert 7 not in seven.train.labels and any("code 7 (contempt): 1" in n for n in seven.notes)


def test_affectnet_bad_csv_field(tmp_path):
    root = write_affectnet_official(tmp_path)
    path = root / "Manually_Annotated_file_lists/training.csv"
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace(",5,5,20,20,", ",5,five,20,20,")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"training.csv: row 5: face_y must be a number"):
        load_bundle(cfg(source="affectnet", root=str(root)), seed=0)
    lines[4] = lines[4].replace(",5,five,20,20,", ",5,5,20,20,").replace('",3,', '",12,')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"row 5: expression must be an integer code 0-10"):
        load_bundle(cfg(source="affectnet", root=str(root)), seed=0)


def test_affectnet_repackaged_layout(tmp_path):
    for folder, n in (("train_set", 12), ("val_set", 2)):
        for i in range(n):
            write_image(tmp_path / f"{folder}/images/{i}.jpg", size=(24, 24))
            code = np.array(str(i % 8)) if i % 2 else np.int64(i % 8)
            (tmp_path / f"{folder}/annotations").mkdir(parents=True, exist_ok=True)
            np.save(tmp_path / f"{folder}/annotations/{i}_exp.npy", code)
    ann = tmp_path / "train_set/annotations"
    np.save(ann / "8_exp.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    np.save(ann / "20_exp.npy", np.int64(1))  # annotation without an image
    write_image(tmp_path / "train_set/images/21.jpg")  # image without an annotation
    bundle = load_bundle(cfg(source="affectnet", root=str(tmp_path), val_fraction=0.1), seed=0)
    labels = sorted(bundle.train.labels.tolist() + bundle.val.labels.tolist())
    assert labels == [0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7] and bundle.train.boxes is None
    assert sorted(bundle.val.labels.tolist()) == [1, 2, 3]
    reasons = {p.rsplit("/", 1)[1]: r for p, r in bundle.train.skipped}
    assert reasons["8_exp.npy"].startswith("bad annotation")
    assert reasons["20_exp.npy"] == "missing image"
    assert reasons["21.jpg"].startswith("missing annotation")
    assert bundle.test.labels.tolist() == [0, 1]


# ----------------------------------------------------------------------------- RAF-DB
def test_rafdb_parsing_and_noisy_labels(tmp_path):
    root = write_rafdb(tmp_path / "basic")
    (root / "Image/aligned/train_00009_aligned.jpg").unlink()
    bundle = load_bundle(cfg(source="rafdb", root=str(tmp_path), class_set="rafdb",
                             val_fraction=0.1), seed=0)
    labels = sorted(bundle.train.labels.tolist() + bundle.val.labels.tolist())
    assert labels == [0, 0, 1, 2, 3, 4, 5, 6]  # train_00009 (code 2) has no image
    assert bundle.test.labels.tolist() == [3, 6]  # codes 4 (happy), 7 (neutral)
    assert [r for _, r in bundle.train.skipped] == ["missing file"]
    noisy = tmp_path / "noise.txt"
    noisy.write_text("train_00001.jpg 2\ntrain_00002.jpg 2\ntest_0001.jpg 1\n")
    bundle = load_bundle(cfg(source="rafdb", root=str(root), class_set="rafdb",
                             noisy_labels=str(noisy), val_fraction=0.1), seed=0)
    paths = np.r_[bundle.train.paths, bundle.val.paths]
    given = np.r_[bundle.train.labels, bundle.val.labels]
    true = np.r_[bundle.train.true_labels, bundle.val.true_labels]
    first = [p.endswith("train_00001_aligned.jpg") for p in paths]
    assert given[first].tolist() == [1] and true[first].tolist() == [0]  # surprise -> fear
    assert (given != true).sum() == 1
    assert bundle.test.labels.tolist() == [3, 6] and bundle.test.true_labels is None
    assert any("1 of 9 differ" in n and "7 training rows absent" in n for n in bundle.notes)
    noisy.write_text("train_09999.jpg 2\n")
    with pytest.raises(ValueError, match="not in the RAF-DB partition list"):
        load_bundle(cfg(source="rafdb", root=str(root), noisy_labels=str(noisy),
                        class_set="rafdb"), seed=0)


@pytest.mark.parametrize("line", ["train_00001.jpg 8", "train_00001.jpg", "train_00001.jpg x"])
def test_rafdb_bad_list_line(tmp_path, line):
    root = write_rafdb(tmp_path)
    path = root / "EmoLabel/list_patition_label.txt"
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(ValueError, match=r"list_patition_label.txt: row 12: expected"):
        load_bundle(cfg(source="rafdb", root=str(root), class_set="rafdb"), seed=0)


# ----------------------------------------------------------------------------- folders
def _write_class_folders(root):
    for name in ("Angry", "disgusted", "fearful", "happiness", "sadness", "surprised"):
        write_image(root / name / "a.jpg")
        write_image(root / name / "b.PNG", fmt="PNG")
    write_image(root / "neutral/ok.JPG")
    return root


def test_folder_aliases_and_bad_files(tmp_path):
    root = _write_class_folders(tmp_path / "faces")
    neutral = root / "neutral"
    (neutral / "empty.jpg").write_bytes(b"")
    (neutral / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    full = (write_image(tmp_path / "full.jpg", size=(64, 64))).read_bytes()
    (neutral / "trunc.jpg").write_bytes(full[:-2])
    write_image(neutral / "png_named.jpg", fmt="PNG")
    write_image(neutral / "scan.tif", fmt="TIFF")
    (neutral / "readme.txt").write_text("not an image")
    write_image(root / "contempt/c.jpg")
    write_image(root / "misc/m.jpg")
    bundle = load_bundle(cfg(source="folder", root=str(root), class_set="affectnet7"), seed=0)
    names = sorted(bundle.class_names[k] for k in np.r_[bundle.train.labels, bundle.val.labels])
    assert names.count("anger") == 2 and names.count("neutral") == 2
    reasons = {p.rsplit("/", 1)[1]: r for p, r in bundle.train.skipped}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["corrupt.jpg"].startswith("not a readable image")
    assert reasons["trunc.jpg"] == "truncated JPEG (no end-of-image marker)"
    assert reasons["scan.tif"] == "format TIFF cannot be decoded by tf.io.decode_image"
    notes = " | ".join(bundle.notes)
    assert "['misc']" in notes and "contempt not in class set: 1" in notes
    assert "ignored 1 file(s) without an image extension" in notes
    assert "1 file(s) whose content format differs" in notes  # PNG named .jpg: accepted
    assert "skipped 4 unusable" in notes


def test_folder_split_layout_with_sidecar(tmp_path):
    for split in ("train", "test"):
        _write_class_folders(tmp_path / split)
    (tmp_path / "train/true_labels.csv").write_text(
        "path,label,true_label\nAngry/a.jpg,angry,fear\nhappiness/b.PNG,happy,happy\n"
        "gone/x.jpg,anger,anger\n"
    )
    bundle = load_bundle(cfg(source="fer2013", root=str(tmp_path), class_set="fer2013"),
                         seed=1)
    assert len(bundle.test) == 13 and bundle.test.true_labels is None
    both = np.r_[bundle.train.true_labels, bundle.val.true_labels]
    paths = np.r_[bundle.train.paths, bundle.val.paths]
    assert both[[p.endswith("Angry/a.jpg") for p in paths]].tolist() == [2]  # fear
    assert both[[p.endswith("happiness/b.PNG") for p in paths]].tolist() == [3]
    assert (both == -1).sum() == 11
    assert any("1 true_labels.csv row(s) name no listed image" in n for n in bundle.notes)
    (tmp_path / "train/true_labels.csv").write_text("path,label,true_label\nAngry/a.jpg,sad,sad\n")
    with pytest.raises(ValueError, match="true_labels.csv: row 2: label 'sad' disagrees"):
        load_bundle(cfg(source="folder", root=str(tmp_path), class_set="fer2013"), seed=1)


# ----------------------------------------------------------------------------- file checks
def _png_header(path, width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("width, height", [(20000, 20000), (12000, 10), (9000, 8000)])
def test_decompression_bombs_rejected_from_header(tmp_path, width, height):
    path = _png_header(tmp_path / "bomb.png", width, height)
    with pytest.raises(images_mod.ImageCheckError, match="too large"):
        probe_image(path)


def test_size_limits_are_configurable(tmp_path, monkeypatch):
    path = write_image(tmp_path / "a.jpg", size=(64, 48))
    assert probe_image(path).width == 64
    monkeypatch.setattr(images_mod, "MAX_IMAGE_SIDE", 32)
    with pytest.raises(images_mod.ImageCheckError, match="image too large"):
        probe_image(path)


def test_probe_images_in_threads_keeps_order(tmp_path):
    paths = [write_image(tmp_path / f"{i:03d}.png", size=(4 + i % 3, 5), fmt="PNG")
             for i in range(70)]
    paths[33].write_bytes(b"")
    result = images_mod.probe_images(paths, workers=4)
    assert result.ok.sum() == 69 and not result.ok[33]
    assert result.skipped == [(str(paths[33]), "empty file (0 bytes)")]
    assert result.sizes[34].tolist() == [5, 5] and result.sizes[33].tolist() == [-1, -1]


def test_resolve_inside_refuses_escapes(tmp_path):
    assert resolve_inside(tmp_path, "a/b.jpg") == tmp_path / "a/b.jpg"
    assert resolve_inside(tmp_path, "a/../b.jpg") == tmp_path / "b.jpg"
    for bad in ("../x", "a/../../x", "/etc/passwd", "C:\\win\\x", "..\\..\\x", ""):
        assert resolve_inside(tmp_path, bad) is None, bad


def test_expand_boxes_margin_clip_and_invalid():
    out = expand_boxes([[10, 10, 10, 10], [0, 0, 50, 50], [5, 5, 0, 4], [60, 60, 5, 5]],
                       [[40, 40]] * 4, margin=0.2)
    assert out.tolist() == [[8, 8, 14, 14], [0, 0, 40, 40], [-1] * 4, [-1] * 4]


# ----------------------------------------------------------------------------- registry, stats
def test_unknown_source_and_synthetic_dispatch(monkeypatch):
    with pytest.raises(ValueError, match=r"Unknown data source 'mnist'.*'fer2013'"):
        load_bundle(DataConfig(source="mnist"), seed=0)
    import ferkeras.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "make_synthetic_bundle", lambda c, *, seed: ("ok", seed))
    assert load_bundle(DataConfig(source="synthetic"), seed=5) == ("ok", 5)


def test_imbalance_and_agreement_by_hand():
    assert imbalance_ratio(np.array([10, 2, 5])) == 5.0
    assert imbalance_ratio(np.array([3, 0])) == float("inf")
    agree = label_agreement(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, -1, -1]),
                            num_classes=3)
    assert agree["per_class"][:2].tolist() == [0.5, 1.0] and np.isnan(agree["per_class"][2])
    assert agree["n_known"] == 3 and agree["disagreement"] == pytest.approx(1 / 3)


def test_stats_command_forms(tmp_path):
    from click.testing import CliRunner

    from ferkeras.commands.data_stats import stats

    csv_path, plus_path = write_fer2013(tmp_path)
    runner = CliRunner()
    result = runner.invoke(stats, ["--source", "fer2013", "--root", str(csv_path),
                                   "--ferplus", str(plus_path)])
    assert result.exit_code == 0, result.output
    assert "disagreement 0.111" in result.output
    assert "imbalance ratio (max/min) 3.0" in result.output
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: t\ndata:\n  source: fer2013\n  root: {csv_path}\n"
                      "  class_set: fer2013\n")
    result = runner.invoke(stats, [str(recipe), "--ferplus", str(plus_path), "--json"])
    assert result.exit_code == 0, result.output
    assert '"disagreement": 0.111' in result.output
    result = runner.invoke(stats, ["ferplus", "--root", str(tmp_path)])
    assert result.exit_code == 0 and "source: ferplus" in result.output
    result = runner.invoke(stats, ["fer2013", "--root", str(tmp_path / "nope.csv")])
    assert result.exit_code == 1 and "nope.csv" in result.output


def test_stats_command_imports_no_tensorflow(tmp_path):
    csv_path, _ = write_fer2013(tmp_path)
    code = (
        "import sys\nfrom click.testing import CliRunner\n"
        "from ferkeras.commands.data_stats import stats\n"
        f"r = CliRunner().invoke(stats, ['fer2013', '--root', {str(csv_path)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_folder_reads_what_the_synthetic_writer_writes(tmp_path):
    from ferkeras.data.synthetic import make_synthetic_bundle, write_image_folder
    from ferkeras.training.recipe import SyntheticConfig

    syn = DataConfig(source="synthetic", synthetic=SyntheticConfig(
        n_train=48, n_val=16, n_test=16, noise=0.3, profile="uniform"))
    original = make_synthetic_bundle(syn, seed=0)
    write_image_folder(original, tmp_path / "faces")
    bundle = load_bundle(DataConfig(source="folder", root=str(tmp_path / "faces")), seed=0)
    assert not bundle.notes and len(bundle.test) == 16
    order = np.array([int(p.rsplit("/", 1)[1][:6]) for p in bundle.train.paths])
    assert np.array_equal(bundle.train.labels, original.train.labels[order])
    assert np.array_equal(bundle.train.true_labels, original.train.true_labels[order])
