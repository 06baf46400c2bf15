"""`scripts.freshness`: which trained stages, and whether the index, were made from the inputs now there."""
from __future__ import annotations

import json

import pytest

from listings.config import Config
from scripts import freshness


def recorded_index(tmp_path) -> Config:
    """Stand-ins for the files the index is built from (only their bytes count), and its record."""
    config = Config()
    config.data.artifacts_dir = str(tmp_path / "artifacts")
    paths = config.paths
    for path in (paths.listings, paths.splits, paths.categories, paths.image_model / "model.pt", paths.text_model / "model.pt"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.name)
    paths.index.mkdir(parents=True)
    freshness.record_index(config, freshness.index_digest(config))
    return config


def test_an_index_is_named_stale_when_its_listings_change(tmp_path):
    """The index holds the listings' metadata: new prepared listings make it stale, as new branches do."""
    config = recorded_index(tmp_path)
    assert freshness.stale_stages(config) == []
    config.paths.listings.write_text("other listings")
    warnings = freshness.stale_stages(config)
    assert len(warnings) == 1 and f"the index in {config.paths.index}" in warnings[0]


def test_a_command_that_rebuilds_the_index_is_not_warned_about_it(tmp_path):
    config = recorded_index(tmp_path)
    (config.paths.image_model / "model.pt").write_text("retrained")
    assert len(freshness.stale_stages(config)) == 1
    assert freshness.stale_stages(config, index=False) == []


CATEGORIES = {"classes": ["Home & Garden", "Video Games & Consoles"], "paths": {"Home & Garden / Chairs": 1, "Video Games & Consoles": 1}}


def written_listings(tmp_path, categories: dict = CATEGORIES, **changes) -> Config:
    """Two prepared listings (with `changes` to the first one's fields), their categories and the
    other files a branch reads."""
    config = Config()
    config.data.artifacts_dir = str(tmp_path / "artifacts")
    paths = config.paths
    for path in (paths.splits, paths.image_model / "model.pt", paths.text_model / "model.pt"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.name)
    paths.categories.write_text(json.dumps(categories))
    rows = [
        {"product_id": "p1", "title": "oak chair", "description": "solid oak", "price": 20.0, "location": "Leeds",
         "category": "Home & Garden / Chairs", "root": "Home & Garden", "image_ids": ["a"], "image_digests": ["d1"], "label": 0, "split": "train"},
        {"product_id": "p2", "title": "ps4", "description": "two pads", "price": 150.0, "location": "York",
         "category": "Video Games & Consoles", "root": "Video Games & Consoles", "image_ids": ["b"], "image_digests": ["d2"], "label": 1, "split": "val"},
    ]
    rows[0].update(changes)
    paths.listings.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return config


def digests_of(config: Config) -> dict[str, str]:
    return {stage: freshness.inputs_digest(stage, config) for stage in ("image", "text", "index")}


@pytest.mark.parametrize(
    "changes, changed",
    [
        ({"price": 25.0, "location": "Hull"}, {"index"}),
        ({"category": "Home & Garden / Stools"}, {"index"}),
        ({"title": "oak stool"}, {"text", "index"}),
        ({"description": "solid pine"}, {"text", "index"}),
        ({"image_digests": ["d3"]}, {"image", "index"}),
        ({"image_ids": ["c"]}, {"image", "index"}),
        ({"label": 1}, {"image", "text", "index"}),
        ({"split": "test"}, {"image", "text", "index"}),
        ({"product_id": "p3"}, {"image", "text", "index"}),
    ],
)
def test_a_branch_is_retrained_for_the_listing_fields_it_reads_only(tmp_path, changes, changed):
    """A price or a location changed retrains neither branch (it only makes the index stale); a
    listing's words retrain the text branch, its photos the image branch, its label or split both."""
    before = digests_of(written_listings(tmp_path / "before"))
    after = digests_of(written_listings(tmp_path / "after", **changes))
    assert {stage for stage in before if before[stage] != after[stage]} == changed


def test_a_listings_line_that_is_no_listing_counts_whole(tmp_path):
    config = written_listings(tmp_path)
    before = digests_of(config)
    with config.paths.listings.open("a") as f:
        f.write("{not json\n")
    after = digests_of(config)
    assert all(before[stage] != after[stage] for stage in before)


def test_the_branches_read_the_category_names_not_the_sub_categories(tmp_path):
    """A listing moved between sub-categories of one root changes the encoder's counts per path, not
    what either branch learns (the listing's own category field makes the index stale, above); a
    category renamed changes both."""
    before = digests_of(written_listings(tmp_path / "before"))
    moved = {**CATEGORIES, "paths": {"Home & Garden / Stools": 1, "Video Games & Consoles": 1}}
    after = digests_of(written_listings(tmp_path / "moved", categories=moved))
    assert {stage for stage in before if before[stage] != after[stage]} == set()
    renamed = {**CATEGORIES, "classes": ["Home and Garden", "Video Games & Consoles"]}
    after = digests_of(written_listings(tmp_path / "renamed", categories=renamed))
    assert {stage for stage in before if before[stage] != after[stage]} == {"image", "text"}


@pytest.mark.parametrize("scheme, warning", [(None, "may be out of date (its record, from an earlier version of fbm, cannot tell)"), (freshness.INPUTS_SCHEME, "is out of date (trained from other prepared listings)")])
def test_a_stage_recorded_by_an_earlier_way_of_digesting_blames_no_input(tmp_path, scheme, warning):
    """A stage record whose digest was taken another way (before the listings were read field by
    field) differs though nothing changed: its warning must not say the listings did."""
    config = written_listings(tmp_path)
    record = {"fingerprint": "0" * 64, "inputs": "1" * 64, "outputs": {}} | ({"inputs_scheme": scheme} if scheme else {})
    (config.paths.text_model / freshness.FINGERPRINT_FILE).write_text(json.dumps(record))
    (stale,) = freshness.stale_stages(config)
    assert stale == f"warning: {config.paths.text_model} {warning}: run `fbm train all`"
