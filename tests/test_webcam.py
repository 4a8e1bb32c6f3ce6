"""`ferkeras predict --webcam N`, the success path, with a stand-in capture device.

No camera exists here, so `cv2.VideoCapture` is replaced by a fake device that yields a
fixed number of BGR frames. The command must read them through the same frame source as
videos (every N-th frame, --max-frames), predict each one, name the records `webcam:N` with
their frame index, name the annotated images `webcamN_<frame>.jpg`, and release the device.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

cv2 = pytest.importorskip("cv2")


class FakeCamera:
    """Stands in for `cv2.VideoCapture(index)`: camera 0 exists and yields `FRAMES` frames."""

    FRAMES = 7
    opened: list[FakeCamera] = []

    def __init__(self, source, *args):
        self.source = source
        self.grabbed = 0
        self.released = False
        FakeCamera.opened.append(self)

    def isOpened(self):  # noqa: N802  (OpenCV's name)
        return self.source == 0 and not self.released

    def grab(self):
        if self.released or self.grabbed >= self.FRAMES:
            return False
        self.grabbed += 1
        return True

    def retrieve(self):
        frame = np.full((60, 80, 3), 20 * self.grabbed, np.uint8)  # each frame differs
        frame[10:50, 20:60] = 255 - 20 * self.grabbed
        return True, frame

    def read(self):
        return self.retrieve() if self.grab() else (False, None)

    def get(self, prop):
        return 0.0  # a webcam reports no frame count

    def set(self, prop, value):
        return True

    def release(self):
        self.released = True


@pytest.fixture
def camera(monkeypatch):
    FakeCamera.opened = []
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera)
    return FakeCamera


@pytest.fixture
def model(tmp_path):
    from test_bad_input import _onnx_model_dir

    return _onnx_model_dir(tmp_path / "model")


def _predict(*args):
    from ferkeras.cli import cli

    return CliRunner().invoke(cli, ["predict", *map(str, args)])


def test_webcam_frames_are_read_predicted_and_annotated(camera, model, tmp_path):
    out = tmp_path / "annotated"
    result = _predict("--model", model, "--no-detect", "--webcam", 0, "--every", 2, "--json",
                      "--annotate", out)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()
               if line.startswith("{")]
    assert [r["frame"] for r in records] == [0, 2, 4, 6]  # every 2nd of the 7 frames
    assert {r["source"] for r in records} == {"webcam:0"}
    for r in records:
        assert r["error"] is None and r["label"] in r["scores"]
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    assert sorted(p.name for p in out.iterdir()) == [
        f"webcam0_{i:06d}.jpg" for i in (0, 2, 4, 6)]
    first = cv2.imread(str(out / "webcam0_000000.jpg"))
    assert first is not None and first.shape == (60, 80, 3)
    assert len(camera.opened) == 1 and camera.opened[0].released


def test_webcam_stops_after_max_frames_and_releases_the_device(camera, model):
    result = _predict("--model", model, "--no-detect", "--webcam", 0, "--max-frames", 3,
                      "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()
               if line.startswith("{")]
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert camera.opened[0].grabbed == 3 and camera.opened[0].released


def test_webcam_that_cannot_open_is_one_line(camera, model):
    result = _predict("--model", model, "--no-detect", "--webcam", 3)
    assert result.exit_code != 0
    assert "cannot open webcam 3" in result.output and "Traceback" not in result.output
