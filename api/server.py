"""`fbm serve`: load the models and the index, then serve the API with uvicorn on `config.serve.port`
(uvloop and httptools, from requirements.txt, which uvicorn chooses when they are installed)."""
from __future__ import annotations

import logging

import uvicorn

from api.app import create_app
from api.services import load_services
from listings.config import Config

log = logging.getLogger(__name__)


def serve(config: Config) -> None:
    """Load everything first, so a missing or corrupt artifact fails here with one message naming it
    (FileNotFoundError / ValueError), then serve until interrupted."""
    services = load_services(config)
    if not config.serve.api_key:
        log.warning("FBM_API_KEY is not set: POST /listings and DELETE /listings are refused")
    uvicorn.run(
        create_app(config, services),
        host=config.serve.host,
        port=config.serve.port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
