"""`scripts.freshness`: which trained stages, and whether the index, were made from the inputs now there."""
from __future__ import annotations

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
