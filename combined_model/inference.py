"""The serving-side predictor: both branches and the fusion, loaded once, batched.

`Predictor.predict_many` is the one code path for the API, `fbm similar` and `fbm evaluate`:
images must already be cleaned by `listings.images.clean_photo`; the branches apply their own
preprocessing, the same functions their training used.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from combined_model.features import concat_embeddings
from combined_model.fusion import EARLY, FusionClassifier, combine
from image_model.inference import ImageBranch
from listings.artifacts import first_line, load_weights, read_json, require_files
from listings.config import Config
from text_model.inference import TextBranch

MODES = ("image", "text", "combined")
MODEL_FILE = "model.pt"
SIDECAR_FILE = "model.json"
TRAIN_COMMAND = "fbm train combined"


@dataclass
class Prediction:
    pred: str
    classes: list[str]  # every category, most probable first
    probabilities: list[float]  # aligned with classes
    modalities: list[str]  # the inputs actually used: "image", "text"
    image_embedding: np.ndarray | None = field(default=None, repr=False)  # [d_img], mean over the photos
    text_embedding: np.ndarray | None = field(default=None, repr=False)  # [d_txt]
    low_confidence: bool = False  # e.g. a text with no known word


@dataclass
class BatchOutputs:
    """Branch outputs for a batch of listings: one row per photo (one row for a listing without)."""

    owner: np.ndarray  # [rows] index of the listing a row belongs to
    image_embedding: np.ndarray
    image_probs: np.ndarray
    has_image: np.ndarray
    text_embedding: np.ndarray
    text_probs: np.ndarray
    has_text: np.ndarray
    known_tokens: np.ndarray  # [listings]


class Predictor:
    def __init__(self, image: ImageBranch, text: TextBranch, fusion: FusionClassifier, sidecar: dict):
        if list(image.classes) != list(text.classes) or list(text.classes) != list(sidecar["classes"]):
            raise ValueError("the image, text and fusion models were trained on different category lists: retrain with `fbm train all`")
        self.image, self.text, self.fusion = image, text, fusion
        self.classes: list[str] = list(sidecar["classes"])
        self.method: str = sidecar["served_method"]
        self.image_weight: float = float(sidecar["late_image_weight"])
        self.versions = {
            "image": getattr(image, "version", "image"),
            "text": getattr(text, "version", "text"),
            "fusion": f"{self.method}(image_weight={self.image_weight})",
        }

    @classmethod
    def load(cls, config: Config) -> "Predictor":
        directory = config.paths.combined_model
        sidecar_path, weights_path = directory / SIDECAR_FILE, directory / MODEL_FILE
        require_files((sidecar_path, weights_path), TRAIN_COMMAND)
        sidecar = read_json(sidecar_path, TRAIN_COMMAND)
        state_dict = load_weights(weights_path, TRAIN_COMMAND)
        try:
            fusion = FusionClassifier(sidecar["in_dim"], len(sidecar["classes"]), sidecar["hidden"], sidecar["dropout"])
            fusion.load_state_dict(state_dict)
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ValueError(f"{directory} holds a mismatched fusion model ({first_line(exc)}): rerun `{TRAIN_COMMAND}`") from exc
        fusion.eval()
        return cls(ImageBranch.load(config), TextBranch.load(config), fusion, sidecar)

    def predict(self, images: list[Image.Image], text: str | None, mode: str = "combined") -> Prediction:
        return self.predict_many([(images, text)], mode)[0]

    def predict_many(self, items: list[tuple[list[Image.Image], str | None]], mode: str = "combined") -> list[Prediction]:
        """Classify listings given as (cleaned photos, text); `mode` limits which inputs are used."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        items = [(list(images) if mode != "text" else [], text if mode != "image" else None) for images, text in items]
        for images, text in items:
            if not images and not (text and text.strip()):
                raise ValueError(f"{mode} prediction needs " + {"image": "a photo", "text": "a text", "combined": "a photo or a text"}[mode])
        out = self.branch_outputs(items)
        if self.method == EARLY:
            fusion_probs = self.fusion.predict_proba(concat_embeddings(out.image_embedding, out.text_embedding))
        else:
            fusion_probs = None
        rows = combine(out.image_probs, out.text_probs, fusion_probs, out.has_image, out.has_text, self.method, self.image_weight)
        return [self._prediction(i, rows, out) for i in range(len(items))]

    def branch_outputs(self, items: list[tuple[list[Image.Image], str | None]]) -> BatchOutputs:
        """Run each branch once, batched, over every photo and text of `items`."""
        owner = np.array([i for i, (images, _) in enumerate(items) for _ in range(max(len(images), 1))])
        photos = [photo for images, _ in items for photo in (images or [None])]
        has_image = np.array([photo is not None for photo in photos])
        image_embedding = np.zeros((len(photos), self.image.embed_dim), np.float32)
        image_probs = np.zeros((len(photos), len(self.classes)), np.float32)
        if has_image.any():
            image_embedding[has_image], image_probs[has_image] = self.image.embed_and_predict([p for p in photos if p is not None])

        texts = [(text or "").strip() for _, text in items]
        given = np.array([bool(t) for t in texts])
        text_embedding = np.zeros((len(items), self.text.embed_dim), np.float32)
        text_probs = np.zeros((len(items), len(self.classes)), np.float32)
        known = np.zeros(len(items), np.int64)
        if given.any():
            text_embedding[given], text_probs[given], known[given] = self.text.embed_and_predict([t for t in texts if t])
        # A text with no known word says nothing beside a photo; alone, it still gets its (low-confidence) answer.
        listing_has_image = np.array([bool(images) for images, _ in items])
        text_used = given & ((known > 0) | ~listing_has_image)
        return BatchOutputs(owner, image_embedding, image_probs, has_image, text_embedding[owner], text_probs[owner], text_used[owner], known)

    def _prediction(self, i: int, rows: np.ndarray, out: BatchOutputs) -> Prediction:
        mine = out.owner == i
        probs = rows[mine].mean(axis=0)
        order = np.argsort(-probs)
        used_image, used_text = bool(out.has_image[mine].any()), bool(out.has_text[mine].any())
        return Prediction(
            pred=self.classes[order[0]],
            classes=[self.classes[j] for j in order],
            probabilities=[float(probs[j]) for j in order],
            modalities=[name for name, used in (("image", used_image), ("text", used_text)) if used],
            image_embedding=out.image_embedding[mine].mean(axis=0) if used_image else None,
            text_embedding=out.text_embedding[mine][0] if used_text else None,
            low_confidence=used_text and not used_image and out.known_tokens[i] == 0,
        )
