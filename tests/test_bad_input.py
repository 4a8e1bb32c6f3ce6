"""Bad input, end to end through the CLI entry point (click's CliRunner on `ferkeras.cli.cli`).

Each case must end in a clear one-line error (or, where skipping is right, a warning that
counts what was skipped) and leave no partial output: no run folder when nothing was
trained, no half-written file otherwise. Fixtures are tiny files in the real formats,
written to tmp_path. `FERKERAS_RELIABILITY_MD=path pytest tests/test_bad_input.py` rewrites
the table in bench/results/reliability.md from the outcomes recorded here.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import re

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from ferkeras.cli import cli

CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
TINY = ["--set", "data.image_size=16", "--set", "model.width=4", "--set", "train.epochs=1",
        "--set", "train.batch_size=8", "-q"]
RECORD: list[dict] = []


def _record(case, command, outcome, message):
    RECORD.append({"case": case, "command": command, "outcome": outcome, "message": message})


def _invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _error_line(result) -> str:
    """The single `Error: ...` line of a failed command (asserting there is exactly one)."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def _recipe(tmp_path, data, **sections) -> pathlib.Path:
    recipe = {"name": "bad", "seed": 0, "data": data, "model": {"width": 4}, **sections}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _no_leftovers(run_dir: pathlib.Path) -> None:
    assert not list(run_dir.rglob(".*.tmp*")), "half-written temporaries remain"


def _jpeg(path: pathlib.Path, seed: int, size: int = 20) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def _image_folder(root: pathlib.Path, per_class: int = 3) -> pathlib.Path:
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            _jpeg(root / "train" / name / f"{i}.jpg", seed=100 * c + i)
    return root


def _fer_csv(path: pathlib.Path, rows: list[str]) -> pathlib.Path:
    path.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    return path


def _fer_row(emotion=3, usage="Training", n=2304, seed=0) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, n)
    return f"{emotion},{' '.join(map(str, pixels))},{usage}"


# ----------------------------------------------------------------------------- recipe
@pytest.mark.parametrize("case, overrides, expected", [
    ("unknown recipe key", ["train.epoch=3"],
     "Unknown recipe key 'train.epoch'. Did you mean 'epochs'?"),
    ("wrong type", ["train.batch_size=abc"],
     "Recipe key 'train.batch_size' must be int. Received: 'abc' (str)"),
    ("negative epochs", ["train.epochs=-1"], "Recipe key 'train.epochs' must be >= 1"),
])
def test_recipe_errors(tmp_path, case, overrides, expected):
    recipe = _recipe(tmp_path, {"source": "synthetic"})
    run_dir = tmp_path / "run"
    args = ["train", recipe, "--run-dir", run_dir, "--set", overrides[0]]
    line = _error_line(_invoke(args))
    assert expected in line
    assert not run_dir.exists()
    _record(case, f"ferkeras train R --set {overrides[0]}", "error, no run folder", line)


def test_missing_data_root_leaves_no_run_folder(tmp_path):
    recipe = _recipe(tmp_path, {"source": "folder", "root": str(tmp_path / "nowhere")})
    run_dir = tmp_path / "run"
    line = _error_line(_invoke(["train", recipe, "--run-dir", run_dir, *TINY]))
    assert "data.root must be a folder" in line and "nowhere" in line
    assert not run_dir.exists()
    _record("data.root does not exist", "ferkeras train R (source folder, root=/nowhere)",
            "error, no run folder", line)


# ----------------------------------------------------------------------------- images
def test_unusable_images_are_skipped_and_counted(tmp_path):
    root = _image_folder(tmp_path / "faces")
    happy = root / "train" / "happy"
    (happy / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG body")
    (happy / "empty.jpg").write_bytes(b"")
    from PIL import Image

    Image.fromarray(np.zeros((20, 20), np.uint8)).save(happy / "really_a_png.jpg",
                                                        format="PNG")
    recipe = _recipe(tmp_path, {"source": "folder", "root": str(root)})
    run_dir = tmp_path / "run"
    result = _invoke(["train", recipe, "--run-dir", run_dir, *TINY])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("data:")]
    skipped = next(n for n in notes if "skipped 2 unusable sample(s)" in n)
    assert "empty file: 1" in skipped and "not a readable image: 1" in skipped
    mismatch = next(n for n in notes if "content format differs" in n)
    assert "1 file(s)" in mismatch
    rows = (run_dir / "skipped_files.tsv").read_text().splitlines()
    assert len(rows) == 3 and {r.split("\t")[1].rsplit("/", 1)[1] for r in rows[1:]} == {
        "corrupt.jpg", "empty.jpg"}
    assert (run_dir / "metrics.json").is_file()
    _no_leftovers(run_dir)
    command = "ferkeras train R (folder with bad files)"
    _record("corrupt JPEG", command, "skipped, counted, trains", skipped)
    _record("zero-byte file", command, "skipped, counted, trains", skipped)
    _record("PNG named .jpg", command, "accepted (decoded by content), counted", mismatch)


def test_class_left_empty_after_skipping(tmp_path):
    root = _image_folder(tmp_path / "faces")
    for path in (root / "train" / "contempt").iterdir():
        path.write_bytes(b"")  # every contempt image unusable
    recipe = _recipe(tmp_path, {"source": "folder", "root": str(root)})
    run_dir = tmp_path / "run"
    line = _error_line(_invoke(["train", recipe, "--run-dir", run_dir, *TINY]))
    assert "class(es) ['contempt'] have no training samples" in line
    assert not run_dir.exists()
    _record("class left empty", "ferkeras train R (contempt/ all zero-byte)",
            "error, no run folder", line)


# ----------------------------------------------------------------------------- FER2013 CSV
@pytest.mark.parametrize("case, rows, expected", [
    ("truncated CSV", "truncated", "row 5: expected 3 fields"),
    ("CSV row with 2303 pixels", "short", "row 3: pixels must be 2304 space-separated"),
    ("out-of-range label", "label", "row 2: emotion must be an integer in [0, 6]. Received: '7'"),
])
def test_fer2013_csv_errors(tmp_path, case, rows, expected):
    good = [_fer_row(seed=i) for i in range(3)]
    if rows == "truncated":
        good.append(_fer_row(seed=9)[:500])  # the file was cut mid-row
    elif rows == "short":
        good[1] = _fer_row(n=2303)
    else:
        good[0] = _fer_row(emotion=7)
    csv_path = _fer_csv(tmp_path / "fer2013.csv", good)
    recipe = _recipe(tmp_path, {"source": "fer2013", "root": str(csv_path),
                                "class_set": "fer2013"})
    run_dir = tmp_path / "run"
    line = _error_line(_invoke(["train", recipe, "--run-dir", run_dir, *TINY]))
    assert expected in line and "fer2013.csv" in line
    assert not run_dir.exists()
    _record(case, "ferkeras train R (source fer2013)", "error, no run folder", line)


# ----------------------------------------------------------------------------- training
SYNTH = {"source": "synthetic", "image_size": 16,
         "synthetic": {"n_train": 64, "n_val": 16, "n_test": 16}}


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    """A learning rate within the recipe's range (<= 10) does not overflow these BatchNorm
    networks (SGD at lr=10 reaches a loss of 1e17 and recovers), so the NaN is injected:
    from the 7th optimizer step on (epoch 2, step 3) the per-example loss is NaN."""
    import tensorflow as tf

    from ferkeras.trainers.supervised import SupervisedTrainer

    original = SupervisedTrainer.supervised_per_example

    def poisoned(self, labels, logits):
        loss = original(self, labels, logits)
        nan = tf.cast(self.optimizer.iterations >= 6, loss.dtype) * np.float32(np.nan)
        return loss + tf.where(self.optimizer.iterations >= 6, nan, tf.zeros_like(nan))

    monkeypatch.setattr(SupervisedTrainer, "supervised_per_example", poisoned)
    recipe = _recipe(tmp_path, SYNTH, train={"batch_size": 16, "epochs": 3})
    run_dir = tmp_path / "run"
    line = _error_line(_invoke(["train", recipe, "--run-dir", run_dir, "-q"]))
    assert "loss is nan at epoch 2, step 3" in line
    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == 1
    assert (run_dir / "checkpoints" / "last.weights.h5").is_file()
    assert not (run_dir / "metrics.json").exists()
    _no_leftovers(run_dir)
    _record("loss becomes NaN", "ferkeras train R (NaN from epoch 2 step 3)",
            "exit 1, epoch-1 state kept (resumable)", line)


def test_disk_full_mid_run_leaves_no_half_written_file(tmp_path, monkeypatch):
    import keras

    calls = {"n": 0}
    original = keras.Model.save_weights

    def full_disk(self, filepath, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] < 4:  # epoch 1 writes last, best and the state: then the disk is full
            return original(self, filepath, *args, **kwargs)
        pathlib.Path(filepath).write_bytes(b"\x89HDF\r\n half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))

    monkeypatch.setattr(keras.Model, "save_weights", full_disk)
    recipe = _recipe(tmp_path, SYNTH, train={"batch_size": 16, "epochs": 3})
    run_dir = tmp_path / "run"
    line = _error_line(_invoke(["train", recipe, "--run-dir", run_dir, "-q"]))
    assert "No space left on device" in line
    assert json.loads((run_dir / "checkpoints" / "state.json").read_text())["epochs_done"] == 1
    _no_leftovers(run_dir)
    monkeypatch.setattr(keras.Model, "save_weights", original)
    for name in ("last", "best", "state-e0001"):  # the epoch-1 files are whole and loadable
        import h5py

        with h5py.File(run_dir / "checkpoints" / f"{name}.weights.h5") as fh:
            assert len(fh.keys())
    _record("disk full while writing", "ferkeras train R (save fails with ENOSPC at epoch 2)",
            "exit 1, no half-written file, epoch-1 state kept", line)


def test_read_only_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o555)
    try:
        probe = run_dir / "probe"
        try:
            probe.write_text("x")
        except OSError:
            pass
        else:
            probe.unlink()
            _record("read-only run folder", "ferkeras train R --run-dir RO", "not tested",
                    "skipped: running as root, chmod does not stop writes (the disk-full case "
                    "covers write failures)")
            pytest.skip("running as root: chmod 0555 does not prevent writes")
        recipe = _recipe(tmp_path, SYNTH)
        line = _error_line(_invoke(["train", recipe, "--run-dir", run_dir, "-q"]))
        assert f"cannot write to run folder {run_dir}" in line
        assert list(run_dir.iterdir()) == []
        _record("read-only run folder", "ferkeras train R --run-dir RO", "error", line)
    finally:
        run_dir.chmod(0o755)


# ----------------------------------------------------------------------------- predict
def _onnx_model_dir(folder: pathlib.Path, *, fmt="ferkeras-export/1") -> pathlib.Path:
    """A minimal export folder: a linear 48x48 grey -> 8-class ONNX model + metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True)
    weights = np.random.default_rng(0).normal(0, 1e-3, (48 * 48, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 8]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    (folder / "metadata.json").write_text(json.dumps({
        "format": fmt, "class_names": list(CLASSES), "image_size": 48, "channels": 1,
        "input": {"name": "image"}, "outputs": {"probs": {"name": "probs"},
                                                "logits": {"name": "logits"}}}))
    return folder


def test_predict_folder_without_images(tmp_path):
    model = _onnx_model_dir(tmp_path / "model")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images")
    annotate = tmp_path / "annotated"
    line = _error_line(_invoke(["predict", "--model", model, "--no-detect", "--annotate",
                                annotate, empty]))
    assert "no images in this folder" in line
    assert not annotate.exists()
    _record("predict: folder without images", "ferkeras predict --model M EMPTY_DIR", "error",
            line)


def test_predict_model_from_an_older_format(tmp_path):
    model = _onnx_model_dir(tmp_path / "model", fmt="ferkeras-export/0")
    _jpeg(tmp_path / "face.jpg", seed=1, size=48)
    line = _error_line(_invoke(["predict", "--model", model, "--no-detect",
                                tmp_path / "face.jpg"]))
    assert "unsupported format 'ferkeras-export/0'" in line
    _record("predict: model folder of an older format", "ferkeras predict --model OLD IMG",
            "error", line)


def test_predict_webcam_that_does_not_exist(tmp_path):
    pytest.importorskip("cv2")
    model = _onnx_model_dir(tmp_path / "model")
    line = _error_line(_invoke(["predict", "--model", model, "--no-detect", "--webcam", "57"]))
    assert "cannot open webcam 57" in line
    _record("predict: webcam index that does not exist", "ferkeras predict --webcam 57",
            "error", line)


# ----------------------------------------------------------------------------- the table
@pytest.fixture(scope="module", autouse=True)
def _write_table():
    yield
    target = os.environ.get("FERKERAS_RELIABILITY_MD")
    if target and RECORD:
        write_reliability_table(pathlib.Path(target), RECORD)


def test_reliability_table_counts_only_tested_cases(tmp_path):
    path = tmp_path / "reliability.md"
    write_reliability_table(path, [
        {"case": "a", "command": "c", "outcome": "error", "message": "m"},
        {"case": "read-only run folder", "command": "c", "outcome": "not tested",
         "message": "skipped: running as root"}])
    assert ("1 cases tested, 1 listed but not tested here (read-only run folder)"
            in path.read_text())


def write_reliability_table(path: pathlib.Path, rows: list[dict]) -> None:
    """Replace the generated table between the markers in `path`."""
    start, end = "<!-- bad-input table: start -->", "<!-- bad-input table: end -->"
    untested = [r["case"] for r in rows if r["outcome"] == "not tested"]
    count = f"{len(rows) - len(untested)} cases tested"
    if untested:
        count += f", {len(untested)} listed but not tested here ({', '.join(untested)})"
    lines = [start, f"{count}, from `tests/test_bad_input.py`.", "",
             "| case | command | outcome | message |", "|---|---|---|---|"]
    for r in rows:
        message = re.sub(r"/\S*/pytest-\d+/[^/]+", "TMP", r["message"]).replace("|", "\\|")
        if len(message) > 170:
            message = message[:167] + "..."
        lines.append(f"| {r['case']} | `{r['command']}` | {r['outcome']} | {message} |")
    lines.append(end)
    text = path.read_text() if path.is_file() else f"{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(head + "\n".join(lines) + tail)
