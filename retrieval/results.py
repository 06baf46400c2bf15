"""What a search of the listing index returns, and the table `fbm similar` prints of it."""
from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from listings.data import PATH_SEPARATOR, split_category, without_controls
from retrieval.vectors import IMAGE


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


def format_results(result: SearchResult, width: int = 100) -> str:
    """A table of search results with their scores, for the command line, `width` columns wide (the
    terminal's, 60 at least): a line of rank, score, price, title and location per listing, then its
    full category path and its product id (for `fbm similar --like`)."""
    used = " + ".join("photo" if m == IMAGE else "text" for m in result.modalities)
    if not result.hits:
        return f"no matching listings (searched by {used})"
    width = max(width, 60)
    # the location as wide as its longest, up to a third of what the rank, score and price leave; the title has the rest
    longest = max(_text_columns(without_controls(hit.location)) for hit in result.hits)
    location_width = max(12, min(longest, (width - _LEFT) // 3))
    title_width = width - _LEFT - 2 - location_width
    header = f"{'#':>3}  {'score':>5}  {'price':>10}  {_fit('title', title_width)}  {'location'}"
    lines = [f"{len(result.hits)} similar listing{'s' if len(result.hits) > 1 else ''} by {used}", header, " " * _INDENT + "category · product id", "-" * width]
    for rank, hit in enumerate(result.hits, 1):
        price = _price(hit.price)
        lines.append(f"{rank:>3}  {hit.score:5.3f}  {price:>10}  {_fit(hit.title, title_width)}  {_fit(hit.location, location_width).rstrip()}")
        lines += [" " * _INDENT + line for line in _category_lines(hit.category or hit.root, hit.product_id, width - _INDENT)]
    return "\n".join(lines)


_LEFT = 3 + 2 + 5 + 2 + 10 + 2  # rank, score and price, with their gaps
_INDENT = 5  # the category lines', under the score


def _category_lines(category: str, product_id: str, width: int) -> list[str]:
    """The whole category path and the product id on one line when they fit in `width` terminal
    columns; else the path's levels packed into lines (a line ends at a " / ", and a level wider
    than a line is cut with …) and the id on a line of its own."""
    category = without_controls(category)
    joined = f"{category} · {product_id}"
    if _text_columns(joined) <= width:
        return [joined]
    lines = [""]
    for level in category.split(PATH_SEPARATOR):
        piece = f"{lines[-1]}{PATH_SEPARATOR if lines[-1] else ''}{level}"
        if _text_columns(piece) <= width or not lines[-1]:
            lines[-1] = piece
        else:
            lines.append(f"{PATH_SEPARATOR.strip()} {level}")
    return [_fit(line, width).rstrip() for line in lines] + [product_id]


def _text_columns(text: str) -> int:
    return sum(map(_columns, text))


def _price(price: float | None) -> str:
    """£45.50, £24,700, £10.0M and £1,000.0B: a price in ten columns."""
    if price is None:
        return "-"
    if price >= 1e9:
        return f"£{price / 1e9:,.1f}B"
    if price >= 1e6:
        return f"£{price / 1e6:,.1f}M"
    return f"£{price:,.0f}" if price >= 1e4 else f"£{price:,.2f}"


def _fit(text: str, width: int) -> str:
    """`text` clipped (with …) and padded to `width` terminal columns: an emoji or a CJK character
    takes two (a symbol followed by the emoji selector too), a combining mark none, so the table's columns line up whatever the titles hold."""
    text, out, used = without_controls(text), [], 0  # no escape sequence reaches the terminal
    columns = [0 if previous == "\u200d" else _columns(char) for previous, char in zip(" " + text, text)]  # a joined emoji: one glyph
    if sum(columns) <= width:
        return text + " " * (width - sum(columns))
    for char, wide in zip(text, columns):
        if used + wide > width - 1:
            break
        out.append(char)
        used += wide
    return "".join(out) + "…" + " " * (width - 1 - used)


def _columns(char: str) -> int:
    if char == "\ufe0f":  # emoji presentation: the symbol before it is drawn two columns wide
        return 1
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf") or "\U0001f3fb" <= char <= "\U0001f3ff":
        return 0  # marks, joiners and emoji skin tones draw nothing of their own
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
