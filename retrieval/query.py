"""A query turned into a search of the listing index, for the API and the command line alike: a classified
photo and/or text (`search_similar`), or an indexed listing by its stored vector and words (`search_like_listing`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from retrieval.index import ListingIndex

from retrieval.listing import Listing, SearchResult
from retrieval.terms import Terms, TermWeights

if TYPE_CHECKING:  # only for annotations: "more like this" (search_like_listing) needs no model, nor torch's import time
    from combined_model.inference import Prediction

NO_KNOWN_WORD = "the text has no word the model knows, so it cannot rank listings by it: add other words or a photo"


def search_similar(index: ListingIndex, prediction: Prediction, terms: TermWeights | None, **filters) -> SearchResult:
    """The listings most like what the prediction used (photo, text or both), with `index.search`'s
    filters (k, category, min_price, max_price); with `terms`, a query with text re-ranks by its
    words (`retrieval.terms`). A text alone with no known word is refused (ValueError): its
    embedding says nothing, and every listing would score alike."""
    if prediction.low_confidence:
        raise ValueError(NO_KNOWN_WORD)
    return index.search(prediction.image_embedding, prediction.text_embedding, terms=_words(prediction, terms), **filters)


def search_like_listing(index: ListingIndex, product_id: str, **filters) -> tuple[Listing, SearchResult]:
    """The listings most like an indexed one ("more like this"), by its stored vector and words,
    with `index.search`'s filters; the listing itself is left out. No model runs. KeyError when
    `product_id` is not indexed."""
    stored = index.stored(product_id)
    if stored is None:
        raise KeyError(f"no listing {product_id[:100]!r} in the index")
    result = index.search(stored.image_vec, stored.text_vec, terms=stored.terms, exclude_product_id=product_id, **filters)
    return stored.listing, result


def index_listing(index: ListingIndex, listing: dict, prediction: Prediction, terms: TermWeights | None, text: str | None = None) -> Listing | None:
    """Add (or replace) a listing with the embeddings and words of its prediction, and the `text`
    they came from (which a rebuild embeds again); returns the one replaced. Refused as `listing_entry` refuses."""
    return index.add(listing, *listing_entry(prediction, terms), text=text)


def listing_entry(prediction: Prediction, terms: TermWeights | None) -> tuple[np.ndarray | None, np.ndarray | None, Terms | None]:
    """What a listing is indexed by: its photo and text embeddings and its words. A text alone with
    no known word is refused (ValueError), as `search_similar` refuses it as a query: its embedding
    says nothing, so the listing would sit beside every other such text and come back,
    near-identical, for any of them."""
    if prediction.low_confidence:
        raise ValueError(NO_KNOWN_WORD)
    return prediction.image_embedding, prediction.text_embedding, _words(prediction, terms)


def _words(prediction: Prediction, terms: TermWeights | None) -> Terms | None:
    return terms.row(prediction.text_tokens) if terms is not None and prediction.text_tokens else None
