"""`fbm serve`: load the models and the index, then serve the API with uvicorn on `config.serve.port`
(uvloop and httptools, from requirements.txt, which uvicorn chooses when they are installed)."""
from __future__ import annotations

import errno
import logging
import os
import socket

import uvicorn

from api.app import create_app
from api.services import load_services
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


def serve(config: Config) -> None:
    """Load everything first, so a missing or corrupt artifact fails here with one message naming it
    (FileNotFoundError / ValueError), then serve until interrupted."""
    check_port_free(config.serve.host, config.serve.port)  # before the models load, not after
    services = load_services(config)
    if not config.serve.api_key:
        log.warning("FBM_API_KEY is not set: POST /listings and DELETE /listings are refused")
    uvicorn.run(
        create_app(config, services, close_services=True),  # live writes since the last checkpoint saved at shutdown
        host=config.serve.host,
        port=config.serve.port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
