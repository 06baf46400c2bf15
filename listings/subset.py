"""A marketplace-format subset of a dataset directory: a few listings per root category, with their photos.

Used for smoke runs (`fbm bench --quick`) and end-to-end tests; the result reads like the original
(an unnamed index column, rows ending in '\\n').
"""
from __future__ import annotations

import shutil
from pathlib import Path

from listings.data import dataset_photos, photo_path, read_raw_csv, split_category


def subset_dataset(source: Path, target: Path, per_class: int, skip_per_class: int = 0) -> Path:
    """Write `per_class` listings with photos of each root category, after the first `skip_per_class`."""
    source, target = Path(source), Path(target)
    products, images = read_raw_csv(source / "Products.csv"), read_raw_csv(source / "Images.csv")  # quirks kept, as the original reads
    root = products["category"].map(lambda path: next(iter(split_category(path)), ""))
    with_photo = products["id"].isin(set(images["product_id"]))
    chosen = products[with_photo].groupby(root[with_photo], sort=True).nth(range(skip_per_class, skip_per_class + per_class))
    chosen_images = images[images["product_id"].isin(set(chosen["id"]))]

    dataset_photos(target).mkdir(parents=True, exist_ok=True)
    for frame, name in ((chosen, "Products.csv"), (chosen_images, "Images.csv")):
        frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed")]).to_csv(target / name, lineterminator="\n")
    for image_id in chosen_images["id"]:
        shutil.copyfile(photo_path(dataset_photos(source), image_id), photo_path(dataset_photos(target), image_id))
    return target
