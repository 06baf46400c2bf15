"""`GET /health`, `/categories`, `/images/{image_id}` and the search page at `/`."""
from __future__ import annotations

import json
import re
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import FileResponse
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from api.deps import ServicesDep
from api.routes.errors import INVALID, NOT_FOUND
from api.schemas import CategoriesOut, HealthOut
from listings.data import ID_PATTERN

STATIC_DIR = FilePath(__file__).resolve().parent.parent / "static"
PHOTO_NAME_PATTERN = ID_PATTERN.removesuffix("$") + r"(\.jpg)?$"  # /images/<id> or /images/<id>.jpg

_BYTE_RANGE = re.compile(r"\s*(\d{0,19})\s*-\s*(\d{0,19})\s*")  # no file has a 20-digit offset

router = APIRouter(tags=["meta"])


class PhotoResponse(FileResponse):
    """A photo file, whose `Range` header is ignored when it is not a valid byte range (RFC 9110
    §14.2 lets a server ignore one): the whole photo is sent, where Starlette answered a plain-text
    400. A valid range past the end of the file is still a 416."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _valid_byte_ranges(Headers(scope=scope).get("range")):
            scope = {**scope, "headers": [(name, value) for name, value in scope["headers"] if name.lower() != b"range"]}
        await super().__call__(scope, receive, send)


def _valid_byte_ranges(header: str | None) -> bool:
    """`bytes=` then comma-separated `first-last`, `first-` or `-suffix`, with first <= last."""
    unit, _, ranges = (header or "").partition("=")
    if unit.strip().lower() != "bytes":
        return False
    for spec in ranges.split(","):
        match = _BYTE_RANGE.fullmatch(spec)
        if not match or not any(match.groups()) or (all(match.groups()) and int(match[1]) > int(match[2])):
            return False
    return True


@router.get("/health", response_model=HealthOut, summary="Ready: models and index loaded")
def health(services: ServicesDep) -> HealthOut:
    info = json.loads(json.dumps(services.index.info(), default=str))  # plain JSON types only
    info.pop("directory", None)  # no server paths in public answers
    return HealthOut(
        status="ok",
        models={name: str(version) for name, version in services.predictor.versions.items()},
        index=info,
        listings=len(services.index),
    )


@router.get("/categories", response_model=CategoriesOut, summary="The categories the model predicts")
def categories(services: ServicesDep) -> CategoriesOut:
    return CategoriesOut(categories=list(services.predictor.classes))


@router.get(
    "/images/{image_id}",
    response_class=PhotoResponse,
    responses={200: {"content": {"image/jpeg": {}}}, **INVALID, **NOT_FOUND},
    summary="A listing photo (cleaned JPEG)",
)
def image(image_id: Annotated[str, Path(pattern=PHOTO_NAME_PATTERN, description="a photo id, optionally with .jpg")], services: ServicesDep) -> PhotoResponse:
    image_id = image_id.removesuffix(".jpg")
    path = services.photos.path(image_id) if services.index.has_photo(image_id) else None
    if path is None:  # unknown, or the photo of a listing deleted since
        raise HTTPException(404, f"no photo {image_id!r}")
    return PhotoResponse(path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
