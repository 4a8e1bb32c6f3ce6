"""Helpers for the `ferkeras serve` tests: images made in memory, a hand-built PNG bomb,
and a real `ferkeras serve` process on a loopback port."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
from test_predict import face_image
from tiny_recipe import cli_env, free_port

REPO = pathlib.Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "docs" / "predict_schema.json").read_text())


def face_frame(width=640, height=480, *, scale=1.0, shift=(0, 0), background=0) -> np.ndarray:
    """RGB (height, width, 3) uint8: the drawn cartoon face (tests/test_predict.py), which
    BlazeFace finds, pasted on a plain background."""
    face = face_image(scale=scale)[..., ::-1]  # drawn as BGR
    canvas = np.full((height, width, 3), background, np.uint8)
    top = (height - face.shape[0]) // 2 + shift[1]
    left = (width - face.shape[1]) // 2 + shift[0]
    canvas[top:top + face.shape[0], left:left + face.shape[1]] = face
    return canvas


def encode(rgb: np.ndarray, fmt: str = "PNG", *, path=None, **options) -> bytes:
    """The bytes of `rgb` saved as `fmt` by Pillow (also written to `path` if given)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, **options)
    if path is not None:
        pathlib.Path(path).write_bytes(buffer.getvalue())
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose header declares width x height RGB pixels (30 GB decoded)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def http(url: str, *, data: bytes | None = None, headers=None, method=None, timeout=30):
    """(status, headers, body bytes) of one request; 4xx/5xx are returned, not raised."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@contextlib.contextmanager
def running_server(tmp_path, *args, env=None, ready_headers=None, timeout=90):
    """A `ferkeras serve` process on a free loopback port; yields (base URL, Popen, log
    path). Waits for /readyz; stops the server (SIGTERM) on exit."""
    port = free_port()
    log_path = pathlib.Path(tmp_path) / f"serve-{port}.log"
    command = [sys.executable, "-m", "ferkeras.cli", "serve", "--port", str(port),
               "--no-access-log", "--log-level", "warning", *args]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=cli_env(tmp_path, **(env or {})), cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ferkeras serve exited {process.returncode}:\n"
                                   + log_path.read_text()[-3000:])
            try:
                if http(base + "/readyz", headers=ready_headers, timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("ferkeras serve not ready in time:\n"
                                   + log_path.read_text()[-3000:])
            time.sleep(0.2)
        yield base, process, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
