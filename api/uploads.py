"""What a client sends, checked before it is used: body size, ids, photos and text.

Every check turns a bad input into an `HTTPException` with a 4xx status and a sentence that says
what was wrong, so nothing a client sends reaches the models unchecked or ends in a 500.
"""
from __future__ import annotations

import asyncio
import re
from collections import Counter
from concurrent.futures import Executor
from typing import Callable, Iterable

from fastapi import HTTPException, Request, UploadFile
from PIL import Image
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from listings.config import Config
from listings.data import CLEANED_AWAY
from listings.images import ImageError, clean_photo

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
# the form limits of the fields no setting sizes, which /limits reports
MAX_CATEGORY_CHARS = 300
MAX_TITLE_CHARS = 300
MAX_LOCATION_CHARS = 200
REPEATABLE_FIELDS = {"img"}  # a listing's photos; every other field takes one value
_RAW_RUN = re.compile(rb"[\x80-\xff]+")
_RAW_BYTES = bytes(range(0x80, 0x100))


def content_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, multipart: bool = True):
        what = "request body" if multipart else "body that is not multipart/form-data (photos are sent as multipart)"
        super().__init__(status_code=413, detail=f"{what} is over the limit of {limit:,} bytes")


class BodyLimitMiddleware:
    """Refuse a request body over its limit: from its Content-Length before reading it, else while
    it streams in. Only a multipart body (photos) may take `max_bytes`; any other is held to
    `max_other_bytes`, enough for a url-encoded form of the longest text (a body of bare '&'
    separators escapes the form parser's field count, and parsing 30 MB of them took 14 s of CPU).
    A compressed body (`Content-Encoding: gzip`) is a 415: the form parser read its bytes as fields."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_other_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        self.max_other_bytes = max_other_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            detail = f"the body is sent with Content-Encoding {encoding}, which is not read: send it uncompressed"
            await JSONResponse({"detail": detail}, status_code=415)(scope, receive, send)
            return
        multipart = content_type(headers) == "multipart/form-data"
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


class MultipartEndMiddleware:
    """Refuse a multipart body that ends before its closing boundary (`--<boundary>--`): an upload
    cut short. The form parser drops a part whose end it never saw, so the route answered that a
    field sent whole was not sent ("txt: required")."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else None
        multipart = headers is not None and content_type(headers) == "multipart/form-data"
        boundary = multipart_boundary(headers["content-type"]) if multipart else ""
        if not boundary:  # not multipart, or no boundary: the form parser says so
            await self.app(scope, receive, send)
            return
        closing = b"--" + boundary.encode("latin-1") + b"--"
        tail, closed = b"", False

        async def checked_receive():
            nonlocal tail, closed
            message = await receive()
            if message["type"] == "http.request" and not closed:
                seen = tail + message.get("body", b"")
                closed, tail = closing in seen, seen[-len(closing) + 1 :]
                if not closed and not message.get("more_body"):
                    raise HTTPException(400, f"malformed multipart form: the body ends before its closing boundary {closing.decode('latin-1')[:80]!r} (an upload cut short?)")
            return message

        await self.app(scope, checked_receive, send)


def multipart_boundary(header: str) -> str:
    """The `boundary` parameter of a Content-Type header, unquoted; empty when there is none."""
    for parameter in header.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "boundary":
            return value.strip().strip('"')
    return ""


class Utf8FormMiddleware:
    """Read the raw non-ASCII bytes of a url-encoded form as UTF-8, as its %XX escapes are read.

    A browser escapes every such byte, but `curl -d 'txt=chaise en chêne'` sends 'ê' as two raw
    bytes, which Starlette's form parser decodes as Latin-1: the text arrived as 'chaise en chÃªne'.
    Each run of raw bytes that is valid UTF-8 is escaped as it streams in (a run at the end of a
    chunk waits for the next, so a character split between chunks is read whole); a run that is not
    UTF-8 is left to be read as Latin-1, as before. The body limit has counted the bytes as sent."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or content_type(Headers(scope=scope)) != "application/x-www-form-urlencoded":
            await self.app(scope, receive, send)
            return
        held = b""

        async def escaped_receive():
            nonlocal held
            message = await receive()
            if message["type"] != "http.request":
                return message
            body, held = held + message.get("body", b""), b""
            if message.get("more_body"):
                finished = len(body.rstrip(_RAW_BYTES))
                body, held = body[:finished], body[finished:]
            return {**message, "body": _RAW_RUN.sub(_utf8_escaped, body)}

        await self.app(scope, escaped_receive, send)


def _utf8_escaped(run: re.Match) -> bytes:
    try:
        run[0].decode("utf-8")
    except UnicodeDecodeError:
        return run[0]
    return b"".join(b"%%%02X" % byte for byte in run[0])


async def fields_in_place_and_once(request: Request) -> None:
    """Refuse a field the route would drop unsaid: a query parameter on a route that reads a form
    (`POST /similar?category=…` searched every category), a field the route does not read
    (`-F image=@chair.jpg` added a listing without its photo), or a field sent more than once, other
    than the photos (`img`), of which the route would take the last copy (`-F txt=oak -F txt=chair`
    was classified by 'chair' alone), or a body sent to a route that reads none (`DELETE` with
    `-d dry_run=1` deleted the listing). The form is the one FastAPI has already parsed for the route."""
    names = [name for name, _ in request.query_params.multi_items()]
    accepted = route_fields(request.scope.get("route"))
    if request.method == "POST":
        if names:
            _refuse_unknown(names, accepted, request.url.path)  # advice to send in the form only what the form takes
            listed = ", ".join(sorted(set(names)))[:200]
            raise HTTPException(422, f"{request.url.path} reads form fields, not the URL's query: send {listed} in the form (curl -F name=value)")
        if content_type(request.headers) in FORM_TYPES:
            names = [name for name, _ in (await request.form()).multi_items()]
    elif await request.body():
        raise HTTPException(422, f"{request.method} {request.url.path} reads no request body: send nothing with it")
    counts = Counter(names)  # a URL may carry thousands of parameters: counted once each
    _refuse_unknown(counts, accepted, request.url.path)
    repeated = sorted(name for name, count in counts.items() if count > 1 and name not in REPEATABLE_FIELDS)
    if repeated:
        sent = "; ".join(f"{name!r} {counts[name]} times" for name in repeated)
        raise HTTPException(422, f"a field sent more than once ({sent[:300]}): send each once, only img may repeat (one per photo)")


def _refuse_unknown(names: Iterable[str], accepted: set[str] | None, path: str) -> None:
    """A 422 naming the fields the route does not read (`image` for img, `max-price` for
    max_price: the photo or the filter was dropped unsaid) and the ones it does."""
    unknown = sorted(set(names) - accepted) if accepted is not None else []
    if unknown:
        listed = ", ".join(repr(name[:40]) for name in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise HTTPException(422, f"unknown field(s) {listed}: {path} takes {', '.join(sorted(accepted)) or 'no fields'}")


def route_fields(route: object) -> set[str] | None:
    """The names of the query and form fields a FastAPI route reads, its dependencies' included;
    None for what is not a FastAPI route."""
    root = getattr(route, "dependant", None)
    if root is None:
        return None
    pending, names = [root], set()
    while pending:
        dependant = pending.pop()
        names.update(field.alias for field in (*dependant.query_params, *dependant.body_params))
        pending.extend(dependant.dependencies)
    return names


def checked_text(
    text: str | None, config: Config, field: str = "txt", required: bool = False, clean: Callable[[str], str] | None = None
) -> str | None:
    """Strip a text field and hold it to the length limit as sent (CR LF counted as one); with `clean` (e.g.
    `clean_listing_text`, which strips a pasted listing's Gumtree suffix and boilerplate as `fbm
    prepare` does), clean it and hold what is left to the limit too. None when nothing is left,
    unless `required`. A line break counts as one character, as a browser's text box counts it,
    though a form sends it as CR LF."""
    sent = (text or "").replace("\r\n", "\n").strip()
    _check_length(sent, config, field)
    text = sent
    if clean is not None and sent:
        text = clean(sent).strip()
        _check_length(text, config, field)
    if not text:
        if required:
            wanted = "the listing's title" if field == "title" else "a description of the listing"
            raise HTTPException(422, f"{field} holds {CLEANED_AWAY}: send {wanted}" if sent else f"{field} is empty: send {wanted}")
        return None
    return text


def nothing_to_answer(txt: str | None) -> HTTPException:
    """The 422 of a route that takes a photo, a text or both when neither is left: no photo, and the
    text `txt` as sent either absent or, when it was sent, cleaned away by `checked_text`."""
    emptied = f"txt holds {CLEANED_AWAY}: " if txt and txt.strip() else ""
    return HTTPException(422, f"{emptied}send a photo (img), a text (txt) or both")


def _check_length(text: str, config: Config, field: str) -> None:
    if len(text) > config.serve.max_text_chars:
        raise HTTPException(422, f"{field} has {len(text):,} characters; at most {config.serve.max_text_chars:,} are accepted")


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
        # scheduled outside the try: a pool already shut down (the server stopping) is the server's fault
        cleaning = loop.run_in_executor(pool, clean_photo, upload.file, config.data.image_size, config.data.max_image_pixels)
        try:
            photo = await cleaning
        except ImageError as exc:
            status = 413 if exc.reason == "too_large" else 422
            raise HTTPException(status, f"{name} was refused: {exc}") from exc
        except MemoryError:
            raise  # the server's shortage, not the client's bytes: a 500
        except Exception as exc:  # any other decoder failure on client bytes is a bad upload, not a server fault
            raise HTTPException(422, f"{name} could not be decoded: {type(exc).__name__}: {str(exc)[:200]}") from exc
        photos.append(photo)
    return photos
