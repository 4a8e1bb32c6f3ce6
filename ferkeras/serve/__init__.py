"""`ferkeras serve`: an HTTP service and a webcam page for the ONNX predictor.

Needs the `serve` extra (`pip install 'ferkeras[serve]'`: Starlette, uvicorn,
python-multipart). Importing this package imports neither of them; the names below load on
first use:

    from ferkeras.serve import ServeConfig, create_app
    app = create_app(ServeConfig(model="export/my_run", api_key="..."))  # any ASGI server
"""

import importlib

_EXPORTS = {
    "create_app": "ferkeras.serve.app",
    "ServeConfig": "ferkeras.serve.app",
    "Limits": "ferkeras.serve.limits",
    "RequestError": "ferkeras.serve.limits",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ferkeras.serve' has no attribute {name!r}")
