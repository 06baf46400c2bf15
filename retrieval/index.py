"""A live, searchable index of listings: FAISS vectors beside SQLite metadata.

The vector of a listing and its scores: `retrieval.vectors`. The database's tables: `retrieval.store`.

Storage and consistency
    A directory holds `CURRENT` (the name of the live build), `listings-<build>.sqlite` (one row
    per product keyed by its FAISS id with its metadata, and a table of the same ids' vectors) and
    `vectors-<build>.faiss` (an `IndexIDMap2`). SQLite is the source of truth, the FAISS file a
    derived index: an add or a delete commits its SQLite transaction first, then changes FAISS in
    memory. The FAISS file is a checkpoint, rewritten (to a temporary name, then renamed over the
    old one) every `checkpoint_every` writes and on `close`: rewriting it on every write would
    cost seconds per add at a million listings. On opening, FAISS ids missing from SQLite are
    removed (or tombstoned) and SQLite rows missing from FAISS are re-added from their stored
    vector (FAISS ids are never reused), so a crash at any point reopens to the state of the last
    committed transaction.
    A build writes a fresh pair under a new build name and commits by renaming `CURRENT`. A
    missing or unreadable file is refused with an `IndexStateError` naming it.
    The database also records the live changes, listings added (with the text they were embedded
    from) and deleted since the build, so that a rebuild (`retrieval.build`) keeps them. Every
    process with the index open holds a shared lock on `LOCK`; a build takes it exclusively, so it
    never replaces the files under a running server (`IndexInUseError`).

Re-ranking by words
    A query with text may carry its words (`retrieval.terms.Terms`, the text model's TF-IDF row);
    the index then takes its best `rerank_candidates` listings by their score (`retrieval.vectors`), adds the
    `word_candidates` listings that match its words best (an exact title whose embedding ranks
    low), and orders them all by (1 − β)·score + β·cos(words), β = `term_weight`, reporting that
    blend (still in [0, 1]). Each listing's words are stored beside its vector in the database,
    and word by word (`postings`, an inverted index): the match is the dot product over the
    query's `word_match_terms` strongest words, each read to its `word_match_postings` strongest
    listings, so its cost does not grow with the catalogue; it respects the filters among those.
    An index built before the postings gets them on its first serving open; a reader (`fbm
    similar`) of such an index writes nothing and searches without word candidates.

Index kinds
    Up to `exact_threshold` listings: `IndexFlatIP` (exact; a delete removes the vector). Above:
    `IndexHNSWFlat` with `efSearch` set on every query. HNSW cannot remove vectors, so a deleted
    listing stays in the graph as a tombstone (it still helps navigation) and is filtered out by
    the search's ID selector; rebuilding (`fbm index`) compacts. The kind is chosen at build time.

Filters and threads
    Filters (root category or category path prefix, price range, the excluded query listing,
    tombstones) are resolved to FAISS ids by indexed SQLite range queries and applied inside the
    search as FAISS ID selectors. A filtered HNSW search over at most `filter_exact_limit`
    listings, and an approximate search that returns fewer than min(k, eligible) listings, scan
    the eligible stored vectors exactly instead, so k results come back whenever k exist.
    Searches share a read lock and run concurrently; adds and deletes take the write lock.
"""
from __future__ import annotations

import fcntl
import logging
import math
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from listings.artifacts import hold_lock, replace_atomically, write_atomic
from listings.config import IndexConfig
from listings.data import MAX_PRICE, PATH_SEPARATOR, split_category
from retrieval import store
from retrieval.listing import Hit, Listing, SearchResult
from retrieval.terms import Terms, term_cosines
from retrieval.vectors import IMAGE, TEXT, check_vectors, halves, listing_vector, query_vector, score_from_inner_product

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: listings' words (TF-IDF rows) stored for re-ranking
CURRENT_FILE = "CURRENT"
LOCK_FILE = "LOCK"
SERVING_LOCK_FILE = "SERVING"
FLAT, HNSW = "flat", "hnsw"


class IndexStateError(ValueError):
    """The files of an index are missing, unreadable or do not belong together."""


class IndexInUseError(IndexStateError):
    """Another process has the index open (a running `fbm serve`), so it cannot be rebuilt."""


def check_search(
    k: int, min_price: float | None, max_price: float | None, max_k: int, names: tuple[str, str, str] = ("k", "min_price", "max_price")
) -> None:
    """A ValueError naming the argument (as the caller spells it: `names`) when k is outside 1..max_k,
    a price is not a number from 0 to `MAX_PRICE`, or the price range is empty. `search` checks so; the API
    and the command line call it first, so a bad request is refused before any model runs."""
    k_name, low, high = names
    if not 1 <= k <= max_k:
        raise ValueError(f"{k_name} must be between 1 and {max_k}, got {k} (the setting index.max_k)")
    for name, price in ((low, min_price), (high, max_price)):
        if price is not None and not (math.isfinite(price) and 0 <= price <= MAX_PRICE):
            raise ValueError(f"{name} must be a price from 0 to {MAX_PRICE:.0e}, got {price:g}")
    if min_price is not None and max_price is not None and min_price > max_price:
        raise ValueError(f"{low} {min_price:g} is above {high} {max_price:g}")


def make_faiss_index(n: int, dim: int, config: IndexConfig) -> faiss.IndexIDMap2:
    """The size-aware choice: exact inner product below `exact_threshold` listings, HNSW above."""
    if n <= config.exact_threshold:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    hnsw = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = config.ef_construction
    hnsw.hnsw.efSearch = config.ef_search
    return faiss.IndexIDMap2(hnsw)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run FAISS on one thread in this thread: a single query gains nothing from OpenMP, and its
    parallel regions stall whenever the other cores are busy. Concurrent searches use the cores."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def index_kind(index: faiss.IndexIDMap2) -> str:
    return HNSW if isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW) else FLAT


@dataclass
class StoredListing:
    """An indexed listing as a query: its metadata, the halves of its stored vector (None where it
    has no such modality) and its words, so "more like this listing" runs no model."""

    listing: Listing
    image_vec: np.ndarray | None
    text_vec: np.ndarray | None
    terms: Terms | None


@dataclass
class LiveChanges:
    """What live writes changed since a build: listings added or replaced, with the text they were
    embedded from (None for photos alone; their photos are named by `image_ids`), and product ids deleted."""

    added: list[tuple[Listing, str | None]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                self._condition.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._condition:
            self._writers_waiting += 1
            self._condition.wait_for(lambda: not self._writing and not self._readers)
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()


@dataclass(frozen=True)
class _Exclusion:
    ids: frozenset[int]
    live: int  # how many of `ids` are live listings (not tombstones)
    selector: faiss.IDSelector | None  # selects `ids`


class ListingIndex:
    """Listings searchable by photo, text or both; see the module docstring for the design."""

    def __init__(
        self, directory: Path, build_id: str, db: sqlite3.Connection, index: faiss.IndexIDMap2, config: IndexConfig, lock: int
    ):
        self.directory = directory
        self._lock_fd = lock  # a shared lock on LOCK, held until `close`
        self._serving_fd = -1  # the exclusive lock on SERVING of the one process that serves it
        self.build_id = build_id
        self.config = config
        self._db = db
        self._index = index
        self._kind = index_kind(index)
        self._lock = _ReadWriteLock()
        self._db_mutex = threading.Lock()  # one user of the shared connection at a time: a query, or a write's whole transaction
        self._half_dim = index.d // 2
        live = dict(db.execute("SELECT faiss_id, has_image | (has_text << 1) FROM listings").fetchall())
        self._count = len(live)
        self._missing = {IMAGE: {i for i, bits in live.items() if not bits & 1}, TEXT: {i for i, bits in live.items() if not bits & 2}}
        self._tombstones = set(faiss.vector_to_array(index.id_map).tolist()) - set(live)
        self._has_postings = bool(db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'postings'").fetchone())
        self._exclusions: dict[tuple[str, ...], _Exclusion] = {}  # per queried modalities; emptied by every write
        self._unsaved = 0  # writes since the FAISS file was last written
        self.reconciled = {"re_added": 0, "removed": 0}

    # files

    @staticmethod
    def db_path(directory: Path, build_id: str) -> Path:
        return Path(directory) / f"listings-{build_id}.sqlite"

    @staticmethod
    def faiss_path(directory: Path, build_id: str) -> Path:
        return Path(directory) / f"vectors-{build_id}.faiss"

    @classmethod
    def build(
        cls,
        directory: str | Path,
        vectors: np.ndarray,
        listings: Iterable[Mapping],
        config: IndexConfig,
        terms: list[Terms | None] | None = None,
        live: LiveChanges | None = None,
        lock: int | None = None,
    ) -> "ListingIndex":
        """Write a new index of `listings` (one per product) with their `listing_vectors` (and their
        words, for re-ranking) and open it. An index already in `directory` stays live until the new
        one is complete; it must not be open in another process (`IndexInUseError`). `live` records
        which of the listings were added live, and which were deleted, so the next build keeps them.
        `lock`, a `build_lock` the caller took, is the build's from then on, released on failure."""
        directory = Path(directory)
        db = None
        try:
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            rows = [Listing.from_mapping(row) for row in listings]
            check_vectors(vectors, len(rows))
            if len({row.product_id for row in rows}) != len(rows):
                raise ValueError("product ids must be unique: the index holds one row per product")
            terms = terms if terms is not None else [None] * len(rows)
            if len(terms) != len(rows):
                raise ValueError(f"{len(terms)} term rows for {len(rows)} listings")
            live = live or LiveChanges()
            if not {listing.product_id for listing, _ in live.added} <= {row.product_id for row in rows}:
                raise ValueError("every listing added live must be among the listings built")
            lock = build_lock(directory) if lock is None else lock
            build_id = uuid.uuid4().hex[:12]
            db_path, faiss_path = cls.db_path(directory, build_id), cls.faiss_path(directory, build_id)
            db = sqlite3.connect(db_path, check_same_thread=False)
            with db:
                db.executescript(store.SCHEMA + store.LIVE_SCHEMA + store.PHOTOS_SCHEMA + store.POSTINGS_SCHEMA)
                db.executemany(
                    "INSERT INTO info (key, value) VALUES (?, ?)",
                    [("format_version", str(FORMAT_VERSION)), ("dim", str(vectors.shape[1])), ("build_id", build_id), ("category_keys", store.CATEGORY_KEYS)],
                )
                for faiss_id, (row, vector, words) in enumerate(zip(rows, vectors, terms)):
                    store.insert_listing(db, row, vector, words, faiss_id)
                db.executemany("INSERT INTO live_added (product_id, text) VALUES (?, ?)", [(row.product_id, text) for row, text in live.added])
                db.executemany("INSERT INTO live_deleted (product_id) VALUES (?)", [(product_id,) for product_id in live.deleted])
            index = make_faiss_index(len(rows), vectors.shape[1], config)
            index.add_with_ids(vectors, np.arange(len(rows), dtype=np.int64))
            write_faiss_file(index, faiss_path)
            write_atomic(directory / CURRENT_FILE, build_id + "\n")
            _remove_other_builds(directory, build_id)
            fcntl.flock(lock, fcntl.LOCK_SH)  # built: open, as any reader is
        except BaseException:
            if db is not None:
                db.close()
            if lock is not None:
                os.close(lock)
            raise
        return cls(directory, build_id, db, index, config, lock)

    @classmethod
    def open(cls, directory: str | Path, config: IndexConfig, serving: bool = False) -> "ListingIndex":
        """Open the live build in `directory`, reconciling FAISS with the database (after a crash,
        or live writes a server has not checkpointed yet). `serving`: for the one process that
        serves it (`fbm serve`), which saves what it reconciled; a second is refused, as it would
        search its own FAISS copy, which the first one's live changes leave stale. Any other open
        (`fbm similar`) reconciles in memory and writes nothing, so it works on a read-only copy."""
        directory = Path(directory)
        current = directory / CURRENT_FILE
        if not current.exists():
            raise FileNotFoundError(f"no index in {directory} ({current} is missing): build one with `fbm index`")
        if serving and not os.access(directory, os.W_OK):  # a read-only mount, or another user's folder
            raise IndexStateError(
                f"{directory} cannot be written by this user: the server records live listings and its checkpoints there "
                "(under docker compose, run it as the folder's owner: FBM_UID=$(id -u) FBM_GID=$(id -g))"
            )
        lock = _lock(directory, exclusive=False)
        serving_lock = -1
        try:
            if serving:
                serving_lock = _serving_lock(directory)
                _remove_orphaned_temporaries(directory)  # only a writer: a reader (`fbm similar`) writes nothing
            listing_index = cls._open_build(directory, current.read_text().strip(), config, lock, serving)
        except BaseException:
            os.close(lock)
            if serving_lock >= 0:
                os.close(serving_lock)
            raise
        listing_index._serving_fd = serving_lock
        try:
            listing_index._reconcile()
        except BaseException:
            listing_index.close()
            raise
        return listing_index

    @classmethod
    def _open_build(cls, directory: Path, build_id: str, config: IndexConfig, lock: int, serving: bool = False) -> "ListingIndex":
        db_path, faiss_path = cls.db_path(directory, build_id), cls.faiss_path(directory, build_id)
        for path in (db_path, faiss_path):
            if not path.exists():
                raise IndexStateError(f"{path} is missing ({directory / CURRENT_FILE} names build {build_id}): rebuild the index with `fbm index`")
        db = None
        try:
            db = sqlite3.connect(db_path, check_same_thread=False)
            info = dict(db.execute("SELECT key, value FROM info").fetchall())
            store.upgrade(db, info)
        except sqlite3.DatabaseError as error:
            if db is not None:
                db.close()
            raise IndexStateError(f"{db_path} is not a readable index database ({error}): rebuild the index with `fbm index`") from error
        try:
            try:
                index = faiss.read_index(str(faiss_path))
            except RuntimeError as error:
                raise IndexStateError(f"{faiss_path} is not a readable FAISS index: rebuild the index with `fbm index`") from error
            if info.get("format_version") != str(FORMAT_VERSION):
                raise IndexStateError(f"{db_path} has format {info.get('format_version')}, this code reads {FORMAT_VERSION}: rebuild the index with `fbm index`")
            if not isinstance(index, faiss.IndexIDMap2) or str(index.d) != info.get("dim"):
                raise IndexStateError(f"{faiss_path} does not match {db_path} (dim {index.d} vs {info.get('dim')}): rebuild the index with `fbm index`")
            if serving:  # the one writer: a reader of a build of before the postings searches without them
                store.add_postings(db)
        except BaseException:
            db.close()
            raise
        return cls(directory, build_id, db, index, config, lock)

    def close(self) -> None:
        """Checkpoint FAISS if writes are pending, then close the database."""
        with self._lock.write():
            if self._unsaved:
                self._persist()
            self._db.close()
            for descriptor in (self._lock_fd, self._serving_fd):  # closing releases its lock
                if descriptor >= 0:
                    os.close(descriptor)
            self._lock_fd = self._serving_fd = -1

    def __enter__(self) -> "ListingIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._count

    def info(self) -> dict:
        """What is indexed and how: listing count, vector dimension, index kind and its settings."""
        with self._lock.read():
            info = {
                "count": self._count,
                "dim": int(self._index.d),
                "kind": self._kind,
                "format_version": FORMAT_VERSION,
                "build_id": self.build_id,
                "faiss_vectors": int(self._index.ntotal),
                "tombstones": len(self._tombstones),
                "writes_since_checkpoint": self._unsaved,
                "without_image": len(self._missing[IMAGE]),
                "without_text": len(self._missing[TEXT]),
                "directory": str(self.directory),
            }
        if self._kind == HNSW:
            hnsw = faiss.downcast_index(self._index.index).hnsw
            info |= {"hnsw_m": int(hnsw.nb_neighbors(1)), "ef_construction": int(hnsw.efConstruction), "ef_search": self.config.ef_search}
        return info

    # search

    def search(
        self,
        image_vec: np.ndarray | None,
        text_vec: np.ndarray | None,
        k: int | None = None,
        category: str | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        exclude_product_id: str | None = None,
        terms: Terms | None = None,
    ) -> SearchResult:
        """The k listings most similar to a photo embedding (or a listing's photos [p, d]), a text
        embedding or both, among those matching the filters; `category` is a root category or a
        category path prefix (case-insensitive), a price filter leaves out listings without a price.
        `terms`, the query text's words, re-rank the best candidates (see the module docstring); k
        defaults to `IndexConfig.default_k`."""
        k = self.config.k_or_default(k)
        check_search(k, min_price, max_price, self.config.max_k)
        query, modalities = query_vector(image_vec, text_vec, self._half_dim)
        category = category if category and category.strip() else None
        rerank = terms is not None and TEXT in modalities and self.config.term_weight > 0
        candidates = max(k, self.config.rerank_candidates) if rerank else k
        with self._lock.read(), single_threaded():
            query_ids = self._faiss_ids(exclude_product_id)
            ids, inner_products = self._search_ids(query, modalities, candidates, category, min_price, max_price, query_ids)
            if rerank and self.config.word_candidates and self._has_postings:
                more, more_products = self._word_matches(query, terms, modalities, category, min_price, max_price, query_ids | set(ids))
                ids, inner_products = ids + more, np.concatenate([inner_products, more_products])
            scores = score_from_inner_product(inner_products, len(modalities))
            if rerank:
                stored = self._fetch_terms(ids)
                weight = self.config.term_weight
                scores = np.clip((1 - weight) * scores + weight * term_cosines(terms, [stored.get(i) for i in ids]), 0.0, 1.0)  # float32 cosines reach 1.0000001
                order = np.argsort(-scores, kind="stable")[:k]
                ids, scores = [ids[j] for j in order], scores[order]
            listings = self._fetch(ids)
        hits = [Hit(**asdict(listings[i]), score=float(s)) for i, s in zip(ids, scores)]
        return SearchResult(hits=hits, modalities=modalities)

    def _search_ids(
        self,
        query: np.ndarray,
        modalities: tuple[str, ...],
        k: int,
        category: str | None,
        min_price: float | None,
        max_price: float | None,
        query_ids: set[int],
    ) -> tuple[list[int], np.ndarray]:
        """FAISS ids and inner products of the best min(k, eligible) listings, `query_ids` left out."""
        base = self._exclusion(modalities)
        query_ids = query_ids - base.ids
        if category is None and min_price is None and max_price is None:
            allowed = None
            eligible = self._count - base.live - len(query_ids)
            parts = [base.selector, faiss.IDSelectorBatch(np.fromiter(query_ids, np.int64)) if query_ids else None]
            parts = [part for part in parts if part is not None]
            excluded = faiss.IDSelectorOr(*parts) if len(parts) == 2 else next(iter(parts), None)
            selector = faiss.IDSelectorNot(excluded) if excluded is not None else None
        else:
            allowed = np.array([i for i in self._filtered_ids(category, min_price, max_price) if i not in base.ids and i not in query_ids], dtype=np.int64)
            eligible = len(allowed)
            selector = faiss.IDSelectorBatch(allowed)
        wanted = min(k, eligible)
        if wanted == 0:
            return [], np.zeros(0)
        if allowed is not None and self._kind == HNSW and eligible <= self.config.filter_exact_limit:
            return self._exact(query, selector, wanted)
        params = faiss.SearchParametersHNSW() if self._kind == HNSW else faiss.SearchParameters()
        if self._kind == HNSW:
            live = max(self._count, 1)
            params.efSearch = max(self.config.ef_search, k) * min(math.ceil(live / eligible), 16)
        if selector is not None:
            params.sel = selector
        distances, labels = self._index.search(query[None], wanted, params=params)
        found = labels[0] >= 0
        if found.sum() < wanted:  # an approximate search starved by the filter: search the eligible exactly
            return self._exact(query, selector, wanted)
        return labels[0].tolist(), distances[0]

    def _word_matches(
        self,
        query: np.ndarray,
        terms: Terms,
        modalities: tuple[str, ...],
        category: str | None,
        min_price: float | None,
        max_price: float | None,
        skip: set[int],
    ) -> tuple[list[int], np.ndarray]:
        """FAISS ids of the `word_candidates` listings that match `terms` best (see the module
        docstring), among those the filters allow and a query by `modalities` may return, leaving
        out `skip` (the query listing, those found already); with the query's inner product with
        each one's stored vector."""
        strongest = np.argsort(-terms.weights, kind="stable")[: self.config.word_match_terms]
        if not len(strongest):
            return [], np.zeros(0, np.float32)
        clauses, params = store.filter_clauses(category, min_price, max_price)
        skip = skip | self._exclusion(modalities).ids
        each_word = "SELECT * FROM (SELECT faiss_id, weight * ? AS part FROM postings WHERE term = ? ORDER BY weight DESC LIMIT ?)"
        words, word_params = " UNION ALL ".join([each_word] * len(strongest)), []
        for i in strongest:
            word_params += [float(terms.weights[i]), int(terms.columns[i]), self.config.word_match_postings]
        rows = self._query(
            f"SELECT faiss_id FROM ({words}) {'JOIN listings USING (faiss_id) WHERE ' + ' AND '.join(clauses) if clauses else ''} "
            "GROUP BY faiss_id ORDER BY SUM(part) DESC, faiss_id LIMIT ?",
            word_params + params + [self.config.word_candidates + len(skip)],
        )
        best = [faiss_id for (faiss_id,) in rows if faiss_id not in skip][: self.config.word_candidates]
        stored = dict(self._query(f"SELECT faiss_id, vector FROM vectors WHERE faiss_id IN ({','.join('?' * len(best))})", best)) if best else {}
        kept = [faiss_id for faiss_id in best if faiss_id in stored]  # a listing with no stored vector is no candidate
        if not kept:
            return [], np.zeros(0, np.float32)
        return kept, np.stack([np.frombuffer(stored[faiss_id], np.float32) for faiss_id in kept]) @ query

    def _faiss_ids(self, product_id: str | None) -> set[int]:
        """The FAISS id of an indexed product (none for None, or a product not indexed)."""
        if product_id is None:
            return set()
        return {i for (i,) in self._query("SELECT faiss_id FROM listings WHERE product_id = ?", (product_id,))}

    def _exclusion(self, modalities: tuple[str, ...]) -> "_Exclusion":
        """Ids a query by `modalities` never returns (tombstones, listings missing its one modality),
        with their FAISS selector: built once per modality set and kept until the next write."""
        cached = self._exclusions.get(modalities)
        if cached is None:
            ids = frozenset(self._tombstones | (self._missing[modalities[0]] if len(modalities) == 1 else set()))
            selector = faiss.IDSelectorBatch(np.fromiter(ids, np.int64, len(ids))) if ids else None
            cached = self._exclusions[modalities] = _Exclusion(ids, len(ids) - len(self._tombstones), selector)
        return cached

    def check_category(self, category: str | None) -> None:
        """A ValueError when a category path filter below its root matches no indexed listing (a
        mistyped level would otherwise filter every listing out in silence), naming the
        sub-categories its root has. A root, or a path that some listing has, passes."""
        parts = split_category(category or "")
        depth = 1  # the deepest level that exists, found from the root down: a few queries for any path
        while depth < len(parts) and self._category_paths(parts[: depth + 1], limit=1):
            depth += 1
        if depth >= len(parts):  # a root (or no category), or a path some listing has
            return
        parent = PATH_SEPARATOR.join(parts[:depth])
        known = sorted({path[depth] for path in self._category_paths(parts[:depth]) if len(path) > depth}, key=str.lower)
        raise ValueError(f"no listing in category {category[:200]!r}; {parent!r} has: {'; '.join(known) or 'no sub-categories'}")

    def photo_ids(self) -> set[str]:
        """The ids of every photo an indexed listing shows."""
        return {image_id for (image_id,) in self._query("SELECT image_id FROM photos", [])}

    def has_photo(self, image_id: str) -> bool:
        """Whether an indexed listing shows this photo (a deleted listing's photos are no longer served)."""
        return bool(self._query("SELECT 1 FROM photos WHERE image_id = ? LIMIT 1", [image_id]))

    def spelled_category(self, category: str) -> str:
        """A category path with each level spelt as the indexed listings spell it when one of them
        has it in any case (a new listing's `dining` joins `Dining`, not a second category beside it)."""
        parts = split_category(category)
        for depth in range(1, len(parts)):
            spellings = sorted({path[depth] for path in self._category_paths(parts[: depth + 1]) if len(path) > depth}, reverse=True)
            known = {name.casefold(): name for name in spellings}  # of two spellings in the index, the first in order
            parts[depth] = known.get(parts[depth].casefold(), parts[depth])
        return PATH_SEPARATOR.join(parts)

    def _category_paths(self, parts: list[str], limit: int = -1) -> list[list[str]]:
        """The distinct category paths (as levels) of the listings under the path `parts`."""
        rows = self._query(f"SELECT DISTINCT category FROM listings WHERE {store.CATEGORY_RANGE} LIMIT ?", [*store.category_range(PATH_SEPARATOR.join(parts)), limit])
        return [split_category(path) for (path,) in rows]

    def _filtered_ids(self, category: str | None, min_price: float | None, max_price: float | None) -> list[int]:
        clauses, params = store.filter_clauses(category, min_price, max_price)
        return [i for (i,) in self._query(f"SELECT faiss_id FROM listings WHERE {' AND '.join(clauses)}", params)]

    def _exact(self, query: np.ndarray, selector: faiss.IDSelector | None, k: int) -> tuple[list[int], np.ndarray]:
        """Exhaustive search of the stored vectors (HNSW's own flat storage) among the selected ids."""
        store = faiss.downcast_index(self._index.index)
        if self._kind == HNSW:
            store = faiss.downcast_index(store.storage)
        params = faiss.SearchParameters()
        if selector is not None:
            params.sel = faiss.IDSelectorTranslated(self._index.id_map, selector)  # selects by FAISS id, not position
        distances, positions = store.search(query[None], k, params=params)
        return [int(self._index.id_map.at(int(p))) for p in positions[0] if p >= 0], distances[0][positions[0] >= 0]

    def _fetch(self, ids: list[int]) -> dict[int, Listing]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._query(f"SELECT faiss_id, {store.METADATA_COLUMNS} FROM listings WHERE faiss_id IN ({marks})", ids)
        return {row[0]: store.listing_from_row(row[1:]) for row in rows}

    def _fetch_terms(self, ids: list[int]) -> dict[int, Terms]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._query(f"SELECT faiss_id, columns, weights FROM terms WHERE faiss_id IN ({marks})", ids)
        return {faiss_id: Terms.from_blobs(columns, weights) for faiss_id, columns, weights in rows}

    def stored(self, product_id: str) -> StoredListing | None:
        """One listing with its stored vector and words, or None when it is not indexed."""
        rows = self._query(
            f"SELECT {store.METADATA_COLUMNS}, has_image, has_text, vector, columns, weights FROM listings "
            "JOIN vectors USING (faiss_id) LEFT JOIN terms USING (faiss_id) WHERE product_id = ?",
            (product_id,),
        )
        if not rows:
            return None
        *metadata, has_image, has_text, blob, columns, weights = rows[0]
        image_half, text_half = halves(np.frombuffer(blob, dtype=np.float32))
        return StoredListing(
            listing=store.listing_from_row(tuple(metadata)),
            image_vec=image_half.copy() if has_image else None,
            text_vec=text_half.copy() if has_text else None,
            terms=Terms.from_blobs(columns, weights) if columns is not None else None,
        )

    def _query(self, sql: str, params: Iterable) -> list[tuple]:
        with self._db_mutex:
            return self._db.execute(sql, tuple(params)).fetchall()

    # updates

    def add(
        self,
        listing: Mapping | Listing,
        image_vec: np.ndarray | None,
        text_vec: np.ndarray | None,
        terms: Terms | None = None,
        text: str | None = None,
    ) -> Listing | None:
        """Add a listing, or replace the one with the same product id; returns the listing it
        replaced (read under the write lock, so two replaces of one id each see their predecessor).

        `image_vec` is one photo embedding or the listing's photos [p, d]; at least one is needed.
        `terms`, the listing text's words, let queries with text re-rank it; `text`, the text the
        embeddings came from, is kept so that a rebuild can embed the listing with its models."""
        if image_vec is None and text_vec is None:
            raise ValueError("a listing needs an image vector, a text vector or both")
        row = listing if isinstance(listing, Listing) else Listing.from_mapping(listing)
        vector = listing_vector(image_vec, text_vec, self._half_dim)
        has_image, has_text = (bool(np.any(part)) for part in halves(vector))
        if not (has_image or has_text):
            raise ValueError("the listing's vectors are zero")
        with self._lock.write():
            # the commit point: FAISS follows, and is reconciled on open if it did not. The mutex keeps
            # readers of the shared connection from seeing the transaction half done (a replaced
            # listing deleted and not yet inserted again)
            with self._db_mutex, self._db:
                old = store.find(self._db, row.product_id)
                if old:
                    store.delete_listing(self._db, old[0])
                faiss_id = store.insert_listing(self._db, row, vector, terms)
                self._db.execute("INSERT OR REPLACE INTO live_added (product_id, text) VALUES (?, ?)", (row.product_id, text))
                self._db.execute("DELETE FROM live_deleted WHERE product_id = ?", (row.product_id,))
            if old:
                self._drop_from_faiss(old[0])
            self._add_to_faiss(faiss_id, vector, has_image, has_text)
            self._count += 0 if old else 1
            self._wrote()
        return old[1] if old else None

    def delete(self, product_id: str) -> Listing | None:
        """Remove a listing; returns it (read under the write lock, so a replace running at the same
        time cannot swap in another), or None when it is not indexed."""
        with self._lock.write():
            with self._db_mutex, self._db:  # as in `add`
                old = store.find(self._db, product_id)
                if not old:
                    return None
                store.delete_listing(self._db, old[0])
                self._db.execute("DELETE FROM live_added WHERE product_id = ?", (product_id,))
                self._db.execute("INSERT OR IGNORE INTO live_deleted (product_id) VALUES (?)", (product_id,))
            self._drop_from_faiss(old[0])
            self._count -= 1
            self._wrote()
        return old[1]

    def _add_to_faiss(self, faiss_id: int, vector: np.ndarray, has_image: bool, has_text: bool) -> None:
        self._exclusions.clear()
        self._index.add_with_ids(vector[None], np.array([faiss_id], dtype=np.int64))
        if not has_image:
            self._missing[IMAGE].add(faiss_id)
        if not has_text:
            self._missing[TEXT].add(faiss_id)

    def _drop_from_faiss(self, faiss_id: int) -> None:
        self._exclusions.clear()
        if self._kind == HNSW:
            self._tombstones.add(faiss_id)
        else:
            self._index.remove_ids(np.array([faiss_id], dtype=np.int64))
        self._missing[IMAGE].discard(faiss_id)
        self._missing[TEXT].discard(faiss_id)

    def _wrote(self) -> None:
        """Count a committed write, and checkpoint FAISS every `checkpoint_every` of them. A checkpoint
        the disk refuses (full, read-only) is logged, not raised: the write is in the database, which
        the next checkpoint, `close` or open brings FAISS up to, so the caller must not hear it failed
        (a client would retry an add that is already done). It is tried again `checkpoint_every`
        writes later."""
        self._unsaved += 1
        if self._unsaved % self.config.checkpoint_every:
            return
        try:
            self._persist()
        except (RuntimeError, OSError) as error:  # FAISS's writer raises RuntimeError
            log.warning(
                "the index's checkpoint could not be written (%s); the %d write(s) since the last one are in its database, "
                "and the next checkpoint, shutdown or start-up saves them", str(error).splitlines()[0][:200], self._unsaved
            )

    def _persist(self) -> None:
        write_faiss_file(self._index, self.faiss_path(self.directory, self.build_id))
        self._unsaved = 0

    def _reconcile(self) -> None:
        """Bring FAISS to the database's state after an interrupted add or delete."""
        in_faiss = set(faiss.vector_to_array(self._index.id_map).tolist())
        in_db = {i for (i,) in self._db.execute("SELECT faiss_id FROM listings")}
        stale, missing = in_faiss - in_db, in_db - in_faiss
        if self._kind == FLAT and stale:
            self._index.remove_ids(np.fromiter(stale, np.int64))
            self._tombstones.clear()
            self._exclusions.clear()
        if missing:
            marks = ",".join("?" * len(missing))
            rows = self._query(
                f"SELECT faiss_id, has_image, has_text, vector FROM listings JOIN vectors USING (faiss_id) WHERE faiss_id IN ({marks})", sorted(missing)
            )
            for faiss_id, has_image, has_text, blob in rows:
                self._add_to_faiss(faiss_id, np.frombuffer(blob, dtype=np.float32), bool(has_image), bool(has_text))
        if missing or (stale and self._kind == FLAT):
            self.reconciled = {"re_added": len(missing), "removed": len(stale) if self._kind == FLAT else 0}
            if self._serving_fd >= 0:  # the server's open: after a crash, or writes it had not checkpointed
                log.warning("index %s reconciled with its database: %s", self.directory, self.reconciled)
                self._persist()
            else:  # a reader (`fbm similar`) leaves the file to the server, which may be writing it
                log.info("index %s: live writes not yet in its FAISS file, applied in memory: %s", self.directory, self.reconciled)



def write_faiss_file(index: faiss.Index, path: Path) -> None:
    """FAISS's own writer, replacing `path` atomically; a write that fails (a full disk) leaves no
    temporary behind, as large as the index, to the next start."""
    replace_atomically(path, lambda temporary: faiss.write_index(index, str(temporary)))


def build_lock(directory: str | Path) -> int:
    """The exclusive lock a build holds (`ListingIndex.build` takes it, or is given it by a caller
    that must read the index it replaces first, `read_live_changes`): an `IndexInUseError` while any
    process has the index open."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return _lock(directory, exclusive=True)


def read_live_changes(directory: str | Path) -> LiveChanges:
    """The live changes recorded by the build `CURRENT` names, read from its database alone (a
    damaged FAISS file, which a rebuild replaces, does not hide them); none without an index or
    from a build older than these records. The caller holds `build_lock`."""
    directory = Path(directory)
    current = directory / CURRENT_FILE
    if not current.exists():
        return LiveChanges()
    db_path = ListingIndex.db_path(directory, current.read_text().strip())
    if not db_path.is_file():
        raise IndexStateError(f"{db_path} is missing ({current} names it)")
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            added, deleted = store.live_changes(db)
        finally:
            db.close()
    except sqlite3.DatabaseError as error:
        if "no such table: live_" in str(error):
            return LiveChanges()
        raise IndexStateError(f"{db_path} is not a readable index database ({error})") from error
    return LiveChanges(added, deleted)


def _lock(directory: Path, exclusive: bool) -> int:
    """A descriptor holding a lock on the index's LOCK file: shared for a process using the index,
    exclusive for a build."""
    if exclusive:
        busy = f"the index in {directory} is open in another process (a running `fbm serve`?): stop it, then rebuild"
    else:
        busy = f"the index in {directory} is being rebuilt by another process: try again when `fbm index` has finished"
    return hold_lock(directory / LOCK_FILE, exclusive, IndexInUseError(busy))


def _serving_lock(directory: Path) -> int:
    """A descriptor holding the exclusive lock on the index's SERVING file, of the one process serving it."""
    busy = f"the index in {directory} is served by another process (a running `fbm serve`): stop it, or serve a copy of the artifacts"
    return hold_lock(directory / SERVING_LOCK_FILE, True, IndexInUseError(busy))


def _remove_orphaned_temporaries(directory: Path) -> None:
    """Delete the temporary files (`listings.artifacts.temporary_path`: two processes writing the
    index, a server checkpointing and a build, never write into one file) of writes whose process
    has gone: a checkpoint killed mid-way leaves a file as large as the index that nothing would
    overwrite. The last rename wins, and a FAISS file that lags its database is reconciled when it
    is next opened."""
    for path in directory.glob("*.tmp"):
        match = re.search(r"\.(\d+)\.\d+\.tmp$", path.name)
        if match and not _process_alive(int(match[1])):
            path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_other_builds(directory: Path, build_id: str) -> None:
    """Delete files of superseded or unfinished builds, and temporary files of interrupted writes."""
    keep = {ListingIndex.db_path(directory, build_id).name, ListingIndex.faiss_path(directory, build_id).name}
    for path in directory.iterdir():
        ours = path.name.startswith(("listings-", "vectors-")) or path.name.endswith(".tmp")
        if ours and path.name not in keep and not path.name.startswith(tuple(f"{name}-" for name in keep)):
            path.unlink()
