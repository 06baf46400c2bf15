"""What the command line shows in a terminal: prose wrapped to it, a prediction's bars and the
table of similar listings, each fitted to the terminal's width."""
from __future__ import annotations

import os
import re
import sys
import textwrap
import unicodedata
from typing import TextIO

from listings.data import PATH_SEPARATOR, without_controls
from retrieval.listing import SearchResult
from retrieval.vectors import IMAGE


def terminal_width(stream: TextIO | None = None) -> int:
    """The columns of the terminal `stream` (standard output by default) writes to: COLUMNS when
    set, 100 when it writes to no terminal (a pipe, a file)."""
    if os.environ.get("COLUMNS", "").isdigit() and int(os.environ["COLUMNS"]) > 0:
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size((stream or sys.stdout).fileno()).columns
    except (OSError, ValueError, AttributeError):  # no terminal, or a stream without a descriptor
        return 100


def say(text: str, stream: TextIO | None = None) -> None:
    """Print `text` (to standard output, or `stream`); at a terminal, a line of prose wider than it
    is wrapped to its width, with the line's indent and two spaces more, and a `quoted command`
    kept on one line. A table's row (a run of spaces inside it) is left whole, as is every line
    sent to a pipe or a file, unless COLUMNS sets a width."""
    stream = stream or sys.stdout
    if stream.isatty() or os.environ.get("COLUMNS", "").isdigit():
        width = terminal_width(stream)
        text = "\n".join(_wrapped(line, width) for line in text.split("\n"))
    print(text, file=stream)


def _wrapped(line: str, width: int) -> str:
    if len(line) <= width or "  " in line.strip():
        return line
    indent = " " * (len(line) - len(line.lstrip()))
    kept = re.sub(r"`[^`]*`", lambda quoted: quoted[0].replace(" ", "\0"), line)  # no break inside
    return textwrap.fill(kept, width, subsequent_indent=indent + "  ", break_long_words=False, break_on_hyphens=False).replace("\0", " ")


def bar_mark() -> str:
    """'█' for the probability bars, or '#' where the terminal's encoding has no such character."""
    try:
        "█".encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return "#"
    return "█"


TEXT_UNUSED = "the text is not used: the model knows none of its words"  # the search page notes it too (app.js)


def format_prediction(prediction, top: int, bar_width: int = 30, text_given: bool = False) -> str:
    """The `top` categories with their probabilities as bars, and the inputs the answer rests on
    (with `text_given`, a text that was not among them is said to be unused)."""
    width, mark = max(len(name) for name in prediction.classes[:top]), bar_mark()
    lines = [
        f"{name:<{width}}  {probability:5.3f}  {mark * round(probability * bar_width)}"
        for name, probability in zip(prediction.classes[:top], prediction.probabilities[:top])
    ]
    lines.append(f"from {' + '.join(prediction.modalities)}" + (f"; {TEXT_UNUSED}" if text_given and "text" not in prediction.modalities else ""))
    if prediction.low_confidence:
        lines.append("low confidence: the model knows none of the text's words")
    elif prediction.uncertain:
        lines.append(f"uncertain: under even odds, the runner-up is {prediction.runner_up()}")
    return "\n".join(lines)


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
    return sum(_glyph_columns(text))


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
    columns = _glyph_columns(text)
    if sum(columns) <= width:
        return text + " " * (width - sum(columns))
    for char, wide in zip(text, columns):
        if used + wide > width - 1:
            break
        out.append(char)
        used += wide
    return "".join(out) + "…" + " " * (width - 1 - used)


def _glyph_columns(text: str) -> list[int]:
    """The terminal columns of each character of `text`; a character joined to the one before it
    (an emoji sequence's parts) draws in that one's columns."""
    return [0 if previous == "\u200d" else _columns(char) for previous, char in zip(" " + text, text)]


def _columns(char: str) -> int:
    if char == "\ufe0f":  # emoji presentation: the symbol before it is drawn two columns wide
        return 1
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf") or "\U0001f3fb" <= char <= "\U0001f3ff":
        return 0  # marks, joiners and emoji skin tones draw nothing of their own
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
