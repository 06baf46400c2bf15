"""The image network: frozen trunk → fp16 cut → trainable tail → 256-d embedding → classifier.

The network runs under an autocast `precision` (bfloat16 by default: on a CPU with AVX512-BF16 the
trunk runs ~2.5x and a training step of the tail ~1.6x faster than in float32; trunk features stay
within ~0.2% cosine of float32 and validation accuracy is unchanged) on whatever device it sits on:
training may run on a CUDA GPU (`image.device`), serving runs on the CPU. The cut activations are
rounded to fp16 in `forward` exactly as the feature cache stores them, so a network fed raw pixels
computes what training on the cache computed. Outputs are float32, on the network's device.
Every batch norm is folded into the convolution before it (`fold_batch_norms`), in training and
serving alike, so the saved state_dict holds folded convolutions: the frozen trunk computes what the
backbone computes with fewer ops, and the trainable tail fine-tunes with ImageNet's batch-norm
statistics frozen (the usual choice for fine-tuning on small batches of a small dataset; here it is
also twice as fast per step as batch norms that update, at the same validation accuracy).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from image_model.backbones import Split, build_split, fold_batch_norms
from listings.config import CHOICES

PRECISIONS = CHOICES["image.precision"]
DEVICES = CHOICES["image.device"]


def training_device(name: str) -> torch.device:
    """`image.device` as a torch device: auto is a CUDA GPU when torch sees one, else the CPU."""
    if name not in DEVICES:
        raise ValueError(f"image.device must be one of {DEVICES}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("image.device=cuda but torch sees no CUDA GPU here: use image.device=cpu (or auto)")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


@dataclass
class Architecture:
    """Everything needed to rebuild the network before loading a checkpoint (stored in the sidecar)."""

    backbone: str
    trainable: str
    input_size: int
    n_classes: int
    embed_dim: int
    dropout: float
    precision: str = "bfloat16"  # bfloat16 | float32

    def to_json(self) -> dict:
        return asdict(self)


class ImageNetwork(nn.Module):
    def __init__(self, split: Split, architecture: Architecture):
        super().__init__()
        self.architecture = architecture
        self.cut = split.cut
        self.normalisation = split.normalisation
        if architecture.precision not in PRECISIONS:
            raise ValueError(f"image.precision must be one of {PRECISIONS}, got {architecture.precision!r}")
        self.trunk = fold_batch_norms(split.trunk.requires_grad_(False).eval())
        self.tail = fold_batch_norms(split.tail)
        self.dropout = nn.Dropout(architecture.dropout)
        self.embed = nn.Linear(split.feature_dim, architecture.embed_dim)
        self.classifier = nn.Linear(architecture.embed_dim, architecture.n_classes)

    def train(self, mode: bool = True) -> "ImageNetwork":
        """The trunk stays in eval mode, as the cache computed it; in the tail, training mode only
        switches drop-connect on (its batch norms are folded, their statistics frozen)."""
        super().train(mode)
        self.trunk.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @torch.inference_mode()
    def cut_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] pixels in [0, 1] → fp16 cut activations (what the cache stores)."""
        with self._autocast():
            return self.trunk(pixels.to(self.device).contiguous(memory_format=torch.channels_last)).half()

    def from_cut(self, cut: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp16 cut activations (on any device) → (embedding [B, embed_dim], logits [B, n_classes])."""
        x = cut.to(self.device).float()
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            embedding = self.embed(self.dropout(self.tail(x)))
            logits = self.classifier(self.dropout(F.relu(embedding)))
        return embedding.float(), logits.float()

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.architecture.precision == "bfloat16")

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.from_cut(self.cut_features(pixels).clone())

    def trainable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The tail's pretrained parameters apart from the new layers (they may get a smaller step)."""
        new = [*self.embed.parameters(), *self.classifier.parameters()]
        return {"tail": list(self.tail.parameters()), "head": new}


def build_network(architecture: Architecture, state_dict: dict | None = None) -> ImageNetwork:
    """The network with the backbone's pretrained `state_dict` (or random weights) in trunk and tail."""
    split = build_split(architecture.backbone, architecture.trainable, architecture.input_size, state_dict)
    network = ImageNetwork(split, architecture)
    return network.to(memory_format=torch.channels_last)
