"""The trained image branch, loaded once for serving, evaluation and the exports of later stages."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from image_model.model import Architecture, ImageNetwork, build_network
from image_model.preprocess import eval_view, to_batch
from listings.config import Config

MODEL_FILE = "model.pt"
SIDECAR_FILE = "model.json"
EXPORT_FILE = "image_embeddings.npz"
BATCH_SIZE = 32


class ImageBranch:
    def __init__(self, network: ImageNetwork, classes: list[str], sidecar: dict):
        self.network = network.eval()
        self.classes = list(classes)
        self.embed_dim = network.architecture.embed_dim
        self.input_size = network.architecture.input_size
        self.version = f"{network.architecture.backbone}@{sidecar.get('weights_sha256', '?')[:12]}"
        self.sidecar = sidecar

    @classmethod
    def load(cls, config: Config) -> "ImageBranch":
        return cls.from_directory(config.paths.image_model)

    @classmethod
    def from_directory(cls, directory: Path) -> "ImageBranch":
        sidecar_path, weights_path = Path(directory) / SIDECAR_FILE, Path(directory) / MODEL_FILE
        for path in (sidecar_path, weights_path):
            if not path.exists():
                raise FileNotFoundError(f"{path} not found: run `fbm train image` first")
        try:
            sidecar = json.loads(sidecar_path.read_text())
            network = build_network(Architecture(**sidecar["architecture"]))
            network.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        except (ValueError, KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise ValueError(f"{directory} holds a corrupt or mismatched image model: {exc}") from exc
        return cls(network, sidecar["classes"], sidecar)

    @torch.inference_mode()
    def embed_and_predict(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Cleaned photos → (float32 [n, embed_dim] embeddings, float32 [n, n_classes] probabilities)."""
        embeddings = np.zeros((len(images), self.embed_dim), np.float32)
        probs = np.zeros((len(images), len(self.classes)), np.float32)
        for start in range(0, len(images), BATCH_SIZE):
            pixels = to_batch([eval_view(image, self.input_size) for image in images[start : start + BATCH_SIZE]])
            embedding, logits = self.network(pixels)
            embeddings[start : start + len(pixels)] = embedding.numpy()
            probs[start : start + len(pixels)] = torch.softmax(logits, dim=1).numpy()
        return embeddings, probs
