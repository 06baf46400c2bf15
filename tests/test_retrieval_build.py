"""`fbm index` and the retrieval evaluation on tiny synthetic branch exports, plus the bench's smoke run."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pipeline import needs_nltk_data

from combined_model.features import IMAGE_EXPORT, TEXT_EXPORT
from listings.categories import CategoryEncoder
from listings.config import Config, IndexConfig
from listings.data import listing_text, write_jsonl
from retrieval.bench import bench_scale
from retrieval.build import EVALUATION_FILE, ProductEmbeddings, build_index, evaluate_retrieval, load_product_embeddings, other_photo_rate
from retrieval.index import ListingIndex, format_results
from text_model.baseline import BASELINE_DIR, TfidfSvmBaseline
from text_model.preprocess import tokenize

ROOTS = ["Appliances", "Baby & Kids Stuff", "Computers & Software"]
DIM = 16
KINDS = ["walnut", "chrome", "velvet", "granite"]  # words of a product's kind: its sub-category follows them


def _artifacts(tmp_path, n_products: int = 60, seed: int = 0) -> Config:
    """Prepared listings and branch exports whose embeddings point at the listing's root, noisily.

    Every product has two photos (one in four has none, one in five a text with no known word)."""
    rng = np.random.default_rng(seed)
    config = Config()
    config.data.artifacts_dir = str(tmp_path)
    rows, image_ids, image_emb, text_emb = [], [], [], []
    for p in range(n_products):
        label = p % len(ROOTS)
        ids = [] if p % 4 == 3 else [f"img-{p}-a", f"img-{p}-b"]
        product_direction = rng.normal(0, 0.6, DIM)  # the product's photos resemble each other
        for image_id in ids:
            image_ids.append(image_id)
            image_emb.append(np.eye(DIM)[label] * 3 + product_direction + rng.normal(0, 0.3, DIM))
        text_emb.append(np.eye(DIM)[label + 8] * 3 + rng.normal(0, 0.6, DIM))
        split = ["train", "val", "test"][(p // 3) % 3 if p < n_products - 6 else 2]
        rows.append(
            {
                "product_id": f"prod-{p}", "title": f"thing {p}", "description": f"{ROOTS[label].split()[0].lower()} {KINDS[p % 4]} finish",
                "category": f"{ROOTS[label]} / Sub {p % 2}", "root": ROOTS[label], "price": float(p), "location": "York", "image_ids": ids, "image_digests": ids,
                "label": label, "split": split,
            }
        )
    paths = config.paths
    write_jsonl(pd.DataFrame(rows), paths.listings)
    CategoryEncoder(classes=ROOTS).save(paths.categories)
    paths.image_model.mkdir(parents=True)
    paths.text_model.mkdir(parents=True)
    probs = lambda n: np.full((n, len(ROOTS)), 1 / len(ROOTS), np.float32)  # noqa: E731 - unused by retrieval
    np.savez(paths.image_model / IMAGE_EXPORT, image_ids=np.array(image_ids), embeddings=np.array(image_emb, np.float32), probs=probs(len(image_ids)))
    known = np.array([0 if p % 5 == 0 else 7 for p in range(n_products)])
    tokens = [tokenize(listing_text(r["title"], r["description"])) for r in rows]
    tfidf = TfidfSvmBaseline(ROOTS).fit(tokens, [r["label"] for r in rows])
    tfidf.save(paths.text_model / BASELINE_DIR)
    words = tfidf.word_rows(tokens)  # as the text stage exports them
    np.savez(
        paths.text_model / TEXT_EXPORT,
        product_ids=np.array([r["product_id"] for r in rows]),
        embeddings=np.array(text_emb, np.float32),
        probs=probs(n_products),
        known_tokens=known,
        tfidf_probs=probs(n_products),
        word_indptr=words.indptr,
        word_columns=words.indices,
        word_weights=words.data,
    )
    return config


@needs_nltk_data  # the synthetic exports' words are the project's tokens
def test_product_embeddings_fold_photos_and_drop_unknown_text_beside_a_photo(tmp_path):
    products = load_product_embeddings(_artifacts(tmp_path))
    by_id = dict(zip(products.listings["product_id"], range(len(products.listings))))
    assert products.has_image[by_id["prod-0"]] and not products.has_text[by_id["prod-0"]]  # no known word, has photos
    assert not products.has_image[by_id["prod-15"]] and products.has_text[by_id["prod-15"]]  # no photo: its text stays
    assert products.has_image[by_id["prod-1"]] and products.has_text[by_id["prod-1"]]
    assert np.allclose(np.linalg.norm(products.image[by_id["prod-1"]]), 1.0)


@needs_nltk_data  # the synthetic exports' words are the project's tokens
def test_build_index_indexes_every_listing_and_is_searchable(tmp_path):
    config = _artifacts(tmp_path)
    summary = build_index(config)
    assert (summary["count"], summary["kind"], summary["dim"]) == (60, "flat", 2 * DIM)
    assert json.loads((config.paths.index / "build_summary.json").read_text())["count"] == 60
    products = load_product_embeddings(config)
    with ListingIndex.open(config.paths.index, config.index) as index:
        result = index.search(products.image[1], products.text[1], k=5, exclude_product_id="prod-1")
        assert "prod-1" not in [hit.product_id for hit in result.hits]
        assert all(hit.root == ROOTS[1] for hit in result.hits)
        table = format_results(result)
        assert "photo + text" in table and "Baby & Kids Stuff" in table and len(table.splitlines()) == 3 + 5


@needs_nltk_data  # the synthetic exports' words are the project's tokens
def test_evaluate_retrieval_reports_the_figures(tmp_path):
    config = _artifacts(tmp_path)
    report = evaluate_retrieval(config, k=5)
    assert report["catalogue"] == 36 and report["test_listings"] == 24
    for mode in ("photo", "text", "both"):
        assert report[f"precision@5_{mode}"] > 0.9 > report["chance_precision"]
        assert report[f"latency_ms_{mode}"]["p50"] > 0
    assert report["queries_photo"] == 17 and report["queries_text"] == 23 and report["queries_both"] == 16
    assert report["other_photo_queries"] == 34 and report["other_photo_nn_rate"] > 0.8
    assert json.loads((config.paths.reports / EVALUATION_FILE).read_text()) == report


@needs_nltk_data  # the synthetic exports' words are the project's tokens
def test_words_rerank_towards_the_same_kind_of_item(tmp_path):
    """The synthetic embeddings know the root category only; the words (`KINDS`) also tell the
    sub-category, so re-ranking by them raises the full-path precision of text queries."""
    config = _artifacts(tmp_path)
    with_words = evaluate_retrieval(config, k=5)
    config.index.term_weight = 0.0
    without = evaluate_retrieval(config, k=5)
    assert with_words["path_precision@5_text"] > without["path_precision@5_text"] + 0.08
    assert with_words["path_precision@5_both"] > without["path_precision@5_both"] + 0.15
    assert with_words["precision@5_text"] > 0.9 and 0 < with_words["chance_path_precision"] < with_words["chance_precision"]


def test_other_photo_rate_leaves_the_query_photo_out():
    listings = pd.DataFrame({"product_id": ["p", "q"], "split": ["test", "test"], "image_ids": [["p1", "p2"], ["q1"]]})
    photos = {"p1": np.array([1.0, 0.0]), "p2": np.array([1.0, 0.3]), "q1": np.array([1.0, 0.45])}  # p2 is nearer q1 than p1
    empty = np.zeros((2, 2), np.float32)
    rate = other_photo_rate(ProductEmbeddings(listings, empty, np.ones(2, bool), empty, np.ones(2, bool), photos, [None, None]))
    assert rate == {"other_photo_nn_rate": 0.5, "other_photo_queries": 2, "other_photo_index_size": 3}


def test_bench_runs_small_and_meets_recall():
    result = bench_scale(n=3000, dim=32, queries=50, config=IndexConfig(exact_threshold=1000), ef_sweep=(32,), chunk=1000)
    assert result["kind"] == "hnsw" and set(result["ef_sweep"]) == {"32", "256"}
    assert result["recall@10"] >= 0.95 and result["p50_ms"] > 0 and result["checkpoint_write_s"] >= 0
