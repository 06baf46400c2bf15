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
from listings.data import split_category

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
    k: Annotated[int, Form(ge=1, description="how many listings, at most index.max_k (100)")] = 10,
    category: Annotated[str | None, Form(description="a root category, or a category path prefix")] = None,
    min_price: Price = None,
    max_price: Price = None,
) -> SimilarOut:
    """Ranked by the inputs given: photo, text, or both. The query's predicted category comes along."""
    if k > config.index.max_k:
        raise HTTPException(422, f"k must be between 1 and {config.index.max_k}, got {k}")
    if min_price is not None and max_price is not None and min_price > max_price:
        raise HTTPException(422, f"min_price {min_price:g} is above max_price {max_price:g}")
    category = known_category(category, services.predictor.classes)
    photos = await cleaned_photos(img, config, pool)
    text = checked_text(txt, config)
    if not photos and not text:
        raise HTTPException(422, "send a photo (img), a text (txt) or both")
    prediction = await predict(batcher, photos, text, "combined")
    try:
        found = await run_in_threadpool(
            services.index.search,
            prediction.image_embedding,
            prediction.text_embedding,
            k=k,
            category=category,
            min_price=min_price,
            max_price=max_price,
        )
    except ValueError as exc:  # a query the index cannot rank, e.g. a text with no known word
        raise HTTPException(422, str(exc)) from exc
    return SimilarOut(
        results=[ListingOut.model_validate(hit, from_attributes=True) for hit in found.hits],
        modalities=list(found.modalities),
        prediction=prediction_out(prediction),
    )


def known_category(category: str | None, classes: list[str]) -> str | None:
    """A category whose root (the part before the first ' / ') is a known category, any case, with
    the root spelt as the model spells it; None if blank."""
    if category is None or not category.strip():
        return None
    parts = split_category(category)
    roots = {name.lower(): name for name in classes}
    if not parts or parts[0].lower() not in roots:
        raise HTTPException(422, f"unknown category {category[:100]!r}; known: {', '.join(classes)}")
    return " / ".join([roots[parts[0].lower()], *parts[1:]])
