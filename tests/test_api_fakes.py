"""Stand-ins and fixtures for the API tests: a deterministic predictor, a tiny catalogue, a live server.

The predictor has the interface of `combined_model.inference.Predictor` (classes, versions,
prepare, predict_prepared, predict_many) and embeds what it is given so that identical inputs get identical vectors: a photo
or a text of a catalogue listing finds that listing first. The index is the real
`retrieval.index.ListingIndex`, built over a dozen synthetic listings with real cleaned photos.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import uvicorn
from PIL import Image, ImageDraw

from api.app import create_app
from api.server import server_options
from api.services import Services
from listings.photos import PhotoStore
from listings.config import Config
from listings.data import listing_text
from listings.images import clean_image
from retrieval.index import ListingIndex
from retrieval.vectors import fold_photos, listing_vectors

CLASSES = ["Appliances", "Home & Garden", "Phones, Mobile Phones & Telecoms"]
DIM = 256
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40)}


@dataclass
class FakePrediction:
    pred: str
    classes: list[str]
    probabilities: list[float]
    modalities: list[str]
    image_embedding: np.ndarray | None = field(default=None, repr=False)
    text_embedding: np.ndarray | None = field(default=None, repr=False)
    low_confidence: bool = False


@dataclass
class FakePrepared:
    images: list
    text: str

    @property
    def photos(self) -> int:
        return len(self.images)


class FakePredictor:
    """Embeds photos by their pixels and texts by their hashed words; classifies with fixed weights."""

    def __init__(self, delay_s: float = 0.0):
        rng = np.random.default_rng(0)
        self.classes = list(CLASSES)
        self.versions = {"image": "fake-image", "text": "fake-text", "fusion": "fake-fusion"}
        self.pixel_projection = rng.normal(size=(8 * 8 * 3, DIM)).astype(np.float32)
        self.weights = rng.normal(size=(2 * DIM, len(CLASSES))).astype(np.float32)
        self.delay_s = delay_s
        self.batch_sizes: list[int] = []
        self.image = self.text = type("Branch", (), {"embed_dim": DIM})()

    def embed_image(self, image: Image.Image) -> np.ndarray:
        pixels = np.asarray(image.convert("RGB").resize((8, 8)), np.float32).reshape(-1) / 255.0 - 0.5
        return pixels @ self.pixel_projection

    @staticmethod
    def embed_text(text: str) -> np.ndarray:
        vector = np.zeros(DIM, np.float32)
        for word in re.findall(r"\w+", text.lower()):
            digest = hashlib.sha1(word.encode()).digest()
            vector[int.from_bytes(digest[:4], "little") % DIM] += 1.0 if digest[4] % 2 else -1.0
        return vector

    def predict(self, images, text, mode="combined"):
        return self.predict_many([(images, text)], mode)[0]

    def predict_many(self, items, mode="combined"):
        return self.predict_prepared([self.prepare(images, text, mode) for images, text in items])

    def prepare(self, images, text, mode="combined"):
        if mode not in ("image", "text", "combined"):
            raise ValueError(f"unknown mode {mode!r}")
        images = list(images) if mode != "text" else []
        text = (text or "").strip() if mode != "image" else ""
        if not images and not text:
            raise ValueError(f"{mode} prediction needs input")
        return FakePrepared(images, text)

    def predict_prepared(self, items):
        self.batch_sizes.append(len(items))
        if self.delay_s:
            time.sleep(self.delay_s)
        predictions = []
        for images, text in ((item.images, item.text) for item in items):
            image_vec = np.mean([self.embed_image(i) for i in images], axis=0) if images else None
            text_vec = self.embed_text(text) if text else None
            both = np.concatenate([np.zeros(DIM) if image_vec is None else image_vec, np.zeros(DIM) if text_vec is None else text_vec])
            logits = both @ self.weights / 10
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            order = np.argsort(-probs)
            predictions.append(
                FakePrediction(
                    pred=self.classes[order[0]],
                    classes=[self.classes[j] for j in order],
                    probabilities=[float(probs[j]) for j in order],
                    modalities=[m for m, v in (("image", image_vec), ("text", text_vec)) if v is not None],
                    image_embedding=image_vec,
                    text_embedding=text_vec,
                )
            )
        return predictions


def synthetic_photo(colour: str, shape: str, size: tuple[int, int] = (320, 240)) -> Image.Image:
    image = Image.new("RGB", size, (245, 245, 245))
    draw = ImageDraw.Draw(image)
    box = (size[0] // 5, size[1] // 5, 4 * size[0] // 5, 4 * size[1] // 5)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    return image


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def catalogue_rows() -> list[dict]:
    """Twelve listings, photo-only, text-only and both, across the three categories and prices."""
    rows = []
    items = [
        ("red", "circle", "Red round kettle, 1.7 litre", "Appliances / Kitchen"),
        ("green", "square", "Green oak dining chair", "Home & Garden / Dining"),
        ("blue", "circle", "Blue smartphone with case", "Phones, Mobile Phones & Telecoms / Mobile Phones"),
        ("yellow", "square", "Yellow garden bench", "Home & Garden / Garden"),
        ("red", "square", "Red washing machine 8kg", "Appliances / Laundry"),
        ("blue", "square", "Blue cordless landline telephone", "Phones, Mobile Phones & Telecoms / Home Phones"),
        ("green", "circle", "Green glass table lamp", "Home & Garden / Lighting"),
        ("yellow", "circle", "Yellow toaster two slice", "Appliances / Kitchen"),
        (None, None, "Vintage rotary dial phone", "Phones, Mobile Phones & Telecoms / Home Phones"),
        (None, None, "Pine wardrobe with two doors", "Home & Garden / Bedroom"),
        ("red", "circle", None, "Appliances / Kitchen"),
        ("blue", "circle", None, "Phones, Mobile Phones & Telecoms / Mobile Phones"),
    ]
    for i, (colour, shape, title, category) in enumerate(items):
        rows.append(
            {
                "product_id": f"prod-{i:02d}",
                "title": title or "",
                "description": "",
                "price": float(10 * (i + 1)),
                "location": f"Town {i}, County",
                "category": category,
                "colour": colour,
                "shape": shape,
                "image_ids": [f"img-{i:02d}"] if colour else [],
            }
        )
    return rows


def build_catalogue(config: Config, predictor: FakePredictor) -> list[dict]:
    """Write cleaned photos and build the real index over `catalogue_rows()` under `config`'s artifacts."""
    photo_dir = config.paths.clean_images(config.data.image_size)
    photo_dir.mkdir(parents=True, exist_ok=True)
    rows = catalogue_rows()
    image, has_image, text, has_text = [], [], [], []
    for row in rows:
        photos = []
        for image_id in row["image_ids"]:
            cleaned = clean_image(jpeg_bytes(synthetic_photo(row["colour"], row["shape"])), config.data.image_size)
            cleaned.save(photo_dir / f"{image_id}.jpg", quality=95)
            photos.append(Image.open(photo_dir / f"{image_id}.jpg"))
        words = listing_text(row["title"], row["description"])
        (prediction,) = predictor.predict_many([(photos, words or None)], "combined")
        image.append(fold_photos(prediction.image_embedding) if photos else np.zeros(DIM, np.float32))
        has_image.append(bool(photos))
        text.append(prediction.text_embedding if words else np.zeros(DIM, np.float32))
        has_text.append(bool(words))
    vectors = listing_vectors(np.array(image), np.array(has_image), np.array(text), np.array(has_text))
    ListingIndex.build(config.paths.index, vectors, rows, config.index).close()
    return rows


def tiny_config(artifacts: Path, **serve) -> Config:
    config = Config()
    config.data.artifacts_dir = str(artifacts)
    config.serve.api_key = ""
    for name, value in serve.items():
        setattr(config.serve, name, value)
    return config


def fake_services(config: Config, predictor: FakePredictor | None = None) -> Services:
    predictor = predictor or FakePredictor()
    if not (config.paths.index / "CURRENT").exists():
        build_catalogue(config, predictor)
    index = ListingIndex.open(config.paths.index, config.index)
    return Services(predictor=predictor, index=index, photos=PhotoStore.for_config(config))


@contextlib.contextmanager
def live_server(config: Config, services: Services):
    """Serve the app with uvicorn on a free loopback port in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = {**server_options(config), "log_level": "warning"}  # fbm serve's settings, on the socket bound here
    del options["host"], options["port"]
    server = uvicorn.Server(uvicorn.Config(create_app(config, services), lifespan="on", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
