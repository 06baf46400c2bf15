"""A listing's words as a sparse TF-IDF row: what re-ranks the index's candidates for a query with text.

The branch embeddings find the right neighbourhood (same-root precision@10 0.81) but not the item:
trained to classify, a text embedding puts every games console near every other, so "ps4 with two
controllers" ranks Xbox listings beside PS4 ones. The words do tell them apart. A query that
carries text therefore takes the index's best `index.rerank_candidates` listings and orders them by

    (1 − β) · score + β · cos(query words, listing words),      β = `index.term_weight`

the first term the embeddings' score in [0, 1], the second the cosine of the two texts' TF-IDF rows
(non-negative, so also in [0, 1]). β was chosen on validation listings as queries against the
training listings (EXPERIMENTS.md): at 0.3 the share of the ten results in the query's full
category path (e.g. "Video Games & Consoles / Consoles / PS4") rises from 0.34 to 0.46 for photo +
text queries and from 0.30 to 0.44 for text alone, while same-root precision stays at 0.81 / 0.79.

The rows are the text model's own TF-IDF word block (uni- and bigrams of the same tokens, its
vocabulary and idf), L2-normalised; about 40 non-zeros per listing. The text stage exports every
listing's row (it has their tokens already); the index database stores them beside the vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from listings.config import Config


@dataclass(frozen=True)
class Terms:
    """One text's L2-normalised TF-IDF row: sorted column ids and their weights."""

    columns: np.ndarray  # int32, ascending
    weights: np.ndarray  # float32

    def to_blobs(self) -> tuple[bytes, bytes]:
        return self.columns.astype(np.int32).tobytes(), self.weights.astype(np.float32).tobytes()

    @classmethod
    def from_blobs(cls, columns: bytes, weights: bytes) -> "Terms":
        return cls(np.frombuffer(columns, dtype=np.int32), np.frombuffer(weights, dtype=np.float32))


def terms_of_rows(indptr: np.ndarray, columns: np.ndarray, weights: np.ndarray) -> list[Terms | None]:
    """Each CSR row as `Terms` (None for a row without a word): the text stage exports its listings'
    rows so, and `TermWeights` computes a query's."""
    return [
        Terms(columns[start:end].astype(np.int32), weights[start:end].astype(np.float32)) if end > start else None
        for start, end in zip(indptr[:-1], indptr[1:])
    ]


class TermWeights:
    """A text's tokens → its `Terms`, by the text stage's TF-IDF model (`TfidfSvmBaseline.word_rows`)."""

    def __init__(self, tfidf):
        self.tfidf = tfidf

    @classmethod
    def load(cls, config: Config, tfidf=None) -> "TermWeights":
        """From the trained text stage's TF-IDF model (`tfidf`, when already loaded)."""
        from text_model.baseline import TfidfSvmBaseline

        return cls(tfidf or TfidfSvmBaseline.load(config))

    def row(self, tokens: list[str]) -> Terms | None:
        rows: csr_matrix = self.tfidf.word_rows([tokens])
        return terms_of_rows(rows.indptr, rows.indices, rows.data)[0]


def term_cosines(query: Terms, rows: list[Terms | None]) -> np.ndarray:
    """The cosine of `query` with each row (0 for a missing or empty one), in one vectorised pass."""
    if not rows or len(query.columns) == 0:
        return np.zeros(len(rows), np.float32)
    present = [(i, row) for i, row in enumerate(rows) if row is not None and len(row.columns)]
    if not present:
        return np.zeros(len(rows), np.float32)
    owner = np.concatenate([np.full(len(row.columns), i) for i, row in present])
    columns = np.concatenate([row.columns for _, row in present])
    weights = np.concatenate([row.weights for _, row in present])
    at = np.searchsorted(query.columns, columns).clip(max=len(query.columns) - 1)
    products = np.where(query.columns[at] == columns, query.weights[at] * weights, 0.0)
    return np.bincount(owner, weights=products, minlength=len(rows)).astype(np.float32)
