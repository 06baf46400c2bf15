"""A classified query turned into a search of the listing index, for the API and the command line alike."""
from __future__ import annotations

from combined_model.inference import Prediction
from retrieval.index import ListingIndex, SearchResult

NO_KNOWN_WORD = "the text has no word the model knows, so it cannot rank listings by it: add other words or a photo"


def search_similar(index: ListingIndex, prediction: Prediction, **filters) -> SearchResult:
    """The listings most like what the prediction used (photo, text or both), with `index.search`'s
    filters (k, category, min_price, max_price). A text alone with no known word is refused
    (ValueError): its embedding says nothing, and every listing would score alike."""
    if prediction.low_confidence:
        raise ValueError(NO_KNOWN_WORD)
    return index.search(prediction.image_embedding, prediction.text_embedding, **filters)
