"""The served text branch: text → tokens → ids → text CNN → (256-d embedding, class probabilities).

`TextBranch.load(config)` reads `config.paths.text_model` (model.pt state_dict, model.json
sidecar, vocab.json); training exports its embeddings through this same class, so training,
evaluation and the API see identical tokens and numbers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from listings.artifacts import first_line, load_weights, read_json, require_files
from listings.config import Config
from text_model.model import TextCNN, TextCNNShape
from text_model.preprocess import tokenize
from text_model.vocab import Vocabulary, pad_batch

MODEL_FILE = "model.pt"
SIDECAR_FILE = "model.json"
VOCAB_FILE = "vocab.json"
EXPORT_FILE = "text_embeddings.npz"
INFERENCE_BATCH = 128
TRAIN_COMMAND = "fbm train text"


class TextBranch:
    def __init__(self, model: TextCNN, vocab: Vocabulary, sidecar: dict):
        if len(vocab) != model.shape.vocab_size:
            raise ValueError(f"the vocabulary has {len(vocab)} words but the model expects {model.shape.vocab_size}")
        self.model = model.eval()
        self.vocab = vocab
        self.classes: list[str] = list(sidecar["classes"])
        self.embed_dim: int = model.shape.embed_dim
        self.stem: bool = bool(sidecar["stem"])
        self.max_tokens: int = int(sidecar["max_tokens"])
        self.version: str = sidecar.get("version", "textcnn")

    @classmethod
    def load(cls, config: Config) -> "TextBranch":
        return cls.load_dir(config.paths.text_model, config)

    @classmethod
    def load_dir(cls, directory: Path, config: Config | None = None) -> "TextBranch":
        directory = Path(directory)
        require_files([directory / name for name in (SIDECAR_FILE, MODEL_FILE, VOCAB_FILE)], TRAIN_COMMAND)
        if config is not None:
            config.apply_nltk_data()
        sidecar = read_json(directory / SIDECAR_FILE, TRAIN_COMMAND)
        state_dict = load_weights(directory / MODEL_FILE, TRAIN_COMMAND)
        vocab = Vocabulary.load(directory / VOCAB_FILE)
        try:
            model = TextCNN(TextCNNShape.from_json(sidecar["shape"]))
            model.load_state_dict(state_dict)
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ValueError(f"{directory} holds a mismatched text model ({first_line(exc)}): rerun `{TRAIN_COMMAND}`") from exc
        model.words.weight.requires_grad_(False)
        return cls(model, vocab, sidecar)

    def tokenize(self, text: str) -> list[str]:
        """The text's tokens as this branch was trained on them (also the TF-IDF model's input)."""
        return tokenize(text, self.stem)

    def encode(self, text: str) -> tuple[list[int], int]:
        """A text as the network's input: (token ids, number of known tokens)."""
        return self.encode_tokens(self.tokenize(text))

    def encode_tokens(self, tokens: list[str]) -> tuple[list[int], int]:
        """As `encode`, for a text already tokenized by `tokenize`."""
        return self.vocab.encode(tokens, self.max_tokens)

    def embed_and_predict(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(embeddings [n, 256] float32, probabilities [n, C] float32, known-token counts [n]).

        A text that is empty or has no known word still gets a (low-confidence) prediction; its
        known-token count of 0 flags it.
        """
        return self.embed_encoded([self.encode(text) for text in texts])

    def embed_tokens(self, token_lists: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As `embed_and_predict`, for texts already tokenized with this branch's `stem` setting."""
        return self.embed_encoded([self.encode_tokens(tokens) for tokens in token_lists])

    def embed_encoded(self, encoded: list[tuple[list[int], int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As `embed_and_predict`, for texts already turned into (ids, known count) by `encode`."""
        known = np.array([n_known for _, n_known in encoded], dtype=np.int64)
        embeddings, probs = predict_ids(self.model, [ids for ids, _ in encoded])
        return embeddings, probs, known


def predict_ids(model: TextCNN, sequences: list[list[int]], batch_size: int = INFERENCE_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Batched forward pass in eval mode over id sequences, batched by length to limit padding."""
    embeddings = np.zeros((len(sequences), model.shape.embed_dim), np.float32)
    probs = np.zeros((len(sequences), model.shape.n_classes), np.float32)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, lengths = pad_batch([sequences[i] for i in rows], model.min_length)
            embedding, logits = model(ids, lengths)
            embeddings[rows], probs[rows] = embedding.numpy(), torch.softmax(logits, dim=1).numpy()
    model.train(was_training)
    return embeddings, probs
