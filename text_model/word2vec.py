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


def plot_tsne(vectors: KeyedVectors, path: Path, n_words: int = 300, seed: int = 0) -> None:
    """A labelled 2-D t-SNE map of the `n_words` most frequent words."""
    from sklearn.manifold import TSNE

    plt = pyplot()
    words = vectors.index_to_key[:n_words]
    points = TSNE(n_components=2, perplexity=min(30, len(words) - 1), init="pca", random_state=seed).fit_transform(
        np.asarray([vectors[w] for w in words])
    )
    fig, ax = plt.subplots(figsize=(16, 16))
    ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.5)
    for word, (x, y), (label_x, label_y) in zip(words, points, _label_positions(words, points)):
        ax.annotate(word, (x, y), xytext=(label_x, label_y), fontsize=9, alpha=0.85, arrowprops={"arrowstyle": "-", "alpha": 0.3} if label_y != y else None)
    ax.set_title(f"word2vec: t-SNE of the {len(words)} most frequent words (neighbours in meaning lie close)", fontsize=13)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
