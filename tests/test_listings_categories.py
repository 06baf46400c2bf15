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
    assert "Appliances" in encoder and "Toys" not in encoder


def test_encode_decode(encoder):
    for i, name in enumerate(encoder.classes):
        assert encoder.encode(name) == i
        assert encoder.decode(i) == name
    assert encoder.encode_many(["Video Games & Consoles", "Toys", "Appliances"]) == [2, -1, 0]


def test_names_match_in_any_case(encoder):
    """Evaluation data may spell a known category in another case; prepare spells each one way."""
    assert encoder.encode("home & GARDEN") == encoder.encode("Home & Garden") == 1
    assert encoder.encode_many(["appliances", "toys"]) == [0, -1]
    assert "video games & consoles" in encoder and 3 not in encoder


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
    for name in ROOTS:
        assert loaded.encode(name) == encoder.encode(name)
        assert loaded.decode(encoder.encode(name)) == name


def test_unknown_category_is_a_clear_error(encoder):
    with pytest.raises(UnknownCategoryError) as error:
        encoder.encode("Toys")
    message = str(error.value)
    assert message.startswith("unknown category 'Toys'") and "Appliances" in message
    assert isinstance(error.value, ValueError)  # the CLI reports ValueErrors without a traceback


@pytest.mark.parametrize("index", [-1, 3, 100])
def test_out_of_range_index_is_an_error_not_another_class(encoder, index):
    with pytest.raises(UnknownCategoryError, match="out of range"):
        encoder.decode(index)


def test_empty_category_refused():
    with pytest.raises(ValueError, match="empty category"):
        CategoryEncoder.fit(["Appliances", ""])


def test_a_category_filter_names_its_root_in_any_case_and_hints_at_unspaced_levels():
    assert canonical_category("home & garden / Dining", ROOTS) == "Home & Garden / Dining"
    assert canonical_category("  ", ROOTS) is None
    with pytest.raises(UnknownCategoryError, match=r"unknown category 'Home & Garden/Dining' \(levels are separated by ' / ', with spaces\)"):
        canonical_category("Home & Garden/Dining", ROOTS)
    for no_root in ("Toys/Lego", "/", " // "):
        with pytest.raises(UnknownCategoryError, match=f"unknown category '{no_root}'; known: "):
            canonical_category(no_root, ROOTS)
