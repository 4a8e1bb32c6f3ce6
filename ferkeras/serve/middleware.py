"""Plain ASGI middleware for `ferkeras serve`: the API key and the response security headers.

Pure ASGI (no BaseHTTPMiddleware), so request bodies stream through untouched.
"""

from __future__ import annotations

import hmac
import json

# Paths answered without the API key: liveness, and the page and its two static files,
# which hold no data (the page asks for the key and sends it with each API call).
PUBLIC_PATHS = frozenset({"/healthz", "/", "/static/app.js", "/static/style.css"})
KEY_HEADER = "x-api-key"

# The page needs nothing from another origin: scripts, styles, images and fetches are
# same-origin; camera frames are blob:/mediastream: URLs.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CSP.encode()),
    (b"cache-control", b"no-store"),
]


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key from `X-API-Key: KEY` or `Authorization: Bearer KEY`, else None."""
    for name, value in headers:
        name = name.lower()
        if name == KEY_HEADER.encode():
            return value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class APIKeyMiddleware:
    """401 (JSON) for every HTTP request outside PUBLIC_PATHS without the right key.

    CORS preflights (OPTIONS) pass: a browser sends them without custom headers, and the
    CORS middleware (outside this one) answers them.
    """

    def __init__(self, app, *, api_key: str):
        if not api_key:
            raise ValueError("api_key must be a non-empty string. Received: api_key=''")
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope["path"] in PUBLIC_PATHS
                or scope["method"] == "OPTIONS"):
            await self.app(scope, receive, send)
            return
        given = presented_key(scope["headers"])
        if given is not None and hmac.compare_digest(given.encode(), self._key):
            await self.app(scope, receive, send)
            return
        message = ("missing API key: send it as the X-API-Key header (or Authorization: "
                   "Bearer KEY)" if given is None else "wrong API key")
        body = json.dumps({"error": {"status": 401, "code": "unauthorized",
                                     "message": message}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b'Bearer realm="ferkeras"')]})
        await send({"type": "http.response.body", "body": body})


class SecurityHeadersMiddleware:
    """Adds SECURITY_HEADERS to every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
