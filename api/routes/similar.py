"""`POST /similar`: listings like a photo and/or a text, with optional category and price filters."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException
from starlette.concurrency import run_in_threadpool

from api.deps import BatcherDep, ConfigDep, DecodePoolDep, ServicesDep, predict, prediction_out
from api.routes.errors import BAD_INPUT
from api.routes.predict import OptionalPhotos, OptionalText
from api.schemas import ListingOut, SimilarOut
from api.uploads import checked_text, cleaned_photos
from listings.categories import UnknownCategoryError, canonical_category
from retrieval.index import check_search
from retrieval.query import search_similar

router = APIRouter(tags=["search"], responses=BAD_INPUT)

Price = Annotated[float | None, Form(ge=0, le=1e12, allow_inf_nan=False, description="in the listings' currency")]


@router.post("/similar", response_model=SimilarOut, summary="Similar listings")
async def similar(
    config: ConfigDep,
    services: ServicesDep,
    batcher: BatcherDep,
    pool: DecodePoolDep,
    img: OptionalPhotos = None,
    txt: OptionalText = None,
    k: Annotated[int, Form(description="how many listings, 1 to index.max_k (100)")] = 10,
    category: Annotated[str | None, Form(description="a root category (any case), or a category path of whole levels, e.g. 'Home & Garden / Garden'")] = None,
    min_price: Price = None,
    max_price: Price = None,
) -> SimilarOut:
    """Ranked by the inputs given: photo, text, or both. The query's predicted category comes along."""
    try:
        check_search(k, min_price, max_price, config.index.max_k)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    category = known_category(category, services.predictor.classes)
    photos = await cleaned_photos(img, config, pool)
    text = checked_text(txt, config)
    if not photos and not text:
        raise HTTPException(422, "send a photo (img), a text (txt) or both")
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
        results=[ListingOut.model_validate(hit, from_attributes=True) for hit in found.hits],
        modalities=list(found.modalities),
        prediction=prediction_out(prediction),
    )


def known_category(category: str | None, classes: list[str]) -> str | None:
    """`canonical_category`, its refusal a 422."""
    try:
        return canonical_category(category, classes)
    except UnknownCategoryError as exc:
        raise HTTPException(422, str(exc)) from exc
