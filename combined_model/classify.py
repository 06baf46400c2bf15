"""`fbm classify --data DIR`: every listing of a marketplace-format directory classified, into a CSV.

Meant for new listings, which need no category: each gets the answer the API's `/combined` (or
`/image`, `/text`) would give it, computed in batches, with the runner-up and the inputs used. A
listing left with no usable photo and no text stays in the table with an empty answer.
"""
from __future__ import annotations

from collections import Counter

import pandas as pd
from tqdm import tqdm

from combined_model.evaluate import BATCH_LISTINGS, images_of, load_photos
from combined_model.inference import Prediction, Predictor
from listings.config import Config
from listings.data import listing_text, read_dataset

CLASSIFIED_FILE = "classified.csv"


def classify_directory(config: Config, data_dir: str, mode: str = "combined") -> tuple[pd.DataFrame, dict]:
    """One row per listing of `data_dir` (`answer_rows`), and a summary of what was read and answered."""
    dataset = read_dataset(data_dir, labelled=False)  # refuses a file, or a directory without its two CSV files
    listings = dataset.listings
    if not len(listings):
        left_out = f" (CSV rows left out: {dict(dataset.dropped)})" if dataset.dropped else ""
        raise ValueError(f"{data_dir}: no listing to classify{left_out}")
    image_dir = images_of(data_dir)
    predictor = Predictor.load(config)
    photos, skipped = load_photos(listings["image_ids"], image_dir, config.data.image_size, config.data.max_image_pixels)
    texts = [listing_text(title, description) for title, description in zip(listings["title"], listings["description"])]
    answers: list[Prediction] = []
    for start in tqdm(range(0, len(listings), BATCH_LISTINGS), desc="classify", unit="batch"):
        chunk = zip(photos[start : start + BATCH_LISTINGS], texts[start : start + BATCH_LISTINGS])
        answers += predictor.predict_prepared([predictor.prepare(images, text, mode, require_input=False) for images, text in chunk])
    frame = answer_rows(listings, answers)
    frame["photos_used"] = [len(mine) for mine in photos]
    frame["photos_skipped"] = [sum(image_id in skipped for image_id in ids) for ids in listings["image_ids"]]
    answered = frame[frame["predicted"] != ""]
    summary = {
        "source": str(data_dir),
        "mode": mode,
        "n_listings": len(frame),
        "by_inputs": {inputs or "none": int(n) for inputs, n in frame["modalities"].value_counts().items()},
        "predicted": {name: int(n) for name, n in answered["predicted"].value_counts().items()},
        "rows_dropped": dict(dataset.dropped),
        "skipped_images": dict(Counter(skipped.values())),
    }
    return frame, summary


def answer_rows(listings: pd.DataFrame, answers: list[Prediction]) -> pd.DataFrame:
    """The listings' ids, titles and given categories beside the answers: the category, its
    probability, the runner-up's, and the inputs used (empty where the listing had none)."""
    def top(rank: int, field: str) -> list:
        return [(getattr(a, field)[rank] if a.modalities else None) for a in answers]

    return pd.DataFrame({
        "product_id": listings["product_id"].to_numpy(),
        "title": listings["title"].to_numpy(),
        "category": listings["category"].to_numpy(),  # as given: empty for a new listing
        "predicted": [name or "" for name in top(0, "classes")],
        "probability": [None if p is None else round(p, 4) for p in top(0, "probabilities")],
        "runner_up": [name or "" for name in top(1, "classes")],
        "runner_up_probability": [None if p is None else round(p, 4) for p in top(1, "probabilities")],
        "modalities": ["+".join(a.modalities) for a in answers],
        "low_confidence": [bool(a.low_confidence) for a in answers],
    })


def format_summary(summary: dict) -> str:
    inputs = ", ".join(f"{n:,} from {name.replace('+', ' + ')}" for name, n in summary["by_inputs"].items() if name != "none")
    lines = [f"{summary['source']}: {summary['n_listings']:,} listings classified by the {summary['mode']} model ({inputs or 'none answered'})"]
    if "none" in summary["by_inputs"]:
        lines.append(f"  {summary['by_inputs']['none']:,} with no usable photo or text: listed with no answer")
    lines += [f"  {name:<36} {n:>6,}" for name, n in summary["predicted"].items()]
    if summary["rows_dropped"]:
        lines.append(f"  CSV rows left out: {summary['rows_dropped']}")
    if summary["skipped_images"]:
        lines.append(f"  photos skipped: {summary['skipped_images']}")
    return "\n".join(lines)
