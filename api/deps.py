"""FastAPI dependencies: the app's config and services, the API key, and model calls off the event loop.

The dependencies are `async def` although they never await: FastAPI runs a plain `def` dependency
in its thread pool, a thread hand-off per dependency and request for an attribute lookup.
"""
from __future__ import annotations

import hmac
from concurrent.futures import Executor
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from PIL import Image

from api.batching import MicroBatcher
from api.services import Services
from listings.config import Config

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="the server's FBM_API_KEY; required for writes")


async def get_config(request: Request) -> Config:
    return request.app.state.config


async def get_services(request: Request) -> Services:
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise HTTPException(503, "the models and the index are still loading")
    return services


async def get_batcher(request: Request) -> MicroBatcher:
    await get_services(request)
    return request.app.state.batcher


async def get_decode_pool(request: Request) -> Executor:
    return request.app.state.decode_pool


def api_key_refusal(keys: list[str], config: Config) -> HTTPException | None:
    """Why a write with these copies of the key header is refused (403: writes disabled; 401: no key,
    a wrong one, or the header sent more than once, as only one copy would be read); None when it may go on."""
    if not config.serve.api_key:
        return HTTPException(403, "writes are disabled: the server was started without FBM_API_KEY")
    if len(keys) > 1:
        return HTTPException(401, f"{API_KEY_HEADER} was sent {len(keys)} times: send it once", headers={"WWW-Authenticate": API_KEY_HEADER})
    key = (keys[0] if keys else "").strip(" \t")  # spaces around a header's value are not part of it (RFC 9110), and a proxy may trim them
    if not key or not hmac.compare_digest(key.encode("utf-8"), config.serve.api_key.encode("utf-8")):
        return HTTPException(401, f"missing or wrong {API_KEY_HEADER} header", headers={"WWW-Authenticate": API_KEY_HEADER})
    return None


async def require_api_key(key: Annotated[str | None, Security(_api_key)], config: Annotated[Config, Depends(get_config)]) -> None:
    """The write routes' dependency (it documents the key in OpenAPI); `WriteKeyMiddleware` has
    already refused a bad key before the body was read."""
    refusal = api_key_refusal([key] if key is not None else [], config)
    if refusal is not None:
        raise refusal


ConfigDep = Annotated[Config, Depends(get_config)]
ServicesDep = Annotated[Services, Depends(get_services)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]
DecodePoolDep = Annotated[Executor, Depends(get_decode_pool)]


async def predict(batcher: MicroBatcher, photos: list[Image.Image], text: str | None, mode: str) -> Any:
    """One prediction through the micro-batcher; an input the model cannot use is the client's 422."""
    try:
        return await batcher.predict(photos, text, mode)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
