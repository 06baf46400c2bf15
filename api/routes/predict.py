"""`POST /image`, `/text` and `/combined`: the category of a listing from its photos and/or text."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from api.deps import BatcherDep, ConfigDep, DecodePoolDep, predict
from api.routes.errors import BAD_INPUT
from api.schemas import PredictionOut
from api.uploads import checked_text, cleaned_photos, fields_in_place_and_once, nothing_to_answer
from listings.data import clean_listing_text

router = APIRouter(tags=["predict"], dependencies=[Depends(fields_in_place_and_once)], responses=BAD_INPUT)

Photos = Annotated[list[UploadFile], File(description="one or more photos of the listing")]
OptionalPhotos = Annotated[list[UploadFile] | None, File(description="one or more photos of the listing")]
Text = Annotated[str, Form(description="the listing's title and/or description")]
OptionalText = Annotated[str | None, Form(description="the listing's title and/or description")]


@router.post("/image", response_model=PredictionOut, summary="Category from photos")
async def predict_image(img: Photos, config: ConfigDep, batcher: BatcherDep, pool: DecodePoolDep) -> PredictionOut:
    """The image branch alone; a listing's photos are averaged into one answer."""
    photos = await cleaned_photos(img, config, pool)
    return PredictionOut.of(await predict(batcher, photos, None, "image"))


@router.post("/text", response_model=PredictionOut, summary="Category from text")
async def predict_text(txt: Text, config: ConfigDep, batcher: BatcherDep) -> PredictionOut:
    """The text branch alone, on the text cleaned as training cleaned it; a text with no word the
    model knows is answered with `low_confidence` set."""
    text = checked_text(txt, config, required=True, clean=clean_listing_text)
    return PredictionOut.of(await predict(batcher, [], text, "text"))


@router.post("/combined", response_model=PredictionOut, summary="Category from photos and text")
async def predict_combined(
    config: ConfigDep, batcher: BatcherDep, pool: DecodePoolDep, img: OptionalPhotos = None, txt: OptionalText = None
) -> PredictionOut:
    """Both inputs are used when given; with only one, the model falls back to that branch."""
    photos = await cleaned_photos(img, config, pool)
    text = checked_text(txt, config, clean=clean_listing_text)
    if not photos and not text:
        raise nothing_to_answer(txt)
    return PredictionOut.of(await predict(batcher, photos, text, "combined"))
