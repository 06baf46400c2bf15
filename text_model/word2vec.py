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
    for word, (x, y) in zip(words, points):
        ax.annotate(word, (x, y), fontsize=7, alpha=0.8)
    ax.set_title(f"word2vec: t-SNE of the {len(words)} most frequent words")
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
