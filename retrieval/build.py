"""`fbm index`: the listing index from the branches' exported embeddings, and its evaluation.

A listing's photo embedding is its photos' folded embedding, its text embedding the text
branch's; as at serving time (`combined_model.inference`), a text with no known word is used only
for a listing without a photo.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from tqdm import tqdm

from combined_model.features import load_branch_exports, text_is_used
from listings.config import Config
from listings.metrics import latency_percentiles
from listings.prepare import load_prepared
from listings.images import ImageError, clean_photo
from listings.photos import PhotoStore
from retrieval.index import IndexStateError, ListingIndex, LiveChanges, build_lock, read_live_changes
from retrieval.listing import Listing, SearchResult
from retrieval.vectors import IMAGE, TEXT, fold_photos, listing_vector, listing_vectors, unit_rows
from retrieval.figures import EVALUATION_FILE, EXAMPLES_FIGURE, PRECISION_FIGURE, Example, pick_examples, plot_examples, plot_precision
from retrieval.terms import Terms, terms_of_rows

SUMMARY_FILE = "build_summary.json"
MODES = {"photo": (IMAGE,), "text": (TEXT,), "both": (IMAGE, TEXT)}


@dataclass
class ProductEmbeddings:
    """Per-product branch embeddings, aligned with `listings` (zero rows where a modality is missing)."""

    listings: pd.DataFrame
    image: np.ndarray  # [n, d] folded photo embeddings
    has_image: np.ndarray  # [n] bool
    text: np.ndarray  # [n, d]
    has_text: np.ndarray  # [n] bool
    photo_embeddings: dict[str, np.ndarray]  # image id → the photo's own embedding
    terms: list[Terms | None]  # each listing's words, for re-ranking; None without a text

    def vectors(self) -> np.ndarray:
        return listing_vectors(self.image, self.has_image, self.text, self.has_text)

    def subset(self, mask: np.ndarray) -> "ProductEmbeddings":
        terms = [row for row, keep in zip(self.terms, mask) if keep]
        return ProductEmbeddings(
            self.listings[mask].reset_index(drop=True), self.image[mask], self.has_image[mask], self.text[mask], self.has_text[mask], self.photo_embeddings, terms
        )


def load_product_embeddings(config: Config) -> ProductEmbeddings:
    """The prepared listings with their branch embeddings, from the two exports, and their words."""
    listings = load_prepared(config).listings
    image_export, text_export = load_branch_exports(config)
    photos = dict(zip(image_export["image_ids"].tolist(), image_export["embeddings"].astype(np.float32)))
    text_row = {pid: i for i, pid in enumerate(text_export["product_ids"].tolist())}
    unembedded = [pid for pid in listings["product_id"] if pid not in text_row]  # the text stage embeds every listing
    if unembedded:
        raise ValueError(
            f"{len(unembedded)} of the {len(listings)} prepared listings (e.g. {unembedded[0]!r}) have no embedding in {config.paths.text_model}: "
            "the branches were trained on other listings (`fbm prepare` ran since); `fbm train all` trains them on these, then `fbm index`"
        )
    d_img, d_txt = image_export["embeddings"].shape[1], text_export["embeddings"].shape[1]
    if d_img != d_txt:
        raise ValueError(f"the image ({d_img}-d) and text ({d_txt}-d) embeddings must have the same width")

    n = len(listings)
    image, text = np.zeros((n, d_img), np.float32), np.zeros((n, d_txt), np.float32)
    has_image, has_text = np.zeros(n, bool), np.zeros(n, bool)
    known = text_export["known_tokens"]
    for i, (pid, image_ids) in enumerate(zip(listings["product_id"], listings["image_ids"])):
        own = [photos[image_id] for image_id in image_ids if image_id in photos]
        if own:
            image[i], has_image[i] = fold_photos(np.stack(own)), True
        row = text_row[pid]
        if text_is_used(known[row], has_image[i]):
            text[i], has_text[i] = text_export["embeddings"][row], True
    if "word_indptr" not in text_export:
        raise ValueError(f"{config.paths.text_model} holds a text export without its listings' words (an older version): rerun `fbm train text`")
    words = terms_of_rows(text_export["word_indptr"], text_export["word_columns"], text_export["word_weights"])
    # a text the branches leave unused is not searched by its words either, as for a listing added live
    terms = [words[text_row[pid]] if used else None for pid, used in zip(listings["product_id"], has_text)]
    return ProductEmbeddings(listings, image, has_image, text, has_text, photos, terms)


def build_index(config: Config) -> dict:
    """Index every prepared listing with a photo or a text in `config.paths.index`; returns a summary.

    The live changes of the index it replaces are kept: a catalogue listing deleted through the
    API stays out, and a listing added through the API stays in, embedded again by the current
    models from its stored photos and text (the models may have been retrained since). The build
    lock is taken first, so no live change can slip in between reading them and the new build."""
    start = time.perf_counter()
    products = load_product_embeddings(config)  # first: missing inputs are refused before the index folder is made
    lock = build_lock(config.paths.index)
    try:
        live, warnings = previous_live_changes(config)
        replaced = set(live.deleted) | {listing.product_id for listing, _ in live.added}
        catalogue_deleted = int(products.listings["product_id"].isin(live.deleted).sum())
        products = products.subset((products.has_image | products.has_text) & ~products.listings["product_id"].isin(replaced).to_numpy())
        rows, vectors, terms = products.listings.to_dict("records"), products.vectors(), products.terms
        kept, dropped = embed_live_listings(config, live.added, vectors.shape[1] // 2)
    except BaseException:
        os.close(lock)
        raise
    if kept:
        rows += [asdict(listing) for listing, _, _, _ in kept]
        vectors = np.vstack([vectors, *(vector[None] for _, _, vector, _ in kept)])
        terms = terms + [words for _, _, _, words in kept]
    warnings += [f"listing {product_id} added through the API is left out: {reason}" for product_id, reason in dropped]
    # a dropped listing stays deleted: it may have replaced a catalogue listing, which must not come back
    carried = LiveChanges([(listing, text) for listing, text, _, _ in kept], sorted(set(live.deleted) | {pid for pid, _ in dropped}))
    index = ListingIndex.build(config.paths.index, vectors, rows, config.index, terms, carried, lock=lock)
    summary = index.info() | {
        "live_added_kept": len(kept),
        "live_deleted_kept": catalogue_deleted,
        "warnings": warnings,
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    index.close()
    (config.paths.index / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def previous_live_changes(config: Config) -> tuple[LiveChanges, list[str]]:
    """The live changes of the index in place (none without one), and a warning when its database cannot be read."""
    try:
        return read_live_changes(config.paths.index), []
    except IndexStateError as exc:
        return LiveChanges(), [f"{exc}: listings added or deleted through the API since it was built are not kept"]


def embed_live_listings(
    config: Config, added: list[tuple[Listing, str | None]], half_dim: int
) -> tuple[list[tuple[Listing, str | None, np.ndarray, Terms | None]], list[tuple[str, str]]]:
    """Listings added through the API, embedded by the current models from their stored photos and
    text as `POST /listings` embeds them: (listing, text, vector, words) for each kept, and
    (product id, reason) for each that no longer can be (no photo left and no known word)."""
    if not added:
        return [], []
    from combined_model.inference import Predictor
    from retrieval.query import listing_entry
    from retrieval.terms import TermWeights

    predictor = Predictor.load(config)
    term_weights = TermWeights.load(config, predictor.tfidf)
    store = PhotoStore.for_config(config)
    kept, dropped = [], []
    for listing, text in tqdm(added, desc="embed listings added live", unit="listing"):
        photos, image_ids = [], []
        for image_id in listing.image_ids:
            path = store.path(image_id)
            earlier = None if path else store.added_at_another_size(image_id)
            if path is None and earlier is None:
                continue  # a photo gone from the store: the listing keeps the others
            try:
                photos.append(clean_photo(path or earlier, config.data.image_size, config.data.max_image_pixels))
            except ImageError:
                continue  # or unreadable
            if earlier is not None:  # stored at another data.image_size: kept at this one too
                store.add(photos[-1], image_id)
            image_ids.append(image_id)
        if not photos and not text:
            dropped.append((listing.product_id, "none of its photos is left and it has no text"))
            continue
        try:
            image_vec, text_vec, words = listing_entry(predictor.predict(photos, text, "combined"), term_weights)
        except ValueError as exc:
            dropped.append((listing.product_id, str(exc)))
            continue
        kept.append((replace(listing, image_ids=image_ids), text, listing_vector(image_vec, text_vec, half_dim), words))
    return kept, dropped


def evaluate_retrieval(config: Config, k: int | None = None) -> dict:
    """Test listings as queries against an index of the train and validation listings.

    Reports same-root-category precision@k per query modality, and the same for the listing's full
    category path (e.g. "Video Games & Consoles / Consoles / PS4": is it the same kind of item?), how often a photo's nearest other
    photo (in an index of every photo) belongs to the same product, and search latency without
    the model, on an index of every listing with the query listing excluded. Writes the figures
    beside the JSON: precision by modality, and a gallery of queries with their results. k defaults
    to `IndexConfig.default_k`."""
    k = config.index.k_or_default(k)
    products = load_product_embeddings(config)
    split = products.listings["split"].to_numpy()
    catalogue = products.subset(np.isin(split, ["train", "val"]) & (products.has_image | products.has_text))
    queries = products.subset(split == "test")
    report: dict = {
        "k": k,
        "catalogue": len(catalogue.listings),
        "test_listings": len(queries.listings),
        "chance_precision": _chance(catalogue.listings["root"]),
        "chance_path_precision": _chance(catalogue.listings["category"]),
    }
    with tempfile.TemporaryDirectory(dir=_scratch(config)) as directory:
        with ListingIndex.build(directory, catalogue.vectors(), catalogue.listings.to_dict("records"), config.index, catalogue.terms) as index:
            for mode, modalities in MODES.items():
                precision, path_precision, _ = _query_all(index, queries, modalities, k, exclude_self=False)
                report[f"precision@{k}_{mode}"] = round(float(np.mean(precision)), 4) if precision else None
                report[f"path_precision@{k}_{mode}"] = round(float(np.mean(path_precision)), 4) if precision else None
                report[f"queries_{mode}"] = len(precision)
            examples = example_searches(index, queries, np.random.default_rng(config.data.seed))
    report |= other_photo_rate(products)

    indexed = products.subset(products.has_image | products.has_text)
    with tempfile.TemporaryDirectory(dir=_scratch(config)) as directory:
        with ListingIndex.build(directory, indexed.vectors(), indexed.listings.to_dict("records"), config.index, indexed.terms) as index:
            report["latency_index_size"] = len(index)
            for mode, modalities in MODES.items():
                _, _, latency_ms = _query_all(index, queries, modalities, k, exclude_self=True)
                report[f"latency_ms_{mode}"] = _percentiles(latency_ms)
            _, _, latency_ms = _query_all(index, queries, MODES["both"], k, exclude_self=True, same_root_only=True)
            report["latency_ms_both_category_filter"] = _percentiles(latency_ms)
    config.paths.reports.mkdir(parents=True, exist_ok=True)
    (config.paths.reports / EVALUATION_FILE).write_text(json.dumps(report, indent=2))
    plot_precision(report, config.paths.reports / PRECISION_FIGURE)
    plot_examples(examples, PhotoStore.for_config(config), config.paths.reports / EXAMPLES_FIGURE)
    return report


def example_searches(index: ListingIndex, queries: ProductEmbeddings, rng: np.random.Generator, n: int = 6, k: int = 5) -> list[Example]:
    """What the index returns for `n` query listings with a photo and a text, drawn by `pick_examples`."""
    usable = np.flatnonzero(queries.has_image & queries.has_text)
    rows = usable[pick_examples(queries.listings["root"].iloc[usable].tolist(), rng, n)] if len(usable) else []
    examples = []
    for i in rows:
        listing = queries.listings.iloc[i]
        hits = _search_as(index, queries, i, MODES["both"], k, exclude_self=False).hits
        examples.append(Example(listing["title"], listing["root"], listing["image_ids"][0], hits))
    return examples


def format_build(summary: dict) -> str:
    lines = [
        f"index: {summary['count']:,} listings ({summary['without_image']:,} without a photo, {summary['without_text']:,} without a text), "
        f"{summary['dim']}-d, {summary['kind']}, built in {summary['wall_time_s']} s"
    ]
    if summary.get("live_added_kept") or summary.get("live_deleted_kept"):
        lines.append(
            f"  kept from the index it replaces: {summary['live_added_kept']:,} listing(s) added through the API (embedded by the "
            f"current models), {summary['live_deleted_kept']:,} catalogue listing(s) deleted through the API left out"
        )
    lines += [f"  warning: {warning}" for warning in summary.get("warnings", [])]
    return "\n".join(lines)


def format_evaluation(report: dict) -> str:
    """`evaluate_retrieval`'s figures as a few lines for the command line."""
    k = report["k"]
    lines = [
        f"retrieval: {report['test_listings']:,} test listings against an index of the {report['catalogue']:,} train + validation listings",
        f"  precision@{k} of the same root category (chance {report['chance_precision']:.3f}) and of the same full category path "
        f"(chance {report['chance_path_precision']:.3f}); search latency without the model:",
    ]
    for mode in MODES:
        precision, latency = report[f"precision@{k}_{mode}"], report[f"latency_ms_{mode}"]
        if precision is not None:
            lines.append(
                f"  {mode:<6} root {precision:.3f}  path {report[f'path_precision@{k}_{mode}']:.3f}  "
                f"({report[f'queries_{mode}']:,} queries; p50 {latency['p50']} ms, p99 {latency['p99']} ms)"
            )
    if report["other_photo_nn_rate"] is not None:
        lines.append(f"  a product's other photo is its photo's nearest neighbour for {report['other_photo_nn_rate']:.3f} of {report['other_photo_queries']:,} photos")
    return "\n".join(lines)


def _chance(labels: pd.Series) -> float:
    """Precision@k of results drawn at random from the catalogue: the sum of squared label shares."""
    shares = labels.value_counts(normalize=True).to_numpy()
    return round(float(np.sum(shares**2)), 4)


def other_photo_rate(products: ProductEmbeddings) -> dict:
    """Over the photos of test products with two or more photos: how often the photo's nearest
    neighbour among every photo of the train, validation and test products (itself left out)
    is another photo of the same product."""
    frame = products.listings
    owner = [
        (image_id, pid, split)
        for pid, split, image_ids in zip(frame["product_id"], frame["split"], frame["image_ids"])
        for image_id in image_ids
        if image_id in products.photo_embeddings
    ]
    if not owner:
        return {"other_photo_nn_rate": None, "other_photo_queries": 0}
    vectors = unit_rows(np.stack([products.photo_embeddings[image_id] for image_id, _, _ in owner]))
    product_of = np.array([pid for _, pid, _ in owner])
    photos_of = pd.Series(product_of).value_counts()
    query_rows = np.array([i for i, (_, pid, split) in enumerate(owner) if split == "test" and photos_of[pid] >= 2], dtype=np.int64)
    if not len(query_rows):
        return {"other_photo_nn_rate": None, "other_photo_queries": 0}
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    _, neighbours = index.search(vectors[query_rows], 2)
    nearest = np.where(neighbours[:, 0] == query_rows, neighbours[:, 1], neighbours[:, 0])  # leave the query photo out
    rate = float(np.mean(product_of[nearest] == product_of[query_rows]))
    return {"other_photo_nn_rate": round(rate, 4), "other_photo_queries": int(len(query_rows)), "other_photo_index_size": int(len(vectors))}


def _query_all(
    index: ListingIndex, queries: ProductEmbeddings, modalities: tuple[str, ...], k: int, exclude_self: bool, same_root_only: bool = False
) -> tuple[list[float], list[float], list[float]]:
    """Same-root precision@k, same-category-path precision@k and latency (ms) of every query listing
    that has the given modalities (a query with text carries its words, as the API's do)."""
    usable = np.ones(len(queries.listings), bool)
    if IMAGE in modalities:
        usable &= queries.has_image
    if TEXT in modalities:
        usable &= queries.has_text
    precision, path_precision, latency_ms = [], [], []
    purpose = "latency, same-root filter" if same_root_only else "latency" if exclude_self else "precision"  # the progress bar's label
    for i in tqdm(np.flatnonzero(usable), desc=f"{purpose}: queries by {' + '.join(modalities)}", unit="query", leave=False):
        listing = queries.listings.iloc[i]
        start = time.perf_counter()
        result = _search_as(index, queries, i, modalities, k, exclude_self, same_root_only)
        latency_ms.append((time.perf_counter() - start) * 1000)
        precision.append(np.mean([hit.root == listing["root"] for hit in result.hits]) if result.hits else 0.0)
        path_precision.append(np.mean([hit.category == listing["category"] for hit in result.hits]) if result.hits else 0.0)
    return precision, path_precision, latency_ms


def _search_as(
    index: ListingIndex, queries: ProductEmbeddings, i: int, modalities: tuple[str, ...], k: int, exclude_self: bool, same_root_only: bool = False
) -> SearchResult:
    """Query listing `i` by the given modalities, with its words when it queries by text, as the API's queries do."""
    listing = queries.listings.iloc[i]
    return index.search(
        queries.image[i] if IMAGE in modalities else None,
        queries.text[i] if TEXT in modalities else None,
        k=k,
        category=listing["root"] if same_root_only else None,
        exclude_product_id=listing["product_id"] if exclude_self else None,
        terms=queries.terms[i] if TEXT in modalities else None,
    )


def _percentiles(latency_ms: list[float]) -> dict | None:
    return latency_percentiles(latency_ms) | {"queries": len(latency_ms)} if latency_ms else None


def _scratch(config: Config) -> Path:
    config.paths.cache.mkdir(parents=True, exist_ok=True)
    return config.paths.cache
