"""What `ferkeras serve` accepts, and how it refuses the rest: size, type and pixel limits.

Plain functions on bytes, so each refusal is tested without a server. Every refusal is a
`RequestError` carrying its HTTP status and a stable `code`; the app turns it into a JSON
error. Pillow is imported inside `decode_image`.

Order of checks for one image: body size (413, from Content-Length before reading and from
the bytes counted while reading), media type (415), empty body (400), format by magic
bytes (422 `not_an_image`), declared dimensions read from the header without decoding a
pixel (422 `image_too_large`), then decoding (422 `corrupt_image` for truncated or broken
files).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

# Media types a raw body may declare; application/octet-stream is sniffed like the others.
IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
RAW_TYPES = (*IMAGE_TYPES, "application/octet-stream")
MULTIPART = "multipart/form-data"


class RequestError(Exception):
    """A request the server refuses: `status` (4xx/5xx), a stable `code` and a message."""

    def __init__(self, status: int, code: str, message: str, *, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def to_json(self) -> dict:
        return {"error": {"status": self.status, "code": self.code, "message": self.message}}


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may carry.

    max_body_bytes: request body size (raw image, or the whole multipart body).
    max_pixels: width x height declared by an image's header; larger images are refused
      before any pixel is decoded (a decompression bomb declares huge dimensions in a few
      hundred bytes).
    max_images: images in one batch request.
    timeout_s: seconds for the whole request; past it while the body is still arriving:
      408, while waiting for or running the model: 503.
    """

    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_images: int = 16
    timeout_s: float = 30.0

    def __post_init__(self):
        for name in ("max_body_bytes", "max_pixels", "max_images"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0. Received: timeout_s={self.timeout_s!r}")


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type header, lower-cased ('' when absent)."""
    return (header or "").split(";", 1)[0].strip().lower()


def check_raw_type(header: str | None) -> None:
    """415 unless a raw body declares one of RAW_TYPES."""
    kind = media_type(header)
    if kind not in RAW_TYPES:
        shown = kind or "none"
        raise RequestError(415, "unsupported_media_type",
                           f"Content-Type {shown} is not accepted; send the image as "
                           f"{', '.join(RAW_TYPES)}, or as {MULTIPART}")


def check_content_length(header: str | None, max_bytes: int) -> None:
    """413 when a declared Content-Length is over the limit (nothing is read then)."""
    if header is None:
        return
    try:
        length = int(header)
    except ValueError:
        raise RequestError(400, "bad_request",
                           f"Content-Length is not a number: {header[:40]!r}") from None
    if length > max_bytes:
        raise too_large(length, max_bytes)


def too_large(size: int | None, max_bytes: int) -> RequestError:
    got = "more" if size is None else f"{size:,}"
    return RequestError(413, "body_too_large",
                        f"request body is {got} bytes; the limit is {max_bytes:,}")


def sniff_format(data: bytes) -> str | None:
    """'JPEG', 'PNG' or 'WEBP' from the first bytes, else None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data: bytes, *, max_pixels: int, name: str = "image") -> np.ndarray:
    """RGB (H, W, 3) uint8 pixels of a JPEG, PNG or WebP file, EXIF orientation applied.

    Refuses, as RequestError: an empty body (400), bytes of another format (422
    not_an_image), declared dimensions over `max_pixels` (422 image_too_large, checked on
    the header before decoding), a truncated or corrupt file (422 corrupt_image).
    """
    if not data:
        raise RequestError(400, "empty_body", f"{name}: empty; send the image's bytes")
    fmt = sniff_format(data)
    if fmt is None:
        raise RequestError(422, "not_an_image",
                           f"{name}: not a JPEG, PNG or WebP image ({len(data):,} bytes)")
    from PIL import Image, ImageOps

    try:
        # Image.open reads the header only; formats= keeps Pillow's other parsers out.
        with Image.open(io.BytesIO(data), formats=[fmt]) as pil:
            width, height = pil.size
            if width * height > max_pixels:
                raise _bomb(name, width, height, max_pixels)
            pil.load()
            rgb = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))
    except RequestError:
        raise
    except Image.DecompressionBombError:  # Pillow's own, larger limit
        raise RequestError(422, "image_too_large",
                           f"{name}: declared dimensions are too large to decode") from None
    except MemoryError:
        raise RequestError(422, "image_too_large", f"{name}: too large to decode") from None
    except Exception as err:  # noqa: BLE001  Pillow raises many types on broken files
        raise RequestError(422, "corrupt_image",
                           f"{name}: a {fmt} file that cannot be decoded (truncated or "
                           f"corrupt: {type(err).__name__})") from None
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise RequestError(422, "corrupt_image", f"{name}: decodes to no pixels")
    return rgb


def _bomb(name: str, width: int, height: int, max_pixels: int) -> RequestError:
    return RequestError(422, "image_too_large",
                        f"{name}: {width}x{height} = {width * height:,} pixels; the limit is "
                        f"{max_pixels:,} (refused before decoding)")
