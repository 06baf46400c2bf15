"""`fbm prepare`: load, clean, encode and split a marketplace dataset into the artifacts directory.

Outputs (see `Paths`): `listings.jsonl` (one clean row per product with its label, split and
usable image ids), `categories.json`, `splits.json`, the cleaned-image cache and a summary.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from listings.artifacts import require_files, write_atomic
from listings.categories import CategoryEncoder
from listings.config import Config, Paths
from listings.data import DatasetError, dataset_photos, read_dataset, read_jsonl, write_jsonl
from listings.images import ImageError, build_clean_cache
from listings.metrics import counted
from listings.splits import SPLITS, group_products, split_products


@dataclass
class Prepared:
    """What every later stage starts from."""

    listings: pd.DataFrame  # LISTING_COLUMNS + label, split, image_digests, skipped_image_ids
    encoder: CategoryEncoder
    image_dir: Path  # cleaned images, `<image id>.jpg`

    def split(self, name: str) -> pd.DataFrame:
        return self.listings[self.listings["split"] == name].reset_index(drop=True)

    def images(self) -> pd.DataFrame:
        """One row per usable image: image_id, image_digest (of its source file), product_id, label, split."""
        rows = self.listings[["product_id", "label", "split", "image_ids", "image_digests"]].explode(["image_ids", "image_digests"])
        rows = rows.dropna(subset=["image_ids"]).rename(columns={"image_ids": "image_id", "image_digests": "image_digest"})
        return rows.reset_index(drop=True)


def load_prepared(config: Config, for_training: bool = False) -> Prepared:
    """The prepared listings; `for_training` refuses them unless there are training and validation products."""
    paths = config.paths
    require_files([paths.listings, paths.categories], "fbm prepare")
    listings = read_jsonl(paths.listings)
    if "image_digests" not in listings.columns:
        raise ValueError(f"{paths.listings} was written by an older `fbm prepare`: run it again")
    prepared = Prepared(
        listings=listings,
        encoder=CategoryEncoder.load(paths.categories),
        image_dir=paths.clean_images(config.data.image_size),
    )
    if for_training:
        sizes = split_sizes(listings)
        if not (sizes["train"] and sizes["val"]):
            raise DatasetError(f"{paths.listings}: {' '.join(split_warnings(sizes))}")
    return prepared


def split_sizes(listings: pd.DataFrame) -> dict[str, int]:
    return {name: int((listings["split"] == name).sum()) for name in SPLITS}


def split_warnings(sizes: dict[str, int]) -> list[str]:
    """What an empty split leaves undone (a category needs 6 products to reach validation, 7 for test)."""
    warnings = []
    if not (sizes["train"] and sizes["val"]):
        warnings.append(
            f"no {'training' if not sizes['train'] else 'validation'} products ({split_words(sizes)}): "
            "training needs training and validation products (about 6 products per category)."
        )
    if not sizes["test"]:
        warnings.append("No test products: `fbm evaluate` needs --data DIR.")
    return warnings


def headline(summary: dict) -> str:
    """The preparation in one line, for the end of `fbm train`."""
    return f"{summary['products']:,} products in {summary['classes']} categories ({split_words(summary['split_sizes'])})"


def split_words(sizes: dict[str, int]) -> str:
    """`train 78, validation 13, test 13`."""
    return ", ".join(f"{'validation' if name == 'val' else name} {sizes[name]:,}" for name in SPLITS)


SMALL_CLASS = 7  # products a category needs to reach all three splits at the default 70/15/15


def small_class_warnings(per_class: dict[str, int]) -> list[str]:
    """Categories too small to reach validation and test (often a category spelt apart by mistake,
    such as 'Home & Garden/Dining' without the spaces that separate levels)."""
    small = {name: count for name, count in per_class.items() if count < SMALL_CLASS}
    if not small:
        return []
    listed = ", ".join(f"{name[:40]!r} ({count})" for name, count in sorted(small.items(), key=lambda item: item[1])[:5])
    more = f" and {len(small) - 5} more" if len(small) > 5 else ""
    return [f"{len(small)} categor{'y has' if len(small) == 1 else 'ies have'} under {SMALL_CLASS} products, too few to reach every split: {listed}{more}"]


def prepare(config: Config) -> dict:
    """Run the whole preparation and return its summary (also written as JSON)."""
    start = time.perf_counter()
    data_dir = Path(config.data.data_dir)
    paths: Paths = config.paths
    dataset = read_dataset(data_dir)
    listings = dataset.listings
    encoder = CategoryEncoder.fit(listings["root"], listings["category"])
    if len(encoder) < 2:
        raise DatasetError(f"{data_dir}: {len(listings)} listing(s) in {len(encoder)} categor{'y' if len(encoder) == 1 else 'ies'}: a classifier needs at least two")

    all_ids = [image_id for ids in listings["image_ids"] for image_id in ids]
    if all_ids and not dataset_photos(data_dir).is_dir():
        raise DatasetError(f"{dataset_photos(data_dir)} not found: Images.csv lists {len(all_ids):,} photos, each images/<image id>.jpg in the dataset's directory")
    digests, skipped = build_clean_cache(
        all_ids,
        dataset_photos(data_dir),
        paths.clean_images(config.data.image_size),
        config.data.image_size,
        config.data.max_image_pixels,
        config.data.loader_threads,
    )
    listings["skipped_image_ids"] = listings["image_ids"].map(lambda ids: [i for i in ids if i in skipped])
    listings["image_ids"] = listings["image_ids"].map(lambda ids: [i for i in ids if i in digests])
    listings["image_digests"] = listings["image_ids"].map(lambda ids: [digests[i] for i in ids])
    listings["label"] = encoder.encode_many(listings["root"])

    groups = group_products({pid: [digests[i] for i in ids] for pid, ids in zip(listings["product_id"], listings["image_ids"])})
    fractions = (config.data.train_frac, config.data.val_frac, config.data.test_frac)
    assignment = split_products(list(listings["product_id"]), list(listings["root"]), fractions, config.data.seed, groups)
    listings["split"] = listings["product_id"].map(assignment)
    sizes = split_sizes(listings)

    write_jsonl(listings, paths.listings)
    encoder.save(paths.categories)
    write_atomic(paths.splits, json.dumps({s: sorted(listings.loc[listings["split"] == s, "product_id"]) for s in SPLITS}, indent=1))

    duplicate_ids = len(digests) - len(set(digests.values()))
    shared_ids = sum(1 for count in Counter(all_ids).values() if count > 1)  # one photo row under several products
    summary = {
        "data_dir": str(data_dir),
        "products": int(len(listings)),
        "rows_dropped": dict(dataset.dropped),
        "prices_unread": len(dataset.unread_prices),
        "prices_unread_examples": list(dict.fromkeys(price[:40] for price in dataset.unread_prices))[:5],
        "images": len(all_ids),
        "images_usable": len(digests),
        "images_skipped": dict(Counter(skipped.values())),
        "none_found": bool(all_ids) and all(reason == "missing" for reason in skipped.values()) and len(skipped) == len(set(all_ids)),
        "skipped_image_ids": skipped,
        "duplicate_image_ids": duplicate_ids,
        "image_ids_of_several_products": shared_ids,
        "products_without_images": int((listings["image_ids"].map(len) == 0).sum()),
        "classes": len(encoder),
        "per_class": encoder.counts,
        "split_sizes": sizes,
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    write_atomic(paths.prepare_summary, json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def format_summary(summary: dict) -> str:
    lines = [
        f"prepared {summary['data_dir']} in {summary['wall_time_s']} s",
        f"  products: {summary['products']:,}   images: {summary['images']:,} ({summary['images_usable']:,} usable)   classes: {summary['classes']}",
        f"  products without a usable photo: {summary['products_without_images']}   image ids duplicating another's file: {summary['duplicate_image_ids']}",
        *([f"  CSV rows left out: {counted(summary['rows_dropped'])}"] if summary["rows_dropped"] else []),
        f"  skipped images: {sum(summary['images_skipped'].values())}" + (f": {counted(ImageError.in_words(summary['images_skipped']))}" if summary["images_skipped"] else ""),
        *([f"  prices not read, kept as no price: {summary['prices_unread']} (e.g. {', '.join(map(repr, summary['prices_unread_examples']))})"] if summary.get("prices_unread") else []),
        *([f"  warning: none of the photos was found as images/<image id>.jpg in {summary['data_dir']} (named .JPG or .jpeg, or in a subfolder?)"] if summary.get("none_found") else []),
        f"  split (products): {split_words(summary['split_sizes'])}",
        *([f"  photo ids listed under more than one product: {summary['image_ids_of_several_products']}"] if summary.get("image_ids_of_several_products") else []),
        *[f"  warning: {warning}" for warning in split_warnings(summary["split_sizes"])],
        *[f"  warning: {warning}" for warning in small_class_warnings(summary["per_class"])],
        "  per class:",
    ]
    width = max(len(name) for name in summary["per_class"]) if summary["per_class"] else 0
    lines += [f"    {name:<{width}}  {count:>5}" for name, count in summary["per_class"].items()]
    return "\n".join(lines)
