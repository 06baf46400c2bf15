"""The trained image branch, loaded once for serving, evaluation and the exports of later stages."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from image_model.model import Architecture, ImageNetwork, build_network
from image_model.preprocess import eval_view, to_batch
from listings.artifacts import first_line, load_weights, read_json, require_files
from listings.config import Config

MODEL_FILE = "model.pt"
SIDECAR_FILE = "model.json"
EXPORT_FILE = "image_embeddings.npz"
BATCH_SIZE = 32
TRAIN_COMMAND = "fbm train image"


class ImageBranch:
    def __init__(self, network: ImageNetwork, classes: list[str], sidecar: dict):
        self.network = network.eval()
        self.compiled = compiled(self.network)
        self.classes = list(classes)
        self.embed_dim = network.architecture.embed_dim
        self.input_size = network.architecture.input_size
        self.version = f"{network.architecture.backbone}@{sidecar.get('weights_sha256', '?')[:12]}"
        self.sidecar = sidecar

    @classmethod
    def load(cls, config: Config) -> "ImageBranch":
        """The branch in the artifacts, refused when `data.image_size` is not the size its photos were
        cleaned to in training (serving would feed it photos of another scale)."""
        branch = cls.from_directory(config.paths.image_model)
        trained = branch.sidecar.get("preprocessing", {}).get("clean_size", config.data.image_size)
        if trained != config.data.image_size:
            raise ValueError(
                f"the image model was trained on photos cleaned to {trained} px but data.image_size is "
                f"{config.data.image_size}: set data.image_size={trained}, or rerun `fbm prepare` and `{TRAIN_COMMAND}` at the new size"
            )
        return branch

    @classmethod
    def from_directory(cls, directory: Path) -> "ImageBranch":
        sidecar_path, weights_path = Path(directory) / SIDECAR_FILE, Path(directory) / MODEL_FILE
        require_files((sidecar_path, weights_path), TRAIN_COMMAND)
        sidecar = read_json(sidecar_path, TRAIN_COMMAND)
        state_dict = load_weights(weights_path, TRAIN_COMMAND)
        try:
            network = build_network(Architecture(**sidecar["architecture"]))
            network.load_state_dict(state_dict)
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ValueError(f"{directory} holds a mismatched image model ({first_line(exc)}): rerun `{TRAIN_COMMAND}`") from exc
        return cls(network, sidecar["classes"], sidecar)

    def view(self, image: Image.Image) -> np.ndarray:
        """A cleaned photo as the network's uint8 input view (the preprocessing training used)."""
        return eval_view(image, self.input_size)

    def embed_and_predict(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Cleaned photos → (float32 [n, embed_dim] embeddings, float32 [n, n_classes] probabilities)."""
        return self.embed_views([self.view(image) for image in images])

    @torch.inference_mode()
    def embed_views(self, views: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """As `embed_and_predict`, for photos already turned into input views by `view`."""
        embeddings = np.zeros((len(views), self.embed_dim), np.float32)
        probs = np.zeros((len(views), len(self.classes)), np.float32)
        for start in range(0, len(views), BATCH_SIZE):
            pixels = to_batch(views[start : start + BATCH_SIZE])
            embedding, logits = self.compiled(pixels)
            embeddings[start : start + len(pixels)] = embedding.numpy()
            probs[start : start + len(pixels)] = torch.softmax(logits, dim=1).numpy()
        return embeddings, probs


def compiled(network: ImageNetwork) -> torch.jit.ScriptModule:
    """The network traced and frozen by TorchScript for inference: the same function (identical
    outputs, tested) run as one graph, so a pass takes Python's lock once instead of at every layer.
    The API's request threads (tokenizing, TF-IDF: pure Python) then stop stalling its inference
    threads between layers: on 2 cores, two passes of 8 photos beside a tokenizing thread ran 128–145
    photos/s against 95–115 eager, and 202–220 against 171–190 alone. (TorchScript is deprecated
    in favour of `torch.compile`, which needs a C++ toolchain at start-up; torch is pinned.)"""
    size = network.architecture.input_size
    example = torch.zeros(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.", category=FutureWarning)
        # check_trace would run the network twice more to compare (1-2 s of every start); the
        # traced graph's outputs are tested against the eager network's instead.
        return torch.jit.freeze(torch.jit.trace(network, example, check_trace=False))
