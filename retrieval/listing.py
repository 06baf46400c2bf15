"""A listing as the index stores it (`Listing`), and what a search returns (`SearchResult` of `Hit`s)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from listings.data import split_category


@dataclass
class Listing:
    """The metadata stored for one product."""

    product_id: str
    title: str
    category: str
    root: str
    price: float | None
    location: str
    image_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_mapping(cls, row: Mapping) -> "Listing":
        """From a prepared-listings row (or any mapping with at least product_id, title, category)."""
        category = str(row.get("category") or "")
        price = row.get("price")
        return cls(
            product_id=str(row["product_id"]),
            title=str(row.get("title") or ""),
            category=category,
            root=str(row.get("root") or next(iter(split_category(category)), "")),
            price=None if price is None or (isinstance(price, float) and math.isnan(price)) else float(price),
            location=str(row.get("location") or ""),
            image_ids=[str(i) for i in (row.get("image_ids") if row.get("image_ids") is not None else [])],
        )


@dataclass
class Hit(Listing):
    score: float = 0.0


@dataclass
class SearchResult:
    hits: list[Hit]
    modalities: tuple[str, ...]  # which of ("image", "text") ranked the results
