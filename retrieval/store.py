"""The listing index's SQLite side: its tables, and the rows of one listing (metadata, vector, words
and photos) written, read and deleted inside the caller's transaction. `retrieval.index` owns the
connection, the transactions and the FAISS side."""
from __future__ import annotations

import json
import logging
import sqlite3

import numpy as np

from listings.data import PATH_SEPARATOR, split_category
from retrieval.listing import Listing
from retrieval.terms import Terms
from retrieval.vectors import halves

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE listings (
    faiss_id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    category TEXT NOT NULL,
    root TEXT NOT NULL,
    price REAL,
    location TEXT NOT NULL,
    image_ids TEXT NOT NULL,
    category_key TEXT NOT NULL,
    has_image INTEGER NOT NULL,
    has_text INTEGER NOT NULL
);
CREATE INDEX listings_category ON listings (category_key);
CREATE INDEX listings_price ON listings (price);
CREATE TABLE vectors (faiss_id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE terms (faiss_id INTEGER PRIMARY KEY, columns BLOB NOT NULL, weights BLOB NOT NULL);
CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
LIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_added (product_id TEXT PRIMARY KEY, text TEXT);
CREATE TABLE IF NOT EXISTS live_deleted (product_id TEXT PRIMARY KEY);
"""
# The photos of the indexed listings: what `GET /images/{id}` may serve (a deleted listing's photos
# are not). A build of before this table gets it filled from its listings when first opened.
PHOTOS_SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (image_id TEXT NOT NULL, faiss_id INTEGER NOT NULL, PRIMARY KEY (image_id, faiss_id));
CREATE INDEX IF NOT EXISTS photos_listing ON photos (faiss_id);
"""
_FILL_PHOTOS_SQL = "INSERT OR IGNORE INTO photos SELECT json_each.value, faiss_id FROM listings, json_each(listings.image_ids)"
# Each listing's words, word by word: the inverted index that finds a query's `word_candidates`. A
# build of before this table gets it filled from its listings' words when first opened.
POSTINGS_SCHEMA = """
CREATE TABLE IF NOT EXISTS postings (term INTEGER NOT NULL, faiss_id INTEGER NOT NULL, weight REAL NOT NULL, PRIMARY KEY (term, faiss_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS postings_listing ON postings (faiss_id);
CREATE INDEX IF NOT EXISTS postings_strongest ON postings (term, weight DESC);
"""
METADATA_COLUMNS = "product_id, title, category, root, price, location, image_ids"
_LIVE_ADDED_SQL = f"SELECT {METADATA_COLUMNS}, live_added.text FROM listings JOIN live_added USING (product_id) ORDER BY faiss_id"
_LIVE_DELETED_SQL = "SELECT product_id FROM live_deleted ORDER BY product_id"

CATEGORY_KEYS = "casefold"  # how `category_key` folds case; a build whose keys were lowered is re-keyed on open


def category_key(category: str) -> str:
    """`"Home & Garden / Dining"` → `"home & garden / dining / "`: every path prefix of it is a string
    prefix. Case-folded, as every level is compared in any case (`STRASSE` matches `Straße`)."""
    return PATH_SEPARATOR.join(split_category(category)).casefold() + PATH_SEPARATOR


CATEGORY_RANGE = "category_key >= ? AND category_key < ?"


def category_range(category: str) -> list[str]:
    """The bounds of the keys that start with the category's key: a range scan of the index."""
    prefix = category_key(category)
    return [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]


def filter_clauses(category: str | None, min_price: float | None, max_price: float | None) -> tuple[list[str], list]:
    """SQL conditions on the listings table, and their parameters, for a search's filters."""
    clauses, params = [], []
    if category is not None:  # keys starting with the category's key: a range scan of the index
        clauses.append(CATEGORY_RANGE)
        params += category_range(category)
    if min_price is not None:
        clauses.append("price >= ?")
        params.append(min_price)
    if max_price is not None:
        clauses.append("price <= ?")
        params.append(max_price)
    return clauses, params


def insert_listing(db: sqlite3.Connection, row: Listing, vector: np.ndarray, terms: Terms | None, faiss_id: int | None = None) -> int:
    """Insert a listing, its vector and its words (inside the caller's transaction); returns its FAISS id."""
    cursor = db.execute(
        f"INSERT INTO listings (faiss_id, {METADATA_COLUMNS}, category_key, has_image, has_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            faiss_id,
            row.product_id,
            row.title,
            row.category,
            row.root,
            row.price,
            row.location,
            json.dumps(row.image_ids),
            category_key(row.category),
            *(int(np.any(part)) for part in halves(vector)),
        ),
    )
    db.execute("INSERT INTO vectors (faiss_id, vector) VALUES (?, ?)", (cursor.lastrowid, np.asarray(vector, np.float32).tobytes()))
    db.executemany("INSERT OR IGNORE INTO photos (image_id, faiss_id) VALUES (?, ?)", [(image_id, cursor.lastrowid) for image_id in row.image_ids])
    if terms is not None:
        db.execute("INSERT INTO terms (faiss_id, columns, weights) VALUES (?, ?, ?)", (cursor.lastrowid, *terms.to_blobs()))
        db.executemany(_INSERT_POSTINGS_SQL, _postings(cursor.lastrowid, terms))
    return int(cursor.lastrowid)


_INSERT_POSTINGS_SQL = "INSERT OR IGNORE INTO postings (term, faiss_id, weight) VALUES (?, ?, ?)"


def _postings(faiss_id: int, terms: Terms) -> list[tuple[int, int, float]]:
    return [(column, faiss_id, weight) for column, weight in zip(terms.columns.tolist(), terms.weights.tolist())]


def add_postings(db: sqlite3.Connection) -> None:
    """Create the postings of a build of before them, from its listings' stored words, in one
    transaction (a listing's words, a few dozen rows each)."""
    db.executescript(POSTINGS_SCHEMA)
    with db:
        if db.execute("SELECT 1 FROM postings LIMIT 1").fetchone() or not db.execute("SELECT 1 FROM terms LIMIT 1").fetchone():
            return
        log.info("adding the word postings to %s's listings (once, for an index built before them)", db.execute("PRAGMA database_list").fetchone()[2])
        for faiss_id, columns, weights in db.execute("SELECT faiss_id, columns, weights FROM terms").fetchall():
            db.executemany(_INSERT_POSTINGS_SQL, _postings(faiss_id, Terms.from_blobs(columns, weights)))


def delete_listing(db: sqlite3.Connection, faiss_id: int) -> None:
    """Delete a listing's rows from every table (inside the caller's transaction)."""
    db.execute("DELETE FROM listings WHERE faiss_id = ?", (faiss_id,))
    db.execute("DELETE FROM vectors WHERE faiss_id = ?", (faiss_id,))
    db.execute("DELETE FROM terms WHERE faiss_id = ?", (faiss_id,))
    db.execute("DELETE FROM postings WHERE faiss_id = ?", (faiss_id,))
    db.execute("DELETE FROM photos WHERE faiss_id = ?", (faiss_id,))


def find(db: sqlite3.Connection, product_id: str) -> tuple[int, Listing] | None:
    """An indexed product's FAISS id and listing, or None when it is not indexed."""
    row = db.execute(f"SELECT faiss_id, {METADATA_COLUMNS} FROM listings WHERE product_id = ?", (product_id,)).fetchone()
    return (row[0], listing_from_row(row[1:])) if row else None


def listing_from_row(row: tuple) -> Listing:
    """A listing from a row of `METADATA_COLUMNS`, in that order."""
    product_id, title, category, root, price, location, image_ids = row
    return Listing(product_id, title, category, root, price, location, json.loads(image_ids))


def upgrade(db: sqlite3.Connection, info: dict[str, str]) -> None:
    """Bring a build of an earlier version to this one's tables: its live-change records, its
    photos table (filled from its listings) and its category keys (once lower-cased, now case-folded)."""
    db.executescript(LIVE_SCHEMA + PHOTOS_SCHEMA)
    with db:
        if not db.execute("SELECT 1 FROM photos LIMIT 1").fetchone():
            db.execute(_FILL_PHOTOS_SQL)
        if info.get("category_keys") != CATEGORY_KEYS:
            db.create_function("category_key", 1, category_key, deterministic=True)
            db.execute("UPDATE listings SET category_key = category_key(category)")
            db.execute("INSERT OR REPLACE INTO info (key, value) VALUES ('category_keys', ?)", [CATEGORY_KEYS])


def live_changes(db: sqlite3.Connection) -> tuple[list[tuple[Listing, str | None]], list[str]]:
    """The listings added live (each with the text it was embedded from) and the product ids deleted."""
    added = [(listing_from_row(tuple(row[:-1])), row[-1]) for row in db.execute(_LIVE_ADDED_SQL).fetchall()]
    return added, [product_id for (product_id,) in db.execute(_LIVE_DELETED_SQL).fetchall()]
