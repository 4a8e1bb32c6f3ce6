"""The `ferkeras serve` ASGI app (Starlette): `create_app(ServeConfig(...))`.

Endpoints (docs: README "Serve it"):
  GET  /healthz           liveness, never needs the key
  GET  /readyz            200 once the model is loaded, else 503
  GET  /v1/model          classes, input, model card summary, versions, limits
  POST /v1/predict        one image (raw JPEG/PNG/WebP body, or one multipart file part)
  POST /v1/predict/batch  several images as multipart file parts
  GET  /                  the webcam page (static files from the package; no directory)

Answers of the predict endpoints carry `records`: for each image, exactly the objects
`ferkeras predict --json` writes (docs/predict_schema.json), made by the same function.
Every error is JSON {"error": {"status", "code", "message"}} with no stack trace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time

from ferkeras.serve.limits import (
    MULTIPART,
    RAW_TYPES,
    Limits,
    RequestError,
    check_content_length,
    check_raw_type,
    decode_image,
    media_type,
)
from ferkeras.serve.receive import multipart_files, read_body

CONFIG_ENV = "FERKERAS_SERVE_CONFIG"
DEFAULT_DETECTOR = "blazeface+haar"
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}
_log = logging.getLogger("ferkeras.serve")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What one server runs with; every worker process builds its app from it.

    model: export folder (None: $FERKERAS_MODEL, else the shipped model). detector: face
    detector name; detect: look for faces unless a request passes `?detect=false`.
    threads: onnxruntime intra-op threads (0: one per core). api_key: required on every
    endpoint but /healthz and the page when set. cors: origins allowed to call the API
    from a browser (none: CORS off). limits: see `Limits`. decode_threads: images decoded
    at once.
    """

    model: str | None = None
    detector: str = DEFAULT_DETECTOR
    detect: bool = True
    threads: int = 0
    api_key: str | None = None
    cors: tuple[str, ...] = ()
    limits: Limits = Limits()
    decode_threads: int = 2

    def __post_init__(self):
        from ferkeras.deploy.faces import list_detectors

        if self.detector not in list_detectors():
            raise ValueError(f"Unknown detector {self.detector!r}; one of "
                             f"{list_detectors()}. Received: detector={self.detector!r}")
        if self.decode_threads < 1:
            raise ValueError(f"decode_threads must be >= 1. Received: "
                             f"decode_threads={self.decode_threads}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be None or a non-empty string. Received: ''")

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["cors"] = list(self.cors)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        data = json.loads(text)
        data["limits"] = Limits(**data["limits"])
        data["cors"] = tuple(data["cors"])
        return cls(**data)


def app_from_env():
    """The app for `uvicorn --factory ferkeras.serve.app:app_from_env`, built from the
    ServeConfig JSON in $FERKERAS_SERVE_CONFIG (how `ferkeras serve` hands its options to
    each worker process)."""
    text = os.environ.get(CONFIG_ENV)
    return create_app(ServeConfig.from_json(text) if text else ServeConfig())


def create_app(config: ServeConfig | None = None, *, service=None):
    """The Starlette app for `config`.

    service: a loaded `ferkeras.serve.service.ModelService` to use (tests inject one);
    default: each process loads `config.model` at start-up (one onnxruntime session per
    worker), and /readyz answers 503 until then.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.routing import Route

    from ferkeras.serve.middleware import APIKeyMiddleware, SecurityHeadersMiddleware

    config = config or ServeConfig()
    state = _State(config, service)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if state.service is None:
            from anyio import to_thread

            from ferkeras.serve.service import ModelService

            state.service = await to_thread.run_sync(lambda: ModelService.load(
                config.model, detector=config.detector, detect=config.detect,
                threads=config.threads))
            _log.info("model %s loaded", state.service.id)
        yield

    middleware = [Middleware(SecurityHeadersMiddleware)]
    if config.cors:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(config.cors), allow_methods=["GET", "POST"],
            allow_headers=["content-type", "x-api-key", "authorization"], max_age=600))
    if config.api_key:
        middleware.append(Middleware(APIKeyMiddleware, api_key=config.api_key))
    routes = [
        Route("/healthz", state.healthz, methods=["GET"]),
        Route("/readyz", state.readyz, methods=["GET"]),
        Route("/v1/model", state.model, methods=["GET"]),
        Route("/v1/predict", state.predict, methods=["POST"]),
        Route("/v1/predict/batch", state.predict_batch, methods=["POST"]),
        Route("/", state.index, methods=["GET"]),
        Route("/static/{name}", state.static, methods=["GET"]),
    ]
    handlers = {RequestError: _request_error, HTTPException: _http_error,
                Exception: _internal_error}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers,
                     lifespan=lifespan)


def error_response(status: int, code: str, message: str, headers=None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"status": status, "code": code, "message": message}},
                        status_code=status, headers=headers)


async def _request_error(request, exc: RequestError):
    return error_response(exc.status, exc.code, exc.message, exc.headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


async def _http_error(request, exc):
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = {404: f"no such path: {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(
        exc.status_code, str(exc.detail))
    return error_response(exc.status_code, code, message, getattr(exc, "headers", None))


async def _internal_error(request, exc):
    _log.exception("internal error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error (logged by the server)")


class _State:
    """The endpoints, sharing one config, one model service and the worker threads."""

    def __init__(self, config: ServeConfig, service):
        self.config = config
        self.limits = config.limits
        self.service = service
        # Decoding and inference share one hop to a worker thread per request (each hop
        # is a wake-up that waits for a CPU on a busy machine): up to `decode_threads`
        # threads decode at once while one more holds the predictor.
        self._decode_slots = threading.BoundedSemaphore(config.decode_threads)
        self._limiter = None

    def _thread_limiter(self):
        if self._limiter is None:  # created inside the running event loop
            from anyio import CapacityLimiter

            self._limiter = CapacityLimiter(self.config.decode_threads + 1)
        return self._limiter

    def _ready_service(self):
        if self.service is None:
            raise RequestError(503, "not_ready", "the model is still loading",
                               headers={"Retry-After": "1"})
        return self.service

    # ------------------------------------------------------------------ small endpoints
    async def healthz(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok"})

    async def readyz(self, request):
        from starlette.responses import JSONResponse

        service = self._ready_service()
        return JSONResponse({"status": "ready", "model": service.id})

    async def model(self, request):
        from starlette.responses import JSONResponse

        service = self._ready_service()
        limits = dataclasses.asdict(self.limits)
        return JSONResponse({**service.info, "limits": limits,
                             "accepts": [*RAW_TYPES, MULTIPART]})

    async def index(self, request):
        from starlette.responses import Response

        return Response(_static_bytes("index.html"), media_type="text/html; charset=utf-8")

    async def static(self, request):
        from starlette.responses import Response

        name = request.path_params["name"]
        if name not in STATIC_FILES:  # a fixed list: no traversal, no listing
            raise RequestError(404, "not_found", f"no such path: {request.url.path}")
        return Response(_static_bytes(name), media_type=STATIC_FILES[name])

    # ------------------------------------------------------------------ predictions
    async def predict(self, request):
        deadline = time.monotonic() + self.limits.timeout_s
        detect = self._detect_param(request)
        files = await self._receive(request, deadline, batch=False)
        (result,) = await self._run(files, detect, deadline)
        if request.query_params.get("format") == "jsonl":
            from starlette.responses import Response

            lines = "".join(json.dumps(r) + "\n" for r in result["records"])
            return Response(lines, media_type="application/x-ndjson")
        from starlette.responses import JSONResponse

        return JSONResponse({"model": self.service.id, **result})

    async def predict_batch(self, request):
        from starlette.responses import JSONResponse

        deadline = time.monotonic() + self.limits.timeout_s
        detect = self._detect_param(request)
        files = await self._receive(request, deadline, batch=True)
        results = await self._run(files, detect, deadline)
        return JSONResponse({"model": self.service.id, "results": results})

    def _detect_param(self, request) -> bool:
        value = request.query_params.get("detect")
        if value is None:
            return self._ready_service().detect
        lowered = value.lower()
        if lowered in ("1", "true", "yes"):
            return True
        if lowered in ("0", "false", "no"):
            return False
        raise RequestError(400, "bad_parameter",
                           f"detect must be true or false. Received: detect={value[:20]!r}")

    async def _receive(self, request, deadline: float, *, batch: bool):
        """[(source, bytes)] of the request's image(s), within size, type and time."""
        from anyio import move_on_after

        self._ready_service()
        kind = media_type(request.headers.get("content-type"))
        if batch and kind != MULTIPART:
            raise RequestError(415, "unsupported_media_type",
                               f"/v1/predict/batch takes {MULTIPART} (one file part per "
                               f"image). Received: {kind or 'no Content-Type'}")
        if kind != MULTIPART:
            check_raw_type(request.headers.get("content-type"))
        check_content_length(request.headers.get("content-length"), self.limits.max_body_bytes)
        body = None
        with move_on_after(deadline - time.monotonic()):
            body = await read_body(request, self.limits.max_body_bytes)
        if body is None:
            raise RequestError(408, "request_timeout",
                               f"the request body did not arrive within "
                               f"{self.limits.timeout_s:g} s")
        if kind != MULTIPART:
            return [("upload", body)]
        files = await multipart_files(request, body, self.limits)
        if not batch and len(files) > 1:
            raise RequestError(400, "too_many_images",
                               f"/v1/predict takes one image; {len(files)} were sent (use "
                               "/v1/predict/batch)")
        return files

    async def _run(self, files, detect: bool, deadline: float) -> list[dict]:
        """Decode and predict in a worker thread, before the deadline or 503."""
        from anyio import move_on_after, to_thread

        service = self._ready_service()
        results = None
        with move_on_after(deadline - time.monotonic()):
            results = await to_thread.run_sync(
                lambda: self._decode_and_predict(service, files, detect, deadline),
                limiter=self._thread_limiter(), abandon_on_cancel=True)
        if results is None:
            raise RequestError(503, "timeout", f"no answer within the request timeout "
                               f"({self.limits.timeout_s:g} s); retry later",
                               headers={"Retry-After": "1"})
        return results

    def _decode_and_predict(self, service, files, detect: bool, deadline: float):
        """[{width, height, records}] per file. Blocking: runs in a worker thread."""
        from ferkeras.commands.predict_cmd import face_records

        images = []
        for source, data in files:
            if not self._decode_slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise RequestError(503, "timeout", "too busy to decode the image before the "
                                   "request timeout; retry later", headers={"Retry-After": "1"})
            try:
                images.append(decode_image(data, max_pixels=self.limits.max_pixels,
                                           name=source))
            finally:
                self._decode_slots.release()
        faces = service.predict(images, detect=detect, deadline=deadline)
        return [{"width": int(image.shape[1]), "height": int(image.shape[0]),
                 "records": face_records(source, None, found)}
                for (source, _), image, found in zip(files, images, faces, strict=True)]


def _static_bytes(name: str) -> bytes:
    from importlib import resources

    return resources.files("ferkeras.serve").joinpath("static", name).read_bytes()
