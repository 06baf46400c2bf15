"""The listing index on hand-made vectors: ranking by the modalities given, filters, updates, crashes, threads."""
from __future__ import annotations

import logging
import math
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import retrieval.index as index_module
from listings.config import IndexConfig
from retrieval.index import (
    FLAT,
    HNSW,
    IndexInUseError,
    IndexStateError,
    ListingIndex,
    LiveChanges,
    build_lock,
    index_kind,
    make_faiss_index,
    read_live_changes,
)
from retrieval.listing import Listing
from retrieval.vectors import fold_photos, listing_vectors, score_from_inner_product
from retrieval.query import search_like_listing
from retrieval.terms import Terms, term_cosines

D = 4  # half dimension: one basis direction per "topic"
E = np.eye(D, dtype=np.float32)


def _row(product_id: str, category: str, price: float | None = 10.0) -> dict:
    return {"product_id": product_id, "title": f"title {product_id}", "category": category, "price": price, "location": "Leeds", "image_ids": [f"{product_id}-1"]}


# product: (photo topic or None, text topic or None, category, price)
CATALOGUE = {
    "same": (0, 0, "Appliances / Fridges", 100.0),
    "photo-only-match": (0, 1, "Appliances / Kettles", 20.0),
    "text-only-match": (1, 0, "Home & Garden / Mirrors", 30.0),
    "unrelated": (2, 2, "Home & Garden / Dining", 40.0),
    "no-photo": (None, 0, "Appliances", None),
}


def _build(directory, catalogue: dict = CATALOGUE, config: IndexConfig | None = None) -> ListingIndex:
    rows = [_row(pid, category, price) for pid, (_, _, category, price) in catalogue.items()]
    image = np.stack([E[p] if p is not None else np.zeros(D, np.float32) for p, *_ in catalogue.values()])
    text = np.stack([E[t] if t is not None else np.zeros(D, np.float32) for _, t, *_ in catalogue.values()])
    has_image = [p is not None for p, *_ in catalogue.values()]
    has_text = [t is not None for _, t, *_ in catalogue.values()]
    return ListingIndex.build(directory, listing_vectors(image, has_image, text, has_text), rows, config or IndexConfig())


@pytest.fixture
def index(tmp_path):
    with _build(tmp_path / "index") as built:
        yield built


def _ids(result) -> list[str]:
    return [hit.product_id for hit in result.hits]


def _scores(result) -> dict[str, float]:
    return {hit.product_id: round(hit.score, 4) for hit in result.hits}


def test_vectors_are_unit_with_both_modalities_and_fold_photos():
    vectors = listing_vectors(np.stack([E[0], E[1]]), [True, False], np.stack([E[2] * 5, E[3]]), [True, True])
    assert np.allclose(np.linalg.norm(vectors, axis=1), [1.0, 1 / math.sqrt(2)])
    assert np.allclose(fold_photos(np.stack([E[0] * 10, E[1]])), (E[0] + E[1]) / math.sqrt(2))
    assert score_from_inner_product(1 / math.sqrt(2), 1) == pytest.approx(1.0)
    assert score_from_inner_product(0.0, 2) == pytest.approx(0.5)


def test_photo_only_query_ranks_by_photo_and_skips_listings_without_one(index):
    result = index.search(E[0], None, k=5)
    assert result.modalities == ("image",)
    assert set(_ids(result)[:2]) == {"same", "photo-only-match"}
    assert "no-photo" not in _ids(result)
    assert _scores(result) == {"same": 1.0, "photo-only-match": 1.0, "text-only-match": 0.5, "unrelated": 0.5}


def test_text_only_query_ranks_by_text(index):
    result = index.search(None, E[0], k=5)
    assert result.modalities == ("text",)
    assert set(_ids(result)[:3]) == {"same", "text-only-match", "no-photo"}
    assert _scores(result)["photo-only-match"] == 0.5


def test_photo_and_text_query_uses_both(index):
    result = index.search(E[0], E[0], k=5)
    assert result.modalities == ("image", "text")
    assert _ids(result)[0] == "same"
    scores = _scores(result)
    assert scores["same"] == 1.0
    assert scores["photo-only-match"] == scores["text-only-match"] == scores["no-photo"] == 0.75
    assert scores["unrelated"] == 0.5


def test_result_carries_metadata(index):
    hit = index.search(E[0], E[0], k=1).hits[0]
    assert (hit.title, hit.category, hit.root, hit.price, hit.location, hit.image_ids) == ("title same", "Appliances / Fridges", "Appliances", 100.0, "Leeds", ["same-1"])


def test_query_listing_is_excluded(index):
    result = index.search(E[0], E[0], k=3, exclude_product_id="same")
    assert "same" not in _ids(result)
    assert len(result.hits) == 3


@pytest.mark.parametrize("filters", [{"category": "Appliances"}, {"min_price": 0}, {"max_price": 1000}], ids=str)
def test_the_query_listing_is_excluded_under_a_filter_too(index, filters):
    """The query listing passes each of these filters: it is left out all the same."""
    result = index.search(E[0], E[0], k=10, exclude_product_id="same", **filters)
    assert "same" not in _ids(result) and result.hits
    assert "same" not in _ids(search_like_listing(index, "same", k=10, **filters)[1])


def test_filters_apply_inside_the_search(index):
    assert set(_ids(index.search(None, E[0], k=10, category="appliances"))) == {"same", "photo-only-match", "no-photo"}
    assert _ids(index.search(None, E[0], k=10, category="Home & Garden / Dining")) == ["unrelated"]
    assert _ids(index.search(None, E[0], k=10, category="Home")) == []  # a path prefix, not a substring
    assert set(_ids(index.search(None, E[0], k=10, min_price=25, max_price=100))) == {"same", "text-only-match", "unrelated"}
    assert _ids(index.search(None, E[0], k=10, category="Appliances", max_price=50)) == ["photo-only-match"]


def test_a_category_path_no_listing_has_is_refused_naming_the_ones_there_are(index):
    for fine in (None, "", "Appliances", "appliances / FRIDGES", "Home & Garden / Dining", "Toys"):  # a root with no listing is simply empty
        index.check_category(fine)
    with pytest.raises(ValueError, match=r"no listing in category 'Appliances / Ovens'; 'Appliances' has: Fridges; Kettles$"):
        index.check_category("Appliances / Ovens")
    with pytest.raises(ValueError, match=r"'Home & Garden / Dining' has: no sub-categories$"):
        index.check_category("Home & Garden / Dining / Chairs")


def test_checking_a_category_path_reads_no_more_levels_than_exist(index, monkeypatch):
    """A path of 5,000 levels was a database query per level over the path so far: 14 s."""
    queries = []
    read = index._category_paths
    monkeypatch.setattr(index, "_category_paths", lambda parts, limit=-1: queries.append(parts) or read(parts, limit))
    with pytest.raises(ValueError, match=r"'Home & Garden / Dining' has: no sub-categories$"):
        index.check_category(" / ".join(["Home & Garden", "Dining"] + ["z"] * 5000))
    assert len(queries) <= 3


def test_a_category_is_spelt_as_the_indexed_listings_spell_it(index):
    assert index.spelled_category("Appliances / FRIDGES / Tall") == "Appliances / Fridges / Tall"
    assert index.spelled_category("Appliances / ovens") == "Appliances / ovens"  # a new level keeps its spelling
    assert index.spelled_category("Home & Garden / dining") == "Home & Garden / Dining"


def test_every_category_level_matches_in_any_case_as_casefold_compares(tmp_path):
    """`STRASSE` is `Straße` in any case (lower() keeps 'ß'): a filter found no listing, and a new
    listing's level became a second spelling beside the first. A build keyed by lower() is re-keyed on open."""
    catalogue = {"bench": (0, 0, "Home & Garden / Straße", 50.0), "fridge": (1, 1, "Appliances / Fridges", 80.0)}
    with _build(tmp_path, catalogue) as built:
        built.check_category("home & garden / STRASSE")
        assert built.spelled_category("Home & Garden / STRASSE") == "Home & Garden / Straße"
        assert _ids(built.search(E[0], None, k=5, category="Home & Garden / STRASSE")) == ["bench"]
    database = next(tmp_path.glob("listings-*.sqlite"))
    with sqlite3.connect(database) as db:  # as a build of before keys were case-folded
        db.execute("UPDATE listings SET category_key = lower(category) || ' / '")
        db.execute("DELETE FROM info WHERE key = 'category_keys'")
    with ListingIndex.open(tmp_path, IndexConfig()) as reopened:
        assert _ids(reopened.search(E[0], None, k=5, category="home & garden / strasse")) == ["bench"]
        assert _ids(reopened.search(E[1], None, k=5, category="APPLIANCES")) == ["fridge"]


def test_a_category_level_typed_with_a_combining_accent_is_the_same_category(tmp_path):
    """'Café' as 'e' + U+0301 looks the same as 'é' and was a second category beside it: a filter
    found one spelling's listings only."""
    composed, decomposed = "Appliances / Caf\u00e9 Things", "Appliances / Cafe\u0301 Things"
    with _build(tmp_path, {"kettle": (0, 0, composed, 20.0), "fridge": (1, 1, "Appliances / Fridges", 80.0)}) as built:
        assert built.spelled_category(decomposed) == composed
        built.add(_row("toaster", built.spelled_category(decomposed)), E[2], E[2])  # as POST /listings adds it
        assert built.stored("toaster").listing.category == composed
        for spelling in (composed, decomposed.upper()):
            assert sorted(_ids(built.search(E[0], None, k=5, category=spelling))) == ["kettle", "toaster"]


def test_only_the_indexed_listings_photos_are_served(tmp_path):
    with _build(tmp_path) as built:
        assert built.has_photo("same-1") and not built.has_photo("nobody-1")
        built.delete("same")
        assert not built.has_photo("same-1")
        built.add(_row("again", "Appliances"), E[1], None)
        assert built.has_photo("again-1")
    database = next(tmp_path.glob("listings-*.sqlite"))
    with sqlite3.connect(database) as db:
        db.execute("DROP TABLE photos")  # a build of before photos were recorded
    with ListingIndex.open(tmp_path, IndexConfig()) as reopened:
        assert reopened.has_photo("again-1") and reopened.has_photo("unrelated-1") and not reopened.has_photo("same-1")


def test_k_is_bounded(index):
    with pytest.raises(ValueError, match="max_k"):
        index.search(E[0], None, k=101)
    with pytest.raises(ValueError, match="k must be"):
        index.search(E[0], None, k=0)
    with pytest.raises(ValueError, match="needs an image vector"):
        index.search(None, None)
    for price in (float("nan"), float("inf"), -1.0, 2e12):
        with pytest.raises(ValueError, match="min_price must be a price from 0 to 1e"):
            index.search(E[0], None, min_price=price)
    with pytest.raises(ValueError, match="shape"):
        index.search(np.ones(D + 1), None)


def test_add_then_search_finds_it_and_delete_removes_it(tmp_path):
    with _build(tmp_path) as index:
        assert len(index) == 5
        assert index.add(_row("new", "Appliances / Fridges"), np.stack([E[3], E[3]]), E[3]) is None
        assert len(index) == 6
        assert index.search(E[3], E[3], k=1).hits[0].product_id == "new"
        assert index.search(E[3], None, k=1).hits[0].product_id == "new"
        replaced = index.add(_row("new", "Appliances / Fridges", price=5.0), None, E[3])  # a second add replaces
        assert replaced is not None and replaced.price == 10.0 and replaced.image_ids == ["new-1"]
        assert len(index) == 6
        assert index.search(None, E[3], k=1).hits[0].price == 5.0
        assert "new" not in _ids(index.search(E[3], None, k=10))  # photo queries see that it has no photo now
        removed = index.delete("new")
        assert removed is not None and removed.price == 5.0 and index.delete("new") is None  # the row it removed
        assert len(index) == 5
        assert "new" not in _ids(index.search(None, E[3], k=10))
    with ListingIndex.open(tmp_path, IndexConfig()) as reopened:
        assert len(reopened) == 5 and reopened.info()["faiss_vectors"] == 5
        assert "new" not in _ids(reopened.search(None, E[3], k=10))


def test_live_changes_record_adds_with_their_text_and_deletes_and_survive_a_reopen(tmp_path):
    with _build(tmp_path) as index:
        assert read_live_changes(tmp_path) == LiveChanges()
        index.add(_row("new", "Appliances / Fridges"), E[3], E[3], text="a new fridge")
        index.add(_row("photo-only", "Appliances"), E[2], None)
        index.add(_row("same", "Appliances / Fridges", price=99.0), None, E[0], text="the same fridge, cheaper")  # replaces a catalogue listing
        index.delete("unrelated")
        index.delete("photo-only")  # added, then deleted: it was never in the catalogue, and is no longer added
    with ListingIndex.open(tmp_path, IndexConfig()):
        changes = read_live_changes(tmp_path)
    assert [(listing.product_id, text) for listing, text in changes.added] == [("new", "a new fridge"), ("same", "the same fridge, cheaper")]
    assert changes.added[1][0].price == 99.0 and changes.added[0][0].image_ids == ["new-1"]
    assert changes.deleted == ["photo-only", "unrelated"]


def test_a_build_records_the_live_changes_it_keeps(tmp_path):
    rows = [_row("kept", "Appliances"), _row("catalogue", "Appliances")]
    vectors = listing_vectors(np.stack([E[0], E[1]]), [True, True], np.stack([E[0], E[1]]), [True, True])
    live = LiveChanges([(Listing.from_mapping(rows[0]), "kept text")], ["gone"])
    with ListingIndex.build(tmp_path, vectors, rows, IndexConfig(), live=live):
        assert [(listing.product_id, text) for listing, text in read_live_changes(tmp_path).added] == [("kept", "kept text")]
        assert read_live_changes(tmp_path).deleted == ["gone"]
    with pytest.raises(ValueError, match="among the listings built"):
        ListingIndex.build(tmp_path / "other", vectors, rows, IndexConfig(), live=LiveChanges([(Listing.from_mapping(_row("x", "A")), None)]))


def test_a_build_is_refused_while_the_index_is_open_elsewhere(tmp_path):
    """A running server holds the index open; a rebuild would delete the files under it."""
    _build(tmp_path).close()
    serving = ListingIndex.open(tmp_path, IndexConfig())
    with pytest.raises(IndexInUseError, match="open in another process"):
        _build(tmp_path)
    assert len(serving) == 5 and serving.search(E[0], E[0], k=1).hits[0].product_id == "same"  # untouched
    serving.close()
    with _build(tmp_path) as rebuilt:
        assert len(rebuilt) == 5


def test_live_changes_are_read_from_the_database_even_when_the_faiss_file_is_damaged(tmp_path):
    """The case a rebuild is for: the FAISS checkpoint is unreadable, the acknowledged listings are in SQLite."""
    assert read_live_changes(tmp_path) == LiveChanges()  # no index yet
    with _build(tmp_path) as index:
        index.add(_row("new", "Appliances / Fridges"), E[3], E[3], text="a new fridge")
        index.delete("unrelated")
        build_id = index.build_id
    ListingIndex.faiss_path(tmp_path, build_id).write_bytes(b"truncated")
    with pytest.raises(IndexStateError):
        ListingIndex.open(tmp_path, IndexConfig())
    changes = read_live_changes(tmp_path)
    assert [(listing.product_id, text) for listing, text in changes.added] == [("new", "a new fridge")] and changes.deleted == ["unrelated"]


def test_a_build_lock_taken_first_keeps_readers_and_writers_out_until_the_build(tmp_path):
    _build(tmp_path).close()
    lock = build_lock(tmp_path)
    with pytest.raises(IndexInUseError, match="being rebuilt"):
        ListingIndex.open(tmp_path, IndexConfig())
    rows = [_row("only", "Appliances")]
    with ListingIndex.build(tmp_path, listing_vectors(E[:1], [True], E[:1], [True]), rows, IndexConfig(), lock=lock) as rebuilt:
        assert len(rebuilt) == 1
    with ListingIndex.open(tmp_path, IndexConfig()) as reopened:  # the build released its lock on close
        assert len(reopened) == 1


def test_an_open_that_fails_while_reconciling_releases_the_index(tmp_path, monkeypatch):
    with _build(tmp_path) as index:
        index.add(_row("new", "Appliances"), E[3], E[3])
        index._unsaved = 0  # as after a crash: the add is in SQLite only
    monkeypatch.setattr(index_module, "write_faiss_file", _crash)
    with pytest.raises(_Crash):
        ListingIndex.open(tmp_path, IndexConfig(), serving=True)  # the serving open saves what it reconciled
    monkeypatch.undo()
    _build(tmp_path).close()  # no lock left behind


def _clustered(n: int, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """n listings around 8 topics, each with a photo and a text, priced 0, 1, 2, ..."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, 2 * D))
    topic = rng.integers(0, 8, n)
    raw = centres[topic] + rng.normal(scale=0.3, size=(n, 2 * D))
    vectors = listing_vectors(raw[:, :D], np.ones(n, bool), raw[:, D:], np.ones(n, bool))
    rows = [_row(f"p{i}", f"Root {topic[i]} / Sub", float(i)) for i in range(n)]
    return vectors, rows


def test_hnsw_above_threshold_filters_deletes_and_guarantees_k(tmp_path):
    vectors, rows = _clustered(600)
    config = IndexConfig(exact_threshold=100, hnsw_m=8, ef_construction=40, ef_search=16, filter_exact_limit=50)
    query = vectors[0, :D]
    with ListingIndex.build(tmp_path, vectors, rows, config) as index:
        assert index.info()["kind"] == HNSW
        exact = np.argsort(-(vectors[:, :D] @ (query / np.linalg.norm(query))))[:10]
        assert len(set(_ids(index.search(query, None, k=10))) & {f"p{i}" for i in exact}) >= 8
        for exact_limit in (50, 0):  # small filtered sets searched exactly, or HNSW with a selector
            index.config.filter_exact_limit = exact_limit
            for price_cap in (30, 1000):
                result = index.search(query, None, k=20, category="Root 3", max_price=price_cap)
                expected = [r["product_id"] for r in rows if r["category"].startswith("Root 3 /") and r["price"] <= price_cap]
                assert len(result.hits) == min(20, len(expected))
                assert set(_ids(result)) <= set(expected)
                if exact_limit:  # searched exactly: the true ranking
                    by_score = sorted(expected, key=lambda pid: -float(vectors[int(pid[1:]), :D] @ query))
                    assert _ids(result) == by_score[:20]
        top = _ids(index.search(query, None, k=1))[0]
        assert index.delete(top) is not None
        assert top not in _ids(index.search(query, None, k=10))
        assert index.info()["tombstones"] == 1
    with ListingIndex.open(tmp_path, config) as reopened:
        assert len(reopened) == 599 and reopened.info()["tombstones"] == 1
        assert top not in _ids(reopened.search(query, None, k=10))


def test_hnsw_starved_by_a_narrow_filter_still_returns_every_match(tmp_path):
    vectors, rows = _clustered(600)
    config = IndexConfig(exact_threshold=100, hnsw_m=4, ef_construction=16, ef_search=1, filter_exact_limit=0)
    with ListingIndex.build(tmp_path, vectors, rows, config) as index:
        for low in (0, 297, 597):  # three listings by price, wherever they lie from the query
            result = index.search(vectors[0, :D], None, k=5, min_price=low, max_price=low + 2)
            assert sorted(_ids(result)) == sorted(f"p{i}" for i in range(low, low + 3))


def test_flat_below_threshold(index):
    info = index.info()
    assert (info["kind"], info["dim"], info["count"], info["without_image"]) == (FLAT, 2 * D, 5, 1)


def test_a_catalogue_of_exactly_the_threshold_gets_the_exact_index(tmp_path):
    """Up to `exact_threshold` listings, IndexFlatIP; one more, HNSW."""
    config = IndexConfig(exact_threshold=5)
    assert index_kind(make_faiss_index(5, 2 * D, config)) == FLAT
    assert index_kind(make_faiss_index(6, 2 * D, config)) == HNSW
    with _build(tmp_path, config=config) as index:  # the catalogue's five listings
        assert index.info()["kind"] == FLAT


def test_deleted_listings_left_in_an_hnsw_graph_do_not_cost_results(tmp_path):
    """Deleted listings stay in an HNSW graph as tombstones: a query for as many listings as are
    live still gets every one of them."""
    vectors, rows = _clustered(20)
    with ListingIndex.build(tmp_path, vectors, rows, IndexConfig(exact_threshold=10, hnsw_m=8, ef_construction=40, ef_search=64)) as index:
        assert index.info()["kind"] == HNSW
        for i in range(5):
            index.delete(f"p{i}")
        assert len(index) == 15 and index.info()["tombstones"] == 5
        assert sorted(_ids(index.search(vectors[7, :D], vectors[7, D:], k=15))) == sorted(f"p{i}" for i in range(5, 20))


def test_a_deleted_listing_without_a_photo_is_forgotten_by_photo_queries_too(index):
    index.add(_row("text-only", "Appliances"), None, E[1])
    assert index.info()["without_image"] == 2
    index.delete("text-only")
    assert index.info()["without_image"] == 1
    assert sorted(_ids(index.search(E[0], None, k=4))) == ["photo-only-match", "same", "text-only-match", "unrelated"]


def test_hnsw_searches_at_least_k_deep_when_k_is_above_ef_search(tmp_path):
    """efSearch is raised to k for a query of more listings than `ef_search`: the k returned are
    nearly the true top k (searched only ef_search deep, recall fell from 0.96 to 0.84)."""
    rng = np.random.default_rng(0)
    half, n, k = 8, 4000, 40
    raw = rng.normal(size=(n, 2 * half)).astype(np.float32)
    vectors = listing_vectors(raw[:, :half], np.ones(n, bool), raw[:, half:], np.ones(n, bool))
    recalls = []
    with ListingIndex.build(tmp_path, vectors, [_row(f"p{i}", "Appliances") for i in range(n)], IndexConfig(exact_threshold=100, hnsw_m=8, ef_construction=40, ef_search=16)) as index:
        for q in range(60):
            truth = {f"p{i}" for i in np.argsort(-(vectors @ vectors[q]))[:k]}
            found = _ids(index.search(vectors[q, :half], vectors[q, half:], k=k))
            assert len(found) == k
            recalls.append(len(truth & set(found)) / k)
    assert np.mean(recalls) >= 0.92


def test_a_build_with_a_product_twice_is_refused_in_words(tmp_path):
    """One row per product; the command line reports a ValueError in one line (an sqlite
    IntegrityError would be a traceback)."""
    vectors = listing_vectors(np.stack([E[0], E[1]]), [True, True], np.stack([E[0], E[1]]), [True, True])
    with pytest.raises(ValueError, match="unique"):
        ListingIndex.build(tmp_path, vectors, [_row("same", "Appliances"), _row("same", "Appliances")], IndexConfig())


class _Crash(Exception):
    pass


def _crash(*_args, **_kwargs):
    raise _Crash


def _die(index: ListingIndex) -> None:
    """What the kernel does for a process killed with the index open: its locks go, nothing is written."""
    for descriptor in (index._lock_fd, index._serving_fd):
        if descriptor >= 0:
            os.close(descriptor)
    index._db.close()


def test_a_listing_re_added_on_open_keeps_its_modalities(tmp_path, monkeypatch):
    """A photo-only listing in SQLite but not yet in FAISS is re-added on open as photo-only: found
    by a photo query, not by a text one, and counted as without a text."""
    every_write = IndexConfig(checkpoint_every=1)
    index = _build(tmp_path, config=every_write)
    monkeypatch.setattr(index_module, "write_faiss_file", _crash)
    with pytest.raises(_Crash):
        index.add(_row("photo-only", "Appliances"), E[3], None)
    monkeypatch.undo()
    _die(index)
    with ListingIndex.open(tmp_path, every_write, serving=True) as reopened:
        assert reopened.reconciled["re_added"] == 1
        assert (reopened.info()["without_image"], reopened.info()["without_text"]) == (1, 1)
        assert _ids(reopened.search(E[3], None, k=1)) == ["photo-only"]
        assert "photo-only" not in _ids(reopened.search(None, E[3], k=10))


def test_crash_between_database_and_index_write_reopens_consistent(tmp_path, monkeypatch):
    every_write = IndexConfig(checkpoint_every=1)
    index = _build(tmp_path, config=every_write)
    monkeypatch.setattr(index_module, "write_faiss_file", _crash)
    with pytest.raises(_Crash):
        index.add(_row("added", "Appliances"), E[3], E[3])  # committed in SQLite, never written to FAISS
    monkeypatch.undo()
    _die(index)
    reopened = ListingIndex.open(tmp_path, every_write, serving=True)
    assert reopened.reconciled == {"re_added": 1, "removed": 0}
    assert len(reopened) == 6 and reopened.info()["faiss_vectors"] == 6
    assert reopened.search(E[3], E[3], k=1).hits[0].product_id == "added"
    monkeypatch.setattr(index_module, "write_faiss_file", _crash)
    with pytest.raises(_Crash):
        reopened.delete("same")
    monkeypatch.undo()
    _die(reopened)
    with ListingIndex.open(tmp_path, IndexConfig(), serving=True) as reopened:
        assert reopened.reconciled == {"re_added": 0, "removed": 1}  # the re-add was saved when reconciled
        assert len(reopened) == 5 and reopened.info()["faiss_vectors"] == 5
        assert "same" not in _ids(reopened.search(E[0], E[0], k=10))
    with ListingIndex.open(tmp_path, IndexConfig()) as clean:
        assert clean.reconciled == {"re_added": 0, "removed": 0}


def test_a_reader_applies_unsaved_live_writes_in_memory_and_writes_nothing(tmp_path, monkeypatch, caplog):
    """`fbm similar` beside a server whose live writes are not checkpointed yet (the normal state):
    it sees them, leaves the FAISS file to the server, and says nothing alarming."""
    server = _build(tmp_path, config=IndexConfig(checkpoint_every=100))
    server.add(_row("added", "Appliances"), E[3], E[3])
    server.delete("same")
    faiss_file = next(tmp_path.glob("vectors-*.faiss"))
    checkpoint = faiss_file.read_bytes()
    monkeypatch.setattr(index_module, "write_faiss_file", _crash)  # as on a read-only copy
    with caplog.at_level(logging.INFO, logger=index_module.__name__), ListingIndex.open(tmp_path, IndexConfig()) as reader:
        assert reader.reconciled == {"re_added": 1, "removed": 1}
        assert _ids(reader.search(E[3], E[3], k=1)) == ["added"] and "same" not in _ids(reader.search(E[0], E[0], k=10))
    assert faiss_file.read_bytes() == checkpoint and not list(tmp_path.glob("*.tmp"))
    assert [record.levelname for record in caplog.records] == ["INFO"] and "applied in memory" in caplog.text
    monkeypatch.undo()
    server.close()


def test_serving_an_index_folder_this_user_cannot_write_is_refused_in_one_line(tmp_path, monkeypatch):
    _build(tmp_path).close()
    real_access = os.access
    monkeypatch.setattr(index_module.os, "access", lambda path, mode: False if Path(path) == tmp_path else real_access(path, mode))
    with pytest.raises(IndexStateError, match="cannot be written by this user: the server records live listings"):
        ListingIndex.open(tmp_path, IndexConfig(), serving=True)
    with ListingIndex.open(tmp_path, IndexConfig()) as reader:  # reading needs no write
        assert len(reader) == len(CATALOGUE)


def test_a_checkpoint_the_disk_refuses_does_not_fail_the_write_it_follows(tmp_path, monkeypatch, caplog):
    """The write is committed in the database: it was raised to the API as a 500 (and a client
    retrying an add without its product id would add it twice), and so was every write after it."""
    config = IndexConfig(checkpoint_every=2)
    index = _build(tmp_path, config=config)
    faiss_file = next(tmp_path.glob("vectors-*.faiss"))
    checkpoint = faiss_file.read_bytes()

    def disk_full(*_args):
        raise RuntimeError("Error in faiss::FileIOWriter: No space left on device")

    monkeypatch.setattr(index_module, "write_faiss_file", disk_full)
    with caplog.at_level(logging.WARNING, logger=index_module.__name__):
        index.add(_row("added", "Appliances"), E[3], E[3])
        index.delete("same")  # the second write: its checkpoint fails
        index.add(_row("third", "Appliances"), E[2], None)  # not retried at every write
    assert len(caplog.records) == 1 and "No space left on device" in caplog.text and "2 write(s)" in caplog.text
    assert index.stored("added") is not None and index.stored("same") is None
    assert _ids(index.search(E[3], E[3], k=1)) == ["added"] and index.info()["writes_since_checkpoint"] == 3
    monkeypatch.undo()
    index.add(_row("fourth", "Appliances"), E[1], None)  # the disk has room again: the checkpoint is taken
    assert index.info()["writes_since_checkpoint"] == 0 and faiss_file.read_bytes() != checkpoint
    index.close()
    with ListingIndex.open(tmp_path, config) as reopened:
        assert reopened.reconciled == {"re_added": 0, "removed": 0} and len(reopened) == len(CATALOGUE) + 2


def test_a_faiss_write_that_fails_leaves_no_temporary_file(tmp_path, monkeypatch):
    """A server whose checkpoint the disk refuses goes on serving: each failed checkpoint left a
    temporary file as large as the index until the next start."""
    index = _build(tmp_path)
    faiss_file = next(tmp_path.glob("vectors-*.faiss"))

    def half_written(faiss_index, path):
        Path(path).write_bytes(b"half an index")
        raise RuntimeError("Error in faiss::FileIOWriter: No space left on device")

    monkeypatch.setattr(index_module.faiss, "write_index", half_written)
    with pytest.raises(RuntimeError, match="No space left"):
        index_module.write_faiss_file(index._index, faiss_file)
    monkeypatch.undo()
    assert not list(tmp_path.glob("*.tmp"))
    index.close()


def test_writes_between_checkpoints_survive_a_crash_and_close_writes_them(tmp_path):
    config = IndexConfig(checkpoint_every=3)
    index = _build(tmp_path, config=config)
    faiss_file = next(tmp_path.glob("vectors-*.faiss"))
    checkpoint = faiss_file.read_bytes()
    index.add(_row("added", "Appliances"), E[3], E[3])
    index.delete("same")
    assert faiss_file.read_bytes() == checkpoint and index.info()["writes_since_checkpoint"] == 2
    _die(index)
    with ListingIndex.open(tmp_path, config, serving=True) as after_crash:
        assert after_crash.reconciled == {"re_added": 1, "removed": 1}
        assert _ids(after_crash.search(E[3], E[3], k=1)) == ["added"] and "same" not in _ids(after_crash.search(E[0], E[0], k=10))
        checkpoint = faiss_file.read_bytes()  # reconciling wrote one
        for name in ("third", "fourth", "fifth"):
            after_crash.add(_row(name, "Appliances"), E[2], None)
        assert after_crash.info()["writes_since_checkpoint"] == 0 and faiss_file.read_bytes() != checkpoint  # the third write
        after_crash.delete("third")
    with ListingIndex.open(tmp_path, config) as closed_cleanly:
        assert closed_cleanly.reconciled == {"re_added": 0, "removed": 0} and len(closed_cleanly) == 7


def test_interrupted_faiss_write_and_interrupted_build_leave_the_index_usable(tmp_path, monkeypatch):
    _build(tmp_path).close()
    faiss_file = next(tmp_path.glob("vectors-*.faiss"))
    faiss_file.with_name(faiss_file.name + ".4242.1.tmp").write_bytes(b"half a file")  # a write killed mid-way
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    orphan = faiss_file.with_name(f"{faiss_file.name}.{dead}.1.tmp")
    orphan.write_bytes(b"a checkpoint killed mid-way")
    ours = faiss_file.with_name(f"{faiss_file.name}.{os.getpid()}.7.tmp")  # a live process's write in progress
    ours.write_bytes(b"being written")
    ListingIndex.open(tmp_path, IndexConfig()).close()  # a reader (`fbm similar`) deletes nothing: it may run on a read-only copy
    assert orphan.exists() and ours.exists()
    ListingIndex.open(tmp_path, IndexConfig(), serving=True).close()
    assert not orphan.exists() and ours.exists()
    ours.unlink()
    monkeypatch.setattr(index_module, "write_atomic", _crash)  # a rebuild that dies before its commit
    with pytest.raises(_Crash):
        _build(tmp_path, {"other": (1, 1, "Other Goods", 1.0)})
    monkeypatch.undo()
    with ListingIndex.open(tmp_path, IndexConfig()) as reopened:
        assert len(reopened) == 5
    _build(tmp_path).close()  # a finished rebuild clears the leftovers
    assert len(list(tmp_path.glob("vectors-*"))) == len(list(tmp_path.glob("listings-*"))) == 1


def test_missing_or_corrupt_file_is_refused_by_name(tmp_path):
    _build(tmp_path).close()
    faiss_file = next(tmp_path.glob("vectors-*.faiss"))
    faiss_file.write_bytes(b"not an index")
    with pytest.raises(IndexStateError, match=faiss_file.name):
        ListingIndex.open(tmp_path, IndexConfig())
    faiss_file.unlink()
    with pytest.raises(IndexStateError, match=faiss_file.name):
        ListingIndex.open(tmp_path, IndexConfig())
    with pytest.raises(FileNotFoundError, match="fbm index"):
        ListingIndex.open(tmp_path / "nowhere", IndexConfig())


def test_concurrent_adds_and_searches(tmp_path):
    vectors, rows = _clustered(200)
    errors: list[BaseException] = []
    stop = threading.Event()
    with ListingIndex.build(tmp_path, vectors, rows, IndexConfig()) as index:

        def search_loop(seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                while not stop.is_set():
                    result = index.search(rng.normal(size=D), rng.normal(size=D), k=10, category=f"Root {seed % 8}" if seed % 2 else None)
                    assert 0 < len(result.hits) <= 10
            except BaseException as error:  # noqa: BLE001 - reported to the main thread
                errors.append(error)

        searchers = [threading.Thread(target=search_loop, args=(seed,)) for seed in range(4)]
        for thread in searchers:
            thread.start()
        rng = np.random.default_rng(99)
        for i in range(40):
            index.add(_row(f"live-{i}", "Root 0 / Sub"), rng.normal(size=D), rng.normal(size=D))
            if i % 4 == 0:
                index.delete(f"p{i}")
        stop.set()
        for thread in searchers:
            thread.join()
        assert not errors, errors[0]
        assert len(index) == 200 + 40 - 10
        assert index.info()["faiss_vectors"] == len(index)


def test_a_listing_being_replaced_never_reads_as_missing(tmp_path):
    """A replace deletes the old row and inserts the new one in one transaction: readers of the
    shared connection (more like this, category checks, photo serving) never see it half done."""
    vectors, rows = _clustered(50)
    missing: list[str] = []
    stop = threading.Event()
    with ListingIndex.build(tmp_path, vectors, rows, IndexConfig()) as index:
        index.add(_row("replaced", "Root 0 / Only here"), E[0], E[0])

        def read_loop() -> None:
            while not stop.is_set():
                if index.stored("replaced") is None:
                    missing.append("stored")
                if not index.has_photo("replaced-1"):
                    missing.append("photo")
                try:
                    index.check_category("Root 0 / Only here")
                except ValueError:
                    missing.append("category")

        readers = [threading.Thread(target=read_loop) for _ in range(3)]
        for thread in readers:
            thread.start()
        for _ in range(300):
            index.add(_row("replaced", "Root 0 / Only here"), E[0], E[0])
        stop.set()
        for thread in readers:
            thread.join()
    assert not missing, f"{len(missing)} reads saw the listing gone: {sorted(set(missing))}"


def test_stored_returns_the_metadata_vector_halves_and_words_or_none(tmp_path):
    vectors = listing_vectors(np.eye(4, D, dtype=np.float32), [True, True, False, True], np.eye(4, D, k=1, dtype=np.float32), [True, False, True, True])
    rows = [{"product_id": f"p{i}", "title": f"item {i}", "category": "Home & Garden", "price": float(i), "image_ids": [f"i{i}"]} for i in range(4)]
    words = [_terms({5: 1.0}), None, None, None]
    with ListingIndex.build(tmp_path / "index", vectors, rows, IndexConfig(), words) as index:
        stored = index.stored("p0")
        assert stored.listing.title == "item 0" and stored.listing.image_ids == ["i0"] and stored.listing.price == 0.0
        np.testing.assert_allclose(stored.image_vec, E[0] / math.sqrt(2), rtol=1e-6)
        np.testing.assert_allclose(stored.text_vec, E[1] / math.sqrt(2), rtol=1e-6)
        assert stored.terms.columns.tolist() == [5]
        assert index.stored("p1").text_vec is None and index.stored("p1").terms is None  # no text
        assert index.stored("p2").image_vec is None  # no photo
        assert index.stored("missing") is None
        index.delete("p2")
        assert index.stored("p2") is None


# --- re-ranking by words -----------------------------------------------------------------------


def _terms(weights: dict[int, float]) -> Terms:
    columns = np.array(sorted(weights), dtype=np.int32)
    values = np.array([weights[c] for c in columns], dtype=np.float32)
    return Terms(columns, values / np.linalg.norm(values))


def test_re_ranked_hits_carry_their_own_blended_scores_in_descending_order(tmp_path):
    near_ps4 = E[0] + 0.05 * E[2]
    rows = [_row("ps4", "Video Games / PS4"), _row("xbox", "Video Games / Xbox")]
    words = [_terms({1: 1.0, 2: 1.0}), _terms({3: 1.0, 2: 1.0})]
    vectors = listing_vectors(np.zeros((2, D), np.float32), [False, False], np.stack([E[0], near_ps4]), [True, True])
    config = IndexConfig()
    with ListingIndex.build(tmp_path, vectors, rows, config, words) as index:
        plain = {hit.product_id: hit.score for hit in index.search(None, E[0], k=2).hits}
        result = index.search(None, E[0], k=2, terms=_terms({3: 1.0}))
        assert _ids(result) == ["xbox", "ps4"]  # the words overturn the embeddings' order
        scores = [hit.score for hit in result.hits]
        assert scores == sorted(scores, reverse=True)
        beta = config.term_weight
        assert scores[0] == pytest.approx((1 - beta) * plain["xbox"] + beta * float(words[1].weights[1]), abs=1e-5)


def test_term_cosines_match_the_dense_cosine():
    rng = np.random.default_rng(0)
    dense = rng.random((6, 30)) * (rng.random((6, 30)) < 0.3)
    rows = [_terms({c: v for c, v in enumerate(row) if v}) if row.any() else None for row in dense]
    unit = dense / np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(term_cosines(rows[0], rows), unit @ unit[0], atol=1e-6)
    assert term_cosines(Terms(np.zeros(0, np.int32), np.zeros(0, np.float32)), rows).tolist() == [0.0] * 6


def test_words_rerank_listings_the_embeddings_cannot_tell_apart(tmp_path):
    near_ps4 = E[0] + 0.05 * E[2]  # the xbox's text embedding: a hair further from a "ps4" query than the ps4's
    rows = [_row("ps4", "Video Games / PS4"), _row("xbox", "Video Games / Xbox"), _row("fridge", "Appliances")]
    words = {"ps4": _terms({1: 1.0, 2: 1.0}), "xbox": _terms({3: 1.0, 2: 1.0}), "fridge": _terms({9: 1.0})}
    vectors = listing_vectors(np.zeros((2, D), np.float32), [False, False], np.stack([E[0], near_ps4]), [True, True])
    as_ps4, as_xbox = _terms({1: 1.0}), _terms({3: 1.0})  # the query texts' words
    with ListingIndex.build(tmp_path / "index", vectors, rows[:2], IndexConfig(), [words["ps4"], None]) as index:
        assert index.add(rows[2], None, E[1], words["fridge"]) is None
        index.add(rows[1], None, near_ps4, words["xbox"])  # a live add (here a replace) stores its words too
        assert _ids(index.search(None, E[0], k=2)) == ["ps4", "xbox"]  # by the embeddings alone
        reranked = index.search(None, E[0], k=3, terms=as_xbox)
        assert _ids(reranked) == ["xbox", "ps4", "fridge"] and all(0 <= hit.score <= 1 for hit in reranked.hits)
    with ListingIndex.open(tmp_path / "index", IndexConfig()) as reopened:  # the words persist
        assert _ids(reopened.search(None, E[0], k=2, terms=as_ps4)) == ["ps4", "xbox"]
        assert _ids(reopened.search(None, E[0], k=2, terms=as_xbox)) == ["xbox", "ps4"]
        assert _ids(reopened.search(E[0], None, k=2, terms=as_xbox)) == []  # a photo query: no photos here, and no re-ranking
        reopened.delete("xbox")
        assert set(reopened._fetch_terms(list(range(10)))) == {0, 2}  # the deleted listing's words went with it
    with ListingIndex.open(tmp_path / "index", IndexConfig(term_weight=0.0)) as unweighted:
        unweighted.add(rows[1], None, near_ps4, words["xbox"])
        assert _ids(unweighted.search(None, E[0], k=2, terms=as_xbox)) == ["ps4", "xbox"]  # a weight of 0: the words are not used


def test_a_listing_whose_words_match_is_a_candidate_however_low_its_embedding_ranks(tmp_path):
    """An exact title the text embedding puts far away (QA: "Mirror" missed by a search for
    "mirror", found first once a category filter narrowed the embeddings' candidates) is re-ranked
    with the others, within the filters, and its words go with it when it is deleted."""
    rows = [_row(f"near-{i}", "Home & Garden / Dining") for i in range(4)] + [_row("mirror", "Home & Garden / Mirrors")]
    text = np.stack([E[0]] * 4 + [(E[0] + E[3]) / math.sqrt(2)])  # the mirror's text embedding: 45° from the query's, below the others
    vectors = listing_vectors(np.zeros((5, D), np.float32), [False] * 5, text, [True] * 5)
    words = [_terms({i: 1.0}) for i in range(4)] + [_terms({7: 1.0, 8: 0.5})]
    query = _terms({7: 1.0, 8: 0.5})
    config = IndexConfig(rerank_candidates=2)
    with ListingIndex.build(tmp_path / "index", vectors, rows, config, words) as index:
        assert "mirror" not in _ids(index.search(None, E[0], k=3))  # by the embeddings alone
        found = index.search(None, E[0], k=3, terms=query)
        assert _ids(found)[0] == "mirror" and len(found.hits) == 3
        embedding_score = (1 + 1 / math.sqrt(2)) / 2
        assert found.hits[0].score == pytest.approx((1 - config.term_weight) * embedding_score + config.term_weight * 1.0, abs=1e-5)  # the same words
        assert "mirror" not in _ids(index.search(None, E[0], k=3, terms=query, category="Home & Garden / Dining"))
        assert "mirror" not in _ids(index.search(None, E[0], k=3, terms=query, exclude_product_id="mirror"))
        assert "mirror" not in _ids(index.search(None, E[0], k=3, terms=query, min_price=50))
    with ListingIndex.open(tmp_path / "index", IndexConfig(rerank_candidates=2, word_candidates=0)) as without:
        assert "mirror" not in _ids(without.search(None, E[0], k=3, terms=query))
    database = next((tmp_path / "index").glob("listings-*.sqlite"))
    with sqlite3.connect(database) as db:
        db.execute("DROP TABLE postings")  # a build of before the words' inverted index
    before = database.read_bytes()
    with ListingIndex.open(tmp_path / "index", config) as reader:  # `fbm similar`: writes nothing, works without them
        assert "mirror" not in _ids(reader.search(None, E[0], k=3, terms=query)) and len(reader.search(None, E[0], k=3, terms=query).hits) == 3
    assert database.read_bytes() == before
    with ListingIndex.open(tmp_path / "index", config, serving=True) as older:  # the server adds them, from the stored words
        assert "mirror" in _ids(older.search(None, E[0], k=3, terms=query))
        older.delete("mirror")
        assert "mirror" not in _ids(older.search(None, E[0], k=3, terms=query))
        assert older._query("SELECT COUNT(*) FROM postings WHERE faiss_id = 4", []) == [(0,)]


def test_each_query_word_is_read_to_its_strongest_listings_only(tmp_path):
    """The word lookup's cost stays bounded however many listings share a word: each word is read
    to its `word_match_postings` strongest listings."""
    rows = [_row(f"near-{i}", "Home & Garden / Dining") for i in range(3)] + [_row("weak", "Appliances"), _row("strong", "Appliances")]
    text = np.stack([E[0]] * 3 + [E[3], E[3]])  # both word matches far from the query's embedding
    vectors = listing_vectors(np.zeros((5, D), np.float32), [False] * 5, text, [True] * 5)
    words = [_terms({i: 1.0}) for i in range(3)] + [_terms({7: 0.3, 9: 1.0}), _terms({7: 1.0})]
    query = np.concatenate([np.zeros(D, np.float32), E[0]])
    with ListingIndex.build(tmp_path / "one", vectors, rows, IndexConfig(word_match_postings=1), words) as index:
        ids, products = index._word_matches(query, _terms({7: 1.0}), ("text",), None, None, None, set())
        assert ids == [4] and products.tolist() == [0.0]  # word 7 read to its one strongest listing, "strong"
    with ListingIndex.build(tmp_path / "all", vectors, rows, IndexConfig(), words) as index:
        assert index._word_matches(query, _terms({7: 1.0}), ("text",), None, None, None, set())[0] == [4, 3]


def test_more_like_a_listing_uses_its_stored_modalities_and_words_and_leaves_it_out(tmp_path):
    with _build(tmp_path / "index") as index:
        listing, result = search_like_listing(index, "same", k=4)
        assert listing.product_id == "same" and listing.title == "title same"
        assert result.modalities == ("image", "text") and "same" not in _ids(result)
        assert _ids(result) == _ids(index.search(E[0], E[0], k=4, exclude_product_id="same"))  # its stored vector, as given
        assert _scores(result) == _scores(index.search(E[0], E[0], k=4, exclude_product_id="same"))
        _, text_only = search_like_listing(index, "no-photo", k=2)
        assert text_only.modalities == ("text",) and set(_ids(text_only)) == {"same", "text-only-match"}  # a tie: both texts are topic 0
        assert _ids(search_like_listing(index, "same", k=4, category="Home & Garden")[1]) == ["text-only-match", "unrelated"]
        with pytest.raises(KeyError, match="no listing 'nowhere'"):
            search_like_listing(index, "nowhere")
        index.delete("same")
        with pytest.raises(KeyError):
            search_like_listing(index, "same")

    near_ps4 = E[0] + 0.05 * E[2]  # the words decide between two listings the embeddings cannot tell apart
    rows = [_row("query", "Video Games / PS4"), _row("ps4", "Video Games / PS4"), _row("xbox", "Video Games / Xbox")]
    text = np.stack([E[0], near_ps4, E[0]])
    vectors = listing_vectors(np.zeros((3, D), np.float32), [False] * 3, text, [True] * 3)
    words = [_terms({1: 1.0}), _terms({1: 1.0, 2: 1.0}), _terms({3: 1.0})]
    with ListingIndex.build(tmp_path / "words", vectors, rows, IndexConfig(), words) as index:
        assert _ids(index.search(None, E[0], k=2, exclude_product_id="query")) == ["xbox", "ps4"]  # the embeddings alone
        assert _ids(search_like_listing(index, "query", k=2)[1]) == ["ps4", "xbox"]  # with the query listing's stored words


def test_one_process_serves_an_index_a_second_server_is_refused(tmp_path):
    """A second `fbm serve` on the same artifacts searched its own FAISS copy, stale after the
    first one's live writes (500s, wrong counts, a UNIQUE constraint failure on a replace)."""
    _build(tmp_path).close()
    with ListingIndex.open(tmp_path, IndexConfig(), serving=True):
        with pytest.raises(IndexInUseError, match="served by another process .a running `fbm serve`.: stop it, or serve a copy"):
            ListingIndex.open(tmp_path, IndexConfig(), serving=True)
        with ListingIndex.open(tmp_path, IndexConfig()) as reader:  # readers (`fbm similar --like`) still open it
            assert len(reader) == len(CATALOGUE)
    with ListingIndex.open(tmp_path, IndexConfig(), serving=True) as served:  # released on close
        assert len(served) == len(CATALOGUE)


def test_a_listing_searched_by_its_own_text_and_words_scores_at_most_one(tmp_path):
    """float32 rounding put the word cosine of a text with itself at 1.0000001, and a score above 1 (QA pass 46)."""
    def unit_words(seed: int) -> Terms:
        weights = np.random.default_rng(seed).random(8).astype(np.float32)
        return Terms(np.arange(8, dtype=np.int32), (weights / np.linalg.norm(weights)).astype(np.float32))

    words = next(unit_words(seed) for seed in range(1000) if term_cosines(unit_words(seed), [unit_words(seed)])[0] > 1)  # the rounding guarded against
    vectors = listing_vectors(np.zeros((1, D), np.float32), [False], E[:1], [True])
    with ListingIndex.build(tmp_path, vectors, [_row("dresser", "Home & Garden")], IndexConfig(), [words]) as index:
        (hit,) = index.search(None, E[0], k=1, terms=words).hits
        assert hit.score == 1.0
