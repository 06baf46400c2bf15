"""The FastAPI application: `create_app(config, services)`.

Models and index are loaded once (by `api.server.serve` before the server starts, or here in the
lifespan when no services are given); inference threads (one per core by default) run them through a micro-batcher, a
small pool decodes uploaded photos and prepares the models' inputs, and every error a client can cause is a 4xx JSON
`{"detail": "..."}`.
"""
from __future__ import annotations

import importlib.util
import logging
import sqlite3
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.batching import MicroBatcher
from api.deps import API_KEY_HEADER, api_key_refusal
from api.routes import listings, meta, predict, similar
from api.routes.meta import PHOTO_NAME_PATTERN, STATIC_DIR, PageFiles
from api.services import Services, inference_layout, load_services
from api.uploads import FORM_TYPES, BodyLimitMiddleware, MultipartEndMiddleware, Utf8FormMiddleware, content_type
from listings.config import Config
from listings.data import ID_PATTERN, ID_WORDS

log = logging.getLogger(__name__)

MAX_FORM_FIELDS = 20
DOCS_ASSETS = "/docs-assets"  # Swagger UI from its pip package: the docs work offline, no CDN
DESCRIPTION = """Classify a marketplace listing from its photos and/or text into one of the root
categories, and find similar listings. Form fields: `img` (one or more photo files), `txt` (text).
Example: `curl -F img=@chair.jpg -F txt="oak dining chair" localhost:8008/combined`."""


def create_app(config: Config, services: Services | None = None, close_services: bool = False) -> FastAPI:
    """The app serving `config`; `services` (predictor, index, photos) are loaded at start-up when
    not given. It closes at shutdown the services it loaded, and those given with `close_services`
    (the index checkpoints its live writes): uvicorn ends a process stopped by SIGTERM by raising
    the signal again once the app has shut down, so no code after `uvicorn.run` would run."""
    # the bytes a text field may take: a character is up to 4 bytes in UTF-8, 12 url-encoded (%XX each)
    max_text_part = 12 * config.serve.max_text_chars + 1024

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.services = services or await run_in_threadpool(load_services, config)
        app.state.decode_pool = ThreadPoolExecutor(max(1, config.serve.decode_workers), thread_name_prefix="fbm-decode")
        predictor = app.state.services.predictor
        workers, _ = inference_layout(config)
        app.state.batcher = MicroBatcher(predictor.prepare, predictor.predict_prepared, config.serve.batch_max_photos, app.state.decode_pool, workers)
        app.state.batcher.start()
        try:
            yield
        finally:
            app.state.batcher.stop()
            app.state.decode_pool.shutdown(wait=False, cancel_futures=True)
            if services is None or close_services:  # pending index writes are checkpointed
                await run_in_threadpool(close_index, app.state.services.index)

    app = FastAPI(
        title="fbm: marketplace listing classifier and search",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below from the local Swagger UI files
        redoc_url=None,
        redirect_slashes=False,  # TrailingSlashMiddleware routes /text/ as /text
        form_limits={"max_files": config.serve.max_photos, "max_fields": MAX_FORM_FIELDS, "max_part_size": max_text_part},
    )
    app.state.config = config
    app.add_middleware(Utf8FormMiddleware)  # added first, so it runs inside the body limit (the last added runs first)
    app.add_middleware(MultipartEndMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.serve.max_request_bytes, max_other_bytes=max_text_part + 64 * 1024)
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(BlankQueryMiddleware)
    app.add_middleware(WriteKeyMiddleware, config=config, routes=listings.router.routes)  # before any body is read
    app.add_middleware(TrailingSlashMiddleware)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _server_error)
    for module in (predict, similar, listings, meta):
        app.include_router(module.router)
    app.mount("/static", PageFiles(directory=STATIC_DIR), name="static")
    _serve_docs(app)
    _complete_openapi(app, config)
    return app


def close_index(index: Any) -> None:
    """Close the index at shutdown, saving its live writes; a disk that refuses the save (read-only,
    full) is one line in the log, not a traceback: the writes are in the index's database, and the
    next start re-adds them to its vectors."""
    try:
        index.close()
    except (OSError, RuntimeError, sqlite3.Error) as exc:  # FAISS raises RuntimeError for a file it cannot write
        log.error("the index could not save its live writes at shutdown (%s): the next start re-adds them from its database", exc)


class HeadAsGetMiddleware:
    """Answer `HEAD` wherever `GET` is answered, with the same status and headers and no body (HTTP
    asks every server to; FastAPI routes only the methods they declare, so uptime probes and
    `curl -I` got a 405)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] != "HEAD":
            await self.app(scope, receive, self._allowing_head(send))
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)

    @staticmethod
    def _allowing_head(send: Send) -> Send:
        """A 405's `Allow` header names HEAD beside GET, as it is answered."""

        async def allowing_head(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                headers = [
                    (name, value + b", HEAD" if name.lower() == b"allow" and b"GET" in value.split(b", ") else value)
                    for name, value in message.get("headers", [])
                ]
                message = {**message, "headers": headers}
            await send(message)

        return allowing_head


class WriteKeyMiddleware:
    """Refuse a request to a write route (`routes`: `POST /listings`, `DELETE /listings/{id}`)
    without the API key as soon as its headers are in: the routes' own check ran once the whole
    upload had been received and spooled, so anyone could make the server read megabytes (and
    `Expect: 100-continue` was answered 100)."""

    def __init__(self, app: ASGIApp, config: Config, routes: list[BaseRoute]):
        self.app = app
        self.config = config
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(route.matches(scope)[0] is Match.FULL for route in self.routes):
            refusal = api_key_refusal(Headers(scope=scope).getlist(API_KEY_HEADER), self.config)
            if refusal is not None:
                response = JSONResponse({"detail": refusal.detail}, refusal.status_code, headers=refusal.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BlankQueryMiddleware:
    """Leave out query parameters sent blank (`?min_price=&k=5`, or spaces alone), as FastAPI leaves
    out a blank form field: a filter left empty is one not given, on `GET /listings/{id}/similar` as
    on `POST /similar`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            given = [pair for pair in scope["query_string"].split(b"&") if _unquoted(pair.partition(b"=")[2]).strip()]
            scope = {**scope, "query_string": b"&".join(given)}
        await self.app(scope, receive, send)


def _unquoted(value: bytes) -> bytes:
    return urllib.parse.unquote_to_bytes(value.replace(b"+", b" "))


class TrailingSlashMiddleware:
    """Route a path with a trailing slash (`/text/`) as the path without it. FastAPI answered it with
    an empty 307 redirect to a URL built from the client's Host header, and a client that does not
    follow redirects (curl without -L) got nothing."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(scope["path"]) > 1 and scope["path"].endswith("/"):
            path = scope["path"].rstrip("/") or "/"
            scope = {**scope, "path": path, "raw_path": (scope.get("raw_path") or path.encode()).rstrip(b"/") or b"/"}
        await self.app(scope, receive, send)


def _swagger_ui_files() -> Path:
    """The folder of Swagger UI's files in the `swagger-ui-py` package (Swagger UI 5, which reads the
    OpenAPI 3.1 FastAPI writes), found without importing the package's own server code."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the swagger-ui-py package is not installed: pip install -r requirements.txt")
    return Path(spec.submodule_search_locations[0]) / "static"


SWAGGER_UI_FILES = _swagger_ui_files()


def _serve_docs(app: FastAPI) -> None:
    """The OpenAPI docs at /docs with Swagger UI's files served here (FastAPI's default fetches them
    from a CDN, a blank page on a machine without the internet)."""
    files = {"swagger_js_url": "swagger-ui-bundle.js", "swagger_css_url": "swagger-ui.css", "swagger_favicon_url": "favicon-32x32.png"}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        urls = {argument: f"{DOCS_ASSETS}/{name}" for argument, name in files.items()}
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - docs", **urls)

    @app.get(DOCS_ASSETS + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        """Only the three files /docs loads: the package's folder also holds Swagger's demo page."""
        if name not in files.values():
            raise HTTPException(404, f"no docs file {name[:80]!r}")
        return FileResponse(SWAGGER_UI_FILES / name)


def _complete_openapi(app: FastAPI, config: Config) -> None:
    """Say in the OpenAPI schema what FastAPI's own leaves out (a field's declaration is fixed at
    import): the limits the routes and the form parser take from `config`, `k` (a form field or a
    query parameter) at most index.max_k and at most serve.max_photos photos in `img`; that every
    form route reads both kinds of form, multipart and url-encoded, save where a photo is required
    (FastAPI names one kind, chosen by whether the route takes files); that a required text field
    (`txt` of /text, `title` of /listings) needs a character other than a space."""
    k = {"minimum": 1, "maximum": config.index.max_k, "default": config.index.default_k}
    limits = {"k": k, "img": {"maxItems": config.serve.max_photos}}
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schemas = build().get("components", {}).get("schemas", {})
            # "Body_<route>": FastAPI's name for a route's form body
            forms = {name: body for name, body in schemas.items() if name.startswith("Body_")}
            for body in forms.values():
                fields = body.get("properties", {})
                for field in limits.keys() & fields.keys():
                    fields[field].update(limits[field])
                for field in {"txt", "title"} & set(body.get("required", [])):
                    fields[field].update({"minLength": 1, "pattern": r"\S"})
            operations = [op for path in app.openapi_schema.get("paths", {}).values() for op in path.values()]
            for parameter in (p for op in operations for p in op.get("parameters", [])):
                if parameter.get("in") == "query" and parameter.get("name") in limits:
                    parameter["schema"].update(limits[parameter["name"]])
            for content in (op["requestBody"]["content"] for op in operations if "requestBody" in op):
                if not set(content) <= set(FORM_TYPES):  # a JSON body, were a route to take one
                    continue
                form = next(iter(content.values()))
                body = forms.get(form.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1], {})
                content.setdefault(FORM_TYPES[0], form)
                if "img" not in body.get("required", []):  # a url-encoded form carries no photo
                    content.setdefault(FORM_TYPES[1], {"schema": _without_photos(body)} if "img" in body.get("properties", {}) else form)
        return app.openapi_schema

    app.openapi = openapi


def _without_photos(body: dict) -> dict:
    """A form body's schema without its photo field `img`."""
    properties = {name: field for name, field in body.get("properties", {}).items() if name != "img"}
    return {**body, "properties": properties, "required": [name for name in body.get("required", []) if name != "img"]}


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    status, detail = exc.status_code, str(exc.detail)
    if status == 400:
        status, detail = _form_limit_error(detail, request.app.state.config)
    return JSONResponse({"detail": detail}, status_code=status, headers=getattr(exc, "headers", None))


def _form_limit_error(detail: str, config: Config) -> tuple[int, str]:
    """Starlette's form parser refuses a form over `form_limits` with a 400 worded for its own
    limits; say instead which field was over which of the API's limits."""
    if detail.startswith(("Part exceeded maximum size", "Field exceeded maximum size")):
        return 422, f"a form field is too long: a text field (txt, title, description) holds at most {config.serve.max_text_chars:,} characters"
    if detail.startswith("Too many files"):
        return 422, f"at most {config.serve.max_photos} files are accepted in one request (photos, in img)"
    if detail.startswith("Too many fields"):
        return 422, "too many form fields: send img, txt and the documented fields only"
    return 400, detail


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    """A fault of the server's (a bug, a disk that refuses a write) in the one JSON shape every other
    answer has, not Starlette's plain-text page; uvicorn still logs its traceback."""
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}): the server could not answer this request"}, status_code=500)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Pydantic's errors as one sentence naming each field, e.g. `k: Input should be a valid integer`;
    a body that is not a form at all is a 415 that says what to send."""
    sent_type = content_type(request.headers)
    has_body = bool(sent_type) or request.headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in request.headers
    if request.method == "POST" and has_body and sent_type not in FORM_TYPES:
        what = f"the body is {sent_type}" if sent_type else "the body has no Content-Type"
        message = f"{what}: send a form, multipart/form-data (curl -F img=@photo.jpg -F txt=...) or application/x-www-form-urlencoded"
        return JSONResponse({"detail": message}, status_code=415)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header") and not isinstance(part, int))
        problems.append(f"{where or 'request'}: {_plain_message(error)}")
    return JSONResponse({"detail": "; ".join(problems) or "invalid request"}, status_code=422)


_PATTERN_WORDS = {ID_PATTERN: ID_WORDS, PHOTO_NAME_PATTERN: f"a photo id: {ID_WORDS.removeprefix('an id is ')}, then .jpg or nothing"}


def _plain_message(error: dict) -> str:
    """Pydantic's message, except where it speaks of Python types rather than of the form."""
    message = error.get("msg", "invalid")
    if error.get("type") == "missing":
        return "required: it was not sent, or sent empty"
    if "Expected UploadFile" in message:
        return "send a file here (curl -F img=@photo.jpg), not a text value"
    if error.get("type") == "string_type" and hasattr(error.get("input"), "filename"):
        return "send text here, not a file"
    if error.get("type") == "value_error":  # our own validators' words (a price), without pydantic's "Value error, "
        return message.removeprefix("Value error, ")
    if error.get("type") == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") in _PATTERN_WORDS:
        words = _PATTERN_WORDS[error["ctx"]["pattern"]]
        return f"{words}, got {str(error.get('input'))[:40]!r}" + ("…" if len(str(error.get("input"))) > 40 else "")
    return message
