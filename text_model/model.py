"""The text CNN (Kim, 2014): word vectors → parallel 1-D convolutions → max-pool over time → 256-d → classes."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from text_model.vocab import PAD_ID


@dataclass
class TextCNNShape:
    """Everything needed to rebuild the network before loading its state_dict (saved in the sidecar)."""

    vocab_size: int
    word_dim: int
    n_classes: int
    kernel_sizes: tuple[int, ...] = (2, 3, 4, 5)
    channels: int = 128
    embed_dim: int = 256
    dropout: float = 0.5

    def to_json(self) -> dict:
        return asdict(self) | {"kernel_sizes": list(self.kernel_sizes)}

    @classmethod
    def from_json(cls, data: dict) -> "TextCNNShape":
        return cls(**{**data, "kernel_sizes": tuple(data["kernel_sizes"])})


class TextCNN(nn.Module):
    def __init__(self, shape: TextCNNShape, word_vectors: torch.Tensor | None = None, finetune_words: bool = True):
        super().__init__()
        self.shape = shape
        self.words = nn.Embedding(shape.vocab_size, shape.word_dim, padding_idx=PAD_ID)
        if word_vectors is not None:
            self.words.weight.data.copy_(word_vectors)
        self.words.weight.requires_grad_(finetune_words)
        self.convs = nn.ModuleList(nn.Conv1d(shape.word_dim, shape.channels, k) for k in shape.kernel_sizes)
        self.dropout = nn.Dropout(shape.dropout)
        self.project = nn.Linear(shape.channels * len(shape.kernel_sizes), shape.embed_dim)
        self.classifier = nn.Linear(shape.embed_dim, shape.n_classes)

    @property
    def min_length(self) -> int:
        """Batches are padded to at least the widest kernel so every convolution has an output."""
        return max(self.shape.kernel_sizes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [batch, time] (right-padded, time ≥ min_length), lengths [batch] ≥ 1 → (embedding [batch, 256], logits)."""
        x = self.words(ids).transpose(1, 2)  # [batch, word_dim, time]
        pooled = []
        for kernel_size, conv in zip(self.shape.kernel_sizes, self.convs):
            h = torch.relu(conv(x))  # [batch, channels, time - k + 1]
            # A window is real if it starts inside the text; a text shorter than k keeps its first window.
            n_windows = (lengths - kernel_size + 1).clamp(min=1)
            valid = torch.arange(h.shape[-1], device=h.device)[None, :] < n_windows[:, None]
            pooled.append(h.masked_fill(~valid[:, None, :], 0.0).amax(dim=-1))  # after ReLU, 0 never wins over a real window
        embedding = torch.relu(self.project(self.dropout(torch.cat(pooled, dim=1))))
        return embedding, self.classifier(self.dropout(embedding))
