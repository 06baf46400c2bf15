"""The category encoder: root category name ↔ class index, saved as human-readable JSON.

Every later stage and the API read the same `categories.json`, so an index means the same
category everywhere.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from listings.artifacts import read_json, write_atomic
from listings.data import PATH_SEPARATOR, split_category


class UnknownCategoryError(KeyError, ValueError):
    """A category name or class index the encoder does not know (a ValueError too, so the CLI reports it)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


@dataclass
class CategoryEncoder:
    classes: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    paths: dict[str, int] = field(default_factory=dict)  # full category path → number of listings

    @classmethod
    def fit(cls, roots: Iterable[str], full_paths: Iterable[str] = ()) -> "CategoryEncoder":
        counts = Counter(roots)
        if "" in counts:
            raise ValueError("a listing has an empty category")
        return cls(classes=sorted(counts), counts=dict(sorted(counts.items())), paths=dict(sorted(Counter(full_paths).items())))

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def _index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    @property
    def _lookup(self) -> dict[str, int]:
        """Names in any case → class index (prepare spells each category one way, `unify_spellings`)."""
        lookup: dict[str, int] = {}
        for i, name in enumerate(self.classes):
            lookup.setdefault(name.casefold(), i)
        return lookup | self._index

    def encode_many(self, names: Iterable[str]) -> list[int]:
        """Class indices of names in any case; -1 for an unknown name."""
        lookup = self._lookup
        return [lookup.get(name, lookup.get(name.casefold(), -1)) for name in names]

    def to_json(self) -> dict:
        return {
            "classes": self.classes,
            "index": self._index,
            "counts": self.counts,
            "paths": self.paths,
        }

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_json(), indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> "CategoryEncoder":
        data = read_json(path, "fbm prepare")
        return cls(classes=list(data["classes"]), counts=data.get("counts", {}), paths=data.get("paths", {}))


def canonical_category(category: str | None, classes: Sequence[str]) -> str | None:
    """A category filter whose root (the part before the first ' / ') is a known category, in any
    case, with the root spelt as the model spells it; None when blank; UnknownCategoryError else."""
    if category is None or not category.strip():
        return None
    parts = split_category(category)
    roots = {name.casefold(): name for name in classes}
    if not parts or parts[0].casefold() not in roots:
        unspaced = parts and "/" in parts[0] and parts[0].split("/")[0].strip().casefold() in roots
        spaced = f" (levels are separated by {PATH_SEPARATOR!r}, with spaces)" if unspaced else ""
        raise UnknownCategoryError(f"unknown category {category[:100]!r}{spaced}; known: {'; '.join(classes)}")
    return PATH_SEPARATOR.join([roots[parts[0].casefold()], *parts[1:]])
