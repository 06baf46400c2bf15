"""`fbm serve`: load the models and the index, then serve the API with uvicorn on `config.serve.port`
(uvloop, which uvicorn picks when it is installed, and httptools through `JsonErrorsHttpToolsProtocol`, both from requirements.txt)."""
from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.app import create_app
from api.services import freeze_loaded_objects, load_services
from listings.artifacts import require_trained
from listings.config import Config

log = logging.getLogger(__name__)


def check_port_free(host: str, port: int) -> None:
    """A ValueError saying why `host:port` cannot be listened on (in use, unknown host)."""
    try:
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as exc:
        # create_server rewords the error as "while attempting to bind on address ...: <reason>"
        reason = os.strerror(exc.errno) if isinstance(exc.errno, int) and exc.errno > 0 else "the host name is not known"
        hint = ": another server is there, choose a port with --port" if exc.errno == errno.EADDRINUSE else ""
        raise ValueError(f"cannot listen on {host}:{port} ({reason}){hint}") from None


UNPARSABLE_REQUEST = (
    "the request could not be read as HTTP/1.1: a request line (its URL in ASCII, at most 64 KB), "
    "headers, then the body"
)
MAX_HEAD_BYTES = 1024 * 1024  # a request line and headers; more is refused before it is held
MAX_LOGGED_PATH = 1024  # characters of a request's path and query in the access log


class ShortPaths(logging.Filter):
    """uvicorn's access-log line with the request's path and query cut at `MAX_LOGGED_PATH`
    characters: a client may send URLs of up to 64 KB, and each was a log line as long."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and len(args[2]) > MAX_LOGGED_PATH:
            path = f"{args[2][:MAX_LOGGED_PATH]}… ({len(args[2]):,} characters)"
            record.args = (*args[:2], path, *args[3:])
        return True


class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with three refusals made as the API makes every other, with a
    JSON error: a request it cannot parse (a URL over 64 KB, raw non-ASCII bytes in the URL, a
    garbled request line), where uvicorn writes a plain-text line; a request whose head grows past
    `MAX_HEAD_BYTES`, which uvicorn would keep reading into memory for as long as it is sent; and a
    request that has not arrived whole `request_timeout_s` after its connection opened or its first
    byte came (a 408), which uvicorn would wait for for ever, a connection held by each slow client."""

    request_timeout_s: float = 120.0  # `serve.request_timeout_s`, set by `server_options`

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # between a request's first byte and the end of its headers
        self._head_bytes = 0  # bytes received while a head was incomplete, counted per chunk
        self._deadline: asyncio.TimerHandle | None = None  # for the request on its way

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = self.loop.call_later(self.request_timeout_s, self._request_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout_s, self._request_too_slow)

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        super().on_message_complete()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _request_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:  # the app has answered already: just hang up
            self.transport.close()
            return
        self._send_json_error(b"408 Request Timeout", f"the request did not arrive whole within {self.request_timeout_s:g} s")

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            self._head_bytes = 0
            return
        self._head_bytes += len(data)  # may count the end of a request before it: a chunk at most
        if self._head_bytes > MAX_HEAD_BYTES:
            detail = f"the request line and headers passed {MAX_HEAD_BYTES:,} bytes before they ended"
            self._send_json_error(b"431 Request Header Fields Too Large", detail)

    def send_400_response(self, msg: str) -> None:
        self._send_json_error(b"400 Bad Request", UNPARSABLE_REQUEST)

    def _send_json_error(self, status: bytes, detail: str) -> None:
        body = json.dumps({"detail": detail}, separators=(",", ":")).encode("ascii")
        head = [b"HTTP/1.1 " + status + b"\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class Server(uvicorn.Server):
    """uvicorn's server, which also stops gracefully on SIGHUP (the terminal that ran `make run`
    closed): in-flight requests finish and the index saves its live writes, as on SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = signal.signal(signal.SIGHUP, self.handle_exit)
            try:
                yield
            finally:
                signal.signal(signal.SIGHUP, previous)


def server_options(config: Config) -> dict[str, object]:
    """uvicorn's settings for the API: `config.serve`'s host and port, httptools with JSON errors,
    and the client address as the connection shows it unless `serve.trusted_proxies` names the
    reverse proxies whose X-Forwarded-For header is believed (uvicorn believes 127.0.0.1's)."""
    return {
        "host": config.serve.host,
        "port": config.serve.port,
        "proxy_headers": bool(config.serve.trusted_proxies),
        "forwarded_allow_ips": config.serve.trusted_proxies or None,
        "http": type("HttpProtocol", (JsonErrorsHttpToolsProtocol,), {"request_timeout_s": config.serve.request_timeout_s}),
        "ws": "none",  # no route speaks WebSocket: an Upgrade header is an ordinary request, not a bodiless 403
        "log_level": "info",
        "timeout_graceful_shutdown": 10,
    }


def serve(config: Config) -> None:
    """Load everything first, so a missing or corrupt artifact fails here with one message naming it
    (FileNotFoundError / ValueError), then serve until interrupted."""
    check_port_free(config.serve.host, config.serve.port)  # before the models load, not after
    if not config.serve.api_key.isascii():  # a header's bytes are read as Latin-1: such a key could never match
        raise ValueError("FBM_API_KEY must be ASCII (letters, digits, punctuation), as HTTP headers carry it")
    if config.serve.api_key != config.serve.api_key.strip():  # a header's value is read without the spaces around it
        raise ValueError("FBM_API_KEY starts or ends with white space, which an HTTP header cannot carry: set it without")
    require_trained(config)
    services = load_services(config)
    freeze_loaded_objects()
    if not config.serve.api_key:
        log.warning("FBM_API_KEY is not set: POST /listings and DELETE /listings are refused")
    app = create_app(config, services, close_services=True)  # live writes since the last checkpoint saved at shutdown
    server_config = uvicorn.Config(app, **server_options(config))  # sets up uvicorn's loggers
    logging.getLogger("uvicorn.access").addFilter(ShortPaths())
    Server(server_config).run()

