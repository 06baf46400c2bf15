"""`fbm classify --data DIR`: every listing of a marketplace-format directory classified, into a CSV.

Meant for new listings, which need no category: each gets the answer the API's `/combined` (or
`/image`, `/text`) would give it, computed in batches, with the runner-up and the inputs used. A
listing left with no usable photo and no text stays in the table with an empty answer.
"""
from __future__ import annotations

from collections import Counter

import pandas as pd

from combined_model.evaluate import images_of, listing_batches
from combined_model.inference import Prediction, Predictor
from listings.config import Config
from listings.data import MissingFileError, read_dataset
from listings.images import ImageError
from listings.metrics import counted

CLASSIFIED_FILE = "classified.csv"
NEEDS = {"combined": "no usable photo or text", "image": "no usable photo", "text": "no text"}  # a listing left without an answer


def classified_file(mode: str) -> str:
    """The default CSV name of a mode, so one mode's answers never replace another's."""
    return CLASSIFIED_FILE if mode == "combined" else f"classified-{mode}.csv"


def classify_directory(config: Config, data_dir: str, mode: str = "combined") -> tuple[pd.DataFrame, dict]:
    """One row per listing of `data_dir` (`answer_rows`), and a summary of what was read and answered.
    Photos are read a batch at a time (a large directory is not held in memory), every photo of a
    listing, as `fbm evaluate` reads them (the command line takes more than the API's
    `serve.max_photos`, as it takes longer texts); none in text mode."""
    text_alone = "`--mode text` answers from the listings' text alone and needs no photos"
    try:  # refuses a file, or a directory without Products.csv (or without Images.csv, unless in text mode)
        dataset = read_dataset(data_dir, labelled=False, metadata=False, photos=mode != "text")
    except MissingFileError as exc:
        if exc.path.name != "Images.csv":
            raise
        raise MissingFileError(f"{exc}; {text_alone}", exc.path) from None
    listings = dataset.listings
    if not len(listings):
        left_out = f" (CSV rows left out: {counted(dataset.dropped)})" if dataset.dropped else ""
        raise ValueError(f"{data_dir}: no listing to classify{left_out}")
    try:
        image_dir = images_of(data_dir) if mode != "text" else None
    except ValueError as exc:
        raise ValueError(f"{exc}; {text_alone}") from None
    predictor = Predictor.load(config)
    answers: list[Prediction] = []
    photos_used, skipped = [], {}
    for _, photos, texts, batch_skipped in listing_batches(listings, image_dir, config, "classify"):
        skipped |= batch_skipped
        photos_used += [len(mine) for mine in photos]
        prepared = [predictor.prepare(images, text, mode, require_input=False) for images, text in zip(photos, texts)]
        answers += predictor.predict_prepared(prepared)
    frame = answer_rows(listings, answers)
    frame["photos_used"] = photos_used
    # a photo whose file could not be cleaned, or whose row in Images.csv names no file (`../x`)
    frame["photos_skipped"] = [
        sum(image_id in skipped for image_id in ids) + dataset.unusable_photo_rows[product_id]
        for product_id, ids in zip(listings["product_id"], listings["image_ids"])
    ]
    answered = frame[frame["predicted"] != ""]
    summary = {
        "source": str(data_dir),
        "mode": mode,
        "n_listings": len(frame),
        "answered": len(answered),
        "by_inputs": {inputs: int(n) for inputs, n in answered["modalities"].value_counts().items()},
        "low_confidence": int(answered["low_confidence"].sum()),
        "predicted": {name: int(n) for name, n in answered["predicted"].value_counts().items()},
        "rows_dropped": dict(dataset.dropped),
        "rows_dropped_examples": dataset.dropped_examples(),
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
        "low_confidence": [bool(a.low_confidence) if a.modalities else None for a in answers],  # empty where no answer
    })


def format_summary(summary: dict) -> str:
    model = "served (photo + text)" if summary["mode"] == "combined" else summary["mode"]
    inputs = ", ".join(f"{n:,} from {name.replace('+', ' + ')}" for name, n in summary["by_inputs"].items())
    lines = [f"{summary['source']}: {summary['answered']:,} of {summary['n_listings']:,} listings answered by the {model} model" + (f" ({inputs})" if inputs else "")]
    if summary["answered"] < summary["n_listings"]:
        lines.append(f"  {summary['n_listings'] - summary['answered']:,} with {NEEDS[summary['mode']]}: listed with no answer")
    if summary["low_confidence"]:
        lines.append(f"  {summary['low_confidence']:,} answered with low confidence (a text with no word the model knows, and no photo)")
    if summary["rows_dropped"]:
        lines.append("  CSV rows left out, by id (a product's: no row in the answers; a photo's: the photo not used):")
        lines += [f"    {reason}: {examples}" for reason, examples in summary["rows_dropped_examples"].items()]
    if summary["skipped_images"]:
        where = " (a photo is read as images/<its id>.jpg, named exactly so: not .JPG or .jpeg)" if "missing" in summary["skipped_images"] else ""
        lines.append(f"  photos skipped: {counted(ImageError.in_words(summary['skipped_images']))}{where}")
    if summary["predicted"]:
        lines.append("predicted:")
        lines += [f"  {name:<36} {n:>6,}" for name, n in summary["predicted"].items()]
    return "\n".join(lines)
