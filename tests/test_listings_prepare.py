"""`fbm prepare` end to end: a 50-product subset of the real dataset, the quirky fixture, the full set (slow)."""
from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from listings.config import SHARED, Config
from listings.data import DatasetError
from listings.prepare import format_summary, load_prepared, split_warnings
from listings.splits import SPLITS
from marketplace import PRODUCTS_HEADER, csv_line, image_bytes
from scripts.cli import main

FBM = SHARED / "fbm"
needs_fbm = pytest.mark.skipif(not (FBM / "Products.csv").exists(), reason=f"{FBM} not available")


@pytest.fixture(autouse=True)
def _restore_nltk_env(monkeypatch):
    """`fbm` points NLTK_DATA at the configured directory; undo that after each test."""
    monkeypatch.setenv("NLTK_DATA", os.environ.get("NLTK_DATA", ""))


def run_prepare(data: Path, artifacts: Path, capsys) -> tuple[dict, str]:
    assert main(["prepare", "--data", str(data), "--artifacts", str(artifacts)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((artifacts / "data" / "prepare_summary.json").read_text())
    return summary, printed


def config_for(artifacts: Path) -> Config:
    config = Config()
    config.data.artifacts_dir = str(artifacts)
    return config


@pytest.fixture(scope="module")
def fbm_subset(tmp_path_factory) -> Path:
    """50 real products (every class, one without a photo) with their rows of Images.csv and photos linked."""
    products = pd.read_csv(FBM / "Products.csv", lineterminator="\n", dtype=str, keep_default_na=False)
    images = pd.read_csv(FBM / "Images.csv", lineterminator="\n", dtype=str, keep_default_na=False)
    products["root"] = products["category"].str.split("/").str[0].str.strip()
    with_photo = products["id"].isin(images["product_id"])
    chosen = pd.concat([products[~with_photo].head(1), products[with_photo].groupby("root").head(4).head(49)])
    assert len(chosen) == 50 and chosen["root"].nunique() == 13

    root = tmp_path_factory.mktemp("fbm50")
    (root / "images").mkdir()
    chosen.drop(columns="root").to_csv(root / "Products.csv", index=False, lineterminator="\n")
    chosen_images = images[images["product_id"].isin(chosen["id"])]
    chosen_images.to_csv(root / "Images.csv", index=False, lineterminator="\n")
    for image_id in chosen_images["id"]:
        os.symlink(FBM / "images" / f"{image_id}.jpg", root / "images" / f"{image_id}.jpg")
    return root


@needs_fbm
def test_prepare_on_a_50_product_subset(fbm_subset: Path, tmp_path: Path, capsys, monkeypatch):
    artifacts = tmp_path / "artifacts"
    summary, printed = run_prepare(fbm_subset, artifacts, capsys)

    products = pd.read_csv(fbm_subset / "Products.csv", lineterminator="\n", dtype=str)
    images = pd.read_csv(fbm_subset / "Images.csv", lineterminator="\n", dtype=str)
    roots = products["category"].str.split("/").str[0].str.strip()
    assert summary["products"] == 50
    assert summary["images"] == summary["images_usable"] == len(images)
    assert summary["images_skipped"] == {} and summary["products_without_images"] == 1
    assert summary["classes"] == 13
    assert summary["per_class"] == dict(sorted(Counter(roots).items()))
    assert sum(summary["split_sizes"].values()) == 50
    assert "products: 50" in printed and "classes: 13" in printed and "skipped images: 0" in printed

    data = artifacts / "data"
    listings = pd.read_json(data / "listings.jsonl", lines=True, dtype={"product_id": str})
    assert len(listings) == 50 and set(listings["product_id"]) == set(products["id"])
    assert not listings["description"].str.contains("Posted by").any()
    assert not listings["title"].str.contains("Gumtree").any()
    categories = json.loads((data / "categories.json").read_text())
    assert categories["classes"] == sorted(set(roots))
    assert (listings["label"] == listings["root"].map(categories["index"])).all()

    splits = json.loads((data / "splits.json").read_text())
    assert sorted(splits) == sorted(SPLITS)
    assert sorted(sum(splits.values(), [])) == sorted(products["id"])  # every product once
    for split, ids in splits.items():
        assert set(listings.loc[listings["split"] == split, "product_id"]) == set(ids)

    cleaned = config_for(artifacts).paths.clean_images(256)
    assert sorted(p.stem for p in cleaned.iterdir()) == sorted(images["id"])
    with Image.open(next(cleaned.iterdir())) as image:
        assert image.mode == "RGB" and image.size == (256, 256)

    prepared = load_prepared(config_for(artifacts))
    assert prepared.image_dir == cleaned and len(prepared.encoder) == 13
    assert len(prepared.images()) == len(images)
    assert sum(len(prepared.split(s)) for s in SPLITS) == 50

    # a second run reuses the cleaned images and gives the same split
    def no_cleaning(*args, **kwargs):
        raise AssertionError("a cached image was cleaned again")

    monkeypatch.setattr("listings.images.clean_image", no_cleaning)
    before = (data / "splits.json").read_text(), (data / "listings.jsonl").read_text()
    again, _ = run_prepare(fbm_subset, artifacts, capsys)
    assert again["products"] == 50 and again["images_usable"] == len(images)
    assert ((data / "splits.json").read_text(), (data / "listings.jsonl").read_text()) == before


def test_prepare_on_the_quirky_fixture(quirky_dataset: Path, tmp_path: Path, capsys):
    artifacts = tmp_path / "artifacts"
    summary, printed = run_prepare(quirky_dataset, artifacts, capsys)

    assert summary["products"] == 5 and summary["classes"] == 5
    assert summary["images"] == 7 and summary["images_usable"] == 5
    assert summary["images_skipped"] == {"truncated": 1, "missing": 1}
    assert summary["skipped_image_ids"] == {"img-f2": "truncated", "img-f3": "missing"}
    assert summary["duplicate_image_ids"] == 1  # img-b1 is img-m1's photo
    assert summary["products_without_images"] == 1
    assert "skipped images: 2" in printed and "truncated or corrupt (1)" in printed and "no such file (1)" in printed
    assert summary["prices_unread"] == 1 and "prices not read, kept as no price: 1 (e.g. 'Free')" in printed  # p-dvd's
    assert not summary["none_found"] and "none of the photos was found" not in printed

    prepared = load_prepared(config_for(artifacts))
    listings = prepared.listings.set_index("product_id")
    assert listings.loc["p-fridge", "image_ids"] == ["img-f1"]
    assert listings.loc["p-fridge", "skipped_image_ids"] == ["img-f2", "img-f3"]
    assert listings.loc["p-dvd", "image_ids"] == []  # kept for the text branch
    assert pd.isna(listings.loc["p-dvd", "price"])
    assert listings.loc["p-bike", "split"] == listings.loc["p-mirror", "split"]  # they share a photo
    assert sorted(p.name for p in prepared.image_dir.iterdir()) == [f"{i}.jpg" for i in ("img-b1", "img-c1", "img-f1", "img-m1", "img-m2")]


def test_training_refuses_a_preparation_without_validation_products(quirky_dataset: Path, tmp_path: Path, capsys):
    """Five products in five categories all land in train: prepare says so, and training refuses
    with the reason instead of failing on an empty validation split."""
    artifacts = tmp_path / "artifacts"
    summary, printed = run_prepare(quirky_dataset, artifacts, capsys)
    assert summary["split_sizes"] == {"train": 5, "val": 0, "test": 0}
    assert "warning: no validation products (train 5, validation 0, test 0)" in printed
    with pytest.raises(DatasetError, match="no validation products"):
        load_prepared(config_for(artifacts), for_training=True)
    assert main(["train", "combined", "--artifacts", str(artifacts)]) == 2
    assert "no validation products" in capsys.readouterr().err


def test_a_dataset_of_one_category_is_refused_and_the_earlier_preparation_kept(quirky_dataset: Path, tmp_path: Path, capsys):
    artifacts = tmp_path / "artifacts"
    run_prepare(quirky_dataset, artifacts, capsys)
    before = (artifacts / "data" / "listings.jsonl").read_bytes()
    products = quirky_dataset / "Products.csv"
    products.write_text("\n".join(products.read_text(encoding="utf-8").split("\n")[:2]) + "\n", encoding="utf-8")
    assert main(["prepare", "--data", str(quirky_dataset), "--artifacts", str(artifacts)]) == 2
    assert "1 listing(s) in 1 category: a classifier needs at least two" in capsys.readouterr().err
    assert (artifacts / "data" / "listings.jsonl").read_bytes() == before


def test_photos_where_prepare_does_not_look_are_named(quirky_dataset: Path, tmp_path: Path, capsys):
    """No images/ folder at all was a count of 'missing' photos; so were photos named .JPG."""
    images = quirky_dataset / "images"
    for photo in images.iterdir():
        photo.rename(photo.with_suffix(".JPG"))
    rows = (quirky_dataset / "Images.csv").read_text(encoding="utf-8")
    (quirky_dataset / "Images.csv").write_text(rows + "99,img-m1,p-dvd\n", encoding="utf-8")  # a photo id under two products
    summary, printed = run_prepare(quirky_dataset, tmp_path / "a", capsys)
    assert summary["none_found"] and "warning: none of the photos was found as images/<image id>.jpg" in printed
    shutil.rmtree(images)
    assert main(["prepare", "--data", str(quirky_dataset), "--artifacts", str(tmp_path / "b")]) == 2
    assert re.search(r"images not found: Images.csv lists 8 photos", capsys.readouterr().err)


def test_a_folder_in_place_of_a_csv_file_is_a_clear_error(quirky_dataset: Path, tmp_path: Path, capsys):
    (quirky_dataset / "Products.csv").unlink()
    (quirky_dataset / "Products.csv").mkdir()
    assert main(["prepare", "--data", str(quirky_dataset), "--artifacts", str(tmp_path / "a")]) == 2
    assert "Products.csv is a folder, not a file" in capsys.readouterr().err


def test_a_photo_replaced_under_the_same_id_is_cleaned_again(quirky_dataset: Path, tmp_path: Path, capsys):
    """A re-run reuses the cleaned photos, except one whose source file changed: it is cleaned again,
    and its new digest (the trunk-feature cache's key for it) is in the listings."""
    artifacts = tmp_path / "artifacts"
    run_prepare(quirky_dataset, artifacts, capsys)
    prepared = load_prepared(config_for(artifacts))
    digest_before = prepared.images().set_index("image_id").loc["img-m2", "image_digest"]
    cleaned = prepared.image_dir / "img-m2.jpg"
    Image.new("RGB", (40, 40), (0, 250, 0)).save(quirky_dataset / "images" / "img-m2.jpg")
    run_prepare(quirky_dataset, artifacts, capsys)
    again = load_prepared(config_for(artifacts))
    assert again.images().set_index("image_id").loc["img-m2", "image_digest"] != digest_before
    assert Image.open(cleaned).getpixel((128, 128))[1] > 200  # green now, the new photo's


def test_prepare_without_a_dataset_is_a_clear_error(tmp_path: Path, capsys):
    assert main(["prepare", "--data", str(tmp_path / "nothing"), "--artifacts", str(tmp_path / "a")]) == 2
    assert "Products.csv" in capsys.readouterr().err


@needs_fbm
@pytest.mark.slow
def test_prepare_on_the_full_dataset(tmp_path: Path, capsys):
    summary, printed = run_prepare(FBM, tmp_path / "artifacts", capsys)
    assert summary["products"] == 6098
    assert summary["images"] == 10721
    assert summary["classes"] == 13
    assert sum(summary["split_sizes"].values()) == 6098
    assert "products: 6,098" in printed and "images: 10,721" in printed


def test_prepare_keeps_two_categories_products_sharing_a_photo_in_one_split(tmp_path: Path, capsys):
    """The same photo posted in two categories: with 20 products a category, each split gets some,
    and for every seed the two posts still land in one split."""
    root = tmp_path / "shared-photo"
    (root / "images").mkdir(parents=True)
    products, images = [csv_line(PRODUCTS_HEADER)], [csv_line(["", "id", "product_id"])]
    for number in range(40):
        product_id = f"{'ab'[number // 20]}{number % 20}"
        category = ("Appliances / Kettles", "Toys / Games")[number // 20]
        products.append(csv_line([str(number), product_id, f"Item {product_id}", category, f"Nice {product_id}", "£5", "Leeds"]))
        images.append(csv_line([str(number), f"img-{product_id}", product_id]))
        colour = (200, 30, 30) if number % 20 == 0 else (number * 5, number * 3, 90)  # a0 and b0: one photo
        (root / "images" / f"img-{product_id}.jpg").write_bytes(image_bytes(colour))
    (root / "Products.csv").write_text("".join(products))
    (root / "Images.csv").write_text("".join(images))
    for seed in range(6):
        artifacts = tmp_path / f"artifacts-{seed}"
        assert main(["prepare", "--data", str(root), "--artifacts", str(artifacts), "--set", f"data.seed={seed}"]) == 0
        splits = json.loads((artifacts / "data" / "splits.json").read_text())
        assert all(splits.values())
        split_of = {product_id: split for split, ids in splits.items() for product_id in ids}
        assert split_of["a0"] == split_of["b0"], seed
    capsys.readouterr()


def test_the_summary_counts_skipped_photos_not_their_reasons():
    summary = {
        "data_dir": "d", "wall_time_s": 1.0, "products": 3, "images": 5, "images_usable": 2, "classes": 2,
        "products_without_images": 1, "duplicate_image_ids": 0, "rows_dropped": {},
        "images_skipped": {"truncated": 2, "missing": 1}, "split_sizes": {"train": 2, "val": 1, "test": 0},
        "per_class": {"a": 2, "b": 1},
    }
    assert "  skipped images: 3: truncated or corrupt (2), no such file (1)" in format_summary(summary).splitlines()


def test_the_summary_warns_of_categories_too_small_for_every_split_and_photos_shared_by_products():
    """A category spelt apart by mistake ('Home & Garden/Dining') held one product, unremarked; so
    was a photo id listed under two products."""
    summary = {
        "data_dir": "d", "wall_time_s": 1.0, "products": 40, "images": 5, "images_usable": 5, "classes": 3,
        "products_without_images": 0, "duplicate_image_ids": 0, "rows_dropped": {}, "images_skipped": {},
        "split_sizes": {"train": 28, "val": 6, "test": 6}, "per_class": {"Home & Garden": 30, "Home & Garden/Dining": 1, "Toys": 6},
        "image_ids_of_several_products": 1,
    }
    lines = format_summary(summary).splitlines()
    assert "  warning: 2 categories have under 7 products, too few to reach every split: 'Home & Garden/Dining' (1), 'Toys' (6)" in lines
    assert "  photo ids listed under more than one product: 1" in lines
    summary["per_class"] = {"Home & Garden": 30, "Toys": 10}
    assert not any("under 7 products" in line for line in format_summary(summary).splitlines())


def test_an_empty_test_split_is_warned_of_whatever_the_other_splits_hold():
    no_test = "No test products: `fbm evaluate` needs --data DIR."
    assert split_warnings({"train": 5, "val": 2, "test": 0}) == [no_test]
    assert no_test in split_warnings({"train": 5, "val": 0, "test": 0})
    assert split_warnings({"train": 5, "val": 2, "test": 1}) == []
    assert split_warnings({"train": 4, "val": 0, "test": 0})[0] == (  # in words, no dict
        "no validation products (train 4, validation 0, test 0): training needs training and validation products (about 6 products per category)."
    )
