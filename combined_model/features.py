"""Assemble the fusion's inputs from the frozen branches' exported embeddings.

The image branch exports one 256-d embedding and one probability vector per photo; the text
branch one of each per product, with the TF-IDF text model's probabilities beside them (late
fusion may weigh them). A fusion row is one photo of a product together with the
product's text (a product without a usable photo contributes one row with a zero image half),
so the fusion sees every photo, and a product's prediction is the mean over its rows, as for the
image branch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from image_model.inference import EXPORT_FILE as IMAGE_EXPORT
from image_model.inference import SIDECAR_FILE as IMAGE_SIDECAR
from listings.artifacts import read_json, require_files
from listings.config import Config
from text_model.inference import EXPORT_FILE as TEXT_EXPORT
from text_model.inference import SIDECAR_FILE as TEXT_SIDECAR


@dataclass
class BranchOutputs:
    """Per-row branch outputs; `product_index` maps each row to its product (0..n_products-1)."""

    labels: np.ndarray  # [n_products]
    product_index: np.ndarray  # [n_rows]
    image_embedding: np.ndarray  # [n_rows, d_img]
    image_probs: np.ndarray  # [n_rows, C]
    has_image: np.ndarray  # [n_rows] bool
    text_embedding: np.ndarray  # [n_rows, d_txt]
    text_probs: np.ndarray  # [n_rows, C]
    has_text: np.ndarray  # [n_rows] bool
    tfidf_probs: np.ndarray  # [n_rows, C] the TF-IDF text model's, zeros where there is no text

    @property
    def fusion_input(self) -> np.ndarray:
        return concat_embeddings(self.image_embedding, self.text_embedding)

    @property
    def row_labels(self) -> np.ndarray:
        return self.labels[self.product_index]


def concat_embeddings(image_embedding: np.ndarray, text_embedding: np.ndarray) -> np.ndarray:
    """The fusion's 512-d input: the two branch embeddings side by side (zeros for a missing one)."""
    return np.concatenate([image_embedding, text_embedding], axis=1).astype(np.float32)


def text_is_used(known_tokens: np.ndarray, has_image: np.ndarray) -> np.ndarray:
    """The one rule for a text with no known word, in training, the index and serving: it says
    nothing beside a photo, so it is used only for a listing without one (alone, it still gets its
    low-confidence answer)."""
    return (np.asarray(known_tokens) > 0) | ~np.asarray(has_image, dtype=bool)


def check_branches_know(config: Config, classes: list[str]) -> None:
    """A ValueError when a branch was trained on other categories than `classes`, the prepared
    listings': `fbm prepare` ran on other data since, and the branch's class indices would name
    categories it never learnt."""
    branches = (("image branch", config.paths.image_model / IMAGE_SIDECAR, "fbm train image"), ("text branch", config.paths.text_model / TEXT_SIDECAR, "fbm train text"))
    for name, sidecar, command in branches:
        check_same_categories(name, list(read_json(sidecar, command).get("classes", [])), classes, config)


def check_same_categories(what: str, trained: list[str], classes: list[str], config: Config) -> None:
    """A ValueError naming both category lists when `what` was trained on other categories than
    the prepared listings have."""
    if list(trained) != list(classes):
        raise ValueError(
            f"the {what} was trained on {_categories(trained)}, but the listings prepared in {config.paths.data} have "
            f"{_categories(classes)}: `fbm prepare` ran on other data since; `fbm train all` trains every stage on them"
        )


def _categories(names: list[str]) -> str:
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"{len(names)} categories ({shown})"


def load_export(path: Path, key: str, command: str, extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """A branch's export (`key` names its row ids); `extra` are further arrays it must hold."""
    require_files([path], command)
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    missing = [name for name in (key, "embeddings", "probs", *extra) if name not in arrays]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(map(repr, missing))}: rerun `{command}`")
    return arrays


def load_branch_exports(config: Config) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The image branch's export (per photo) and the text stage's (per product)."""
    image = load_export(config.paths.image_model / IMAGE_EXPORT, "image_ids", "fbm train image")
    text = load_export(config.paths.text_model / TEXT_EXPORT, "product_ids", "fbm train text", ("known_tokens", "tfidf_probs"))
    return image, text


def gather(products: pd.DataFrame, image_export: dict, text_export: dict, n_classes: int) -> BranchOutputs:
    """Rows for `products` (columns product_id, label, image_ids) from the two branch exports."""
    image_row = {image_id: i for i, image_id in enumerate(image_export["image_ids"].tolist())}
    text_row = {pid: i for i, pid in enumerate(text_export["product_ids"].tolist())}
    d_img = image_export["embeddings"].shape[1]
    d_txt = text_export["embeddings"].shape[1]
    known = text_export["known_tokens"]

    product_index, image_rows, text_rows = [], [], []
    for p, (pid, image_ids) in enumerate(zip(products["product_id"], products["image_ids"])):
        rows = [image_row[i] for i in image_ids if i in image_row] or [-1]
        for row in rows:
            product_index.append(p)
            image_rows.append(row)
            text_rows.append(text_row.get(pid, -1))

    product_index_arr = np.array(product_index, dtype=np.int64)
    image_rows_arr, text_rows_arr = np.array(image_rows, dtype=np.int64), np.array(text_rows, dtype=np.int64)
    has_image = image_rows_arr >= 0
    has_text = text_rows_arr >= 0
    product_has_image = np.bincount(product_index_arr[has_image], minlength=len(products)) > 0
    has_text &= text_is_used(known[np.maximum(text_rows_arr, 0)], product_has_image[product_index_arr])
    return BranchOutputs(
        labels=np.asarray(products["label"], dtype=np.int64),
        product_index=product_index_arr,
        image_embedding=_take(image_export["embeddings"], image_rows_arr, d_img),
        image_probs=_take(image_export["probs"], image_rows_arr, n_classes),
        has_image=has_image,
        text_embedding=_take(text_export["embeddings"], text_rows_arr, d_txt),
        text_probs=_take(text_export["probs"], text_rows_arr, n_classes),
        has_text=has_text,
        tfidf_probs=_take(text_export["tfidf_probs"], text_rows_arr, n_classes),
    )


def _take(array: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), dtype=np.float32)
    present = rows >= 0
    out[present] = array[rows[present]]
    return out
