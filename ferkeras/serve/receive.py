"""Reading a request's image bytes for `ferkeras serve`: the body within its size limit,
and the file parts of a multipart body. Starlette is imported inside the functions.
"""

from __future__ import annotations

from ferkeras.serve.limits import RAW_TYPES, Limits, RequestError, media_type, too_large


async def read_body(request, max_bytes: int) -> bytes:
    """The body, counting bytes as they arrive: 413 as soon as they pass `max_bytes`
    (whatever Content-Length said, chunked bodies included)."""
    from starlette.requests import ClientDisconnect

    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes:
                raise too_large(None, max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(400, "client_disconnected", "the client went away") from None
    return b"".join(chunks)


async def multipart_files(request, body: bytes, limits: Limits):
    """[(source, bytes)] of the file parts of a multipart body already read."""
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=limits.max_images, max_fields=limits.max_images,
            max_part_size=limits.max_body_bytes)
    except HTTPException as err:
        raise RequestError(400, "bad_multipart", f"multipart body refused: {err.detail}") from None
    except Exception as err:  # noqa: BLE001  python-multipart's parse errors
        raise RequestError(400, "bad_multipart", f"multipart body cannot be parsed "
                           f"({type(err).__name__})") from None
    try:
        files = []
        for index, (_, value) in enumerate(form.multi_items()):
            if not isinstance(value, UploadFile):
                continue
            kind = media_type(value.content_type)
            if kind and kind not in RAW_TYPES:
                raise RequestError(415, "unsupported_media_type",
                                   f"part {index} ({value.filename}) is {kind}; send "
                                   f"{', '.join(RAW_TYPES)}")
            files.append((value.filename or f"upload:{index}", await value.read()))
    finally:
        await form.close()
    if not files:
        raise RequestError(400, "no_image", "the multipart body has no file part; send the "
                           "image as a file (curl -F image=@face.jpg)")
    return files
