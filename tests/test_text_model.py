"""Text branch: preprocessing, vocabulary, word2vec, the text CNN, the served branch, the TF-IDF
baseline and a tiny end-to-end `train_text` on a subset of the real dataset."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors
from nltk.stem import SnowballStemmer
from pipeline import SHARED_DATA, have_shared_data, needs_nltk_data, shared_subset, tiny_config

from listings.config import DEFAULT_NLTK_DATA, REPO_ROOT, Config, TextConfig
from listings.data import clean_description, clean_listing_text, clean_title, listing_text, read_dataset
from listings.metrics import summarise
from listings.plots import epoch_ticks, plot_curves, score_name
from text_model import train as text_train
from text_model import word2vec as w2v_module
from text_model.baseline import ARRAYS_FILE, BASELINE_DIR, SETTINGS_FILE, TfidfSvmBaseline, ngrams
from text_model.inference import EXPORT_FILE, MODEL_FILE, SIDECAR_FILE, VOCAB_FILE, TextBranch
from text_model.model import TextCNN, TextCNNShape
from text_model.preprocess import NounLemmatizer, tokenize
from text_model.train import (
    CURVES_FILE,
    SUMMARY_FILE,
    TSNE_FILE,
    WORD2VEC_FILE,
    fit_cnn,
    tokenize_texts,
    word_matrix,
)
from text_model.vocab import PAD, PAD_ID, UNK, UNK_ID, Vocabulary, pad_batch
from text_model.word2vec import GENERAL, category_colours, nearest_neighbours, plot_tsne, save_vectors, train_word2vec, word_categories

CLASSES = ["Home & Garden", "DIY Tools & Materials", "Phones, Mobile Phones & Telecoms"]
CLASS_WORDS = [
    ["sofa", "table", "lamp", "cushion", "wardrobe", "mirror", "rug"],
    ["drill", "hammer", "saw", "screwdriver", "spanner", "ladder", "sander"],
    ["iphone", "samsung", "charger", "sim", "handset", "screen", "unlocked"],
]
TEXTS = [
    "Lovely grey SOFAS & matching cushions — collection only!",
    "Bosch drill 18V with 2 batteries &amp; charger, £45",
    "iPhone 12 64GB unlocked, screen perfect 😀",
    "",
    "!!! *** 😀😀 ---",
    "qwertyuiop zxcvbnm asdfghjkl",
    "Running wardrobes and hammering ladders",
]



@pytest.fixture(autouse=True, scope="module")
def _nltk_data():
    """Point NLTK at the configured data (as every stage does) and restore NLTK_DATA afterwards."""
    saved = os.environ.get("NLTK_DATA")
    Config().apply_nltk_data()
    yield
    if saved is None:
        os.environ.pop("NLTK_DATA", None)
    else:
        os.environ["NLTK_DATA"] = saved


def separable_corpus(n: int, seed: int = 0) -> tuple[list[list[str]], np.ndarray]:
    """`n` token lists of 2-12 words, each drawn from its class's own words."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    tokens = [[str(w) for w in rng.choice(CLASS_WORDS[label], size=int(rng.integers(2, 13)))] for label in labels]
    return tokens, labels


def tiny_text_config(**changes) -> TextConfig:
    return TextConfig(**({"w2v_dim": 16, "w2v_min_count": 1, "w2v_epochs": 5, "channels": 8} | changes))


def tiny_branch(stem: bool = False, seed: int = 0) -> TextBranch:
    """An untrained (random) CNN over a vocabulary built from the corpus tokenized with `stem`."""
    torch.manual_seed(seed)
    words = sorted({t for text in TEXTS + [" ".join(w) for w in CLASS_WORDS] for t in tokenize(text, stem)})
    vocab = Vocabulary.from_words(words)
    model = TextCNN(TextCNNShape(len(vocab), 16, len(CLASSES), channels=8))
    return TextBranch(model, vocab, {"classes": CLASSES, "stem": stem, "max_tokens": 50})


# ---------------------------------------------------------------------------------------------
# preprocessing


@needs_nltk_data
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Café ﬁne ＳＯＦＡ résumé", ["café", "fine", "sofa", "résumé"]),  # NFKC: ligature, full-width; accents kept
        ("Lovely sofa 😀🛋️ great ★★★", ["lovely", "sofa", "great"]),  # emoji and symbols dropped
        ("Tom &amp; Jerry &quot;Classic&quot; &lt;b&gt;DVD&lt;/b&gt;", ["tom", "jerry", "classic", "dvd"]),
        ("<p>Oak&nbsp;table</p>", ["oak", "table"]),
        ("Only £50, was £1,234.00 (or £ 75)", ["£50", "£1234", "£75"]),
        ("$20 or €30", ["usd20", "eur30"]),
        ("PS4 with 64GB card and 45x45cm mirror", ["ps4", "64gb", "card", "45x45cm", "mirror"]),
        ("The sofas are in the houses", ["sofa", "house"]),
        ("Collection only.Great condition,barely used 2.5m cable", ["collection", "great", "condition", "barely", "used", "2.5m", "cable"]),
        ("a 2 seater sofa, 3 drawers", ["2", "seater", "sofa", "3", "drawer"]),  # counts are kept
        ("a the and of with it is", []),
        ("", []),
        ("!!! ### 😀 --- ... *** ||| £ $", []),
    ],
)
def test_tokenize_tricky_strings(text, expected):
    assert tokenize(text) == expected


@needs_nltk_data
def test_the_noun_lemmatizer_agrees_with_nltks_wordnet_lemmatizer():
    from nltk.stem import WordNetLemmatizer

    ours, reference = NounLemmatizer.load(), WordNetLemmatizer()
    words = ["sofas", "chairs", "churches", "boxes", "knives", "ladies", "women", "geese", "mice", "glasses", "buses", "abaci", "ps4s", "iphones"]
    words += sorted(ours.exceptions)[::7]  # irregular plurals from noun.exc
    if have_shared_data():
        listings = read_dataset(SHARED_DATA).listings.head(400)
        words += sorted({word for title, description in zip(listings["title"], listings["description"]) for word in listing_text(title, description).lower().split()})
    differ = [(word, reference.lemmatize(word), ours.lemmatize(word)) for word in words if reference.lemmatize(word) != ours.lemmatize(word)]
    assert not differ and ours.lemmatize("churches") == "church" and ours.lemmatize("geese") == "goose"


@needs_nltk_data
def test_tokenize_gives_the_tokens_of_nltks_sentence_split_word_tokenize(monkeypatch):
    """`tokenize` word-tokenizes a text as one line (no Punkt sentence split: half the time) after
    setting sentence-ending full stops apart; NLTK's default splits sentences first. Same tokens."""
    import nltk.tokenize

    texts = ["Great for the 80's. Mother's day gift. Two DVD's.", "My laptop's screen. The CD's. Collection only.Great", "Size 2.5m. Fits 1970's decor... Offers? Yes!"]
    if have_shared_data():
        listings = read_dataset(SHARED_DATA).listings.head(400)
        texts += [listing_text(title, description) for title, description in zip(listings["title"], listings["description"])]
    ours = [tokenize(text) for text in texts]
    one_line = nltk.tokenize.word_tokenize
    monkeypatch.setattr(nltk.tokenize, "word_tokenize", lambda text, preserve_line=False: one_line(text))  # sentences split first
    assert [tokenize(text) for text in texts] == ours
    assert ours[0] == ["great", "80", "mother", "day", "gift", "two", "dvd"]


@needs_nltk_data
def test_a_listing_pasted_whole_has_the_tokens_training_gave_its_fields():
    """A user pastes a listing from the site as one text (title with its Gumtree suffix, then the
    description with its "Posted by" boilerplate): the query's cleaning gives the tokens training saw."""
    import pandas as pd

    if not have_shared_data():
        pytest.skip("needs the dataset in ../shared/fbm")
    raw = pd.read_csv(SHARED_DATA / "Products.csv", lineterminator="\n", nrows=600)
    differ = []
    for title, description in zip(raw["product_name"].fillna(""), raw["product_description"].fillna("")):
        trained = tokenize(listing_text(clean_title(title), clean_description(description)))
        if tokenize(clean_listing_text(f"{title}\n{description}")) != trained:
            differ.append(title)
    assert not differ
    assert raw["product_name"].str.contains("Gumtree").all() and raw["product_description"].str.contains("Posted by").any()


def test_word2vec_with_no_word_frequent_enough_says_which_setting():
    """gensim's own error ("you must first build vocabulary") named neither the cause nor the setting."""
    with pytest.raises(ValueError, match="no word occurs text.w2v_min_count=100 times"):
        train_word2vec([["oak", "chair"], ["pine", "table"]], TextConfig(w2v_min_count=100), seed=0)
    with pytest.raises(ValueError, match="the training listings have no words .*: the text branch needs text"):
        train_word2vec([[], []], TextConfig(), seed=0)  # no setting can help: the advice to lower one misled


@needs_nltk_data
def test_tokenize_handles_none_and_double_encoded_entities():
    assert tokenize(None) == []  # type: ignore[arg-type]
    assert tokenize("Fish &amp;amp; chips") == ["fish", "chip"]
    assert not any("&" in t or ";" in t for t in tokenize("Tom &amp; Jerry &quot;x&quot; &#39;y&#39;"))


@needs_nltk_data
def test_tokenize_very_long_text_is_fast():
    unit = "Lovely SOFAS £1,234.00 &amp; PS4 64GB 😀 <b>table</b> "
    text = (unit * (50_000 // len(unit) + 1))[:50_000]
    start = time.perf_counter()
    tokens = tokenize(text)
    assert time.perf_counter() - start < 10
    assert len(tokens) > 5_000 and {"sofa", "£1234", "ps4", "64gb", "table"} <= set(tokens)
    # pathological inputs: one 50k-character word, unclosed tags, only punctuation
    assert tokenize("x" * 50_000) == ["x" * 50_000]
    assert tokenize("<a" * 25_000) == []
    assert tokenize('"' * 50_000) == []


@needs_nltk_data
def test_stemming_option_changes_tokens():
    text = "Running chairs beautifully, lovely sofas"
    plain, stemmed = tokenize(text), tokenize(text, stem=True)
    assert plain == ["running", "chair", "beautifully", "lovely", "sofa"]
    assert stemmed != plain
    assert stemmed == [SnowballStemmer("english").stem(t) for t in plain]
    assert tokenize("PS4 64GB", stem=True) == ["ps4", "64gb"]


@needs_nltk_data
def test_quirky_listing_texts(quirky_dataset):
    listings = read_dataset(quirky_dataset).listings.set_index("product_id")
    tokens = {pid: tokenize(listing_text(row.title, row.description)) for pid, row in listings.iterrows()}
    assert tokens["p-dvd"][:4] == ["tom", "jerry", "classic", "dvd"]
    assert "45x45cm" in tokens["p-mirror"]
    assert all(t and t == t.lower() and "&" not in t and '"' not in t for ts in tokens.values() for t in ts)


def test_missing_nltk_data_names_nltk_data(tmp_path):
    """Run in a fresh interpreter: this process has the NLTK resources loaded already, and NLTK keeps
    loaded corpora whatever nltk.data.path later says."""
    empty = tmp_path / "no_nltk_data"
    empty.mkdir()
    code = (
        "import sys, nltk\n"
        "nltk.data.path[:] = [sys.argv[1]]\n"
        "from text_model.preprocess import NltkDataError, tokenize\n"
        "try:\n"
        "    tokenize('sofas')\n"
        "except NltkDataError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    env = os.environ | {"NLTK_DATA": str(empty)}
    done = subprocess.run([sys.executable, "-c", code, str(empty)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "NLTK_DATA" in done.stdout and "stopwords" in done.stdout and str(empty) in done.stdout
    assert f"without NLTK_DATA, fbm looks in {DEFAULT_NLTK_DATA}" in done.stdout  # the README's default place, named


# ---------------------------------------------------------------------------------------------
# vocabulary and padding


def test_vocabulary_encode_unknown_truncation_and_empty(tmp_path):
    vocab = Vocabulary.from_words(["sofa", PAD, "table", UNK, "lamp"])
    assert vocab.words == [PAD, UNK, "sofa", "table", "lamp"] and len(vocab) == 5
    assert vocab.encode(["sofa", "zzz", "lamp"], max_tokens=10) == ([2, UNK_ID, 4], 2)
    assert vocab.encode(["table"] * 9 + ["zzz"], max_tokens=4) == ([3, 3, 3, 3], 4)
    assert vocab.encode([], max_tokens=10) == ([UNK_ID], 0)
    assert vocab.encode(["zzz", "yyy"], max_tokens=10) == ([UNK_ID, UNK_ID], 0)
    with pytest.raises(ValueError):
        Vocabulary(["sofa", PAD, UNK])
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json").words == vocab.words


def test_pad_batch_pads_to_min_length():
    ids, lengths = pad_batch([[5, 6], [7]], min_length=5)
    assert ids.tolist() == [[5, 6, 0, 0, 0], [7, 0, 0, 0, 0]] and lengths.tolist() == [2, 1]
    ids, lengths = pad_batch([[1] * 8, [2, 3]], min_length=5)
    assert ids.shape == (2, 8) and ids[1].tolist() == [2, 3] + [PAD_ID] * 6 and lengths.tolist() == [8, 2]


# ---------------------------------------------------------------------------------------------
# the CNN


def test_textcnn_padding_does_not_change_the_output():
    torch.manual_seed(0)
    model = TextCNN(TextCNNShape(vocab_size=40, word_dim=12, n_classes=3, channels=16)).eval()
    short, medium, long = [5, 6, 7], [3, 9, 4, 12, 8, 21, 30], list(range(2, 38))
    with torch.no_grad():
        # a text shorter than the widest kernel: its windows that start in the text are the same however long the padding
        alone, _ = model(*pad_batch([short], model.min_length))
        batched, _ = model(*pad_batch([short, long], model.min_length))
        assert torch.allclose(alone[0], batched[0], atol=1e-6)
        # padding never counts, even if the PAD row were not zero
        model.words.weight[PAD_ID] = torch.randn(12) * 3
        alone, alone_logits = model(*pad_batch([medium], model.min_length))
        batched, batched_logits = model(*pad_batch([long, medium, short], model.min_length))
        assert torch.allclose(alone[0], batched[1], atol=1e-6) and torch.allclose(alone_logits[0], batched_logits[1], atol=1e-6)
        assert alone.shape == (1, 256) and (alone >= 0).all()


def test_cnn_tiny_run_lowers_its_loss():
    torch.manual_seed(0)
    tokens, labels = separable_corpus(60)
    vocab = Vocabulary.from_words(sorted({t for ts in tokens for t in ts}))
    ids = [vocab.encode(ts, 50)[0] for ts in tokens]
    model = TextCNN(TextCNNShape(len(vocab), 16, len(CLASSES), channels=8, dropout=0.1))
    cfg = tiny_text_config(epochs=6, patience=6, batch_size=8, lr=3e-3)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            _, logits = model(*pad_batch(ids, model.min_length))
        return float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels)))

    before = eval_loss()
    history = fit_cnn(model, ids[:45], labels[:45], ids[45:], labels[45:], cfg, seed=0)
    assert len(history) == 6
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert eval_loss() < 0.5 * before
    assert max(h["val_accuracy"] for h in history) >= 0.8  # 15 held-out texts of 3 separable classes


def test_frozen_embeddings_stay_fixed():
    tokens, labels = separable_corpus(24)
    vocab = Vocabulary.from_words(sorted({t for ts in tokens for t in ts}))
    ids = [vocab.encode(ts, 50)[0] for ts in tokens]
    vectors = torch.randn(len(vocab), 16)
    vectors[PAD_ID] = 0
    model = TextCNN(TextCNNShape(len(vocab), 16, len(CLASSES), channels=8), vectors, finetune_words=False)
    fit_cnn(model, ids[:18], labels[:18], ids[18:], labels[18:], tiny_text_config(epochs=1, batch_size=6), seed=0)
    assert torch.equal(model.words.weight.detach(), vectors)


# ---------------------------------------------------------------------------------------------
# word2vec


def test_word2vec_trains_saves_and_loads_identically(tmp_path):
    tokens, _ = separable_corpus(80)
    vectors = train_word2vec(tokens + [[], ["lonely"]], tiny_text_config(), seed=0)
    assert set(vectors.index_to_key) == {w for ws in CLASS_WORDS for w in ws} | {"lonely"} and vectors.vector_size == 16
    assert "lonely" not in train_word2vec(tokens + [["lonely"]], tiny_text_config(w2v_min_count=2), seed=0).key_to_index

    save_vectors(vectors, tmp_path / "w2v.bin")
    assert (tmp_path / "w2v.bin").read_bytes().startswith(f"{len(vectors)} 16\n".encode())  # the word2vec C binary header
    loaded = KeyedVectors.load_word2vec_format(str(tmp_path / "w2v.bin"), binary=True)
    assert loaded.index_to_key == vectors.index_to_key
    assert np.array_equal(loaded.vectors, vectors.vectors)

    neighbours = nearest_neighbours(loaded, ["sofa", "not-a-word", ""], topn=3)
    assert neighbours["not-a-word"] == [] and neighbours[""] == []
    assert len(neighbours["sofa"]) == 3 and all(w != "sofa" and isinstance(s, float) for w, s in neighbours["sofa"])


def test_word2vec_on_one_worker_gives_the_same_vectors_every_run():
    tokens, _ = separable_corpus(3000)  # ~21k words: more than one of gensim's 10k-word jobs
    runs = [train_word2vec(tokens, tiny_text_config(), seed=0) for _ in range(2)]
    assert np.array_equal(runs[0].vectors, runs[1].vectors)


def test_word_matrix_rows():
    tokens, _ = separable_corpus(40)
    vectors = train_word2vec(tokens, tiny_text_config(), seed=0)
    vocab = Vocabulary.from_words(vectors.index_to_key)
    matrix = word_matrix(vectors, vocab).numpy()
    assert matrix.shape == (len(vocab), 16)
    assert not matrix[PAD_ID].any()
    assert np.allclose(matrix[UNK_ID], vectors.vectors.mean(axis=0), atol=1e-6)
    assert np.array_equal(matrix[vocab.index["drill"]], vectors["drill"])


# ---------------------------------------------------------------------------------------------
# the served branch


@needs_nltk_data
@pytest.mark.parametrize("stem", [False, True])
def test_training_and_serving_tokens_are_identical(stem):
    branch = tiny_branch(stem)
    served = branch.embed_and_predict(TEXTS)
    trained = branch.embed_tokens(tokenize_texts(TEXTS, stem))
    for a, b in zip(served, trained):
        assert np.array_equal(a, b)
    # the stem setting of the sidecar is what serving uses: the other setting's tokens give other ids
    other = branch.embed_tokens(tokenize_texts(TEXTS, not stem))
    assert not np.array_equal(served[2], other[2])
    # a batch gives each text what it gets alone (length-sorted batching and padding change nothing)
    for i, text in enumerate(TEXTS):
        embedding, probs, known = branch.embed_and_predict([text])
        assert np.allclose(embedding[0], served[0][i], atol=1e-5) and np.allclose(probs[0], served[1][i], atol=1e-6)
        assert known[0] == served[2][i]


@needs_nltk_data
def test_empty_and_all_unknown_texts_predict_with_zero_known_tokens():
    branch = tiny_branch()
    texts = ["", "   ", "!!! 😀 ###", "blorptastic snorfwizzle", "the and of", "sofa drill zzzz"]
    embeddings, probs, known = branch.embed_and_predict(texts)
    assert embeddings.shape == (len(texts), 256) and embeddings.dtype == np.float32
    assert probs.shape == (len(texts), len(CLASSES)) and probs.dtype == np.float32
    assert known.tolist() == [0, 0, 0, 0, 0, 2]
    assert np.isfinite(embeddings).all() and np.isfinite(probs).all()
    assert ((probs >= 0) & (probs <= 1)).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    # a text without tokens is a single UNK: empty, blank, symbol-only and stopword-only texts get the same answer
    assert np.allclose(probs[[1, 2, 4]], probs[0], atol=1e-6) and np.allclose(embeddings[[1, 2, 4]], embeddings[0], atol=1e-6)
    empty = branch.embed_and_predict([])
    assert empty[0].shape == (0, 256) and empty[1].shape == (0, len(CLASSES)) and empty[2].shape == (0,)


# ---------------------------------------------------------------------------------------------
# the TF-IDF + SVM baseline


@needs_nltk_data
@pytest.mark.parametrize("n_classes", [3, 2])
def test_tfidf_svm_save_load_gives_identical_probabilities(tmp_path, n_classes):
    tokens, labels = separable_corpus(30 * n_classes)
    keep = labels < n_classes
    tokens, labels = [t for t, k in zip(tokens, keep) if k], labels[keep]
    baseline = TfidfSvmBaseline.from_config(CLASSES[:n_classes], TextConfig(tfidf_min_df=1)).fit(tokens, labels)
    baseline.save(tmp_path / "tfidf")
    assert {p.name for p in (tmp_path / "tfidf").iterdir()} == {SETTINGS_FILE, ARRAYS_FILE}
    loaded = TfidfSvmBaseline.load_dir(tmp_path / "tfidf")
    assert loaded.classes == CLASSES[:n_classes] and loaded.stem is False and loaded.min_df == 1

    texts = ["grey sofa and a lamp", "drill with hammer", "unlocked iphone", "", "zzzz qqqq", "sofa drill"]
    probs = baseline.predict_proba(texts)
    assert probs.shape == (len(texts), n_classes)
    assert np.array_equal(loaded.predict_proba(texts), probs)
    assert np.array_equal(loaded.predict_proba_tokens(tokens), baseline.predict_proba_tokens(tokens))
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert probs[:n_classes].argmax(axis=1).tolist() == list(range(n_classes))
    assert (baseline.predict_proba_tokens(tokens).argmax(axis=1) == labels).all()
    with pytest.raises(FileNotFoundError):
        TfidfSvmBaseline.load_dir(tmp_path / "missing")


def test_tfidf_character_ngrams_place_words_it_never_saw(tmp_path):
    """Misspelt or inflected words share character n-grams with the training words: each gets its class."""
    tokens, labels = separable_corpus(90)
    baseline = TfidfSvmBaseline.from_config(CLASSES, TextConfig(tfidf_min_df=1)).fit(tokens, labels)
    unseen = [["sofaa"], ["wardrobes"], ["drilll"], ["screwdrivers"], ["iphonee"], ["chargers"]]
    assert not {word for (word,) in unseen} & {word for text in tokens for word in text}
    assert baseline.predict_proba_tokens(unseen).argmax(axis=1).tolist() == [0, 0, 1, 1, 2, 2]


def test_tfidf_svm_from_before_character_ngrams_asks_for_a_retrain(tmp_path):
    tokens, labels = separable_corpus(30)
    TfidfSvmBaseline.from_config(CLASSES, TextConfig(tfidf_min_df=1)).fit(tokens, labels).save(tmp_path / "tfidf")
    settings = json.loads((tmp_path / "tfidf" / SETTINGS_FILE).read_text())
    old = {key: value for key, value in settings.items() if key not in ("chars_vocabulary", "char_range", "words_vocabulary")}
    (tmp_path / "tfidf" / SETTINGS_FILE).write_text(json.dumps(old | {"vocabulary": settings["words_vocabulary"]}))
    with pytest.raises(ValueError, match="rerun `fbm train text`"):
        TfidfSvmBaseline.load_dir(tmp_path / "tfidf")


def test_tfidf_svm_needs_every_class_in_training():
    tokens, labels = separable_corpus(12)
    with pytest.raises(ValueError):
        TfidfSvmBaseline.from_config(CLASSES + ["Other"], TextConfig(tfidf_min_df=1)).fit(tokens, labels)


# ---------------------------------------------------------------------------------------------
# end to end on a subset of the real dataset


@pytest.fixture(scope="module")
def trained_text(tmp_path_factory):
    if not have_shared_data():
        pytest.skip("the end-to-end text test needs the dataset in ../shared/fbm (or FBM_DATA)")
    from listings.prepare import prepare
    from text_model.train import train_text

    root = tmp_path_factory.mktemp("text_e2e")
    # 7 listings a class split 5 / 1 / 1: every split holds every class (6 would leave the test split empty)
    config = tiny_config(shared_subset(root / "data", per_class=7), root / "artifacts")
    for assignment in ("text.w2v_epochs=2", "text.w2v_min_count=1", "text.epochs=2", "text.patience=5", "text.max_tokens=64"):
        config.override(assignment)
    config.data.image_size = 64  # the text branch reads no photo: keep prepare's image cache cheap
    prepare(config)
    summary = train_text(config)
    return config, summary


def test_train_text_writes_every_artifact(trained_text):
    config, summary = trained_text
    out = config.paths.text_model
    for name in (MODEL_FILE, SIDECAR_FILE, VOCAB_FILE, WORD2VEC_FILE, TSNE_FILE, CURVES_FILE, EXPORT_FILE, SUMMARY_FILE):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / BASELINE_DIR / SETTINGS_FILE).is_file() and (out / BASELINE_DIR / ARRAYS_FILE).is_file()
    for png in (TSNE_FILE, CURVES_FILE):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    sidecar = json.loads((out / SIDECAR_FILE).read_text())
    from listings.prepare import load_prepared

    prepared = load_prepared(config)
    assert sidecar["classes"] == prepared.encoder.classes and len(sidecar["classes"]) == 13
    assert sidecar["stem"] is False and sidecar["max_tokens"] == 64 and sidecar["version"].startswith("textcnn-")
    vocab = Vocabulary.load(out / VOCAB_FILE)
    assert vocab.words[2:] == KeyedVectors.load_word2vec_format(str(out / WORD2VEC_FILE), binary=True).index_to_key
    assert summary == {k: v for k, v in json.loads((out / SUMMARY_FILE).read_text()).items() if k != "history"}
    assert summary["epochs_run"] == 2 and summary["vocabulary_size"] == len(vocab)
    assert summary["word2vec_time_s"] >= 0 and summary["cnn_epoch_time_s"] > 0 and summary["wall_time_s"] > 0
    assert set(summary["cnn"]) == set(summary["tfidf_svm_baseline"]) == {"val", "test"}


def test_train_text_is_reproducible(trained_text, tmp_path):
    """Same listings, settings and seed: the same word vectors, model, TF-IDF baseline and figures."""
    from text_model.train import train_text

    config, summary = trained_text
    again = copy.deepcopy(config)
    again.data.artifacts_dir = str(tmp_path / "artifacts")
    shutil.copytree(config.paths.data, again.paths.data)
    second = train_text(again)

    assert (again.paths.text_model / WORD2VEC_FILE).read_bytes() == (config.paths.text_model / WORD2VEC_FILE).read_bytes()
    with np.load(config.paths.text_model / EXPORT_FILE) as first_export, np.load(again.paths.text_model / EXPORT_FILE) as second_export:
        for key in ("embeddings", "probs", "tfidf_probs"):
            assert np.array_equal(first_export[key], second_export[key]), key
    assert second["cnn"] == summary["cnn"]


def test_train_text_export_is_reproduced_by_the_reloaded_branch(trained_text):
    config, summary = trained_text
    from listings.prepare import load_prepared

    listings = load_prepared(config).listings
    with np.load(config.paths.text_model / EXPORT_FILE, allow_pickle=False) as export:
        exported = {key: export[key] for key in export.files}
    assert set(exported) == {"product_ids", "embeddings", "probs", "known_tokens", "tfidf_probs", "word_indptr", "word_columns", "word_weights"}
    n = len(listings)
    assert exported["product_ids"].tolist() == listings["product_id"].astype(str).tolist()
    assert exported["embeddings"].shape == (n, 256) and exported["embeddings"].dtype == np.float32
    assert exported["probs"].shape == (n, 13) and np.allclose(exported["probs"].sum(axis=1), 1, atol=1e-5)
    assert exported["known_tokens"].shape == (n,) and (exported["known_tokens"] > 0).mean() > 0.9

    texts = [listing_text(t, d) for t, d in zip(listings["title"], listings["description"])]
    branch = TextBranch.load(config)
    embeddings, probs, known = branch.embed_and_predict(texts)
    assert np.allclose(embeddings, exported["embeddings"], atol=1e-5)
    assert np.allclose(probs, exported["probs"], atol=1e-5)
    assert np.array_equal(known, exported["known_tokens"])
    words = TfidfSvmBaseline.load(config).word_rows(tokenize_texts(texts, branch.stem))  # the words the index re-ranks by, as served
    assert np.array_equal(words.indptr, exported["word_indptr"]) and np.array_equal(words.indices, exported["word_columns"])
    assert np.allclose(words.data, exported["word_weights"])

    labels = listings["label"].to_numpy()
    for split in ("val", "test"):
        rows = np.flatnonzero(listings["split"].to_numpy() == split)
        assert summary["cnn"][split] == summarise(labels[rows], exported["probs"][rows])
        baseline_probs = TfidfSvmBaseline.load(config).predict_proba([texts[i] for i in rows])
        assert summary["tfidf_svm_baseline"][split] == summarise(labels[rows], baseline_probs)
        assert np.allclose(exported["tfidf_probs"][rows], baseline_probs, atol=1e-6)


def test_word2vec_is_skip_gram_with_negative_sampling(monkeypatch):
    made = []
    real = w2v_module.Word2Vec

    def recording(**kwargs):
        made.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(w2v_module, "Word2Vec", recording)
    cfg = TextConfig(w2v_dim=8, w2v_min_count=1, w2v_epochs=1, w2v_negative=7, w2v_window=3)
    w2v_module.train_word2vec([["sofa", "table", "lamp"], ["drill", "saw"]], cfg, seed=0)
    (kwargs,) = made
    assert kwargs["sg"] == 1 and kwargs["hs"] == 0 and kwargs["negative"] == 7 and kwargs["window"] == 3


def test_the_last_window_of_a_text_counts():
    """Kernel 2 over a 3-token text has two windows; the second (tokens 2-3) must reach the max-pool."""
    torch.manual_seed(0)
    model = TextCNN(TextCNNShape(vocab_size=20, word_dim=8, n_classes=3, kernel_sizes=(2,), channels=32, dropout=0.0)).eval()
    with torch.no_grad():
        a, _ = model(*pad_batch([[5, 6, 7]], model.min_length))
        b, _ = model(*pad_batch([[5, 6, 9]], model.min_length))
    assert not torch.allclose(a, b)


def test_text_fit_keeps_the_best_validation_epoch(monkeypatch):
    torch.manual_seed(0)
    model = TextCNN(TextCNNShape(vocab_size=12, word_dim=8, n_classes=3, channels=8, dropout=0.0))
    snapshots, accuracies, real = [], iter([0.3, 0.9, 0.4]), text_train.summarise

    def scripted(labels, probs):
        scores = real(labels, probs)
        scores["accuracy"] = next(accuracies)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return scores

    monkeypatch.setattr(text_train, "summarise", scripted)
    rng = np.random.default_rng(0)
    ids = [list(rng.integers(2, 12, 6)) for _ in range(18)]
    labels = np.arange(18) % 3
    cfg = TextConfig(epochs=3, patience=5, batch_size=6, lr=1e-2)
    history = fit_cnn(model, ids[:12], labels[:12], ids[12:], labels[12:], cfg, seed=0)
    assert len(history) == 3
    final = model.state_dict()
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)


def test_ngrams_include_the_last_token_and_last_bigram():
    assert ngrams(["a", "b", "c"], 2) == ["a", "b", "c", "a b", "b c"]
    assert ngrams(["solo"], 2) == ["solo"]


def test_the_served_branch_truncates_to_its_max_tokens():
    vocab = Vocabulary.from_words(["sofa", "table"])
    branch = TextBranch(TextCNN(TextCNNShape(len(vocab), 16, 2, channels=8)), vocab, {"classes": ["a", "b"], "stem": False, "max_tokens": 3})
    assert branch.encode_tokens(["sofa", "zzz", "table", "table", "sofa"]) == ([2, UNK_ID, 3], 2)
    embeddings, probs, known = branch.embed_tokens([["sofa", "table", "sofa", "table", "table"], ["sofa", "table", "sofa"]])
    np.testing.assert_array_equal(embeddings[0], embeddings[1])  # what lies past max_tokens changes nothing
    assert known.tolist() == [3, 3]


def test_the_tfidf_model_takes_its_choices_from_the_text_settings():
    settings = TextConfig(tfidf_c=2.0, tfidf_min_df=3, tfidf_word_ngrams=1, tfidf_char_ngrams=(3, 4), stem=True)
    model = TfidfSvmBaseline.from_config(CLASSES, settings)
    assert (model.C, model.min_df, model.n_max, model.char_range, model.stem) == (2.0, 3, 1, (3, 4), True)
    assert model.chars.ngram_range == (3, 4) and model.words.min_df == 3 and model.chars.min_df == 3


def test_the_text_curves_name_the_kept_epochs_rule_and_both_scores(tmp_path, drawn_figures):
    """The kept epoch is the best on validation accuracy, often not the lowest loss: its marker says
    so; the score panel, with macro-F1 beside accuracy, is not called "accuracy" alone."""
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 0.5 + abs(e - 2) / 10, "val_accuracy": 0.5 + e / 100, "val_macro_f1": 0.4 + e / 100} for e in (1, 2, 3, 4)]
    scores = {"val_accuracy": "validation accuracy", "val_macro_f1": "validation macro-F1"}
    plot_curves(history, tmp_path / "curves.png", "Text CNN", scores, kept=4, kept_rule=text_train.KEPT_RULE)
    loss_ax, score_ax = drawn_figures[-1].axes
    kept = "kept: epoch 4 (best validation accuracy, ties to the lower loss)"
    for ax in (loss_ax, score_ax):
        assert kept in ax.get_legend_handles_labels()[1]
        assert ax.get_xlim()[0] == 1 and ax.get_xticks()[0] == 1  # the axis starts at the first epoch, not at 0
    assert score_ax.get_ylabel() == score_ax.get_title() == "accuracy and macro-F1"
    assert score_name({"val_accuracy": "validation accuracy"}) == "accuracy"


def test_epoch_ticks_start_at_the_first_epoch_and_stay_few():
    assert epoch_ticks(1, 10) == list(range(1, 11))
    assert epoch_ticks(1, 21) == [1, 4, 7, 10, 13, 16, 19]
    assert epoch_ticks(1, 1) == [1]


def test_each_word_takes_the_category_that_uses_it_most_or_none():
    """'drill' is a DIY word; a word every category uses as often ('condition') tells none; a word
    a small category uses in every listing beats a large one that uses it a little."""
    classes = ["DIY", "Home", "Phones"]
    texts = [["drill", "condition"], ["drill", "bits", "condition"], ["sofa", "condition"], ["sofa", "condition", "case"], ["case", "condition"], ["case", "iphone", "condition"]]
    labels = [0, 0, 1, 1, 2, 2]
    categories = word_categories(texts, labels, classes)
    assert categories["drill"] == "DIY" and categories["sofa"] == "Home" and categories["iphone"] == "Phones"
    assert categories["condition"] == GENERAL  # in every listing: no lift over the catalogue
    assert categories["case"] == "Phones"  # 2 of 2 phone listings against 1 of 2 home ones


def test_the_word_map_colours_words_by_category_with_a_legend(tmp_path, drawn_figures):
    colours = category_colours({"Phones", GENERAL, "DIY"})
    assert list(colours) == ["DIY", "Phones", GENERAL] and colours[GENERAL] == "dimgrey" and colours["DIY"] != colours["Phones"]
    vectors = KeyedVectors(vector_size=4)
    words = [f"w{i}" for i in range(12)]
    vectors.add_vectors(words, np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32))
    plot_tsne(vectors, tmp_path / "map.png", n_words=12, categories={"w0": "DIY", "w1": "Phones"})
    (ax,) = drawn_figures[-1].axes
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["DIY", "Phones", GENERAL]
    drawn = {text.get_text(): text.get_color() for text in ax.texts}
    assert drawn["w0"] == colours["DIY"] and drawn["w2"] == "dimgrey"
