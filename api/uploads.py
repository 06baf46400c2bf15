"""What a client sends, checked before it is used: body size, ids, photos and text.

Every check turns a bad input into an `HTTPException` with a 4xx status and a sentence that says
what was wrong, so nothing a client sends reaches the models unchecked or ends in a 500.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from fastapi import HTTPException, UploadFile
from PIL import Image
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from listings.config import Config
from listings.images import ImageError, clean_photo



class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, multipart: bool = True):
        what = "request body" if multipart else "body that is not multipart/form-data (photos are sent as multipart)"
        super().__init__(status_code=413, detail=f"{what} is over the limit of {limit:,} bytes")


class BodyLimitMiddleware:
    """Refuse a request body over its limit: from its Content-Length before reading it, else while
    it streams in. Only a multipart body (photos) may take `max_bytes`; any other is held to
    `max_other_bytes`, enough for a url-encoded form of the longest text (a body of bare '&'
    separators escapes the form parser's field count, and parsing 30 MB of them took 14 s of CPU)."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_other_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        self.max_other_bytes = max_other_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        multipart = headers.get("content-type", "").split(";")[0].strip().lower() == "multipart/form-data"
        limit = self.max_bytes if multipart else min(self.max_bytes, self.max_other_bytes)
        error = BodyTooLarge(limit, multipart)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await JSONResponse({"detail": error.detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise error  # FastAPI passes HTTPExceptions from body parsing through
            return message

        await self.app(scope, limited_receive, send)


def checked_text(text: str | None, config: Config, field: str = "txt", required: bool = False) -> str | None:
    """Strip a text field; None when absent or blank, unless `required`."""
    text = (text or "").strip()
    if not text:
        if required:
            raise HTTPException(422, f"{field} is empty: send a description of the listing")
        return None
    if len(text) > config.serve.max_text_chars:
        raise HTTPException(422, f"{field} has {len(text):,} characters; at most {config.serve.max_text_chars:,} are accepted")
    return text


async def cleaned_photos(uploads: list[UploadFile] | None, config: Config, pool: Executor) -> list[Image.Image]:
    """Each uploaded photo cleaned into the pixels training saw (`listings.images.clean_photo`)."""
    uploads = uploads or []  # at most serve.max_photos: the form parser refuses more (api.app's form_limits)
    loop = asyncio.get_running_loop()
    photos = []
    for number, upload in enumerate(uploads, start=1):
        name = f"photo {number} ({(upload.filename or 'unnamed')[:80]!r})"
        size = upload.size if upload.size is not None else 0
        if size > config.serve.max_upload_bytes:
            raise HTTPException(413, f"{name} is {size:,} bytes; the limit is {config.serve.max_upload_bytes:,}")
        if size == 0:
            raise HTTPException(422, f"{name} is empty")
        await upload.seek(0)
        try:
            photo = await loop.run_in_executor(
                pool, clean_photo, upload.file, config.data.image_size, config.data.max_image_pixels
            )
        except ImageError as exc:
            status = 413 if exc.reason == "too_large" else 422
            raise HTTPException(status, f"{name} was refused: {exc}") from exc
        except Exception as exc:  # any decoder failure on client bytes is a bad upload, not a server fault
            raise HTTPException(422, f"{name} could not be decoded: {type(exc).__name__}: {str(exc)[:200]}") from exc
        photos.append(photo)
    return photos
