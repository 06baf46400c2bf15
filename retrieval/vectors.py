"""The vectors the listing index holds and the queries it answers, and what their scores mean.

The vector of a listing
    The branches' 256-d embeddings side by side: [w·î, w·t̂] with î the listing's photos folded
    into one direction (each photo's embedding L2-normalised, averaged, re-normalised), t̂ its
    L2-normalised text embedding and w = 1/√2, so a listing with a photo and a text is a unit
    vector; a missing modality is a zero half. We index this concatenation (the fusion
    classifier's own input) rather than anything fused, because only here does each modality keep
    its own coordinates: a query carrying only a text is [0, t̂_q] and its inner product with any
    listing is cos(t̂_q, t̂)/√2 whatever the listing's photo, so one index answers text-only,
    photo-only and photo+text queries, ranking by the modalities given and nothing else; a fused
    vector would compare a text-only query with photo evidence it does not have. A listing that
    lacks a modality is deliberately *not* re-normalised: that would stretch its other half by √2
    and rank it above complete listings for single-modality queries.

Scores
    A query is normalised over the m ∈ {1, 2} modalities it carries, so its inner product with a
    listing is Σ cos / √(2m) and the mean cosine over the query's modalities is c = ip·√(2/m) (for a
    photo+text query against a complete listing this is simply the cosine of the two unit
    vectors). A listing without the query's modality contributes a cosine of 0 to that mean, and is
    left out altogether when that modality is the only one asked for. Reported scores are
    (1 + c) / 2 ∈ [0, 1], the linear map that keeps the ranking.
"""
from __future__ import annotations

import math

import numpy as np

IMAGE, TEXT = "image", "text"
HALF_WEIGHT = 1 / math.sqrt(2)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise each row; an all-zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def fold_photos(embeddings: np.ndarray) -> np.ndarray:
    """One direction for a listing's photos: the re-normalised mean of their unit embeddings.

    Accepts one embedding [d] or a listing's photos [p, d]."""
    embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    return unit_rows(unit_rows(embeddings).mean(axis=0))


def listing_vectors(image: np.ndarray, has_image: np.ndarray, text: np.ndarray, has_text: np.ndarray) -> np.ndarray:
    """Index vectors [n, 2d] from folded photo embeddings and text embeddings ([n, d] each)."""
    image_half = unit_rows(image) * np.asarray(has_image, dtype=np.float32)[:, None]
    text_half = unit_rows(text) * np.asarray(has_text, dtype=np.float32)[:, None]
    return (np.concatenate([image_half, text_half], axis=1) * HALF_WEIGHT).astype(np.float32)


def listing_vector(image_vec: np.ndarray | None, text_vec: np.ndarray | None, half_dim: int) -> np.ndarray:
    """The index vector [2d] of one listing; `image_vec` may be one embedding or its photos [p, d]."""
    image = _half(image_vec, half_dim, "image_vec", fold=True)
    text = _half(text_vec, half_dim, "text_vec", fold=False)
    return listing_vectors(image[None], [image_vec is not None], text[None], [text_vec is not None])[0]


def query_vector(image_vec: np.ndarray | None, text_vec: np.ndarray | None, half_dim: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """The unit query vector [2d] carrying only the given modalities, and their names."""
    modalities = tuple(name for name, vec in ((IMAGE, image_vec), (TEXT, text_vec)) if vec is not None)
    if not modalities:
        raise ValueError("a query needs an image vector, a text vector or both")
    vector = np.concatenate([_half(image_vec, half_dim, "image_vec", fold=True), _half(text_vec, half_dim, "text_vec", fold=False)])
    if not np.any(vector):
        raise ValueError("the query vector is zero")
    return unit_rows(vector), modalities


def score_from_inner_product(inner_product: np.ndarray | float, n_modalities: int) -> np.ndarray:
    """(1 + mean cosine over the query's modalities) / 2, in [0, 1]."""
    cosine = np.asarray(inner_product, dtype=np.float64) * math.sqrt(2 / n_modalities)
    return np.clip((1 + cosine) / 2, 0.0, 1.0)


def _half(vec: np.ndarray | None, half_dim: int, name: str, fold: bool) -> np.ndarray:
    if vec is None:
        return np.zeros(half_dim, dtype=np.float32)
    vec = np.asarray(vec, dtype=np.float32)
    if vec.ndim not in ((1, 2) if fold else (1,)) or vec.shape[-1] != half_dim or vec.size == 0:
        expected = f"({half_dim},)" + (f" or (photos, {half_dim})" if fold else "")
        raise ValueError(f"{name} has shape {vec.shape}; expected {expected}")
    if not np.all(np.isfinite(vec)):
        raise ValueError(f"{name} has non-finite values")
    return fold_photos(vec) if fold else unit_rows(vec)


def halves(vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A listing vector's photo half and text half (views, not copies)."""
    half = len(vector) // 2
    return vector[:half], vector[half:]


def check_vectors(vectors: np.ndarray, n_rows: int) -> None:
    """A ValueError unless `vectors` are `n_rows` listing vectors, as `listing_vectors` makes them."""
    if vectors.ndim != 2 or vectors.shape[0] != n_rows or vectors.shape[1] % 2:
        raise ValueError(f"vectors have shape {vectors.shape}; expected ({n_rows}, 2·d), one per listing")
    if not np.all(np.isfinite(vectors)):
        raise ValueError("vectors have non-finite values")
    if np.any(np.linalg.norm(vectors, axis=1) > 1 + 1e-3):
        raise ValueError("vectors must come from `listing_vectors` (norm at most 1)")
