"""`fbm evaluate`: score every model on the test split or on any marketplace-format directory.

Models: the image and text branches, early fusion (`combined`), late fusion (with the weights
validation chose, the TF-IDF model's among them) and the two baselines (TF-IDF + SVM on text,
HOG + SVM on photos). Figures per product (mean over a product's photos) and per photo; the
report holds a confusion matrix per model, per-class F1 bars, a modality comparison chart and
the training curves.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from combined_model.features import check_same_categories
from combined_model.fusion import EARLY, LATE, METRICS_KEY
from combined_model.inference import MODEL_FILE as FUSION_FILE, BatchOutputs, Predictor, PreparedListing
from image_model.baseline import WEIGHTS_FILE as HOG_WEIGHTS_FILE, HogSvmBaseline
from image_model.inference import MODEL_FILE as IMAGE_MODEL_FILE
from listings.artifacts import sha256_file, write_atomic
from listings.config import Config
from listings.data import MissingColumnsError, dataset_photos, listing_text, photo_path, read_dataset, without_controls, write_table
from listings.images import ImageError, clean_photo, file_digest
from listings.metrics import NO_ANSWER, answers, counted, figure, no_answer_where_absent, per_class, per_product, plural, summarise
from listings.prepare import Prepared, load_prepared
from text_model.baseline import ARRAYS_FILE as TFIDF_ARRAYS_FILE, BASELINE_DIR as TFIDF_DIR, TfidfSvmBaseline
from text_model.inference import MODEL_FILE as TEXT_MODEL_FILE

MODELS = ("image", "text", "combined", "late_fusion", "tfidf_baseline", "hog_svm_baseline")
PREDICTIONS_FILE = "predictions.csv"
METRICS_FILE = "metrics.json"
LATE_INPUTS = ("image", "text", "tfidf_baseline")  # the models late fusion mixes
BATCH_LISTINGS = 32
SEEN_IDS_NAMED = 5  # product ids a warning names; predictions.csv marks them all


@dataclass
class EvalSet:
    listings: pd.DataFrame  # product_id, title, description, image_ids, label (known categories only)
    image_dir: Path
    unknown_categories: dict[str, int]
    source: str
    seen_ids: list[str] = field(default_factory=list)  # listings of the training or validation split among them
    rows_dropped: dict[str, int] = field(default_factory=dict)  # CSV rows left out, by reason (`read_dataset`)

    def check_not_empty(self) -> None:
        """A ValueError saying why no listing is left to score."""
        if len(self.listings):
            return
        reasons = [f"categories the model does not know: {counted(self.unknown_categories)}"] if self.unknown_categories else []
        reasons += [f"CSV rows left out: {counted(self.rows_dropped)}"] if self.rows_dropped else []
        raise ValueError(f"{self.source}: no listing to evaluate" + (f" ({'; '.join(reasons)})" if reasons else ""))


def held_out_split(prepared: Prepared) -> EvalSet:
    """The test split, its photos read from the cleaned-image cache `fbm prepare` wrote (not from
    `data.data_dir`, which may name another dataset than the one prepared)."""
    return EvalSet(prepared.split("test"), prepared.image_dir, {}, "test split")


def directory_set(prepared: Prepared, data_dir: str) -> EvalSet:
    """Every listing of a marketplace-format directory; unknown categories are counted, not fatal."""
    try:
        dataset = read_dataset(data_dir, metadata=False)  # refuses a file, or a directory without its two CSV files
    except MissingColumnsError as exc:
        if "category" not in exc.missing:
            raise
        raise MissingColumnsError(f"{exc}. Evaluating needs each listing's category; `fbm classify --data {data_dir}` answers listings without one", exc.missing) from None
    image_dir = images_of(data_dir)
    listings = dataset.listings
    listings["label"] = prepared.encoder.encode_many(listings["root"])
    unknown = {root: int(count) for root, count in listings.loc[listings["label"] < 0, "root"].value_counts().items()}
    known = listings[listings["label"] >= 0].reset_index(drop=True)
    return EvalSet(known, image_dir, unknown, data_dir, ids_seen_in_training(known, prepared, image_dir), dict(dataset.dropped))


def images_of(data_dir: str) -> Path:
    """The photo folder of a marketplace-format directory; a ValueError when it has none."""
    image_dir = dataset_photos(data_dir)
    if not image_dir.is_dir():
        raise ValueError(f"{image_dir} not found: a marketplace-format directory holds Products.csv, Images.csv and images/")
    return image_dir


def ids_seen_in_training(listings: pd.DataFrame, prepared: Prepared, image_dir: Path) -> list[str]:
    """The product ids of the `listings` the models trained or were chosen on: the same product id as a training
    or validation listing, or a photo file identical to one of theirs (a listing posted again gets
    a new id; `fbm prepare` keeps such products in one split for the same reason)."""
    fitted = prepared.listings[prepared.listings["split"] != "test"]
    fitted_ids = set(fitted["product_id"])
    fitted_photos = {digest for digests in fitted["image_digests"] for digest in digests}

    def seen(product_id: str, image_ids: list[str]) -> bool:
        paths = (photo_path(image_dir, image_id) for image_id in image_ids)
        return product_id in fitted_ids or any(path.is_file() and file_digest(path) in fitted_photos for path in paths)

    return [pid for pid, ids in zip(listings["product_id"], listings["image_ids"]) if seen(pid, ids)]


def listing_batches(
    listings: pd.DataFrame, image_dir: Path | None, config: Config, desc: str
) -> Iterator[tuple[int, list[list[Image.Image]], list[str], dict[str, str]]]:
    """The listings `BATCH_LISTINGS` at a time, photos read per batch (a large directory is not held
    in memory): (the batch's first row, each listing's cleaned photos, none without `image_dir`; its
    text; the photos skipped, with their reasons)."""
    texts = [listing_text(title, description) for title, description in zip(listings["title"], listings["description"])]
    for start in tqdm(range(0, len(listings), BATCH_LISTINGS), desc=desc, unit="batch"):
        image_ids = listings["image_ids"].iloc[start : start + BATCH_LISTINGS]
        if image_dir is None:
            photos, skipped = [[] for _ in image_ids], {}
        else:
            photos, skipped = load_photos(image_ids, image_dir, config.data.image_size, config.data.max_image_pixels)
        yield start, photos, texts[start : start + BATCH_LISTINGS], skipped


def load_photos(image_ids_per_listing: pd.Series, image_dir: Path, size: int, max_pixels: int) -> tuple[list[list[Image.Image]], dict[str, str]]:
    """Cleaned photos per listing, and the reasons photos were skipped."""
    photos, skipped = [], {}
    for image_ids in image_ids_per_listing:  # a batch's: `listing_batches` shows the progress
        mine = []
        for image_id in image_ids:
            try:
                mine.append(clean_photo(photo_path(image_dir, image_id), size, max_pixels))
            except ImageError as exc:
                skipped[image_id] = exc.reason
        photos.append(mine)
    return photos, skipped


def listing_tfidf(tfidf: TfidfSvmBaseline, prepared: list[PreparedListing], out: BatchOutputs) -> np.ndarray:
    """The TF-IDF model's probabilities per row of `out`: those `Predictor.branch_outputs` computed
    (beside a photo, when late fusion weighs them), the other listings' scored here from the tokens
    `Predictor.prepare` made (an empty text: no tokens)."""
    probs = out.tfidf_probs.copy()
    missing = [i for i, p in enumerate(prepared) if p.tfidf_tokens is None]
    if missing:
        for i, row in zip(missing, tfidf.predict_proba_tokens([prepared[i].tokens or [] for i in missing])):
            probs[out.owner == i] = row
    return probs


def row_probabilities(
    config: Config, eval_set: EvalSet, predictor: Predictor
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, str]]:
    """Per-row probabilities of every model (a row: one photo of a listing, or the listing if it has none)."""
    hog = HogSvmBaseline.load(config)
    tfidf = predictor.tfidf or TfidfSvmBaseline.load(config)  # the served late fusion's own, when it has one
    parts: dict[str, list[np.ndarray]] = {name: [] for name in MODELS}
    owners, has_image, skipped = [], [], {}
    for start, photos, texts, batch_skipped in listing_batches(eval_set.listings, eval_set.image_dir, config, "evaluate"):
        skipped |= batch_skipped
        items = list(zip(photos, texts))
        prepared = [predictor.prepare(images, text, require_input=False) for images, text in items]
        out = predictor.branch_outputs(prepared)
        tfidf_probs = listing_tfidf(tfidf, prepared, out)
        parts["image"].append(no_answer_where_absent(out.image_probs, out.has_image))
        parts["text"].append(no_answer_where_absent(out.text_probs, out.has_text))
        parts["combined"].append(predictor.fuse(out, EARLY, None))
        parts["late_fusion"].append(predictor.fuse(out, LATE, tfidf_probs))
        parts["tfidf_baseline"].append(tfidf_probs)
        hog_probs = np.full((len(out.owner), len(predictor.classes)), np.nan, np.float32)  # no photo: no answer
        batch_photos = [p for images, _ in items for p in images]
        if batch_photos:
            hog_probs[out.has_image] = hog.predict_proba(batch_photos)
        parts["hog_svm_baseline"].append(hog_probs)
        owners.append(out.owner + start)
        has_image.append(out.has_image)
    return {name: np.concatenate(p) for name, p in parts.items()}, np.concatenate(owners), np.concatenate(has_image), skipped


def evaluate(config: Config, data_dir: str | None = None) -> tuple[dict, pd.DataFrame]:
    """The figures (`METRICS_FILE`) and one row per listing scored (`listing_predictions`)."""
    start = time.perf_counter()
    prepared = load_prepared(config)
    classes = prepared.encoder.classes  # the labels' encoding: the models' own, or their indices name other categories
    predictor = Predictor.load(config)
    check_same_categories("served model", predictor.classes, classes, config)
    eval_set = directory_set(prepared, data_dir) if data_dir else held_out_split(prepared)
    eval_set.check_not_empty()
    labels = eval_set.listings["label"].to_numpy()
    rows, owner, has_image, skipped = row_probabilities(config, eval_set, predictor)
    n = len(labels)
    models, per_image, per_class_f1, confusions, product_probs = {}, {}, {}, {}, {}
    for name, probs in rows.items():
        product_probs[name] = per_product(probs, owner, n)
        models[name] = summarise(labels, product_probs[name])
        # no photo to score: null figures (a NaN would make the metrics files invalid JSON)
        per_image[name] = summarise(labels[owner][has_image], probs[has_image]) if has_image.any() else dict.fromkeys(models[name])
        per_class_f1[name] = per_class(labels, product_probs[name], classes)
        confusions[name] = confusion(labels, answers(product_probs[name]), len(classes)).tolist()
    product_pred = {name: answers(probs) for name, probs in product_probs.items()}
    served = METRICS_KEY[predictor.method]  # the model `/combined` answers with
    photos_scored = np.bincount(owner[has_image], minlength=n)
    result = {
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "model_versions": model_versions(config),
        "late_weights": predictor.late.to_json(),  # late fusion's, as validation chose them
        "source": eval_set.source,
        "n_products": int(n),
        "n_images": int(has_image.sum()),
        "models": models,
        "served": served,
        # no choice between these models' answers, however clever, can be more accurate than this
        "either_branch_right": share_any_right(product_pred, labels, ("image", "text")),
        "any_late_input_right": share_any_right(product_pred, labels, LATE_INPUTS),
        "per_image": per_image,
        "per_class": per_class_f1,
        "confusion": confusions,
        "classes": classes,
        "unknown_categories": eval_set.unknown_categories,
        "rows_dropped": eval_set.rows_dropped,
        "seen_in_training": len(eval_set.seen_ids),
        "warnings": fairness_warnings(eval_set, n),
        "skipped_images": dict(Counter(skipped.values())),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    predictions = listing_predictions(eval_set.listings, classes, product_probs, served, photos_scored)
    predictions["seen_in_training"] = predictions["product_id"].isin(eval_set.seen_ids)
    return result, predictions


def model_versions(config: Config) -> dict[str, str]:
    """What identifies each trained model scored, so that a stale report can be told apart: the
    first 12 hex digits of the SHA-256 of its weights file (late fusion has none: it mixes the others)."""
    paths = config.paths
    weights = {
        "image": paths.image_model / IMAGE_MODEL_FILE,
        "text": paths.text_model / TEXT_MODEL_FILE,
        "combined": paths.combined_model / FUSION_FILE,
        "tfidf_baseline": paths.text_model / TFIDF_DIR / TFIDF_ARRAYS_FILE,
        "hog_svm_baseline": paths.image_model / HOG_WEIGHTS_FILE,
    }
    return {name: sha256_file(path)[:12] for name, path in weights.items()}


def listing_predictions(listings: pd.DataFrame, classes: list[str], product_probs: dict[str, np.ndarray], served: str, photos: np.ndarray) -> pd.DataFrame:
    """One row per listing scored: its category, every model's answer, and the served model's
    probability for its answer and for the true category; the table to read the models' mistakes from."""
    labels = listings["label"].to_numpy()
    served_probs = product_probs[served]
    frame = pd.DataFrame({
        "product_id": listings["product_id"].to_numpy(),
        "title": listings["title"].to_numpy(),
        "category": listings["category"].to_numpy(),
        "root": [classes[label] for label in labels],  # what the models answer: a root category
        "photos_scored": photos,
    })
    for name, probs in product_probs.items():
        frame[name] = [classes[i] if i != NO_ANSWER else "" for i in answers(probs)]  # no input: no answer
    frame["served_correct"] = served_probs.argmax(axis=1) == labels
    frame["served_confidence"] = served_probs.max(axis=1).round(4)
    frame["served_p_root"] = served_probs[np.arange(len(labels)), labels].round(4)
    return frame


def fairness_warnings(eval_set: EvalSet, n_products: int) -> list[str]:
    """What makes these figures less than a fair test, in words."""
    seen = eval_set.seen_ids
    if not seen:
        return []
    named = ", ".join(seen[:SEEN_IDS_NAMED]) + (", …" if len(seen) > SEEN_IDS_NAMED else "")
    return [
        f"{len(seen)} of these {n_products} listings {'is' if len(seen) == 1 else 'are'} in the splits the models trained on or were "
        "chosen on (train or validation: the same product id or an identical photo): their figures flatter the models "
        f"(product ids {named}; every one is marked in predictions.csv's seen_in_training column)"
    ]


def confusion(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true, answered) class pairs; a listing the model gave no answer (NO_ANSWER) is left out."""
    answered = pred != NO_ANSWER
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels[answered], pred[answered]), 1)
    return matrix


def share_any_right(predictions: dict[str, np.ndarray], labels: np.ndarray, models: tuple[str, ...]) -> float:
    """The share of listings that at least one of `models` classifies correctly."""
    return float(np.mean(np.any([predictions[name] == labels for name in models], axis=0)))


def format_table(result: dict) -> str:
    lines = [
        f"{result['source']}: {plural(result['n_products'], 'product')}, {plural(result['n_images'], 'photo')}",
        f"{'model':<19} {'accuracy':>9} {'macro-F1':>9} {'top-3':>7}   {'photo acc':>9}",
    ]
    for name in MODELS:
        m, img = result["models"][name], result["per_image"][name]
        served = "   (served)" if name == result["served"] else ""
        lines.append(f"{name:<19} {m['accuracy']:>9.3f} {m['macro_f1']:>9.3f} {m['top3']:>7.3f}   {figure(img['accuracy'], 9)}{served}")
    lines.append(f"{'either branch right':<19} {result['either_branch_right']:>9.3f}   (the ceiling of any choice between image and text)")
    lines.append(f"{'any late input':<19} {result['any_late_input_right']:>9.3f}   (the same for image, text and the TF-IDF model)")
    lines += [f"warning: {warning}" for warning in result["warnings"]]
    if result["unknown_categories"]:
        lines.append(f"skipped listings with categories the model does not know: {counted(result['unknown_categories'])}")
    if result.get("rows_dropped"):
        lines.append(f"CSV rows left out: {counted(result['rows_dropped'])}")
    if result["skipped_images"]:
        lines.append(f"skipped photos: {counted(ImageError.in_words(result['skipped_images']))}")
    if result["n_images"] == 0:
        lines.append("no usable photo: the image and HOG models had nothing to see and gave no answer, scored as wrong")
    return "\n".join(lines)


def report_dir(config: Config, data_dir: str | None) -> Path:
    """The reports directory for the test split; a subdirectory of it for any other dataset, named
    for the directory and a digest of its full path, so scoring another directory (even one of the
    same name elsewhere) never overwrites an earlier report. The name's control characters are
    underscores: the folder's name is printed."""
    if not data_dir:
        return config.paths.reports
    resolved = Path(data_dir).resolve()
    name = without_controls(resolved.name, "_")
    return config.paths.reports / f"data-{name}-{hashlib.sha256(os.fsencode(resolved)).hexdigest()[:8]}"


def write_outputs(config: Config, result: dict, predictions: pd.DataFrame, out_dir: Path, json_path: str | None = None) -> Path:
    """metrics.json, predictions.csv, report.md and its figures in `out_dir`; `json_path` gets a copy of the JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / METRICS_FILE, json.dumps(result, indent=2))
    write_table(predictions, out_dir / PREDICTIONS_FILE, ["title", "category"])
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))
    from combined_model.report import write_report

    return write_report(config, result, predictions, out_dir)
