"""What the command line shows in a terminal (`scripts.terminal`): prose wrapped to it, a
prediction's bars, the table of similar listings."""
from __future__ import annotations

import io
import os
import re
import unicodedata

import pytest

from combined_model.inference import Prediction
from retrieval.listing import Hit, SearchResult
from scripts.terminal import bar_mark, format_prediction, format_results, say, terminal_width


def test_a_text_beside_a_photo_that_the_model_cannot_read_is_said_to_be_unused():
    prediction = Prediction("a", ["a", "b"], [0.9, 0.1], ["image"])
    assert "from image; the text is not used: the model knows none of its words" in format_prediction(prediction, 2, text_given=True)
    assert "not used" not in format_prediction(prediction, 2) and "not used" not in format_prediction(Prediction("a", ["a", "b"], [0.9, 0.1], ["image", "text"]), 2, text_given=True)


def test_bars_fall_back_to_ascii_where_the_terminal_cannot_draw_them(monkeypatch):
    assert bar_mark() == "█"
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(io.BytesIO(), encoding="cp1252"))
    assert bar_mark() == "#"


def test_bars_are_proportional_and_low_confidence_is_said():
    prediction = Prediction("a", ["a", "b", "c"], [0.5, 0.3, 0.2], ["text"], low_confidence=True)
    lines = format_prediction(prediction, 3, bar_width=30).splitlines()
    assert [line.count(bar_mark()) for line in lines[:3]] == [15, 9, 6]
    assert lines[3] == "from text" and lines[4].startswith("low confidence")
    prediction.low_confidence = False
    assert "low confidence" not in format_prediction(prediction, 3) and "uncertain" not in format_prediction(prediction, 3)  # even odds: not under


def test_an_answer_under_even_odds_is_marked_uncertain_with_its_runner_up():
    """As the search page marks it: 0.335 against 0.202 printed as if certain."""
    prediction = Prediction("Home & Garden", ["Home & Garden", "DIY Tools & Materials", "Other Goods"], [0.335, 0.202, 0.463], ["text"])
    assert format_prediction(prediction, 2).splitlines()[-1] == "uncertain: under even odds, the runner-up is DIY Tools & Materials (0.20)"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_prose_is_wrapped_to_the_terminal_and_tables_and_pipes_are_left_whole(monkeypatch):
    """A warning of 400 characters ran off an 80-column terminal (QA pass 47)."""
    monkeypatch.setenv("COLUMNS", "40")
    warning = "  warning: 3 of these listings are in the training split, " + "/a/long/path/never/cut " * 3 + "run `fbm train all --force` again"
    table = "model        accuracy  macro-F1  top-3 accuracy  photo acc  products"
    for stream in (_Terminal(), _Terminal()):  # standard output's place, or standard error's
        say(f"{warning}\n{table}", stream)
        lines = stream.getvalue().splitlines()
        assert lines[-1] == table and all(len(line) <= 40 for line in lines[:-1]) and len(lines) > 3
        assert all(line.startswith("    ") for line in lines[1:-1])  # under the warning's indent, two spaces in
        assert " ".join(line.strip() for line in lines[:-1]) == " ".join(warning.split())  # nothing lost, a path never cut
        assert any(line.strip().endswith("`fbm train all --force` again") or "`fbm train all --force`" in line for line in lines)  # a command pastes whole
    piped = io.StringIO()
    say(warning, piped)
    assert len(piped.getvalue().splitlines()) > 3  # COLUMNS asks for its width, as the results table honours it
    monkeypatch.delenv("COLUMNS")
    piped = io.StringIO()
    say(warning, piped)
    assert piped.getvalue() == warning + "\n"  # a pipe or a file: whole lines, for grep


def test_the_terminal_width_is_the_streams_own(monkeypatch):
    """Standard error's width was measured on standard output, which may be a file."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((57 if fd == 2 else 200, 24)))
    stderr = _Terminal()
    stderr.fileno = lambda: 2
    assert terminal_width(stderr) == 57 and terminal_width(io.StringIO()) == 100  # no descriptor: no terminal
    monkeypatch.setenv("COLUMNS", "33")
    assert terminal_width(stderr) == 33


def test_the_results_table_lines_up_whatever_the_titles_hold():
    titles = ["Plain oak chair", "🎮 PS4 bundle 🎮🕹️ great", "Café table é", "双人床 bed frame", "Cookbook 👩🏻‍🍳 set", "x" * 80]
    prices = [5.0, 24_700.0, None, 10_000_000.0, 0.5, 99.0]
    hits = [Hit(f"p{i}", title, "Home & Garden / Dining", "Home & Garden", price, "York 🏰", [], score=0.5) for i, (title, price) in enumerate(zip(titles, prices))]
    table = format_results(SearchResult(hits, ("text",)), width=100).splitlines()
    rows, second_lines = table[4::2], table[5::2]

    def columns(line: str) -> int:
        # as a terminal draws them: wide characters two columns, marks and skin tones none, the emoji
        # selector widens the symbol before it, an emoji joined to the one before it (ZWJ) draws as one glyph
        def width(previous: str, c: str) -> int:
            if c == "\ufe0f":
                return 1
            if previous == "\u200d" or unicodedata.category(c) in ("Mn", "Me", "Cf") or "\U0001f3fb" <= c <= "\U0001f3ff":
                return 0
            return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1

        return sum(width(previous, c) for previous, c in zip(" " + line, line))

    assert len({columns(row.rsplit("  ", 1)[0]) for row in rows}) == 1  # every row as wide up to the location
    assert max(columns(line) for line in table) <= 100  # a 100-column terminal: it was 142 columns wide
    assert "…" in rows[-1] and "Plain oak chair" in rows[0] and "£24,700" in rows[1] and "£10.0M" in rows[3]
    assert all(line.strip() == f"Home & Garden / Dining · p{i}" for i, line in enumerate(second_lines))  # the full path, and the id for --like

    hostile = Hit("p9", "oak\x1b[31mchair\x00\u202e", "Other Goods", "Other Goods", None, "Le\r\neds", [], score=0.5)
    table = format_results(SearchResult([hostile], ("text",)), width=100)
    assert not re.search("[\x00-\x09\x0b-\x1f\u202e]", table)  # no escape sequence reaches the terminal
    assert "oak [31mchair" in table


@pytest.mark.parametrize("width", [60, 80, 100, 200])
def test_the_results_table_shows_the_whole_category_path_and_fits_the_terminal(width):
    """QA: at 80 columns the path was cut to 'Video Games & Co…', at 60 the table was 72 wide, and
    at 200 the title took every extra column while the location stayed cut at 18 (then at 30:
    'Ashby-de-la-Zouch, Leicesters…' beside 130 blank columns of title)."""
    path = "Video Games & Consoles / Consoles / PS4 / Accessories and spare parts"
    product_id = "897ca11b-6b0c-4b4e-9f58-2f1a3f0c7d21"
    location = "Rochdale, Greater Manchester"
    table = format_results(SearchResult([Hit(product_id, "PS4 pad", path, "Video Games & Consoles", 20.0, location, [], score=0.9)], ("text",)), width=width)
    lines = table.splitlines()
    assert max(map(len, lines)) <= width
    assert " ".join(line.strip() for line in lines[5:]).replace(f" · {product_id}", f" {product_id}") == f"{path} {product_id}"  # all of it, in order
    assert (location in table) == (width >= 200)
    longer = "Ashby-de-la-Zouch, Leicestershire"
    table = format_results(SearchResult([Hit(product_id, "PS4 Pro 500GB", path, "Video Games & Consoles", 20.0, longer, [], score=0.9)], ("text",)), width=width)
    assert (longer in table) == (width >= 200) and max(map(len, table.splitlines())) <= width
