"""The JSON the API answers with (documented at /docs)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class PredictionOut(BaseModel):
    pred: str = Field(description="the most probable category")
    classes: list[str] = Field(description="every category, most probable first")
    probabilities: list[float] = Field(description="aligned with `classes`")
    modalities: list[str] = Field(description='the inputs used: "image", "text"')
    low_confidence: bool = Field(False, description="the answer rests on little evidence, e.g. a text with no known word")

    @classmethod
    def of(cls, prediction: Any) -> "PredictionOut":
        """A `combined_model.inference.Prediction` as the API (and `fbm classify --json`) answers it."""
        return cls(
            pred=prediction.pred,
            classes=list(prediction.classes),
            probabilities=[float(p) for p in prediction.probabilities],
            modalities=list(prediction.modalities),
            low_confidence=bool(prediction.low_confidence),
        )


class ListingMeta(BaseModel):
    product_id: str
    title: str
    category: str
    price: float | None
    location: str
    image_ids: list[str]


class ListingOut(ListingMeta):
    score: float = Field(description="similarity to the query in [0, 1]: the embeddings' cosine, rescaled, blended with the two texts' word cosine when the query has text")


class SimilarOut(BaseModel):
    results: list[ListingOut]
    modalities: list[str] = Field(description="the query inputs the search used")
    prediction: PredictionOut = Field(description="the category predicted for the query, from the same model pass")


class SimilarToListingOut(BaseModel):
    listing: ListingMeta = Field(description="the indexed listing the results are like (never among them)")
    results: list[ListingOut]
    modalities: list[str] = Field(description="the listing's inputs the search used")


class CategoriesOut(BaseModel):
    categories: list[str]


class LimitsOut(BaseModel):
    """What the server takes in one request, so that a client can check before sending."""

    max_text_chars: int = Field(description="characters of txt, or of a new listing's title and description together, as sent (a line break, sent as CR LF, counts as one)")
    max_title_chars: int = Field(description="characters of a new listing's title")
    max_location_chars: int = Field(description="characters of a new listing's location")
    max_category_chars: int = Field(description="characters of a category, as a filter or a new listing's")
    max_photos: int = Field(description="photos (img fields) in one request")
    max_photo_bytes: int = Field(description="bytes of one photo file")
    max_request_bytes: int = Field(description="bytes of a whole request body")
    max_photo_pixels: int = Field(description="pixels (width × height) one photo decodes to (a large baseline JPEG decodes at 1/2 to 1/8 of its sides)")
    max_k: int = Field(description="results one search returns at most")


class HealthOut(BaseModel):
    status: str = Field(description='"ok": the models and the index are loaded and answering')
    models: dict[str, str] = Field(description="each model's version, to tell which models answer: the image backbone and its weights' checksum, the text model's, the fusion and its weights")
    index: dict = Field(description="the index: listing count, vector dimension, kind (exact or hnsw) and its settings, build id, writes since its last checkpoint")
    listings: int = Field(description="listings searchable now, live additions and deletions included")
    writes: str = Field(description="whether POST and DELETE /listings can change the index: on, or off and why")


class ListingCreated(BaseModel):
    product_id: str
    category: str = Field(description="the category given, or else the predicted one")
    predicted: PredictionOut
    image_ids: list[str] = Field(description="ids of the stored photos, for GET /images/{image_id} (a photo sent twice is stored once)")
    replaced: bool = Field(description="true when a listing of this product id was there and is replaced (status 200, not 201)")


class ListingDeleted(BaseModel):
    product_id: str
    deleted: bool


class Error(BaseModel):
    detail: str
