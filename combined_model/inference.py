"""The serving-side predictor: both branches and the fusion, loaded once, batched.

`Predictor.prepare` + `Predictor.predict_prepared` (together `predict_many`) are the one code path
for the API, `fbm similar` and `fbm evaluate`: images must already be cleaned by
`listings.images.clean_photo`; `prepare` applies the branches' own preprocessing (the functions
their training used) and needs no network (it also scores the text with the TF-IDF model when
the served late fusion weighs it, beside a photo: a sparse product), so the API runs it on its
decode workers while the inference threads run only the networks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from combined_model.features import concat_embeddings, text_is_used
from combined_model.fusion import EARLY, LATE, FusionClassifier, LateWeights, combine
from image_model.inference import ImageBranch
from listings.artifacts import first_line, load_weights, read_json, require_files, require_trained
from listings.config import Config
from listings.data import clean_listing_text
from text_model.baseline import TfidfSvmBaseline
from text_model.inference import TextBranch

MODES = ("image", "text", "combined")
MODEL_FILE = "model.pt"
SIDECAR_FILE = "model.json"
TRAIN_COMMAND = "fbm train combined"


UNCERTAIN_BELOW = 0.5  # a top probability under this is an uncertain answer


@dataclass
class Prediction:
    pred: str
    classes: list[str]  # every category, most probable first
    probabilities: list[float]  # aligned with classes
    modalities: list[str]  # the inputs actually used: "image", "text"
    image_embedding: np.ndarray | None = field(default=None, repr=False)  # [photos, d_img]: the index folds them
    text_embedding: np.ndarray | None = field(default=None, repr=False)  # [d_txt]
    low_confidence: bool = False  # e.g. a text with no known word
    text_tokens: list[str] | None = field(default=None, repr=False)  # the used text's tokens (the index re-ranks by its words)

    @property
    def uncertain(self) -> bool:
        """Under even odds (the search page marks the same, in api/static/app.js): the runner-up is worth naming."""
        return self.probabilities[0] < UNCERTAIN_BELOW and len(self.classes) > 1

    def runner_up(self) -> str:
        """`Home & Garden (0.30)`: the second answer and its probability."""
        return f"{self.classes[1]} ({self.probabilities[1]:.2f})"


@dataclass
class PreparedListing:
    """One listing's inputs as the networks read them (`Predictor.prepare`)."""

    views: list[np.ndarray]  # one uint8 input view per photo used
    text: tuple[list[int], int] | None  # (token ids, known tokens) of the text used, if any
    tokens: list[str] | None = None  # the text's tokens
    weigh_tfidf: bool = False  # late fusion weighs the TF-IDF model's answer for this listing

    @property
    def photos(self) -> int:
        return len(self.views)

    @property
    def tfidf_tokens(self) -> list[str] | None:
        """The tokens the TF-IDF model scores, when the fusion weighs it."""
        return self.tokens if self.weigh_tfidf else None


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
    tfidf_probs: np.ndarray  # [rows, C] zeros where not computed
    known_tokens: np.ndarray  # [listings]


class Predictor:
    def __init__(self, image: ImageBranch, text: TextBranch, fusion: FusionClassifier, sidecar: dict, tfidf: TfidfSvmBaseline | None = None):
        classes = list(sidecar["classes"])
        if any(list(model.classes) != classes for model in (image, text, *([tfidf] if tfidf else []))):
            raise ValueError("the image, text and fusion models were trained on different category lists: retrain with `fbm train all`")
        self.image, self.text, self.fusion = image, text, fusion
        self.classes: list[str] = classes
        self.method: str = sidecar["served_method"]
        self.late = LateWeights.from_json(sidecar["late_weights"])
        if tfidf is not None and tfidf.stem != text.stem:
            raise ValueError("the TF-IDF and text CNN models tokenize differently: retrain with `fbm train text`")
        self.tfidf = tfidf
        if self.uses_tfidf and tfidf is None:
            raise ValueError("the served late fusion weighs the TF-IDF text model, which was not given")
        self.versions = {
            "image": getattr(image, "version", "image"),
            "text": getattr(text, "version", "text"),
            "fusion": f"late({self.late.describe()})" if self.method == LATE else "early",
        }

    @property
    def uses_tfidf(self) -> bool:
        return self.method == LATE and self.late.tfidf > 0

    @classmethod
    def load(cls, config: Config) -> "Predictor":
        require_trained(config)  # nothing trained at all: what to run, not one stage's missing file
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
        try:
            served_late = sidecar["served_method"] == LATE and LateWeights.from_json(sidecar["late_weights"]).tfidf > 0
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{sidecar_path} lacks valid late-fusion weights ({first_line(exc)}): rerun `{TRAIN_COMMAND}`") from exc
        tfidf = TfidfSvmBaseline.load(config) if served_late else None
        return cls(ImageBranch.load(config), TextBranch.load(config), fusion, sidecar, tfidf)

    def predict(self, images: list[Image.Image], text: str | None, mode: str = "combined") -> Prediction:
        return self.predict_many([(images, text)], mode)[0]

    def predict_many(self, items: list[tuple[list[Image.Image], str | None]], mode: str = "combined") -> list[Prediction]:
        """Classify listings given as (cleaned photos, text); `mode` limits which inputs are used."""
        return self.predict_prepared([self.prepare(images, text, mode) for images, text in items])

    def prepare(self, images: list[Image.Image], text: str | None, mode: str = "combined", require_input: bool = True) -> PreparedListing:
        """The inputs `mode` uses, preprocessed (a text pasted whole from a listing loses its Gumtree
        suffix and boilerplate); a listing left with neither is refused (ValueError)
        unless `require_input` is False (offline evaluation scores such a listing too)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        images = list(images) if mode != "text" else []
        text = clean_listing_text(text) if mode != "image" else ""  # as training cleaned its listings' fields
        if require_input and not images and not text:
            raise ValueError(f"{mode} prediction needs " + {"image": "a photo", "text": "a text", "combined": "a photo or a text"}[mode])
        views = [self.image.view(image) for image in images]
        if not text:
            return PreparedListing(views, None)
        tokens = self.text.tokenize(text)
        # Late fusion weighs the TF-IDF model only beside a photo; a text alone is the text CNN's.
        return PreparedListing(views, self.text.encode_tokens(tokens), tokens, weigh_tfidf=self.uses_tfidf and bool(views))

    def predict_prepared(self, listings: list[PreparedListing]) -> list[Prediction]:
        out = self.branch_outputs(listings)
        rows = self.fuse(out, self.method, out.tfidf_probs)
        return [self._prediction(i, rows, out, listing.tokens) for i, listing in enumerate(listings)]

    def fuse(self, out: BatchOutputs, method: str, tfidf_probs: np.ndarray | None) -> np.ndarray:
        """Each row's probabilities by `method` (EARLY: the fusion classifier over the concatenated
        embeddings; LATE: the weighted mean of the branches', with the TF-IDF model's rows where given)."""
        fusion_probs = self.fusion.predict_proba(concat_embeddings(out.image_embedding, out.text_embedding)) if method == EARLY else None
        return combine(out.image_probs, out.text_probs, fusion_probs, out.has_image, out.has_text, method, self.late, tfidf_probs)

    def branch_outputs(self, listings: list[PreparedListing]) -> BatchOutputs:
        """Run each branch once, batched, over every photo and text of `listings`."""
        owner = np.array([i for i, listing in enumerate(listings) for _ in range(max(listing.photos, 1))], dtype=np.int64)
        views = [view for listing in listings for view in (listing.views or [None])]
        has_image = np.array([view is not None for view in views], dtype=bool)
        image_embedding = np.zeros((len(views), self.image.embed_dim), np.float32)
        image_probs = np.zeros((len(views), len(self.classes)), np.float32)
        if has_image.any():
            image_embedding[has_image], image_probs[has_image] = self.image.embed_views([view for view in views if view is not None])

        given = np.array([listing.text is not None for listing in listings], dtype=bool)
        text_embedding = np.zeros((len(listings), self.text.embed_dim), np.float32)
        text_probs = np.zeros((len(listings), len(self.classes)), np.float32)
        known = np.zeros(len(listings), np.int64)
        if given.any():
            text_embedding[given], text_probs[given], known[given] = self.text.embed_encoded([listing.text for listing in listings if listing.text is not None])
        tfidf_probs = np.zeros((len(listings), len(self.classes)), np.float32)
        scored = np.array([listing.tfidf_tokens is not None for listing in listings], dtype=bool)
        if scored.any():  # one call for the batch: scikit-learn's overhead per call is most of a single text's cost
            tfidf_probs[scored] = self.tfidf.predict_proba_tokens([listing.tfidf_tokens for listing in listings if listing.tfidf_tokens is not None])
        listing_has_image = np.array([listing.photos > 0 for listing in listings], dtype=bool)
        text_used = given & text_is_used(known, listing_has_image)
        return BatchOutputs(
            owner, image_embedding, image_probs, has_image, text_embedding[owner], text_probs[owner], text_used[owner], tfidf_probs[owner], known
        )

    def _prediction(self, i: int, rows: np.ndarray, out: BatchOutputs, tokens: list[str] | None) -> Prediction:
        mine = out.owner == i
        probs = rows[mine].mean(axis=0)
        order = np.argsort(-probs)
        used_image, used_text = bool(out.has_image[mine].any()), bool(out.has_text[mine].any())
        return Prediction(
            pred=self.classes[order[0]],
            classes=[self.classes[j] for j in order],
            probabilities=[float(probs[j]) for j in order],
            modalities=[name for name, used in (("image", used_image), ("text", used_text)) if used],
            image_embedding=out.image_embedding[mine][out.has_image[mine]] if used_image else None,
            text_embedding=out.text_embedding[mine][0] if used_text else None,
            low_confidence=used_text and not used_image and out.known_tokens[i] == 0,
            text_tokens=tokens if used_text else None,
        )
