"""`POST /similar`: listings like a photo and/or a text; `GET /listings/{product_id}/similar`: listings
like an indexed one ("more like this"). Both take optional category and price filters."""
from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query
from pydantic import BeforeValidator, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from api.deps import BatcherDep, ConfigDep, DecodePoolDep, ServicesDep, predict
from api.routes.errors import BAD_INPUT, INVALID_QUERY, NOT_FOUND
from api.routes.predict import OptionalPhotos, OptionalText
from api.schemas import ListingMeta, ListingOut, PredictionOut, SimilarOut, SimilarToListingOut
from api.services import Services
from api.uploads import MAX_CATEGORY_CHARS, checked_text, cleaned_photos, fields_in_place_and_once, nothing_to_answer
from listings.categories import UnknownCategoryError, canonical_category
from listings.config import DEFAULT_K, Config
from listings.data import ID_PATTERN, MAX_PRICE, checked_price, clean_listing_text
from retrieval.index import check_search
from retrieval.listing import SearchResult
from retrieval.query import search_like_listing, search_similar

router = APIRouter(tags=["search"], dependencies=[Depends(fields_in_place_and_once)])

# `checked_price` reads and bounds a price; the schema says what it takes (pydantic wrote its ge/le,
# which are no JSON Schema words, beside a number type that refused the catalogue's "£1,234.00")
_PRICE_SCHEMA = WithJsonSchema(
    {
        "anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_PRICE}, {"type": "string", "examples": ["45.50", "£1,234.00"]}, {"type": "null"}],
        "description": f"pounds, from 0 to {MAX_PRICE:,.0f}: 45, 45.50 or £1,234.00 (the catalogue's form)",
    }
)
Price = Annotated[float | None, BeforeValidator(checked_price), _PRICE_SCHEMA, Form()]
PriceQuery = Annotated[float | None, BeforeValidator(checked_price), _PRICE_SCHEMA, Query()]


def whole_number(value: object) -> object:
    """A count as a client writes one: digits only ('5_0' and '+05' are Python's int spellings, not a user's)."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]+", value.strip()):
        raise ValueError(f"a whole number such as 10 is wanted, got {value[:40]!r}")
    return value


# None: the index's default_k; a client sends an integer or leaves it out, so the schema says integer, not "integer or null"
Count = Annotated[int | None, BeforeValidator(whole_number), WithJsonSchema({"type": "integer"})]
ProductId = Annotated[str, Path(pattern=ID_PATTERN, description="letters, digits, '-' and '_'")]
K_DESCRIPTION = f"how many listings, 1 to index.max_k (the schema's maximum), {DEFAULT_K} unless max_k is lower"
CATEGORY_DESCRIPTION = "a root category (any case), or a category path of whole levels, e.g. 'Home & Garden / Garden & Patio'"


@router.post("/similar", response_model=SimilarOut, responses=BAD_INPUT, summary="Similar listings")
async def similar(
    config: ConfigDep,
    services: ServicesDep,
    batcher: BatcherDep,
    pool: DecodePoolDep,
    img: OptionalPhotos = None,
    txt: OptionalText = None,
    k: Annotated[Count, Form(description=K_DESCRIPTION)] = None,
    category: Annotated[str | None, Form(max_length=MAX_CATEGORY_CHARS, description=CATEGORY_DESCRIPTION)] = None,
    min_price: Price = None,
    max_price: Price = None,
) -> SimilarOut:
    """Ranked by the inputs given: photo, text, or both. The query's predicted category comes along."""
    k, category = await checked_filters(k, category, min_price, max_price, config, services)
    photos = await cleaned_photos(img, config, pool)
    text = checked_text(txt, config, clean=clean_listing_text)
    if not photos and not text:
        raise nothing_to_answer(txt)
    prediction = await predict(batcher, photos, text, "combined")
    try:
        found = await run_in_threadpool(
            search_similar,
            services.index,
            prediction,
            services.terms,
            k=k,
            category=category,
            min_price=min_price,
            max_price=max_price,
        )
    except ValueError as exc:  # a query that cannot rank listings: a text alone with no known word
        raise HTTPException(422, str(exc)) from exc
    return SimilarOut(
        results=results_out(found),
        modalities=list(found.modalities),
        prediction=PredictionOut.of(prediction),
    )


@router.get(
    "/listings/{product_id}/similar", response_model=SimilarToListingOut, responses=INVALID_QUERY | NOT_FOUND, summary="Listings like an indexed listing"
)
async def similar_to_listing(
    product_id: ProductId,
    config: ConfigDep,
    services: ServicesDep,
    k: Annotated[Count, Query(description=K_DESCRIPTION)] = None,
    category: Annotated[str | None, Query(max_length=MAX_CATEGORY_CHARS, description=CATEGORY_DESCRIPTION)] = None,
    min_price: PriceQuery = None,
    max_price: PriceQuery = None,
) -> SimilarToListingOut:
    """"More like this": ranked by the listing's own stored embeddings and words (no model runs),
    the listing itself left out."""
    k, category = await checked_filters(k, category, min_price, max_price, config, services)
    try:
        listing, found = await run_in_threadpool(
            search_like_listing, services.index, product_id, k=k, category=category, min_price=min_price, max_price=max_price
        )
    except KeyError as exc:
        raise HTTPException(404, exc.args[0]) from exc
    return SimilarToListingOut(
        listing=ListingMeta.model_validate(listing, from_attributes=True),
        results=results_out(found),
        modalities=list(found.modalities),
    )


async def checked_filters(
    k: int | None, category: str | None, min_price: float | None, max_price: float | None, config: Config, services: Services
) -> tuple[int, str | None]:
    """A 422 for a k or price range the index refuses, an unknown category or a category path no
    listing has (a database read: off the event loop); k (the index's default when not given) and
    the category, canonical."""
    k = config.index.k_or_default(k)
    category = known_category(category, services.predictor.classes)
    try:
        check_search(k, min_price, max_price, config.index.max_k)
        if category is not None:
            await run_in_threadpool(services.index.check_category, category)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    return k, category


def results_out(found: SearchResult) -> list[ListingOut]:
    return [ListingOut.model_validate(hit, from_attributes=True) for hit in found.hits]


def known_category(category: str | None, classes: list[str]) -> str | None:
    """`canonical_category`, its refusal a 422."""
    try:
        return canonical_category(category, classes)
    except UnknownCategoryError as exc:
        raise HTTPException(422, str(exc)) from exc
