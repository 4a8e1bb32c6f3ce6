"""The webcam page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium) against `ferkeras serve` on loopback, its camera a
fake device playing a Y4M video made here from the drawn face. Asserts that the page draws
a box and shows the predictor's top label for that frame; saves a screenshot to tmp_path
(and to $FERKERAS_SCREENSHOT when set: how docs/serve_page.png was made). Runs in ~20 s;
skipped, with the reason, where Chromium, its driver or selenium is missing
(.ci/run installs them).
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'ferkeras[serve]'")
pytest.importorskip("selenium", reason="needs selenium: pip install 'ferkeras[browser]'")

from serve_helpers import encode, face_frame, running_server  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no Chromium and chromedriver on PATH (apt-get install chromium chromium-driver)")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1200,900",
                  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
BOX_RGB = (0, 224, 160)  # BOX_COLOUR in ferkeras/serve/static/app.js


# ----------------------------------------------------------------------------- the video
def rgb_to_i420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 limited-range Y, U, V planes (U and V at half resolution), as uint8."""
    f = rgb.astype(np.float64)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255

    def half(c):
        return c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean(axis=(1, 3))

    return tuple(np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, half(u), half(v)))


def i420_to_rgb(y, u, v) -> np.ndarray:
    """The RGB frame a browser shows for these planes (BT.601 limited range)."""
    u = u.astype(np.float64).repeat(2, 0).repeat(2, 1) - 128
    v = v.astype(np.float64).repeat(2, 0).repeat(2, 1) - 128
    luma = 1.164 * (y.astype(np.float64) - 16)
    rgb = np.stack([luma + 1.596 * v, luma - 0.392 * u - 0.813 * v, luma + 2.017 * u], -1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def write_y4m(path, rgb: np.ndarray, *, frames: int = 5, fps: int = 15):
    """A Y4M video (the format Chromium's fake camera plays) repeating one RGB frame."""
    height, width = rgb.shape[:2]
    planes = b"".join(p.tobytes() for p in rgb_to_i420(rgb))
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + planes)


def test_y4m_round_trip_is_close():
    frame = face_frame()
    back = i420_to_rgb(*rgb_to_i420(frame))
    assert back.shape == frame.shape
    assert np.abs(back.astype(int) - frame.astype(int)).mean() < 3


# ----------------------------------------------------------------------------- the page
def start_chromium(tmp_path, video):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--use-file-for-fake-video-capture={video}")
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "driver.log"))
    return webdriver.Chrome(service=service, options=options)


def wait_for(driver, script: str, *, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {script}\nstatus: "
                         + str(driver.execute_script(
                             "return document.getElementById('status').textContent")))


def test_webcam_page_draws_the_box_and_the_predictors_label(tmp_path, monkeypatch):
    import ferkeras

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium: never look for drivers online
    frame = face_frame()
    video = tmp_path / "face.y4m"
    write_y4m(video, frame)
    shown = i420_to_rgb(*rgb_to_i420(frame))  # the frame as the camera delivers it
    (face,) = ferkeras.Predictor().predict(shown)
    second = sorted(face["scores"].values())[-2]
    assert face["score"] - second > 0.3, "the test frame's label must not be a near tie"

    with running_server(tmp_path) as (base, process, log):
        driver = start_chromium(tmp_path, video)
        try:
            driver.get(base + "/?camera")
            wait_for(driver, "return window.ferkerasPage.frames >= 3")
            result = driver.execute_script("return window.ferkerasPage.lastResult")
            labels = driver.execute_script(
                "return [...document.querySelectorAll('#faces li')].map(li => li.dataset.label)")
            (record,) = result["records"]
            assert record["label"] == face["label"] and labels == [face["label"]]
            # The box is drawn on the overlay: its left edge has the box colour.
            pixel = driver.execute_script("""
                const [x, y, w, h] = window.ferkerasPage.lastBoxes[0];
                const c = document.getElementById('overlay');
                return Array.from(c.getContext('2d').getImageData(
                    Math.round(x), Math.round(y + h / 2), 1, 1).data);""")
            assert pixel[3] > 200 and np.abs(np.array(pixel[:3]) - BOX_RGB).max() < 40, pixel
            # The frame was sent scaled down (480 px); its box, drawn back in the camera's
            # pixels, lies near the predictor's box on the full frame.
            drawn = driver.execute_script("return window.ferkerasPage.lastBoxes[0]")[:4]
            assert record["box"][2] < face["box"][2]
            assert np.allclose(drawn, face["box"], atol=0.1 * face["box"][2] + 4), drawn
            assert driver.execute_script(
                "return document.querySelector('.top').textContent").startswith(face["label"])
            assert driver.execute_script(  # no key needed: the key row stays hidden
                "return document.getElementById('key-row').offsetParent === null")
            screenshot = tmp_path / "serve_page.png"
            assert driver.save_screenshot(str(screenshot))
            if os.environ.get("FERKERAS_SCREENSHOT"):
                shutil.copy(screenshot, os.environ["FERKERAS_SCREENSHOT"])
            console = [entry for entry in driver.get_log("browser")
                       if entry["level"] == "SEVERE"]
            assert not console, console
            # A chosen file: the camera stops, the still image gets its box and label.
            from selenium.webdriver.common.by import By

            still = tmp_path / "still.png"
            encode(shown, "PNG", path=still)
            driver.find_element(By.ID, "file").send_keys(str(still))
            wait_for(driver, "return window.ferkerasPage.frames >= 1 && "
                             "document.getElementById('still').offsetParent !== null && "
                             "window.ferkerasPage.lastResult.width === 640 && "
                             "document.getElementById('status').textContent.includes('face')")
            result = driver.execute_script("return window.ferkerasPage.lastResult")
            assert result["records"] == ferkeras_records(face, "still.png")
        finally:
            driver.quit()


def ferkeras_records(face: dict, source: str) -> list[dict]:
    from ferkeras.commands.predict_cmd import face_records

    return face_records(source, None, [face])


def test_page_asks_for_the_api_key_then_works(tmp_path, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")
    video = tmp_path / "face.y4m"
    write_y4m(video, face_frame())
    with running_server(tmp_path, "--api-key", "k3y",
                        ready_headers={"X-API-Key": "k3y"}) as (base, process, log):
        driver = start_chromium(tmp_path, video)
        try:
            driver.get(base + "/?camera")
            wait_for(driver, "return (window.ferkerasPage.lastError || '').startsWith('401') "
                             "&& document.getElementById('key-row').offsetParent !== null")
            assert driver.execute_script("return window.ferkerasPage.frames") == 0
            from selenium.webdriver.common.by import By

            driver.find_element(By.ID, "key").send_keys("k3y")
            driver.find_element(By.ID, "key-save").click()
            wait_for(driver, "return window.ferkerasPage.frames >= 2")
            assert driver.execute_script("return window.ferkerasPage.lastResult.records[0]"
                                         ".label")
        finally:
            driver.quit()
