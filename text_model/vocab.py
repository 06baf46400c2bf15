"""Tokens → ids for the text CNN: the word2vec vocabulary plus a padding and an unknown-word id."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from listings.artifacts import read_json

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


@dataclass
class Vocabulary:
    words: list[str]  # id → word; words[0] is PAD, words[1] is UNK
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.words[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; this one starts with {self.words[:2]}")
        self.index = {word: i for i, word in enumerate(self.words)}

    @classmethod
    def from_words(cls, words: list[str]) -> "Vocabulary":
        return cls([PAD, UNK] + [w for w in words if w not in (PAD, UNK)])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: list[str], max_tokens: int) -> tuple[list[int], int]:
        """The ids of the first `max_tokens` tokens (unknown words → UNK) and how many were known.

        An empty token list becomes a single UNK, so every text has a length ≥ 1; a known count
        of 0 marks an empty or all-unknown text.
        """
        ids = [self.index.get(token, UNK_ID) for token in tokens[:max_tokens]] or [UNK_ID]
        return ids, sum(i != UNK_ID for i in ids)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.words, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        return cls(read_json(path, "fbm train text"))


def pad_batch(sequences: list[list[int]], min_length: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into a [batch, time] tensor (time ≥ `min_length`) and return their lengths."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    ids = torch.full((len(sequences), max(int(lengths.max()), min_length)), PAD_ID, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return ids, lengths
