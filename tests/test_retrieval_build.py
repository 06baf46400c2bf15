"""`fbm index` and the retrieval evaluation on tiny synthetic branch exports, plus the bench's smoke run."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
from PIL import Image
from pipeline import needs_nltk_data

from combined_model.features import IMAGE_EXPORT, TEXT_EXPORT
from listings.categories import CategoryEncoder
from listings.config import Config, IndexConfig, TextConfig
from listings.data import listing_text, write_jsonl
from listings.photos import PhotoStore
from retrieval.bench import bench_scale
from retrieval.build import EVALUATION_FILE, ProductEmbeddings, build_index, evaluate_retrieval, example_searches, load_product_embeddings, other_photo_rate
from retrieval.figures import (
    EXAMPLES_FIGURE,
    GALLERY_TITLE,
    OTHER_ROOT,
    PRECISION_FIGURE,
    ROOT_PRECISION_GOAL,
    SAME_ROOT,
    hit_caption,
    pick_examples,
    plot_examples,
    plot_precision,
)
from retrieval.index import ListingIndex
from retrieval.listing import Hit
from scripts.terminal import format_results
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
    tfidf = TfidfSvmBaseline.from_config(ROOTS, TextConfig()).fit(tokens, [r["label"] for r in rows])
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
    assert products.terms[by_id["prod-0"]] is None  # nor searched by its words, as a listing added live is not
    assert products.terms[by_id["prod-1"]] is not None
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
        assert "photo + text" in table and "Baby & Kids Stuff" in table and len(table.splitlines()) == 4 + 2 * 5


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
    for figure in (PRECISION_FIGURE, EXAMPLES_FIGURE):  # no photo files here: the gallery draws placeholders
        with Image.open(config.paths.reports / figure) as image:
            assert image.format == "PNG" and min(image.size) > 200


@needs_nltk_data  # the synthetic exports' words are the project's tokens
def test_example_searches_show_each_root_and_the_photos_of_query_and_results(tmp_path):
    config = _artifacts(tmp_path)
    photos_dir = config.paths.clean_images(config.data.image_size)
    photos_dir.mkdir(parents=True)
    colours = {root: colour for root, colour in zip(ROOTS, ((250, 0, 0), (0, 250, 0), (0, 0, 250)))}
    for p in range(60):  # each product's photos in its root's colour
        for side in "ab":
            Image.new("RGB", (64, 64), colours[ROOTS[p % 3]]).save(photos_dir / f"img-{p}-{side}.jpg")
    products = load_product_embeddings(config)
    queries = products.subset(products.listings["split"].to_numpy() == "test")
    with ListingIndex.build(tmp_path / "index", products.vectors(), products.listings.to_dict("records"), config.index, products.terms) as index:
        examples = example_searches(index, queries, np.random.default_rng(0), n=5, k=4)
    assert len(examples) == 5 and {e.root for e in examples[:3]} == set(ROOTS)  # every root before any twice
    assert all(len(e.hits) == 4 and e.image_id.startswith("img-") for e in examples)
    gallery = tmp_path / "gallery.png"
    plot_examples(examples, PhotoStore.for_config(config), gallery)
    with Image.open(gallery) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    for colour in colours.values():  # the photos themselves are drawn, not placeholders
        assert (np.abs(pixels - colour).sum(axis=1) < 40).sum() > 500
    examples[0].title = "Bike $5 ^_^ $6 sofa 🚲"  # a seller's dollars are not a formula, an emoji no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_examples(examples, PhotoStore.for_config(config), gallery)
    plot_examples([], PhotoStore.for_config(config), gallery)  # nothing to show is said, not a crash
    with Image.open(gallery) as image:
        assert image.format == "PNG"


def test_precision_chart_draws_whatever_was_measured(tmp_path):
    report = {"k": 10, "catalogue": 5, "chance_precision": 0.3, "chance_path_precision": 0.1, "queries_photo": 0, "queries_text": 4, "queries_both": 0}
    for measured in ({"text": 0.99}, {}):  # a catalogue without photos; nothing queried at all
        for mode in ("photo", "text", "both"):
            report[f"precision@10_{mode}"] = measured.get(mode)
            report[f"path_precision@10_{mode}"] = measured.get(mode)
        plot_precision(report, tmp_path / "precision.png")
        with Image.open(tmp_path / "precision.png") as image:
            assert image.format == "PNG"


def test_precision_chart_draws_the_goal_the_query_counts_and_the_stored_values(tmp_path, drawn_figures):
    report = {"k": 10, "catalogue": 5189, "chance_precision": 0.0802, "chance_path_precision": 0.0119}
    for mode, precision, path_precision, queries in (("photo", 0.5603, 0.2642, 891), ("text", 0.7865, 0.474, 909), ("both", 0.8045, 0.4934, 891)):
        report |= {f"precision@10_{mode}": precision, f"path_precision@10_{mode}": path_precision, f"queries_{mode}": queries}
    plot_precision(report, tmp_path / "precision.png")
    (ax,) = drawn_figures[-1].axes
    goal = [line for line in ax.get_lines() if line.get_label() == "goal (#6): 0.85"]
    assert len(goal) == 1 and goal[0].get_ydata()[0] == ROOT_PRECISION_GOAL == 0.85
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["photo\nn=891", "text\nn=909", "photo + text\nn=891"]
    assert "0.8045" in [text.get_text() for text in ax.texts]  # the stored value, not rounded again to 0.804


def test_gallery_captions_say_same_or_other_root_in_words_and_the_title_what_score_is():
    hit = Hit("p1", "Samsung Galaxy Buds Live wireless earbuds", "Phones, Mobile Phones & Telecoms / Headphones", "Phones, Mobile Phones & Telecoms", None, "", [], score=0.654)
    assert hit_caption(hit, "Phones, Mobile Phones & Telecoms").splitlines() == [
        "Samsung Galaxy Buds Live wi…",
        "Phones, Mobile Phones & Telecoms",  # not cut at 30 characters
        "✓ same root, score 0.65",
    ]
    assert hit_caption(hit, "Health & Beauty").splitlines()[-1] == "✗ other root, score 0.65"
    assert "cosine similarity" in GALLERY_TITLE and "0 to 1" in GALLERY_TITLE
    assert (SAME_ROOT, OTHER_ROOT) == ("#0072B2", "#D55E00")  # blue and orange, not green and red


def test_pick_examples_shows_every_root_once_before_any_twice():
    roots = ["a"] * 50 + ["b"] * 3 + ["c"]
    picked = pick_examples(roots, np.random.default_rng(1), 5)
    assert len(set(picked)) == 5 and {roots[i] for i in picked[:3]} == {"a", "b", "c"}
    assert pick_examples(roots, np.random.default_rng(1), 100) != pick_examples(roots, np.random.default_rng(2), 100)
    assert sorted(pick_examples(roots, np.random.default_rng(1), 100)) == list(range(54))


@needs_nltk_data  # the synthetic exports' words are the project's tokens
def test_words_rerank_towards_the_same_kind_of_item(tmp_path):
    """The synthetic embeddings know the root category only; the words (`KINDS`) also tell the
    sub-category, so re-ranking by them raises the full-path precision of text queries."""
    config = _artifacts(tmp_path)
    with_words = evaluate_retrieval(config, k=5)
    config.index.term_weight = 0.0
    without = evaluate_retrieval(config, k=5)
    assert with_words["path_precision@5_text"] > without["path_precision@5_text"] + 0.08
    assert with_words["path_precision@5_both"] > without["path_precision@5_both"] + 0.05  # a fifth of the listings' texts are unused (no known word)
    assert with_words["precision@5_text"] > 0.9 and 0 < with_words["chance_path_precision"] < with_words["chance_precision"]


def test_other_photo_rate_leaves_the_query_photo_out():
    listings = pd.DataFrame({"product_id": ["p", "q"], "split": ["test", "test"], "image_ids": [["p1", "p2"], ["q1"]]})
    photos = {"p1": np.array([1.0, 0.0]), "p2": np.array([1.0, 0.3]), "q1": np.array([1.0, 0.45])}  # p2 is nearer q1 than p1
    empty = np.zeros((2, 2), np.float32)
    rate = other_photo_rate(ProductEmbeddings(listings, empty, np.ones(2, bool), empty, np.ones(2, bool), photos, [None, None]))
    assert rate == {"other_photo_nn_rate": 0.5, "other_photo_queries": 2, "other_photo_index_size": 3}


def test_bench_recall_is_against_exact_search_not_the_index_itself():
    """A deliberately weak HNSW (efSearch 1 for 10 neighbours) shows a recall well below 1."""
    weak = IndexConfig(exact_threshold=1000, hnsw_m=4, ef_construction=8, ef_search=1)
    result = bench_scale(n=3000, dim=32, queries=30, config=weak, ef_sweep=(1,), chunk=1000)
    assert result["kind"] == "hnsw" and result["recall@10"] < 0.8 and result["goals_met"] is False


def test_bench_runs_small_and_meets_recall():
    result = bench_scale(n=3000, dim=32, queries=50, config=IndexConfig(exact_threshold=1000), ef_sweep=(32,), chunk=1000)
    assert result["kind"] == "hnsw" and set(result["ef_sweep"]) == {"32", "256"}
    assert result["recall@10"] >= 0.95 and result["p50_ms"] > 0 and result["checkpoint_write_s"] >= 0
