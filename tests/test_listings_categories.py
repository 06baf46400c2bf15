"""The category encoder: the one index ↔ name mapping, saved as JSON."""
from __future__ import annotations

import json

import pytest

from listings.categories import CategoryEncoder, UnknownCategoryError, canonical_category

ROOTS = ["Home & Garden", "Appliances", "Home & Garden", "Video Games & Consoles", "Appliances", "Home & Garden"]
PATHS = [
    "Home & Garden / Dining",
    "Appliances / Fridges",
    "Home & Garden / Dining",
    "Video Games & Consoles / Games",
    "Appliances / Ovens",
    "Home & Garden / Garden",
]


@pytest.fixture
def encoder() -> CategoryEncoder:
    return CategoryEncoder.fit(ROOTS, PATHS)


def test_fit(encoder):
    assert encoder.classes == ["Appliances", "Home & Garden", "Video Games & Consoles"]
    assert len(encoder) == 3
    assert encoder.counts == {"Appliances": 2, "Home & Garden": 3, "Video Games & Consoles": 1}
    assert encoder.paths["Home & Garden / Dining"] == 2


def test_encode(encoder):
    assert encoder.encode_many(encoder.classes) == [0, 1, 2]
    assert encoder.encode_many(["Video Games & Consoles", "Toys", "Appliances"]) == [2, -1, 0]


def test_names_match_in_any_case(encoder):
    """Evaluation data may spell a known category in another case; prepare spells each one way."""
    assert encoder.encode_many(["home & GARDEN", "Home & Garden", "video games & consoles"]) == [1, 1, 2]
    assert encoder.encode_many(["appliances", "toys"]) == [0, -1]


def test_json_round_trip(encoder, tmp_path):
    path = tmp_path / "sub" / "categories.json"
    encoder.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["index"] == {"Appliances": 0, "Home & Garden": 1, "Video Games & Consoles": 2}
    loaded = CategoryEncoder.load(path)
    assert loaded.classes == encoder.classes
    path.write_text('{"classes": [', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path.name} is not valid JSON .*rerun `fbm prepare`"):
        CategoryEncoder.load(path)
    with pytest.raises(FileNotFoundError, match="run `fbm prepare` first"):
        CategoryEncoder.load(tmp_path / "absent.json")
    assert loaded.counts == encoder.counts
    assert loaded.paths == encoder.paths
    assert loaded.encode_many(ROOTS) == encoder.encode_many(ROOTS)


def test_empty_category_refused():
    with pytest.raises(ValueError, match="empty category"):
        CategoryEncoder.fit(["Appliances", ""])


def test_a_category_filter_names_its_root_in_any_case_and_hints_at_unspaced_levels():
    assert canonical_category("home & garden / Dining", ROOTS) == "Home & Garden / Dining"
    assert canonical_category("  ", ROOTS) is None
    with pytest.raises(UnknownCategoryError, match=r"unknown category 'Home & Garden/Dining' \(levels are separated by ' / ', with spaces\)"):
        canonical_category("Home & Garden/Dining", ROOTS)
    for no_root in ("Toys/Lego", "/", " // "):
        with pytest.raises(UnknownCategoryError, match=f"unknown category '{no_root}'; known: ") as error:
            canonical_category(no_root, ROOTS)
        assert isinstance(error.value, ValueError)  # the CLI reports ValueErrors without a traceback
