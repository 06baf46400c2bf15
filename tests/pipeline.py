"""A tiny but real trained pipeline for end-to-end tests: a subset of ../shared/fbm, every stage run.

`subset_dataset` writes a marketplace-format directory from some of the real listings;
`tiny_settings` shrinks every stage (64 px photos, one or two epochs) so that
`train_pipeline` (prepare → image → text → combined → index) finishes in about a minute on 2
cores. The models learn little: the tests check wiring, artifacts and contracts, not accuracy.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from listings.config import Config

SHARED_DATA = Path(Config().data.data_dir)
TINY_SETTINGS = (
    "image.input_size=64",
    "image.views=1",
    "image.epochs=2",
    "image.patience=2",
    "image.trunk_batch_size=64",
    "text.w2v_epochs=2",
    "text.w2v_min_count=1",
    "text.epochs=2",
    "text.max_tokens=64",
    "fusion.epochs=5",
)


def have_shared_data() -> bool:
    return (SHARED_DATA / "Products.csv").is_file() and (SHARED_DATA / "images").is_dir()


def subset_dataset(target: Path, per_class: int, skip_per_class: int = 0, source: Path = SHARED_DATA) -> Path:
    """Write `per_class` listings of each root category (after skipping the first `skip_per_class`)
    with their photos to `target`, in the marketplace format (unnamed index column, '\\n' rows)."""
    products = pd.read_csv(source / "Products.csv", lineterminator="\n", dtype=str, keep_default_na=False)
    images = pd.read_csv(source / "Images.csv", lineterminator="\n", dtype=str, keep_default_na=False)
    root = products["category"].str.split("/").str[0].str.strip()
    with_photo = products["id"].isin(set(images["product_id"]))
    chosen = products[with_photo].groupby(root[with_photo], sort=True).nth(range(skip_per_class, skip_per_class + per_class))
    chosen_images = images[images["product_id"].isin(set(chosen["id"]))]

    (target / "images").mkdir(parents=True, exist_ok=True)
    chosen.drop(columns=[c for c in chosen.columns if c.startswith("Unnamed")]).to_csv(target / "Products.csv", lineterminator="\n")
    chosen_images.drop(columns=[c for c in chosen_images.columns if c.startswith("Unnamed")]).to_csv(
        target / "Images.csv", lineterminator="\n"
    )
    for image_id in chosen_images["id"]:
        shutil.copyfile(source / "images" / f"{image_id}.jpg", target / "images" / f"{image_id}.jpg")
    return target


def tiny_config(data_dir: Path, artifacts_dir: Path) -> Config:
    config = Config()
    config.data.data_dir = str(data_dir)
    config.data.artifacts_dir = str(artifacts_dir)
    for assignment in TINY_SETTINGS:
        config.override(assignment)
    config.apply_nltk_data()
    return config


def train_pipeline(config: Config) -> dict:
    """Every stage in order, as `fbm train all` and `fbm index` run them; returns their summaries."""
    from combined_model.train import train_combined
    from image_model.train import train_image
    from listings.prepare import prepare
    from retrieval.build import build_index
    from text_model.train import train_text

    return {
        "prepare": prepare(config),
        "image": train_image(config),
        "text": train_text(config),
        "combined": train_combined(config),
        "index": build_index(config),
    }
