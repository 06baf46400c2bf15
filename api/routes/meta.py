"""`GET /health`, `/categories`, `/limits`, `/images/{image_id}` and the search page at `/`."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from api.deps import ConfigDep, ServicesDep
from api.routes.errors import INVALID_ID, NOT_FOUND
from api.schemas import CategoriesOut, HealthOut, LimitsOut
from api.services import Services
from api.uploads import MAX_CATEGORY_CHARS, MAX_LOCATION_CHARS, MAX_TITLE_CHARS
from listings.config import Config
from listings.data import ID_PATTERN

STATIC_DIR = FilePath(__file__).resolve().parent.parent / "static"
PHOTO_NAME_PATTERN = ID_PATTERN.removesuffix("$") + r"(\.jpg)?$"  # /images/<id> or /images/<id>.jpg

router = APIRouter(tags=["meta"])


@router.get("/health", response_model=HealthOut, summary="Ready: models and index loaded")
def health(services: ServicesDep, config: ConfigDep) -> HealthOut:
    """200 once the models and the index are loaded; what answers, how many listings it searches,
    and whether writes are on."""
    info = json.loads(json.dumps(services.index.info(), default=str))  # plain JSON types only
    info.pop("directory", None)  # no server paths in public answers
    return HealthOut(
        status="ok",
        models={name: str(version) for name, version in services.predictor.versions.items()},
        index=info,
        listings=len(services.index),
        writes=writes_state(services, config),
    )


def writes_state(services: Services, config: Config) -> str:
    """"on" while a write could change the index: a key is set, and the index's folder and the photo
    store's are there and writable (searches go on without them, writes are 503s)."""
    if not config.serve.api_key:
        return "off: the server was started without FBM_API_KEY"
    photos = services.photos.added_dir  # made with the first photo added: its nearest folder there counts
    while not photos.exists() and photos != photos.parent:
        photos = photos.parent
    if not all(folder.is_dir() and os.access(folder, os.W_OK) for folder in (FilePath(services.index.directory), photos)):
        return "off: the disk refuses writes (the artifacts folder is missing or read-only)"
    return "on"


@router.get("/categories", response_model=CategoriesOut, summary="The categories the model predicts")
def categories(services: ServicesDep) -> CategoriesOut:
    """The root categories, in the encoder's order: the values `pred` takes, and the roots a `category` filter takes."""
    return CategoriesOut(categories=list(services.predictor.classes))


@router.get("/limits", response_model=LimitsOut, summary="What one request may carry")
async def limits(config: ConfigDep) -> LimitsOut:
    """The limits this server enforces, for a client to check before sending (the search page does)."""
    serve = config.serve
    return LimitsOut(
        max_text_chars=serve.max_text_chars,
        max_title_chars=MAX_TITLE_CHARS,
        max_location_chars=MAX_LOCATION_CHARS,
        max_category_chars=MAX_CATEGORY_CHARS,
        max_photos=serve.max_photos,
        max_photo_bytes=serve.max_upload_bytes,
        max_request_bytes=serve.max_request_bytes,
        max_photo_pixels=config.data.max_image_pixels,
        max_k=config.index.max_k,
    )


@router.get(
    "/images/{image_id}",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}},
        304: {"description": "the photo is unchanged since the copy whose ETag was sent in If-None-Match"},
        **INVALID_ID,
        **NOT_FOUND,
    },
    summary="A listing photo (cleaned JPEG)",
)
def image(
    image_id: Annotated[str, Path(pattern=PHOTO_NAME_PATTERN, description="a photo id, optionally with .jpg")],
    services: ServicesDep,
    if_none_match: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """The photo's bytes are read here, not streamed after the answer has begun: a listing deleted
    or replaced meanwhile takes its photo files away, which is then a 404, not a broken answer. A
    photo is a small JPEG, sent whole (a `Range` header is ignored). Caches must ask again before
    reusing a copy (`no-cache`, answered by a 304 while the photo is unchanged): a deleted listing's
    photo is gone at once, not a day later."""
    image_id = image_id.removesuffix(".jpg")
    path = services.photos.path(image_id) if services.index.has_photo(image_id) else None
    try:
        photo = path.read_bytes() if path is not None else None
    except FileNotFoundError:
        photo = None
    if photo is None:  # unknown, or the photo of a listing deleted since
        raise HTTPException(404, f"no photo {image_id!r}")
    headers = {"Cache-Control": "no-cache", "ETag": f'"{hashlib.sha256(photo).hexdigest()[:32]}"', "X-Content-Type-Options": "nosniff"}
    if if_none_match is not None and {"*", headers["ETag"]} & {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(photo, media_type="image/jpeg", headers=headers)


# the page and its files are revalidated on every load (a 304 while unchanged): a browser's own
# guess from their age kept running an old script after the server was upgraded
REVALIDATE = {"Cache-Control": "no-cache"}


class PageFiles(StaticFiles):
    """The page's script and style, with `REVALIDATE`."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(REVALIDATE)
        return response


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=REVALIDATE)
