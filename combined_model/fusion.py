"""The fusion classifier and the rule that turns branch outputs into one prediction."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from listings.metrics import softmax_rows

EARLY = "early"  # the fusion classifier over the concatenated embeddings
LATE = "late"  # a weighted mean of the branches' probabilities
# each method's name among the evaluated models (`fbm evaluate`, the fusion stage's metrics)
METRICS_KEY = {EARLY: "combined", LATE: "late_fusion"}


@dataclass(frozen=True)
class LateWeights:
    """Late fusion's mix for a listing with a photo and a text: a weighted mean of the image
    branch's, the text CNN's and the TF-IDF text model's probabilities, the last sharpened
    (raised to `tfidf_power`, renormalised: its softmaxed SVM scores are nearly flat). The
    weights sum to 1 and are chosen on validation; a zero TF-IDF weight is the two-branch mean."""

    image: float = 0.5
    text: float = 0.5
    tfidf: float = 0.0
    tfidf_power: float = 1.0

    def __post_init__(self) -> None:
        if min(self.image, self.text, self.tfidf) < 0 or abs(self.image + self.text + self.tfidf - 1) > 1e-6 or self.tfidf_power <= 0:
            raise ValueError(f"late-fusion weights must be non-negative and sum to 1, with a positive power: {self}")

    def to_json(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "LateWeights":
        return cls(**{name: float(value) for name, value in data.items()})

    def describe(self) -> str:
        tfidf = f", tfidf={self.tfidf:g} (sharpened p^{self.tfidf_power:g})" if self.tfidf else ""  # not 0.5 to the power 4
        return f"image={self.image:g}, text={self.text:g}{tfidf}"


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
    late: LateWeights,
    tfidf_probs: np.ndarray | None = None,
) -> np.ndarray:
    """Per-row probabilities: fused where both modalities are present, else the branch that has input.

    A row with neither modality gets the uniform distribution. `tfidf_probs` (the TF-IDF text
    model's) is needed only by a late fusion that weighs it.
    """
    if method == EARLY:
        if fusion_probs is None:
            raise ValueError("early fusion needs the fusion classifier's probabilities")
        both = fusion_probs
    elif method == LATE:
        both = late.image * image_probs + late.text * text_probs
        if late.tfidf:
            if tfidf_probs is None:
                raise ValueError("this late fusion weighs the TF-IDF text model: its probabilities are needed")
            both = both + late.tfidf * sharpen(tfidf_probs, late.tfidf_power)
    else:
        raise ValueError(f"unknown fusion method {method!r}")
    out = np.where(has_image[:, None], image_probs, single_branch(text_probs, has_text))
    return np.where((has_image & has_text)[:, None], both, out).astype(np.float32)


def single_branch(probs: np.ndarray, present: np.ndarray) -> np.ndarray:
    """One branch's probabilities, uniform where that branch had no input."""
    return np.where(present[:, None], probs, np.float32(1.0 / probs.shape[1])).astype(np.float32)


def sharpen(probs: np.ndarray, power: float) -> np.ndarray:
    """Rows of probabilities raised to `power` and renormalised (a softmax at temperature 1/power)."""
    logits = power * np.log(np.clip(probs, 1e-12, None))
    return softmax_rows(logits)
