"""A tiny but real trained pipeline for end-to-end tests: a subset of ../shared/fbm, every stage run.

The subset (`listings.subset`) and the shrunken settings are those of `fbm bench --quick`; the
models learn little: the tests check wiring, artifacts and contracts, not accuracy.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from listings.config import Config
from listings.subset import subset_dataset
from scripts.bench import QUICK_SETTINGS, bench_pipeline

SHARED_DATA = Path(Config().data.data_dir)


def have_shared_data() -> bool:
    return (SHARED_DATA / "Products.csv").is_file() and (SHARED_DATA / "images").is_dir()


def nltk_data_installed() -> bool:
    """Whether the NLTK resources the text preprocessing needs are where the configuration points."""
    import nltk

    from text_model.preprocess import REQUIRED_NLTK_DATA

    Config().apply_nltk_data()
    try:
        for resource in REQUIRED_NLTK_DATA:
            nltk.data.find(resource if resource != "corpora/wordnet" else "corpora/wordnet.zip")
    except LookupError:
        return False
    return True


needs_nltk_data = pytest.mark.skipif(not nltk_data_installed(), reason="NLTK data (stopwords, wordnet) not found: set NLTK_DATA")


def shared_subset(target: Path, per_class: int, skip_per_class: int = 0) -> Path:
    return subset_dataset(SHARED_DATA, target, per_class, skip_per_class)


def tiny_config(data_dir: Path, artifacts_dir: Path) -> Config:
    config = Config()
    config.data.data_dir = str(data_dir)
    config.data.artifacts_dir = str(artifacts_dir)
    for assignment in QUICK_SETTINGS:
        config.override(assignment)
    config.apply_nltk_data()
    return config


def train_pipeline(config: Config) -> dict:
    """Every stage in order, as `fbm train all` and `fbm index` run them; returns the stage timings."""
    return bench_pipeline(config)
