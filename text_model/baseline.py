"""The text baseline: TF-IDF over the project's tokens (unigrams + bigrams) and a linear SVM.

Saved without pickle: `baseline.json` (classes, settings, vocabulary) and `baseline.npz` (idf,
coefficients, intercepts). Probabilities are the softmax of the SVM's decision scores.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from listings.artifacts import read_json, require_files
from listings.config import Config
from listings.metrics import softmax_rows
from text_model.preprocess import tokenize

BASELINE_DIR = "tfidf_svm"
SETTINGS_FILE = "baseline.json"
ARRAYS_FILE = "baseline.npz"


def ngrams(tokens: list[str], n_max: int) -> list[str]:
    """The tokens and their n-grams up to `n_max`, joined by spaces."""
    return [" ".join(tokens[i : i + n]) for n in range(1, n_max + 1) for i in range(len(tokens) - n + 1)]


class TfidfSvmBaseline:
    def __init__(self, classes: list[str], stem: bool = False, n_max: int = 2, min_df: int = 2, C: float = 0.5):
        self.classes = list(classes)
        self.stem, self.n_max, self.min_df, self.C = stem, n_max, min_df, C
        self.vectorizer = TfidfVectorizer(
            analyzer=functools.partial(ngrams, n_max=n_max), sublinear_tf=True, min_df=min_df, dtype=np.float32
        )
        self.coef: np.ndarray | None = None  # [C, n_features]
        self.intercept: np.ndarray | None = None  # [C]

    def fit(self, token_lists: list[list[str]], labels: Sequence[int]) -> "TfidfSvmBaseline":
        """Fit on texts already tokenized with `tokenize(text, self.stem)` (training tokenizes once)."""
        features = self.vectorizer.fit_transform(token_lists)
        svm = LinearSVC(C=self.C, random_state=0).fit(features, np.asarray(labels))  # liblinear shuffles: seeded, runs agree
        if list(svm.classes_) != list(range(len(self.classes))):
            raise ValueError(f"the training labels cover classes {list(svm.classes_)}, not all {len(self.classes)}")
        coef, intercept = svm.coef_, svm.intercept_
        if len(self.classes) == 2:  # a binary LinearSVC keeps one score row, the second class's
            coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
        self.coef, self.intercept = coef.astype(np.float32), intercept.astype(np.float32)
        return self

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """[n, C] probabilities for raw listing texts."""
        return self.predict_proba_tokens([tokenize(text, self.stem) for text in texts])

    def predict_proba_tokens(self, token_lists: list[list[str]]) -> np.ndarray:
        if self.coef is None:
            raise ValueError("the baseline is not fitted")
        return softmax_rows(self.vectorizer.transform(token_lists) @ self.coef.T + self.intercept)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        settings = {"classes": self.classes, "stem": self.stem, "n_max": self.n_max, "min_df": self.min_df, "C": self.C}
        vocabulary = {term: int(column) for term, column in self.vectorizer.vocabulary_.items()}
        (directory / SETTINGS_FILE).write_text(json.dumps(settings | {"vocabulary": vocabulary}, ensure_ascii=False), encoding="utf-8")
        np.savez(directory / ARRAYS_FILE, idf=self.vectorizer.idf_.astype(np.float32), coef=self.coef, intercept=self.intercept)

    @classmethod
    def load(cls, config: Config) -> "TfidfSvmBaseline":
        return cls.load_dir(config.paths.text_model / BASELINE_DIR)

    @classmethod
    def load_dir(cls, directory: Path) -> "TfidfSvmBaseline":
        directory = Path(directory)
        require_files((directory / SETTINGS_FILE, directory / ARRAYS_FILE), "fbm train text")
        settings = read_json(directory / SETTINGS_FILE, "fbm train text")
        vocabulary = settings.pop("vocabulary")
        baseline = cls(**settings)
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as arrays:
            baseline.vectorizer.vocabulary = vocabulary
            baseline.vectorizer.idf_ = arrays["idf"]
            baseline.coef, baseline.intercept = arrays["coef"], arrays["intercept"]
        return baseline
