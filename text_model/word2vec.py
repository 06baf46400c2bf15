"""word2vec (gensim skip-gram, negative sampling) trained from scratch on the training split's tokens."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from gensim.models import KeyedVectors, Word2Vec

from listings.config import TextConfig
from listings.plots import pyplot

logging.getLogger("gensim").setLevel(logging.WARNING)


def train_word2vec(token_lists: list[list[str]], cfg: TextConfig, seed: int) -> KeyedVectors:
    """Word vectors of every word seen at least `cfg.w2v_min_count` times; a ValueError when none is."""
    sentences = [tokens for tokens in token_lists if tokens]
    model = Word2Vec(
        sg=1,  # skip-gram
        hs=0,  # with negative sampling
        negative=cfg.w2v_negative,
        vector_size=cfg.w2v_dim,
        window=cfg.w2v_window,
        min_count=cfg.w2v_min_count,
        epochs=cfg.w2v_epochs,
        seed=seed,
        workers=cfg.w2v_workers,
    )
    model.build_vocab(sentences)
    if not len(model.wv):
        if not any(sentences):
            raise ValueError("the training listings have no words (their titles and descriptions are empty once cleaned): the text branch needs text")
        raise ValueError(f"no word occurs text.w2v_min_count={cfg.w2v_min_count} times in the training texts: lower it")
    model.train(sentences, total_examples=model.corpus_count, total_words=model.corpus_total_words, epochs=model.epochs)
    return model.wv


def save_vectors(vectors: KeyedVectors, path: Path) -> None:
    """The word2vec C binary format: no pickle, readable by gensim and the original word2vec tools."""
    vectors.save_word2vec_format(str(path), binary=True)


def nearest_neighbours(vectors: KeyedVectors, words: list[str], topn: int = 8) -> dict[str, list[tuple[str, float]]]:
    """Cosine neighbours of each word in the vocabulary (words outside it map to an empty list)."""
    return {
        word: [(w, round(float(s), 3)) for w, s in vectors.most_similar(word, topn=topn)] if word in vectors.key_to_index else []
        for word in words
    }


def _label_positions(words: list[str], points: np.ndarray) -> list[tuple[float, float]]:
    """Where each word's label goes: at its point, or moved down a line at a time (up to six) until
    it overlaps no label placed before it, so that near neighbours ('galaxy', 'samsung') stay legible."""
    span = np.ptp(points, axis=0).clip(min=1e-9)
    line, char = span[1] / 95, span[0] / 230  # a 9-point line and character on a 16-inch map
    placed: list[tuple[float, float, float]] = []  # x, y, width
    positions = []
    for word, (x, y) in zip(words, points):
        width, label_y = char * len(word), y
        for _ in range(6):
            if not any(abs(label_y - py) < line and x < px + pw and px < x + width for px, py, pw in placed):
                break
            label_y -= line
        placed.append((x, label_y, width))
        positions.append((float(x), float(label_y)))
    return positions


GENERAL = "no one category"  # a word no category uses at least `MIN_LIFT` times as often as all listings do
MIN_LIFT = 2.0
# dark enough for 9-point words on white: matplotlib's tab10 without its grey (`GENERAL`'s), then four darker
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#000080", "#006400", "#800000", "#b8860b")


def word_categories(token_lists: list[list[str]], labels: list[int], classes: list[str]) -> dict[str, str]:
    """Each word's category: the one whose listings use it most, as a share of that category's
    listings, where that share is at least `MIN_LIFT` times the share among all listings ('drill' →
    DIY Tools & Materials); otherwise `GENERAL` ('condition', 'collection')."""
    listings_of = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes)).clip(min=1)
    counts: dict[str, np.ndarray] = {}
    for tokens, label in zip(token_lists, labels):
        for word in set(tokens):
            counts.setdefault(word, np.zeros(len(classes), dtype=np.int64))[label] += 1
    overall = len(token_lists) or 1
    categories = {}
    for word, count in counts.items():
        shares = count / listings_of
        best = int(shares.argmax())
        categories[word] = classes[best] if shares[best] >= MIN_LIFT * count.sum() / overall else GENERAL
    return categories


def plot_tsne(vectors: KeyedVectors, path: Path, n_words: int = 300, seed: int = 0, categories: dict[str, str] | None = None) -> None:
    """A labelled 2-D t-SNE map of the `n_words` most frequent words, each coloured by its category
    (`word_categories`) when `categories` is given, so that the map shows which words tell which
    category."""
    from sklearn.manifold import TSNE

    plt = pyplot()
    words = vectors.index_to_key[:n_words]
    points = TSNE(n_components=2, perplexity=min(30, len(words) - 1), init="pca", random_state=seed).fit_transform(
        np.asarray([vectors[w] for w in words])
    )
    category = {word: (categories or {}).get(word, GENERAL) for word in words}
    colour = category_colours(set(category.values()))
    fig, ax = plt.subplots(figsize=(16, 16))
    ax.scatter(points[:, 0], points[:, 1], s=8, color=[colour[category[word]] for word in words])
    for word, (x, y), (label_x, label_y) in zip(words, points, _label_positions(words, points)):
        ax.annotate(
            word, (x, y), xytext=(label_x, label_y), fontsize=9, color=colour[category[word]],
            arrowprops={"arrowstyle": "-", "alpha": 0.3} if label_y != y else None,
        )
    if categories:
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=shade, label=name) for name, shade in colour.items()]
        ax.legend(handles=handles, title="the category that uses the word most", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=10)
    ax.set_title(f"word2vec: t-SNE of the {len(words)} most frequent words (neighbours in meaning lie close)", fontsize=13)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def category_colours(names: set[str]) -> dict[str, str]:
    """A colour per category name, in name order, `GENERAL` grey and last."""
    named = sorted(names - {GENERAL})
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(named)} | ({GENERAL: "dimgrey"} if GENERAL in names else {})
