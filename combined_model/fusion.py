"""The fusion classifier and the rule that turns branch outputs into one prediction."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

EARLY = "early"  # the fusion classifier over the concatenated embeddings
LATE = "late"  # a weighted mean of the branches' probabilities


class FusionClassifier(nn.Module):
    """Dropout + linear over the concatenated branch embeddings (or a one-hidden-layer MLP)."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 0, dropout: float = 0.3):
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
            )
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self.eval()
        return torch.softmax(self(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))), dim=1).numpy()


def combine(
    image_probs: np.ndarray,
    text_probs: np.ndarray,
    fusion_probs: np.ndarray | None,
    has_image: np.ndarray,
    has_text: np.ndarray,
    method: str,
    image_weight: float,
) -> np.ndarray:
    """Per-row probabilities: fused where both modalities are present, else the branch that has input.

    A row with neither modality gets the uniform distribution.
    """
    if method == EARLY:
        if fusion_probs is None:
            raise ValueError("early fusion needs the fusion classifier's probabilities")
        both = fusion_probs
    elif method == LATE:
        both = image_weight * image_probs + (1.0 - image_weight) * text_probs
    else:
        raise ValueError(f"unknown fusion method {method!r}")
    out = np.where(has_image[:, None], image_probs, single_branch(text_probs, has_text))
    return np.where((has_image & has_text)[:, None], both, out).astype(np.float32)


def single_branch(probs: np.ndarray, present: np.ndarray) -> np.ndarray:
    """One branch's probabilities, uniform where that branch had no input."""
    return np.where(present[:, None], probs, np.float32(1.0 / probs.shape[1])).astype(np.float32)
