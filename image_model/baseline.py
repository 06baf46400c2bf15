"""The design's first attempt, kept as a baseline: HOG features of the grey photo + a linear SVM.

Saved as plain arrays (`hog_svm.npz`: standardisation and SVM coefficients) and a JSON sidecar;
probabilities are the softmax of the SVM's decision scores.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.feature import hog
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from listings.artifacts import read_json, require_files
from listings.config import Config
from listings.metrics import softmax_rows

WEIGHTS_FILE = "hog_svm.npz"
SIDECAR_FILE = "hog_svm.json"
HOG_SIZE = 128  # photos are resized to HOG_SIZE² grey before HOG
HOG_PARAMS = {"orientations": 9, "pixels_per_cell": [16, 16], "cells_per_block": [2, 2]}


def hog_features(images: Iterable[Image.Image], workers: int = 1, chunk: int = 256) -> np.ndarray:
    """[n, d] float32 HOG descriptors of cleaned photos, taken `chunk` at a time from `images`
    (a generator of photos never holds more than a chunk of them in memory)."""

    def one(image: Image.Image) -> np.ndarray:
        grey = np.asarray(image.convert("L").resize((HOG_SIZE, HOG_SIZE), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
        return hog(grey, block_norm="L2-Hys", feature_vector=True, **HOG_PARAMS).astype(np.float32)

    rows: list[np.ndarray] = []
    source = iter(images)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while batch := list(islice(source, chunk)):
            rows += pool.map(one, batch)
    return np.stack(rows) if rows else np.zeros((0, hog_dim()), np.float32)


def hog_dim() -> int:
    cells = HOG_SIZE // HOG_PARAMS["pixels_per_cell"][0]
    blocks = cells - HOG_PARAMS["cells_per_block"][0] + 1
    return blocks * blocks * HOG_PARAMS["cells_per_block"][0] ** 2 * HOG_PARAMS["orientations"]


@dataclass
class HogSvmBaseline:
    classes: list[str]
    mean: np.ndarray  # [d] standardisation
    scale: np.ndarray  # [d]
    coef: np.ndarray  # [C, d]
    intercept: np.ndarray  # [C]
    c: float  # the SVM's regularisation constant

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, classes: list[str], c: float, seed: int = 0) -> "HogSvmBaseline":
        """A one-vs-rest linear SVM on standardised HOG features (primal solver: photos outnumber dimensions)."""
        scaler = StandardScaler().fit(features)
        svm = LinearSVC(C=c, dual=False, random_state=seed, max_iter=5000).fit(scaler.transform(features), labels)
        coef = np.zeros((len(classes), features.shape[1]), np.float32)
        intercept = np.full(len(classes), -1e3, np.float32)  # a class absent from training is never predicted
        coef[svm.classes_], intercept[svm.classes_] = svm.coef_, svm.intercept_
        return cls(list(classes), scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32), coef, intercept, c)

    def proba_from_features(self, features: np.ndarray) -> np.ndarray:
        return softmax_rows(((features - self.mean) / self.scale) @ self.coef.T + self.intercept)

    def predict_proba(self, images: list[Image.Image]) -> np.ndarray:
        """[n, C] probabilities for cleaned photos."""
        return self.proba_from_features(hog_features(images))

    def save(self, directory: Path, metrics: dict | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / WEIGHTS_FILE, mean=self.mean, scale=self.scale, coef=self.coef, intercept=self.intercept)
        sidecar = {"classes": self.classes, "c": self.c, "hog_size": HOG_SIZE, "hog": HOG_PARAMS, "metrics": metrics or {}}
        (directory / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2))

    @classmethod
    def load(cls, config: Config) -> "HogSvmBaseline":
        directory = config.paths.image_model
        sidecar_path, weights_path = directory / SIDECAR_FILE, directory / WEIGHTS_FILE
        require_files((sidecar_path, weights_path), "fbm train image")
        sidecar = read_json(sidecar_path, "fbm train image")
        if sidecar["hog_size"] != HOG_SIZE or sidecar["hog"] != HOG_PARAMS:
            raise ValueError(f"{sidecar_path} was trained with other HOG settings: retrain with `fbm train image`")
        with np.load(weights_path, allow_pickle=False) as arrays:
            return cls(sidecar["classes"], arrays["mean"], arrays["scale"], arrays["coef"], arrays["intercept"], sidecar["c"])
