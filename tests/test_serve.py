"""`ferkeras serve` in-process (Starlette's TestClient): endpoints, the predict schema,
every refusal, the API key, CORS and the static page. The shipped model; images are made
in memory. Runs in ~15 s.

A real server process (uvicorn, slow bodies, workers) is tests/test_serve_process.py; a
real browser is tests/test_serve_browser.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the serve extra: pip install 'ferkeras[serve]'")
pytest.importorskip("python_multipart", reason="needs python-multipart (the serve extra)")

from serve_helpers import SCHEMA, encode, face_frame, png_bomb  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_predict import validate  # noqa: E402

from ferkeras.commands.predict_cmd import face_records  # noqa: E402
from ferkeras.serve import Limits, ServeConfig, create_app  # noqa: E402
from ferkeras.serve.service import ModelService  # noqa: E402

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def service():
    return ModelService.load(None, detector="blazeface+haar")


@pytest.fixture(scope="module")
def frame():
    return face_frame()


@pytest.fixture(scope="module")
def png(frame):
    return encode(frame, "PNG")


@pytest.fixture(scope="module")
def expected(service, frame):
    """What the predictor itself says of the test frame, as `ferkeras predict --json`."""
    faces = service.predictor.predict(frame)
    assert len(faces) == 1, "the drawn face must be found for these tests to mean anything"
    return face_records("upload", None, faces)


def make_client(service, **config):
    limits = config.pop("limits", Limits())
    app = create_app(ServeConfig(limits=limits, **config), service=service)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture()
def client(service):
    with make_client(service, limits=Limits(max_body_bytes=300_000, max_pixels=2_000_000,
                                            max_images=3)) as c:
        yield c


def post_image(client, data: bytes, content_type="image/png", path="/v1/predict", **kw):
    return client.post(path, content=data, headers={"content-type": content_type}, **kw)


def assert_good_answer(client, png, expected):
    response = post_image(client, png)
    assert response.status_code == 200, response.text
    assert response.json()["records"] == expected


def assert_json_error(response, status: int, code: str):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["status"] == status and body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text


# ----------------------------------------------------------------------------- endpoints
def test_health_ready_and_model(client, service):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model": service.id}
    model = client.get("/v1/model").json()
    assert model["id"].startswith("ferplus8@") and len(model["id"].split("@")[1]) == 12
    assert model["classes"] == list(service.predictor.class_names)
    assert model["input"] == {"image_size": 48, "channels": 1, "color": "grey",
                              "layout": "NHWC"}
    assert model["card"]["title"].startswith("Model card")
    assert 0.5 < model["card"]["test_accuracy"] < 1
    assert model["limits"]["max_body_bytes"] == 300_000
    assert "image/jpeg" in model["accepts"] and model["ferkeras_version"]


def test_readyz_is_503_until_the_model_is_loaded():
    """Before its start-up has loaded the model, the app answers /healthz and says 'not
    ready' (503) elsewhere. (TestClient without `with` does not run the start-up.)"""
    client = TestClient(create_app(ServeConfig()), raise_server_exceptions=False)
    assert client.get("/healthz").status_code == 200
    assert_json_error(client.get("/readyz"), 503, "not_ready")
    assert_json_error(client.get("/v1/model"), 503, "not_ready")
    assert_json_error(client.post("/v1/predict", content=b"x",
                                  headers={"content-type": "image/png"}), 503, "not_ready")


@pytest.mark.parametrize("fmt,content_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                              ("WEBP", "image/webp"),
                                              ("PNG", "application/octet-stream")])
def test_predict_raw_body_answers_schema_records(client, frame, expected, fmt,
                                                 content_type):
    data = encode(frame, fmt, **({"quality": 95} if fmt != "PNG" else {}))
    response = post_image(client, data, content_type)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (640, 480)
    assert body["model"] == client.get("/v1/model").json()["id"]
    (record,) = body["records"]
    validate(record, SCHEMA)
    assert record["box_source"] == "detector" and record["label"] == expected[0]["label"]
    assert np.allclose(record["box"], expected[0]["box"], atol=4)
    if fmt == "PNG":  # lossless: exactly the predictor's own answer
        assert body["records"] == expected


def test_predict_is_what_the_cli_writes(client, png, tmp_path):
    """`ferkeras predict --json FILE` and POST /v1/predict agree on a lossless file."""
    from click.testing import CliRunner

    from ferkeras.commands.predict_cmd import predict

    path = tmp_path / "face.png"
    path.write_bytes(png)
    run = CliRunner().invoke(predict, [str(path), "--json"])
    assert run.exit_code == 0, run.output
    (cli_record,) = [json.loads(line) for line in run.stdout.splitlines() if line]
    (served,) = client.post("/v1/predict", files={"image": ("face.png", png, "image/png")}
                            ).json()["records"]
    assert served["source"] == "face.png" and cli_record["source"] == str(path)
    assert served["box"] == cli_record["box"] and served["label"] == cli_record["label"]
    for name, prob in cli_record["scores"].items():
        assert served["scores"][name] == pytest.approx(prob, abs=1e-5)
    jsonl = client.post("/v1/predict?format=jsonl", content=png,
                        headers={"content-type": "image/png"})
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    (line,) = jsonl.text.splitlines()
    validate(json.loads(line), SCHEMA)


def test_no_face_and_detect_false(client, expected):
    blank = encode(np.full((480, 640, 3), 90, np.uint8))
    (record,) = post_image(client, blank).json()["records"]
    validate(record, SCHEMA)
    assert record["error"] == "no face" and record["box"] is None
    (whole,) = post_image(client, blank, path="/v1/predict?detect=false").json()["records"]
    validate(whole, SCHEMA)
    assert whole["box"] == [0, 0, 640, 480] and whole["box_source"] == "whole_image"


def test_batch(client, frame, png, expected):
    files = [("images", ("a.png", png, "image/png")),
             ("images", ("b.jpg", encode(frame, "JPEG", quality=95), "image/jpeg")),
             ("images", ("blank.png", encode(np.zeros((100, 300, 3), np.uint8)), "image/png"))]
    response = client.post("/v1/predict/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["records"][0]["source"] for r in results] == ["a.png", "b.jpg", "blank.png"]
    for result in results:
        for record in result["records"]:
            validate(record, SCHEMA)
    assert results[0]["records"][0]["scores"] == expected[0]["scores"]
    assert results[1]["records"][0]["label"] == expected[0]["label"]
    assert results[2]["records"][0]["error"] == "no face"
    too_many = [("images", (f"{i}.png", png, "image/png")) for i in range(4)]
    assert_json_error(client.post("/v1/predict/batch", files=too_many), 400, "bad_multipart")
    assert_json_error(post_image(client, png, path="/v1/predict/batch"), 415,
                      "unsupported_media_type")


# ----------------------------------------------------------------------------- refusals
def _chunks(size: int, step: int = 65536):
    for start in range(0, size, step):
        yield b"\0" * min(step, size - start)


def _truncated_jpeg(frame):
    data = encode(frame, "JPEG", quality=90)
    return data[: len(data) // 2]


def _corrupt_png(frame):
    data = bytearray(encode(frame[:120, :160], "PNG"))
    data[60:80] = b"\xff" * 20  # inside IDAT: its CRC no longer matches
    return bytes(data)


BAD_REQUESTS = {
    # name: (request kwargs builder(frame, png), status, code)
    "empty_body": (lambda f, p: dict(content=b"", headers={"content-type": "image/jpeg"}),
                   400, "empty_body"),
    "unknown_type": (lambda f, p: dict(content=p, headers={"content-type": "text/plain"}),
                     415, "unsupported_media_type"),
    "no_type": (lambda f, p: dict(content=p, headers={"content-type": ""}),
                415, "unsupported_media_type"),
    "not_an_image": (lambda f, p: dict(content=b"<html>hello</html>" * 10,
                                       headers={"content-type": "image/jpeg"}),
                     422, "not_an_image"),
    "truncated_jpeg": (lambda f, p: dict(content=_truncated_jpeg(f),
                                         headers={"content-type": "image/jpeg"}),
                       422, "corrupt_image"),
    "corrupt_png": (lambda f, p: dict(content=_corrupt_png(f),
                                      headers={"content-type": "image/png"}),
                    422, "corrupt_image"),
    "png_bomb": (lambda f, p: dict(content=png_bomb(), headers={"content-type": "image/png"}),
                 422, "image_too_large"),
    "over_pixel_limit": (lambda f, p: dict(content=encode(np.zeros((1500, 1500, 3), np.uint8)),
                                           headers={"content-type": "image/png"}),
                         422, "image_too_large"),
    "declared_too_long": (lambda f, p: dict(content=p, headers={
        "content-type": "image/png", "content-length": "400000"}), 413, "body_too_large"),
    "streamed_too_long": (lambda f, p: dict(content=_chunks(400_000),
                                            headers={"content-type": "image/png"}),
                          413, "body_too_large"),
    "multipart_no_file": (lambda f, p: dict(data={"note": "no file"},
                                            files={"x": (None, b"field only")}),
                          400, "no_image"),
    "multipart_two_files": (lambda f, p: dict(files=[("a", ("a.png", p, "image/png")),
                                                     ("b", ("b.png", p, "image/png"))]),
                            400, "too_many_images"),
    "multipart_text_part": (lambda f, p: dict(files={"a": ("a.txt", b"hi", "text/plain")}),
                            415, "unsupported_media_type"),
    "broken_multipart": (lambda f, p: dict(content=b"--zz\r\nnonsense",
                                           headers={"content-type":
                                                    "multipart/form-data; boundary=zz"}),
                         400, "no_image"),
    "bad_detect_param": (lambda f, p: dict(content=p, headers={"content-type": "image/png"},
                                           params={"detect": "maybe"}),
                         400, "bad_parameter"),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_each_bad_request_gets_its_json_error_and_the_server_answers_the_next(
        client, frame, png, expected, name):
    build, status, code = BAD_REQUESTS[name]
    response = client.post("/v1/predict", **build(frame, png))
    assert_json_error(response, status, code)
    assert_good_answer(client, png, expected)


def test_a_bomb_is_refused_before_a_pixel_is_decoded(client, monkeypatch, png, expected):
    from PIL import ImageFile

    loads = []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda self: loads.append(self.size) or original(self))
    assert_json_error(post_image(client, png_bomb(40_000, 30_000)), 422, "image_too_large")
    assert_json_error(post_image(client, encode(np.zeros((1500, 1500, 3), np.uint8))), 422,
                      "image_too_large")
    assert loads == []
    assert_good_answer(client, png, expected)
    assert loads and set(loads) == {(640, 480)}  # only the good image was decoded


def test_wrong_method_and_unknown_path_are_json(client):
    assert_json_error(client.get("/v1/predict"), 405, "method_not_allowed")
    assert_json_error(client.get("/v1/nothing"), 404, "not_found")


class _SlowService:
    """A ModelService whose predictions take `delay` seconds (or raise `error`); `done` is
    set when a prediction has finished."""

    def __init__(self, service, delay=0.0, error=None):
        self._service, self.delay, self.error = service, delay, error
        self.id, self.info, self.detect = service.id, service.info, service.detect
        self.done = threading.Event()

    def predict(self, images, *, detect, deadline):
        if self.error:
            raise self.error
        time.sleep(self.delay)
        try:
            return self._service.predict(images, detect=detect, deadline=deadline)
        finally:
            self.done.set()


def test_processing_past_the_timeout_is_503_then_the_server_answers(service, png, expected):
    slow = _SlowService(service, delay=3.0)
    with make_client(slow, limits=Limits(timeout_s=0.5)) as client:
        started = time.monotonic()
        assert_json_error(post_image(client, png), 503, "timeout")
        assert time.monotonic() - started < 2.5  # answered at the deadline, not after
        slow.delay = 0.0
        assert slow.done.wait(30)  # the abandoned inference thread finishes ...
        assert_good_answer(client, png, expected)  # ... and the next request is served


def test_an_internal_error_is_a_json_500_without_a_stack_trace(service, png, expected,
                                                                 caplog):
    broken = _SlowService(service, error=RuntimeError("boom /secret/path.py line 1"))
    with make_client(broken) as client:
        response = post_image(client, png)
        assert_json_error(response, 500, "internal_error")
        assert "boom" not in response.text and "secret" not in response.text
        broken.error = None
        assert_good_answer(client, png, expected)
    assert "boom" in caplog.text  # logged on the server side, with its traceback


# ----------------------------------------------------------------------------- API key
def test_api_key_on_every_endpoint_but_healthz_and_the_page(service, png, expected):
    with make_client(service, api_key=KEY) as client:
        assert client.get("/healthz").status_code == 200
        for path in ("/", "/static/app.js", "/static/style.css"):
            assert client.get(path).status_code == 200, path
        for method, path in [("GET", "/readyz"), ("GET", "/v1/model"),
                             ("POST", "/v1/predict"), ("POST", "/v1/predict/batch"),
                             ("GET", "/v1/unknown")]:
            for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"},
                            {"authorization": f"Basic {KEY}"}):
                response = client.request(method, path, headers=headers)
                assert_json_error(response, 401, "unauthorized")
        assert client.get("/readyz", headers={"x-api-key": KEY}).status_code == 200
        response = client.post("/v1/predict", content=png, headers={
            "content-type": "image/png", "authorization": f"Bearer {KEY}"})
        assert response.json()["records"] == expected
        response = client.post("/v1/predict", content=png, headers={
            "content-type": "image/png", "x-api-key": KEY})
        assert response.json()["records"] == expected
    with make_client(service) as client:  # no key configured: none needed
        assert_good_answer(client, png, expected)
        assert client.get("/v1/model").status_code == 200


# ----------------------------------------------------------------------------- CORS, page
def test_cors_is_off_unless_an_origin_is_given(service):
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "content-type"}
    with make_client(service) as client:
        response = client.options("/v1/predict", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        response = client.get("/v1/model", headers={"origin": "https://app.example"})
        assert "access-control-allow-origin" not in response.headers
    with make_client(service, cors=("https://app.example",), api_key=KEY) as client:
        response = client.options("/v1/predict", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options("/v1/predict", headers={**preflight,
                                                       "origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
        response = client.get("/v1/model", headers={"origin": "https://app.example",
                                                    "x-api-key": KEY})
        assert response.headers["access-control-allow-origin"] == "https://app.example"


def test_page_is_offline_and_static_routes_cannot_escape(client):
    from importlib import resources

    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    static = resources.files("ferkeras.serve").joinpath("static")
    for name in ("index.html", "app.js", "style.css"):
        text = static.joinpath(name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
        assert "@import" not in text and "url(" not in text, name
    assert client.get("/static/app.js").text == static.joinpath("app.js").read_text()
    for path in ("/static/", "/static", "/static/../app.py", "/static/..%2fapp.py",
                 "/static/%2e%2e/%2e%2e/pyproject.toml", "/static/index.html/..",
                 "/static/app.py", "/static/..%2f..%2finference.py", "/static//etc/passwd",
                 "/../../../etc/passwd", "/ferkeras/serve/app.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "import" not in response.text and "root:" not in response.text, path


def test_config_round_trips_and_checks_its_values():
    config = ServeConfig(model="m", detector="haar", api_key="k", cors=("https://a",),
                         limits=Limits(max_body_bytes=10, timeout_s=2.5))
    assert ServeConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="Received: detector='yolo'"):
        ServeConfig(detector="yolo")
    with pytest.raises(ValueError, match="Received: max_pixels=0"):
        Limits(max_pixels=0)
    with pytest.raises(ValueError, match="Received: timeout_s=0"):
        dataclasses.replace(Limits(), timeout_s=0)


def test_limits_refuse_in_order_without_a_server():
    from ferkeras.serve.limits import RequestError, check_content_length, decode_image

    with pytest.raises(RequestError, match="limit is 10") as err:
        check_content_length("11", 10)
    assert err.value.status == 413
    with pytest.raises(RequestError) as err:
        check_content_length("12abc", 10)
    assert err.value.status == 400
    rgb = decode_image(encode(np.full((4, 6, 3), 7, np.uint8)), max_pixels=24)
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8 and (rgb == 7).all()
    with pytest.raises(RequestError) as err:
        decode_image(encode(np.zeros((4, 7, 3), np.uint8)), max_pixels=24)
    assert err.value.code == "image_too_large"
    # EXIF orientation is applied, as `ferkeras predict` does.
    from PIL import Image

    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(buffer, "JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), max_pixels=100).shape == (6, 4, 3)
