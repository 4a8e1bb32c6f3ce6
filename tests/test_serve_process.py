"""`ferkeras serve` as a real process (uvicorn, 2 workers) and its command line: a body that
arrives too slowly (408), bodies too long by their header and by their bytes (413), over raw
sockets, each followed by a good answer; the CLI's defaults, warning and API-key variable.
Runs in ~15 s.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'ferkeras[serve]'")

from click.testing import CliRunner  # noqa: E402
from serve_helpers import SCHEMA, encode, face_frame, http, running_server  # noqa: E402
from test_predict import validate  # noqa: E402


def raw_exchange(base: str, head: str, parts=(), *, pause=0.0, timeout=10.0):
    """Send `head` then each of `parts` (pausing `pause` s before each) on one socket;
    return (status, JSON body) of the answer, read even if the server answers early."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode())
        for part in parts:
            time.sleep(pause)
            try:
                sock.sendall(part)
            except OSError:  # the server answered and closed: read what it said
                break
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        header, _, body = data.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(":", 1)[1]) for line in lines
                      if line.lower().startswith("content-length:"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, json.loads(body)


def test_real_server_refuses_slow_and_long_bodies_and_keeps_answering(tmp_path):
    png = encode(face_frame())
    with running_server(tmp_path, "--workers", "2", "--timeout", "1.5",
                        "--max-body-mb", "0.25") as (base, process, log):

        def good():
            status, _, body = http(base + "/v1/predict", data=png,
                                   headers={"Content-Type": "image/png"})
            assert status == 200, body
            (record,) = json.loads(body)["records"]
            validate(record, SCHEMA)
            return record

        first = good()
        # Headers say 2000 bytes; 10 arrive, then nothing: 408 at the timeout.
        started = time.monotonic()
        status, body = raw_exchange(base, "POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
                                    "Content-Type: image/png\r\nContent-Length: 2000\r\n\r\n",
                                    [png[:10]], pause=0.0, timeout=10)
        assert (status, body["error"]["code"]) == (408, "request_timeout")
        assert 1.2 < time.monotonic() - started < 6
        assert good() == first
        # A trickle: each chunk in time, the whole past the timeout.
        status, body = raw_exchange(base, "POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
                                    "Content-Type: image/png\r\nContent-Length: 100\r\n\r\n",
                                    [b"x" * 10] * 10, pause=0.3)
        assert (status, body["error"]["code"]) == (408, "request_timeout")
        assert good() == first
        # Declared too long: refused from the header, nothing read.
        status, body = raw_exchange(base, "POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
                                    "Content-Type: image/jpeg\r\nContent-Length: 999999999"
                                    "\r\n\r\n")
        assert (status, body["error"]["code"]) == (413, "body_too_large")
        # Chunked, no length: refused once the counted bytes pass the limit.
        chunk = b"10000\r\n" + b"\0" * 0x10000 + b"\r\n"
        status, body = raw_exchange(base, "POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
                                    "Content-Type: image/jpeg\r\nTransfer-Encoding: chunked"
                                    "\r\n\r\n", [chunk] * 16)
        assert (status, body["error"]["code"]) == (413, "body_too_large")
        assert good() == first
        assert http(base + "/healthz")[0] == 200
        assert process.poll() is None
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture()
def captured_run(monkeypatch):
    """Replace uvicorn.run; return the list its calls' (kwargs, ServeConfig) go to."""
    import uvicorn

    from ferkeras.serve.app import CONFIG_ENV, ServeConfig

    calls = []

    def fake_run(target, **kwargs):
        import os

        calls.append((target, kwargs, ServeConfig.from_json(os.environ[CONFIG_ENV])))

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setattr("ferkeras.serve.command.tune_malloc",
                        lambda: calls.append("tune_malloc"))
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    return calls


def test_cli_binds_loopback_by_default_and_warns_otherwise(captured_run, monkeypatch):
    from ferkeras.serve.command import serve

    monkeypatch.delenv("FERKERAS_API_KEY", raising=False)
    run = CliRunner().invoke(serve, [])
    assert run.exit_code == 0, run.output
    assert captured_run[0] == "tune_malloc"
    target, kwargs, config = captured_run[-1]
    assert target == "ferkeras.serve.app:app_from_env" and kwargs["factory"] is True
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 8000
    assert kwargs["workers"] == 1 and config.api_key is None and config.cors == ()
    assert "warning" not in run.output
    run = CliRunner().invoke(serve, ["--host", "0.0.0.0", "--workers", "2", "--cors",
                                     "https://a.example", "--timeout", "5"])
    assert run.exit_code == 0, run.output
    assert "warning: --host 0.0.0.0 is not a loopback address" in run.output
    assert "NO API key" in run.output
    _, kwargs, config = captured_run[-1]
    assert kwargs["workers"] == 2 and config.cors == ("https://a.example",)
    assert config.limits.timeout_s == 5


def test_cli_api_key_from_option_or_environment(captured_run, monkeypatch):
    from ferkeras.serve.command import serve

    monkeypatch.setenv("FERKERAS_API_KEY", "from-env")
    run = CliRunner().invoke(serve, ["--host", "::"])
    assert run.exit_code == 0, run.output
    assert captured_run[-1][2].api_key == "from-env"
    assert "an API key is set" in run.output
    run = CliRunner().invoke(serve, ["--api-key", "from-option"])
    assert captured_run[-1][2].api_key == "from-option"


def test_tune_malloc_sets_this_process_and_its_workers(monkeypatch):
    import platform

    from ferkeras.serve.command import MALLOC_ARENAS, MALLOC_MMAP_THRESHOLD, tune_malloc

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    took = tune_malloc()
    assert took is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    import os

    assert os.environ["MALLOC_ARENA_MAX"] == str(MALLOC_ARENAS)
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == str(MALLOC_MMAP_THRESHOLD)


def test_cli_refuses_a_bad_model_in_one_line(captured_run, tmp_path):
    from ferkeras.serve.command import serve

    run = CliRunner().invoke(serve, ["--model", str(tmp_path / "nothing")])
    assert run.exit_code == 1 and "no such model folder" in run.output
    assert "Traceback" not in run.output and captured_run == []


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.1.2.3", True),
                                           ("::1", True), ("[::1]", True),
                                           ("localhost", True), ("0.0.0.0", False),
                                           ("::", False), ("192.168.1.5", False),
                                           ("example.com", False)])
def test_is_loopback(host, loopback):
    from ferkeras.serve.command import is_loopback

    assert is_loopback(host) is loopback


def test_help_imports_neither_starlette_nor_uvicorn():
    import subprocess
    import sys

    code = ("import sys\nfrom ferkeras.cli import cli\n"
            "for args in (['--help'], ['serve', '--help']):\n"
            "    try:\n        cli(args)\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('starlette', 'uvicorn', 'multipart', 'onnxruntime',\n"
            "                     'tensorflow') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "--api-key" in run.stdout and "serve" in run.stdout
