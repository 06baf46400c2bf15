"""`POST /listings` and `DELETE /listings/{product_id}`: live updates of the index (API key required)."""
from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Response, status
from PIL import Image
from starlette.concurrency import run_in_threadpool

from api.deps import BatcherDep, ConfigDep, DecodePoolDep, ServicesDep, predict, require_api_key
from api.routes.errors import BAD_INPUT, INVALID_ID, NOT_FOUND, UNINDEXABLE, WRITE
from api.routes.predict import OptionalPhotos
from api.routes.similar import Price, ProductId, known_category
from api.schemas import ListingCreated, ListingDeleted, PredictionOut
from api.services import Services
from api.uploads import MAX_CATEGORY_CHARS, MAX_LOCATION_CHARS, MAX_TITLE_CHARS, checked_text, cleaned_photos, fields_in_place_and_once
from listings.data import ID_PATTERN, clean_description, clean_text, clean_title, listing_text
from listings.images import STORED_JPEG
from retrieval.query import index_listing

log = logging.getLogger(__name__)

# a field the route does not read is refused, in the form or the URL (`DELETE …?dry_run=1` deleted)
router = APIRouter(tags=["listings"], dependencies=[Depends(require_api_key), Depends(fields_in_place_and_once)], responses=WRITE)


@router.post(
    "/listings",
    response_model=ListingCreated,
    status_code=status.HTTP_201_CREATED,
    responses=BAD_INPUT | UNINDEXABLE | {200: {"model": ListingCreated, "description": "a listing of the same product id replaced"}},
    summary="Add a listing",
)
async def add_listing(
    response: Response,
    config: ConfigDep,
    services: ServicesDep,
    batcher: BatcherDep,
    pool: DecodePoolDep,
    title: Annotated[str, Form(max_length=MAX_TITLE_CHARS)],
    description: Annotated[str, Form()] = "",
    price: Price = None,
    location: Annotated[str, Form(max_length=MAX_LOCATION_CHARS)] = "",
    category: Annotated[str | None, Form(max_length=MAX_CATEGORY_CHARS, description="root category or path; predicted when left out")] = None,
    product_id: Annotated[str | None, Form(pattern=ID_PATTERN, description="a new id is made when left out")] = None,
    img: OptionalPhotos = None,
) -> ListingCreated:
    """Index a listing by its photos and text (201); a listing with the same product id is replaced
    (200, `replaced`), and the photos added with the listing it replaces leave the photo store. The
    same photo sent twice is stored once.

    Title and description are cleaned as `fbm prepare` cleans them (marketplace suffix and "Posted
    by" boilerplate stripped), the photos as training cleaned them and stored, so `GET /images/{id}`
    serves them."""
    # the limit holds for what was sent and for what cleaning leaves (line breaks, CRLF from a browser, count as one space); the title's is the schema's
    description = checked_text(description, config, field="description", clean=clean_text) or ""
    title = checked_text(clean_title(title), config, field="title", required=True)
    together = len(title) + len(description)  # the limit /limits gives; the text joins them with ". "
    if together > config.serve.max_text_chars:
        raise HTTPException(422, f"title + description have {together:,} characters; at most {config.serve.max_text_chars:,} are accepted together")
    text = listing_text(title, clean_description(description))
    category = known_category(category, services.predictor.classes)
    if category is not None:
        category = await run_in_threadpool(services.index.spelled_category, category)
    if price is not None and round(price, 2) != price:
        raise HTTPException(422, f"price {price!r} has more than two decimal places: give pounds and pence, such as 45.50")
    photos = distinct(await cleaned_photos(img, config, pool))
    prediction = await predict(batcher, photos, text, "combined")
    image_ids: list[str] = []
    listing = {
        "product_id": product_id or str(uuid.uuid4()),
        "title": title,
        "category": category or prediction.pred,
        "price": price,
        "location": clean_text(location),
        "image_ids": image_ids,
    }
    try:
        for photo in photos:
            image_ids.append(await run_in_threadpool(services.photos.add, photo))
        replaced = await run_in_threadpool(index_listing, services.index, listing, prediction, services.terms, text)
    except ValueError as exc:
        discard_photos(services, image_ids)
        raise HTTPException(422, f"the listing could not be indexed: {exc}") from exc
    except (OSError, sqlite3.Error) as exc:  # a disk full or read-only: nothing was indexed
        discard_photos(services, image_ids)
        raise HTTPException(503, f"the listing could not be stored ({disk_refusal(exc)}); nothing was added") from exc
    if replaced is not None:
        discard_photos(services, [image_id for image_id in replaced.image_ids if image_id not in image_ids])
        response.status_code = status.HTTP_200_OK
    return ListingCreated(
        product_id=listing["product_id"],
        category=listing["category"],
        predicted=PredictionOut.of(prediction),
        image_ids=image_ids,
        replaced=replaced is not None,
    )


def distinct(photos: list[Image.Image]) -> list[Image.Image]:
    """The photos without repeats of one another (the same stored bytes), first copies kept."""
    seen: set[bytes] = set()
    kept = []
    for photo in photos:
        stored = photo.info[STORED_JPEG]  # every upload is cleaned by clean_photo, which keeps its encoding
        if stored not in seen:
            seen.add(stored)
            kept.append(photo)
    return kept


@router.delete("/listings/{product_id}", response_model=ListingDeleted, responses=INVALID_ID | NOT_FOUND, summary="Remove a listing")
async def delete_listing(product_id: ProductId, services: ServicesDep) -> ListingDeleted:
    """The listing leaves the index, and photos added with it through the API leave the photo store."""
    try:
        listing = await run_in_threadpool(services.index.delete, product_id)
    except (OSError, sqlite3.Error) as exc:  # a disk full or read-only: nothing was deleted
        raise HTTPException(503, f"the listing could not be deleted ({disk_refusal(exc)}); it is still indexed") from exc
    if listing is None:
        raise HTTPException(404, f"no listing {product_id!r} in the index")
    discard_photos(services, listing.image_ids)
    return ListingDeleted(product_id=product_id, deleted=True)


def disk_refusal(exc: Exception) -> str:
    """Why the disk refused a write, in words for the client: the error's kind and reason, not the
    server's paths an OSError carries (those go to the server's log)."""
    log.warning("a write to the index or the photo store failed: %s", exc)
    reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)  # sqlite3's reasons name no file
    return f"{type(exc).__name__}: {reason}"


def discard_photos(services: Services, image_ids: list[str]) -> None:
    """Remove photos no listing shows any more; one that cannot be removed now (a read-only disk) is
    an orphan, which the next `fbm serve` removes when it starts (`PhotoStore.remove_unreferenced`)."""
    with contextlib.suppress(OSError):
        services.photos.remove_added(image_ids)
