"""Shared fixtures: a tiny marketplace-format dataset that reproduces every quirk of the real one."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from marketplace import PRODUCTS_HEADER, csv_line, image_bytes

# (id, product_name, category, product_description, price, location, image ids)
QUIRKY_PRODUCTS = [
    (
        "p-mirror",
        "Mirror wall art | in Wokingham, Berkshire | Gumtree",
        "Home & Garden / Dining, Living Room Furniture / Mirrors, Clocks & Ornaments",
        "Mirror wall art. Posted by Nisha in Dining, Living Room Furniture, Mirrors, Clocks & Ornaments"
        " in Wokingham. 25 February 2022Size 45x45cm",
        "£1,234.00",
        "Wokingham, Berkshire",
        ["img-m1", "img-m2"],
    ),
    (
        "p-dvd",
        "Tom &amp; Jerry &quot;Classic&quot; DVDs | in Leeds, West Yorkshire | Gumtree",
        "Music, Films, Books & Games / DVDs, Films & TV",
        'Five discs,\rall working.\r\rCollection only &amp; cash, "no" offers',
        "Free",
        "Leeds, West Yorkshire",
        [],
    ),
    (
        "p-fridge",
        "Indesit fridge | in Glasgow, Glasgow City | Gumtree",
        "Appliances / Fridges & Freezers",
        "Must collect Indesit fridge. Posted by Cameron in Appliances, Fridge Freezers in Dennistoun. February 25, 2022",
        "£75.00",
        "Glasgow, Glasgow City",
        ["img-f1", "img-f2", "img-f3"],
    ),
    (
        "p-bike",
        "Raleigh bike | in Christow, Devon | Gumtree",
        "Sports, Leisure & Travel / Cycling / Bicycles",
        "Raleigh Hybrid, 21 speed. Posted by Julie in Sports, Leisure & Travel, Bicycles in Christow  9 October 2021",
        "£120.50",
        "Christow, Devon",
        ["img-b1"],
    ),
    (
        "p-chair",
        "Office chair | in London, London | Gumtree",
        "Office Furniture & Equipment / Office Chairs",
        "Ikea chair. Posted by Felix in Office Furniture, Office Chairs in Lambeth. 25. February 2022",
        "£1,000",
        "London, London",
        ["img-c1"],
    ),
]
# img-f2 is truncated, img-f3 has no file, img-b1 holds the same bytes as img-m1 (a duplicated photo),
# img-c1 is a PNG with alpha under a .jpg name.
QUIRKY_BROKEN = {"img-f2": "truncated", "img-f3": "missing"}


@pytest.fixture
def drawn_figures(monkeypatch) -> list:
    """The figures the code under test saves, kept open to be read: pyplot's `close` appends them here."""
    from listings.plots import pyplot

    drawn: list = []
    monkeypatch.setattr(pyplot(), "close", drawn.append)
    return drawn


@pytest.fixture
def quirky_dataset(tmp_path: Path) -> Path:
    """A marketplace-format directory: Products.csv, Images.csv (unnamed index column) and images/."""
    root = tmp_path / "quirky"
    images = root / "images"
    images.mkdir(parents=True)
    # the index column is not 0..n-1 in the real files either
    products = [csv_line(PRODUCTS_HEADER)] + [
        csv_line([str(3 * i), *row[:6]]) for i, row in enumerate(QUIRKY_PRODUCTS)
    ]
    (root / "Products.csv").write_bytes("".join(products).encode("utf-8"))
    image_rows = [(image_id, row[0]) for row in QUIRKY_PRODUCTS for image_id in row[6]]
    lines = [csv_line(["", "id", "product_id"])] + [csv_line([str(i), *pair]) for i, pair in enumerate(image_rows)]
    (root / "Images.csv").write_text("".join(lines), encoding="utf-8")

    red = image_bytes((200, 30, 30))
    (images / "img-m1.jpg").write_bytes(red)
    (images / "img-m2.jpg").write_bytes(image_bytes((30, 30, 200)))
    (images / "img-f1.jpg").write_bytes(image_bytes((240, 240, 240), size=(32, 48)))
    big = Image.effect_noise((120, 90), 60).convert("RGB")
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG")
    (images / "img-f2.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (images / "img-b1.jpg").write_bytes(red)
    (images / "img-c1.jpg").write_bytes(image_bytes((0, 120, 0, 128), mode="RGBA", fmt="PNG"))
    return root


@pytest.fixture(scope="session")
def trained_pipeline(tmp_path_factory):
    """A tiny real pipeline trained on a subset of ../shared/fbm (see tests/pipeline.py), shared by the
    end-to-end tests: yields (config, unseen dataset directory). Skipped without the dataset."""
    from pipeline import have_shared_data, shared_subset, tiny_config, train_pipeline

    if not have_shared_data():
        pytest.skip("end-to-end tests need the dataset in ../shared/fbm (or FBM_DATA)")
    root = tmp_path_factory.mktemp("pipeline")
    config = tiny_config(shared_subset(root / "data", per_class=10), root / "artifacts")
    unseen = shared_subset(root / "unseen", per_class=3, skip_per_class=10)
    train_pipeline(config)
    return config, unseen
