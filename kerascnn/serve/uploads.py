"""Upload limits, enforced before a body is read in full, and multipart forms held in memory.

:class:`BodyLimit` refuses a request whose ``Content-Length`` is above the cap at once, and stops
reading a body (chunked, or lying about its length) as soon as it passes the cap: 413 either way.
:func:`read_form` parses a multipart form with at most ``max_images`` files, every part kept in
memory (the body is capped, so nothing is spooled to disk: photos are never written there).
"""

from __future__ import annotations

import json

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from kerascnn.serve.errors import ServiceError


class BodyLimit:
    """ASGI middleware: a cap on the bytes of every request body.

    Args:
        app: the ASGI app it wraps.
        max_bytes: the largest body accepted.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _refuse(send, self._message(f"{int(length):,} bytes"))
            return
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # answered 413 by the app's handler of ServiceError
                    raise ServiceError(413, "RequestTooLarge", self._message("more bytes"))
            return message

        await self.app(scope, limited_receive, send)

    def _message(self, seen: str) -> str:
        return f"request body too large: at most {self.max_bytes:,} bytes, got {seen}"


async def _refuse(send, message: str) -> None:
    body = json.dumps({"error": message, "type": "RequestTooLarge"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read_form(request: Request, max_images: int, max_bytes: int) -> FormData:
    """The request's multipart form, every part in memory.

    Args:
        request: a ``multipart/form-data`` request.
        max_images: the most files the form may hold.
        max_bytes: the request cap (so that no part is spooled to disk).

    Raises:
        ServiceError: 413 ``TooManyImages`` for more files; 400 ``BadRequest`` for a body that is
            not a multipart form.
    """
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ServiceError(400, "BadRequest", "expected a multipart/form-data body (curl -F photo=@face.jpg), "
                           f"got {request.headers.get('content-type') or 'no content type'}")
    parser = MultiPartParser(request.headers, request.stream(), max_files=max_images, max_fields=16)
    parser.spool_max_size = max_bytes + 1  # larger than any body that passes the cap: never rolled to disk
    try:
        return await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise ServiceError(413, "TooManyImages", f"too many images in one request: at most {max_images}") from exc
        raise ServiceError(400, "BadRequest", f"cannot parse the multipart form: {exc.message}") from exc


async def photos(form: FormData, field: str) -> list[tuple[str, bytes]]:
    """``(file name, bytes)`` of each file of form field ``field``."""
    out = []
    for item in form.getlist(field):
        if not isinstance(item, UploadFile):
            raise ServiceError(422, "BadRequest", f"form field {field!r} must be a file upload, got text")
        out.append((item.filename or field, await item.read()))
    return out
