"""`ferkeras serve`: the HTTP service and webcam page, on uvicorn.

Only click is imported here (this module is loaded for `ferkeras --help`); Starlette and
uvicorn load when the command runs.
"""

from __future__ import annotations

import ipaddress

import click

from ferkeras.deploy.faces import list_detectors

API_KEY_ENV = "FERKERAS_API_KEY"
INSTALL_HINT = "pip install 'ferkeras[serve]'"


MALLOC_ARENAS = 2
MALLOC_MMAP_THRESHOLD = 128 * 1024


def tune_malloc() -> bool:
    """Keep the server's RSS flat under load (glibc only): at most MALLOC_ARENAS malloc
    arenas, and buffers of MALLOC_MMAP_THRESHOLD bytes or more always mmap'ed, so freed
    image buffers go back to the system. Set in this process (mallopt) and, through
    $MALLOC_ARENA_MAX / $MALLOC_MMAP_THRESHOLD_, in the worker processes it starts.
    Returns True where it took effect (not on macOS or musl).

    With glibc's defaults, each decoding thread gets its own arena and the mmap threshold
    rises after the first large free, so decoded images are carved from the heap and
    fragment it. Measured with bench/serve_load.py's client, 8 rounds of 8 s at 32 clients
    (about 1,000 photos): RSS 132 -> 153 MB with glibc's defaults while the count of
    Python objects stayed flat, 127 -> 129 MB with this.
    """
    import ctypes
    import ctypes.util
    import os

    os.environ.setdefault("MALLOC_ARENA_MAX", str(MALLOC_ARENAS))
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MALLOC_MMAP_THRESHOLD))
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # glibc's malloc.h: M_ARENA_MAX -8, M_MMAP_THRESHOLD -3; mallopt returns 1 on success
        return (libc.mallopt(-8, MALLOC_ARENAS) == 1
                and libc.mallopt(-3, MALLOC_MMAP_THRESHOLD) == 1)
    except (OSError, AttributeError):
        return False


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--model", envvar="FERKERAS_MODEL", default=None, type=click.Path(path_type=str),
              help="Export folder (or $FERKERAS_MODEL). Default: the shipped model.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback is reachable from other machines: "
                   "a warning is printed, and --api-key is advised.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes, each loading its own model and detector "
                   "(onnxruntime sessions).")
@click.option("--api-key", envvar=API_KEY_ENV, default=None,
              help=f"Require this key (header X-API-Key, or Authorization: Bearer) on every "
                   f"endpoint but /healthz and the page (or ${API_KEY_ENV}).")
@click.option("--cors", "cors", multiple=True, metavar="ORIGIN",
              help="Let a web page from ORIGIN call the API (repeatable). Default: CORS off.")
@click.option("--detector", default="blazeface+haar", show_default=True,
              type=click.Choice(list_detectors()), help="Face detector.")
@click.option("--no-detect", is_flag=True,
              help="Images are face crops: the whole image is the face, unless a request "
                   "passes ?detect=true.")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0, None),
              help="onnxruntime intra-op threads per worker (0: one per core).")
@click.option("--max-body-mb", default=10.0, show_default=True,
              type=click.FloatRange(0.001, 1024), help="Largest request body (413 above).")
@click.option("--max-pixels", default=40_000_000, show_default=True,
              type=click.IntRange(1, None),
              help="Largest image, width x height, read from its header before decoding.")
@click.option("--max-images", default=16, show_default=True, type=click.IntRange(1, 1024),
              help="Images per /v1/predict/batch request.")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True,
              type=click.FloatRange(0.01, 3600),
              help="Seconds per request: 408 if the body is still arriving, 503 if the "
                   "model has not answered.")
@click.option("--max-connections", default=256, show_default=True,
              type=click.IntRange(1, None),
              help="Concurrent connections per worker; more get uvicorn's plain-text 503.")
@click.option("--tune-malloc/--no-tune-malloc", "tune_malloc_", default=True, show_default=True,
              help="Cap glibc's malloc arenas and fix its mmap threshold, so the server's "
                   "memory stays flat under load.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--access-log/--no-access-log", default=True, show_default=True)
def serve(model, host, port, workers, api_key, cors, detector, no_detect, threads,
          max_body_mb, max_pixels, max_images, timeout_s, max_connections, tune_malloc_,
          log_level, access_log) -> None:
    """Serve the model over HTTP, with a webcam page at http://HOST:PORT/.

    POST /v1/predict answers the records of `ferkeras predict --json` for one image;
    GET /healthz, /readyz and /v1/model describe the server. See the README, "Serve it".
    """
    import os

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import uvicorn

        import ferkeras.serve.app as serve_app
    except ImportError as err:
        raise click.ClickException(f"`ferkeras serve` needs {err.name}: {INSTALL_HINT}") \
            from None
    from ferkeras.deploy.inference import ModelFolderError, read_metadata
    from ferkeras.pretrained import default_model
    from ferkeras.serve.limits import Limits

    model_path, origin = default_model(model)
    if model_path is None:
        raise click.ClickException(origin)
    try:
        read_metadata(model_path.parent if model_path.is_file() else model_path)
    except ModelFolderError as err:
        raise click.ClickException(str(err)) from None
    config = serve_app.ServeConfig(
        model=str(model_path), detector=detector, detect=not no_detect, threads=threads,
        api_key=api_key or None, cors=tuple(cors),
        limits=Limits(max_body_bytes=int(max_body_mb * 1024 * 1024), max_pixels=max_pixels,
                      max_images=max_images, timeout_s=timeout_s))
    if not is_loopback(host):
        key_note = ("an API key is set" if api_key else
                    f"NO API key: anyone who can reach it can use it (--api-key or "
                    f"${API_KEY_ENV})")
        click.echo(f"warning: --host {host} is not a loopback address: the server is "
                   f"reachable from other machines, over plain HTTP; {key_note}", err=True)
    if cors:
        click.echo(f"note: CORS allows {', '.join(cors)}", err=True)
    if tune_malloc_:
        tune_malloc()
    # Each worker process rebuilds the app from this JSON (uvicorn imports the factory).
    os.environ[serve_app.CONFIG_ENV] = config.to_json()
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"ferkeras serve: model {model_path} ({origin}); http://{shown}:{port}/ "
               f"({workers} worker(s))", err=True)
    uvicorn.run("ferkeras.serve.app:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level=log_level, access_log=access_log,
                limit_concurrency=max_connections, timeout_keep_alive=5,
                server_header=False)
