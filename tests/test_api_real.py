"""The API over the real serving stack: `combined_model.inference.Predictor` with its real branches
(EfficientNet-Lite0 and the text CNN, random weights: this checks the wiring, not accuracy), the real
index built from its embeddings, and `load_services`' start-up checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from pipeline import needs_nltk_data

from api.app import create_app
from api.services import Services, warm_up
from listings.photos import PhotoStore
from combined_model.fusion import LATE, LateWeights, combine
from listings.config import TextConfig
from listings.data import listing_text
from retrieval.index import ListingIndex
from retrieval.vectors import fold_photos, listing_vectors
from test_api_fakes import CLASSES, catalogue_rows, jpeg_bytes, synthetic_photo, tiny_config

pytestmark = needs_nltk_data  # the text branch tokenizes

KEY = "real-key"
LATE_WEIGHTS = LateWeights(image=0.3, text=0.3, tfidf=0.4, tfidf_power=2.0)  # served: every expert weighs


def random_predictor():
    from combined_model.fusion import FusionClassifier
    from combined_model.inference import Predictor
    from text_model.baseline import TfidfSvmBaseline
    from image_model.inference import ImageBranch
    from image_model.model import Architecture, build_network
    from text_model.inference import TextBranch
    from text_model.model import TextCNN, TextCNNShape
    from text_model.vocab import Vocabulary

    torch.manual_seed(0)
    architecture = Architecture("efficientnet_lite0", "last_block", 224, len(CLASSES), 256, 0.3, precision="float32")
    image = ImageBranch(build_network(architecture), CLASSES, {"weights_sha256": "random"})
    words = sorted({w for row in catalogue_rows() for w in row["title"].lower().replace(",", " ").split()})
    vocab = Vocabulary.from_words(words)
    text_model = TextCNN(TextCNNShape(vocab_size=len(vocab), word_dim=32, n_classes=len(CLASSES), channels=16))
    text = TextBranch(text_model, vocab, {"classes": CLASSES, "stem": False, "max_tokens": 64})
    fusion = FusionClassifier(512, len(CLASSES))
    texts = [listing_text(row["title"], row["description"]) for row in catalogue_rows() if row["title"]]
    labels = [CLASSES.index(row["category"].split(" / ")[0]) for row in catalogue_rows() if row["title"]]
    tfidf = TfidfSvmBaseline.from_config(CLASSES, TextConfig(tfidf_min_df=1)).fit([text.tokenize(t) for t in texts], labels)
    sidecar = {"classes": CLASSES, "served_method": "late", "late_weights": LATE_WEIGHTS.to_json()}
    return Predictor(image, text, fusion, sidecar, tfidf)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A client over the real predictor and an index of the synthetic catalogue built from its embeddings."""
    config = tiny_config(tmp_path_factory.mktemp("real"), api_key=KEY)
    config.apply_nltk_data()
    predictor = random_predictor()
    warm_up(predictor, config)
    photo_dir = config.paths.clean_images(config.data.image_size)
    photo_dir.mkdir(parents=True)
    rows = catalogue_rows()
    items = []
    for row in rows:
        photos = []
        for image_id in row["image_ids"]:
            synthetic_photo(row["colour"], row["shape"]).resize((256, 256)).save(photo_dir / f"{image_id}.jpg", quality=95)
            photos.append(Image.open(photo_dir / f"{image_id}.jpg").convert("RGB"))
        items.append((photos, listing_text(row["title"], row["description"]) or None))
    predictions = predictor.predict_many(items, "combined")
    image = np.array([fold_photos(p.image_embedding) if p.image_embedding is not None else np.zeros(256, np.float32) for p in predictions])
    text = np.array([p.text_embedding if p.text_embedding is not None else np.zeros(256, np.float32) for p in predictions])
    has_image = np.array([p.image_embedding is not None for p in predictions])
    has_text = np.array([p.text_embedding is not None for p in predictions])
    ListingIndex.build(config.paths.index, listing_vectors(image, has_image, text, has_text), rows, config.index).close()
    index = ListingIndex.open(config.paths.index, config.index)
    services = Services(predictor=predictor, index=index, photos=PhotoStore.for_config(config))
    with TestClient(create_app(config, services)) as client:
        yield client


def test_each_endpoint_with_the_real_predictor(real):
    photo = jpeg_bytes(synthetic_photo("green", "square", (500, 300)))
    for path, files, data, used in [
        ("/image", {"img": ("p.jpg", photo)}, {}, ["image"]),
        ("/text", None, {"txt": "Green oak dining chair"}, ["text"]),
        ("/combined", {"img": ("p.jpg", photo)}, {"txt": "Green oak dining chair"}, ["image", "text"]),
    ]:
        body = real.post(path, files=files, data=data).json()
        assert body["modalities"] == used and body["pred"] == body["classes"][0] and sorted(body["classes"]) == CLASSES
        assert abs(sum(body["probabilities"]) - 1) < 1e-4

    unknown = real.post("/text", data={"txt": "zzzz qqqq"}).json()
    assert unknown["low_confidence"] is True
    health = real.get("/health").json()
    assert health["listings"] == 12 and health["models"]["image"].startswith("efficientnet_lite0")
    assert health["models"]["fusion"] == f"late({LATE_WEIGHTS.describe()})"


def test_a_batch_scores_the_tfidf_model_of_each_listing_with_a_photo():
    predictor = random_predictor()
    photo = synthetic_photo("red", "circle")
    texts = ["Red velvet armchair", "Mountain bike, 21 gears", "Green oak dining chair"]
    listings = [predictor.prepare([photo], texts[0]), predictor.prepare([], texts[1]), predictor.prepare([photo, photo], texts[2])]
    out = predictor.branch_outputs(listings)
    np.testing.assert_allclose(out.tfidf_probs[out.owner == 0], predictor.tfidf.predict_proba([texts[0]]), rtol=1e-6)
    np.testing.assert_allclose(out.tfidf_probs[out.owner == 2], predictor.tfidf.predict_proba([texts[2]] * 2), rtol=1e-6)
    assert not out.tfidf_probs[out.owner == 1].any()  # a text alone is the text CNN's


@pytest.mark.parametrize("mode", ["image", "combined"])
def test_a_listings_probabilities_are_the_mean_over_its_photos(mode, monkeypatch):
    """Fusion is per photo (with the listing's text), and the listing's answer is the mean of its photos'."""
    predictor = random_predictor()

    def by_colour(views: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:  # a random network tells photos apart too little
        colours = np.array([view.reshape(-1, 3).mean(axis=0) / 255 for view in views], dtype=np.float32)
        embeddings = np.zeros((len(views), predictor.image.embed_dim), np.float32)
        embeddings[:, :3] = colours
        logits = np.zeros((len(views), len(CLASSES)), np.float32)
        logits[:, :3] = 4 * colours
        return embeddings, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    monkeypatch.setattr(predictor.image, "embed_views", by_colour)
    photos = [synthetic_photo("red", "circle"), synthetic_photo("blue", "square")]
    text = "Red velvet armchair"

    def probabilities(prediction) -> np.ndarray:
        return np.array([prediction.probabilities[prediction.classes.index(name)] for name in CLASSES])

    alone = [probabilities(predictor.predict([photo], text, mode)) for photo in photos]
    both = probabilities(predictor.predict(photos, text, mode))
    assert not np.allclose(alone[0], alone[1], atol=1e-3)
    np.testing.assert_allclose(both, np.mean(alone, axis=0), atol=1e-5)


def test_served_late_fusion_weighs_the_tfidf_model_of_the_listing_text():
    predictor = random_predictor()
    photo, title = synthetic_photo("green", "square"), "Green oak dining chair"
    prediction = predictor.predict([photo], title)
    out = predictor.branch_outputs([predictor.prepare([photo], title)])
    tfidf = predictor.tfidf.predict_proba([title])
    assert np.allclose(out.tfidf_probs, tfidf)
    assert predictor.prepare([], title).tfidf_tokens is None  # not scored where late fusion does not weigh it
    image = out.image_probs
    both = np.array([True])
    expected = combine(image, out.text_probs, None, both, both, LATE, LATE_WEIGHTS, tfidf)[0]
    probabilities = dict(zip(prediction.classes, prediction.probabilities))
    np.testing.assert_allclose([probabilities[c] for c in CLASSES], expected, rtol=1e-4, atol=1e-6)
    text_only = predictor.predict([], title)  # no photo: the text CNN alone, as /text answers
    np.testing.assert_allclose(sorted(text_only.probabilities), sorted(out.text_probs[0]), rtol=1e-4, atol=1e-6)


def test_similar_with_each_modality_on_real_embeddings(real):
    by_text = real.post("/similar", data={"txt": "Green oak dining chair", "k": "3"}).json()
    assert by_text["modalities"] == ["text"] and by_text["results"][0]["product_id"] == "prod-01"
    photo = real.get("/images/img-03").content  # the yellow bench's own photo
    by_photo = real.post("/similar", files={"img": ("b.jpg", photo)}, data={"k": "3"}).json()
    # Random image weights embed every photo alike, so only the shape of the answer is checked here.
    assert by_photo["modalities"] == ["image"] and len(by_photo["results"]) == 3
    assert all(hit["image_ids"] and 0 <= hit["score"] <= 1 for hit in by_photo["results"])
    both = real.post("/similar", files={"img": ("b.jpg", photo)}, data={"txt": "Yellow garden bench"}).json()
    assert both["modalities"] == ["image", "text"] and both["results"][0]["product_id"] == "prod-03"


def test_similar_refuses_a_text_alone_with_no_known_word_and_ranks_its_photo_without_it(real):
    refused = real.post("/similar", data={"txt": "zzzz qqqq"})
    assert refused.status_code == 422 and "no word the model knows" in refused.json()["detail"]
    photo = real.get("/images/img-03").content
    by_photo = real.post("/similar", files={"img": ("b.jpg", photo)}, data={"txt": "zzzz qqqq", "k": "3"}).json()
    assert by_photo["modalities"] == ["image"] and len(by_photo["results"]) == 3


def test_add_and_delete_with_real_embeddings(real):
    auth = {"X-API-Key": KEY}
    photo = jpeg_bytes(synthetic_photo("blue", "square", (300, 500)))
    created = real.post("/listings", data={"title": "Blue pine wardrobe", "price": "40"}, files={"img": ("w.jpg", photo)}, headers=auth)
    assert created.status_code == 201, created.text
    product_id = created.json()["product_id"]
    hits = real.post("/similar", files={"img": ("w.jpg", photo)}, data={"txt": "Blue pine wardrobe", "k": "1"}).json()["results"]
    assert hits[0]["product_id"] == product_id
    assert real.delete(f"/listings/{product_id}", headers=auth).status_code == 200
    assert real.get("/health").json()["listings"] == 12


def test_one_known_word_is_not_low_confidence():
    predictor = random_predictor()
    word = next(w for w in predictor.text.vocab.words[2:] if predictor.text.encode(w)[1] == 1)
    assert not predictor.predict([], word, "text").low_confidence
    assert predictor.predict([], "zzzz qqqq", "text").low_confidence
