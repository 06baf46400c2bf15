"""The text baseline: TF-IDF over the project's tokens and a linear SVM.

Two TF-IDF blocks side by side: word unigrams + bigrams, and character 2-5-grams of the tokens
(within each token, `char_wb`), which match inflections, misspellings and model numbers the word
block misses (validation: TF-IDF 0.803 → 0.809 product accuracy, late fusion 0.838 → 0.848).
Saved without pickle: `baseline.json` (classes, settings, vocabularies) and `baseline.npz` (idfs,
coefficients, intercepts). Probabilities are the softmax of the SVM's decision scores.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

from listings.artifacts import read_json, require_files
from listings.config import Config, TextConfig
from listings.metrics import softmax_rows
from text_model.preprocess import tokenize

BASELINE_DIR = "tfidf_svm"
BLOCKS = ("words", "chars")  # the TF-IDF blocks, in the order of the feature columns
SETTINGS_FILE = "baseline.json"
ARRAYS_FILE = "baseline.npz"


def ngrams(tokens: list[str], n_max: int) -> list[str]:
    """The tokens and their n-grams up to `n_max`, joined by spaces."""
    return [" ".join(tokens[i : i + n]) for n in range(1, n_max + 1) for i in range(len(tokens) - n + 1)]


class TfidfSvmBaseline:
    def __init__(self, classes: list[str], *, stem: bool, n_max: int, min_df: int, C: float, char_range: Sequence[int]):
        self.classes = list(classes)
        self.stem, self.n_max, self.min_df, self.C, self.char_range = stem, n_max, min_df, C, tuple(char_range)
        self.words = TfidfVectorizer(analyzer=functools.partial(ngrams, n_max=n_max), sublinear_tf=True, min_df=min_df, dtype=np.float32)
        self.chars = TfidfVectorizer(analyzer="char_wb", ngram_range=self.char_range, sublinear_tf=True, min_df=min_df, dtype=np.float32)
        self.coef: np.ndarray | None = None  # [C, n_features]
        self.intercept: np.ndarray | None = None  # [C]

    def fit(self, token_lists: list[list[str]], labels: Sequence[int]) -> "TfidfSvmBaseline":
        """Fit on texts already tokenized with `tokenize(text, self.stem)` (training tokenizes once)."""
        features = self._tfidf(token_lists, fit=True)
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
        return softmax_rows(self.features(token_lists) @ self.coef.T + self.intercept)

    def features(self, token_lists: list[list[str]]) -> csr_matrix:
        """[n, words + character n-grams] TF-IDF rows."""
        return self._tfidf(token_lists, fit=False)

    def word_rows(self, token_lists: list[list[str]]) -> csr_matrix:
        """[n, words] the word block alone, each row L2-normalised, columns sorted: what the listing
        index compares two texts' words by (`retrieval.terms`)."""
        rows = normalize(self.words.transform(token_lists)).astype(np.float32).tocsr()
        rows.sort_indices()
        return rows

    def _tfidf(self, token_lists: list[list[str]], fit: bool) -> csr_matrix:
        """Each block's rows (fitted first when `fit`), side by side in `BLOCKS` order."""
        inputs = {"words": token_lists, "chars": _joined(token_lists)}
        blocks = [
            (vectorizer.fit_transform if fit else vectorizer.transform)(inputs[name]) for name, vectorizer in self._blocks().items()
        ]
        return hstack(blocks, format="csr")

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        settings = {
            "classes": self.classes, "stem": self.stem, "n_max": self.n_max, "min_df": self.min_df, "C": self.C,
            "char_range": list(self.char_range),
        }
        vocabularies = {f"{name}_vocabulary": _columns(vectorizer.vocabulary_) for name, vectorizer in self._blocks().items()}
        (directory / SETTINGS_FILE).write_text(json.dumps(settings | vocabularies, ensure_ascii=False), encoding="utf-8")
        idfs = {f"{name}_idf": vectorizer.idf_.astype(np.float32) for name, vectorizer in self._blocks().items()}
        np.savez(directory / ARRAYS_FILE, coef=self.coef, intercept=self.intercept, **idfs)

    @classmethod
    def from_config(cls, classes: list[str], settings: TextConfig) -> "TfidfSvmBaseline":
        """An unfitted model with the text settings' tokens (`stem`) and `tfidf_*` choices."""
        return cls(
            classes, stem=settings.stem, n_max=settings.tfidf_word_ngrams, min_df=settings.tfidf_min_df, C=settings.tfidf_c,
            char_range=settings.tfidf_char_ngrams,
        )

    @classmethod
    def load(cls, config: Config) -> "TfidfSvmBaseline":
        return cls.load_dir(config.paths.text_model / BASELINE_DIR)

    @classmethod
    def load_dir(cls, directory: Path) -> "TfidfSvmBaseline":
        directory = Path(directory)
        require_files((directory / SETTINGS_FILE, directory / ARRAYS_FILE), "fbm train text")
        settings = read_json(directory / SETTINGS_FILE, "fbm train text")
        vocabularies = {name: settings.pop(f"{name}_vocabulary", None) for name in BLOCKS}
        if None in vocabularies.values():
            raise ValueError(f"{directory} holds a TF-IDF model from an older version (no character n-grams): rerun `fbm train text`")
        baseline = cls(**settings)
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as arrays:
            for name, vectorizer in baseline._blocks().items():
                vectorizer.vocabulary, vectorizer.idf_ = vocabularies[name], arrays[f"{name}_idf"]
            baseline.coef, baseline.intercept = arrays["coef"], arrays["intercept"]
        return baseline

    def _blocks(self) -> dict[str, TfidfVectorizer]:
        return dict(zip(BLOCKS, (self.words, self.chars)))


def _joined(token_lists: list[list[str]]) -> list[str]:
    """The tokens as one string each, the character block's input (`char_wb` keeps n-grams within a token)."""
    return [" ".join(tokens) for tokens in token_lists]


def _columns(vocabulary: dict) -> dict[str, int]:
    return {term: int(column) for term, column in vocabulary.items()}
