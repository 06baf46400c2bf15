"""Load listings in the marketplace format and clean their text fields.

The format: `Products.csv` (id, product_name, category "Root / Sub / ...", product_description,
price "£1,234.00", location, plus an unnamed index column), `Images.csv` (id, product_id) and
`images/<image id>.jpg`. `read_dataset` returns one row per product with clean fields and the
list of its image ids (and the photo rows); the same functions clean a listing that arrives through the API.
"""
from __future__ import annotations

import html
import json
import re
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from listings.artifacts import write_atomic

PRODUCT_COLUMNS = ["id", "product_name", "category", "product_description", "price", "location"]
LISTING_COLUMNS = ["product_id", "title", "description", "price", "location", "category", "root", "image_ids"]

# " | in Leeds, West Yorkshire | Gumtree": the end of every scraped title, and where a title ends in
# a listing pasted whole from the site
_GUMTREE_SUFFIX = re.compile(r"\s*\|\s*in\s+[^|]{0,200}\|\s*Gumtree\b", re.IGNORECASE)
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*"
# "25 February 2022", "25. February 2022", "February 25, 2022"
_DATE = rf"(?:\d{{1,2}}\.?\s+{_MONTH}\s+\d{{4}}|{_MONTH}\s+\d{{1,2}},?\s+\d{{4}})"
# "Posted by Nisha in Dining, Living Room Furniture, Mirrors in Wokingham. 25 February 2022": the
# categories leak the label. The town ends at a period, at the date (sometimes there is no period)
# or at the end of the text; a post without categories ("Posted by Vicky, in Greenford.") goes too.
# The name ends at its first " in " and the categories at their last before a period or a digit
# (a date: "in Christow 9 October 2021 Ridden twice" keeps the seller's text), each an atomic group,
# and whitespace is collapsed before matching: a text of "Posted by in in in ..." made the regex
# backtrack through every split of its words (a minute for 20,000 characters); now it is linear.
_POSTED_BY = re.compile(
    r"\.?\s*Posted by\b(?>.{0,60}?\sin\s)(?>[^.\d]{0,200}\sin\s)?[^.]{1,60}?"
    rf"(?:\.?\s*{_DATE}|\.|$)",
    re.DOTALL,
)
MAX_PRICE = 1e12  # the largest price a listing or a price filter may carry
_LEVEL_SEPARATOR = re.compile(r" /|/ ")  # in text whose whitespace `_tidy` made single spaces
_WHITESPACE = re.compile(r"\s+")
_NUMERIC_REFERENCE = re.compile(r"&#(?:([xX])([0-9a-fA-F]+)|([0-9]+))(;?)")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b\u202a-\u202e\u2060\u2066-\u2069\ufeff]")
# "£1,234.00", "£75", "1234.5": pounds, with thousands commas or none; anything else is no price
_PRICE = re.compile(r"£?\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?", re.ASCII)  # ASCII digits: not "٤٥" or "４５"
# Listing and photo ids are UUID-like tokens: letters, digits, '-' and '_' only, so an id can never
# name a path (no '/', '.', or '\\'). The API checks its ids with the same pattern (pydantic's regex).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
ID_WORDS = "an id is 1 to 128 letters, digits, '-' or '_', starting with a letter or a digit"
_ID = re.compile(ID_PATTERN)


PRODUCTS_FILE, IMAGES_FILE = "Products.csv", "Images.csv"  # a marketplace-format directory's tables, beside its photos


def dataset_photos(data_dir: str | Path) -> Path:
    """The photo folder of a marketplace-format directory."""
    return Path(data_dir) / "images"


def photo_path(directory: str | Path, image_id: str) -> Path:
    """Photo `image_id` in a folder of photos (a dataset's, the cleaned-photo cache, the added photos)."""
    return Path(directory) / f"{image_id}.jpg"


class DatasetError(ValueError):
    """A dataset directory that cannot be read as the marketplace format."""


class MissingFileError(DatasetError):
    """A dataset directory without one of its files (`path`)."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


class MissingColumnsError(DatasetError):
    """A CSV file without some of the columns the marketplace format needs (`missing`)."""

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = missing


def clean_title(raw: object) -> str:
    """Strip the ` | in <Town>, <County> | Gumtree` suffix and tidy whitespace."""
    return _tidy(_GUMTREE_SUFFIX.sub("", clean_text(raw)))


def clean_description(raw: object) -> str:
    """Remove the "Posted by X in <categories> in <Town>." boilerplate, which leaks the label."""
    return _tidy(_POSTED_BY.sub(". ", clean_text(raw))).lstrip(". ").strip()


def listing_text(title: str, description: str) -> str:
    """The text a listing is classified and searched by: its title, then its description."""
    return _tidy(f"{title}. {description}" if title and description else title or description)


def clean_listing_text(raw: object) -> str:
    """A text given whole, title then description (a query, or a listing pasted from the site), cleaned
    as `clean_title` and `clean_description` clean those fields for training: the Gumtree suffix ends
    the title wherever it stands, and the "Posted by" boilerplate goes. Text already cleaned is
    returned with the same tokens, so a listing's `listing_text` may be cleaned again."""
    return _tidy(_POSTED_BY.sub(". ", _GUMTREE_SUFFIX.sub(". ", clean_text(raw)))).lstrip(". ").strip()


# what a text that `clean_listing_text` empties held, for the refusals of the API and the command line
CLEANED_AWAY = "only spaces, control characters, HTML entities or a listing page's boilerplate (a \"Posted by …\" line, a \"| in <town> | Gumtree\" ending), which cleaning removes"


def parse_price(raw: object) -> float | None:
    """`£1,234.00` → 1234.0; anything else (`Free`, `£5 - £10`, `€20`, `1.234,00`, a price above
    `MAX_PRICE`) → None, rather than a number the price filters would trust."""
    match = _PRICE.fullmatch(_as_text(raw).strip())
    price = float(match[1].replace(",", "") + (match[2] or "")) if match else None
    return price if price is not None and price <= MAX_PRICE else None  # 400 digits are `inf`, no price


def checked_price(raw: object) -> float | None:
    """A price a user gives (a search filter, a new listing's price): `45`, `45.50` or `£1,234.00`
    → a number, blank → None; anything `parse_price` takes for no price (`Free`, `-5`, `1e3`,
    `1_000`, above `MAX_PRICE`) is a ValueError that says what a price is."""
    if raw is None or not str(raw).strip():
        return None
    price = parse_price(raw)
    if price is None:
        raise ValueError(f"{str(raw)[:40]!r} is not a price: give pounds, such as 45, 45.50 or £1,234.00, from 0 to £{MAX_PRICE:,.0f}")
    return price


PATH_SEPARATOR = " / "  # between the levels of a category path, as listings spell it


def split_category(path: object) -> list[str]:
    """`"Home & Garden / Dining / Mirrors"` → `["Home & Garden", "Dining", "Mirrors"]`. Levels are
    separated by a slash with a space beside it: a slash inside a word is part of a level's name,
    as in the dataset's `… / Radio Communication Equipment / Ham/Amateur Radios`."""
    parts = (part.strip(" /") for part in _LEVEL_SEPARATOR.split(_tidy(_as_text(path))))
    return [part for part in parts if part]


def unify_spellings(paths: pd.Series) -> pd.Series:
    """Category paths (lists of names) with each name spelt as most listings spell it, ignoring
    case: `home & garden` beside `Home & Garden` is one category, not a new class."""
    counts = Counter(name for parts in paths for name in parts)
    spelling: dict[str, str] = {}
    for name, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        spelling.setdefault(name.casefold(), name)
    return paths.map(lambda parts: [spelling[name.casefold()] for name in parts])


@dataclass
class Dataset:
    listings: pd.DataFrame  # one clean row per product (LISTING_COLUMNS)
    dropped_ids: dict[str, list[str]] = field(default_factory=dict)  # the ids of the CSV rows left out, by reason
    unread_prices: list[str] = field(default_factory=list)  # the price fields, not blank, that are no price (`Free`, `£1.2k`)
    unusable_photo_rows: Counter = field(default_factory=Counter)  # per product kept, its photo rows whose id names no file

    @property
    def dropped(self) -> Counter:
        """CSV rows left out, by reason."""
        return Counter({reason: len(ids) for reason, ids in self.dropped_ids.items()})

    def dropped_examples(self, n: int = 3) -> dict[str, str]:
        """Each reason's count and its first `n` ids, in words: `4 ('abc def', 'x.y', '../etc', …)`."""
        return {
            reason: f"{count} ({', '.join(repr(i[:40]) for i in self.dropped_ids.get(reason, [])[:n])}{', …' if count > n else ''})"
            for reason, count in self.dropped.items()
        }


def read_dataset(data_dir: str | Path, labelled: bool = True, metadata: bool = True, photos: bool = True) -> Dataset:
    """Read a marketplace-format directory into one clean row per product, counting the rows left
    out: a product id seen before, an id that is empty or not a plain token (an id names a file:
    `../x` must not), a product with no category, photo rows repeated, of no listed product, or of
    a product left out (counted apart, not twice as a mystery).
    Listings to classify need not be `labelled`: their category column may be empty or absent, and
    so may their description column (a title is a text).
    Without `metadata`, the price and location columns may be absent (no model reads them; blank
    then). Without `photos`, Images.csv is neither needed nor read, and no listing has a photo."""
    data_dir = Path(data_dir)
    _refuse_a_file(data_dir)
    dropped: dict[str, list[str]] = {}
    optional = ([] if labelled else ["category", "product_description"]) + ([] if metadata else ["price", "location"])
    products = _read_csv(data_dir / PRODUCTS_FILE, [column for column in PRODUCT_COLUMNS if column not in optional])
    for column in optional:
        if column not in products.columns:
            products[column] = ""
    images = _read_csv(data_dir / IMAGES_FILE, ["id", "product_id"]) if photos else pd.DataFrame({"id": [], "product_id": []}, dtype=str)
    listed = set(products["id"])

    products = _keep(products, products["id"].map(_is_id), "products: id not a token of letters, digits, - and _", dropped)
    products = _keep(products, ~products["id"].duplicated(), "products: id repeated (the first row kept)", dropped)
    if labelled:
        products = _keep(products, products["category"].map(lambda path: bool(split_category(path))), "products: no category", dropped)
    named = images["id"].map(_is_id).astype(bool)
    unusable = Counter(images.loc[~named, "product_id"])
    images = _keep(images, named, "photos: id not a token of letters, digits, - and _", dropped)
    images = _keep(images, ~images.duplicated(["id", "product_id"]), "photos: row repeated", dropped)
    images = _keep(images, images["product_id"].isin(listed), "photos: of no listed product", dropped)
    kept = set(products["id"])
    images = _keep(images, images["product_id"].isin(kept), "photos: of a product left out", dropped)
    image_ids = images.groupby("product_id")["id"].apply(list).to_dict()

    categories = unify_spellings(products["category"].map(split_category))
    prices = products["price"].map(parse_price)
    unread_prices = products.loc[prices.isna() & products["price"].str.strip().ne(""), "price"].tolist()
    listings = pd.DataFrame(
        {
            "product_id": products["id"],
            "title": products["product_name"].map(clean_title),
            "description": products["product_description"].map(clean_description),
            "price": prices,
            "location": products["location"].map(clean_text),
            "category": categories.map(PATH_SEPARATOR.join),
            "root": categories.map(lambda parts: parts[0] if parts else ""),
        }
    )
    listings["image_ids"] = listings["product_id"].map(lambda pid: list(image_ids.get(pid, [])))
    unusable = Counter({product_id: n for product_id, n in unusable.items() if product_id in kept})
    return Dataset(listings[LISTING_COLUMNS].reset_index(drop=True), dropped, unread_prices, unusable)


def _refuse_a_file(data_dir: Path) -> None:
    """A DatasetError when a dataset directory was given as a file (`--data …/Products.csv`)."""
    if data_dir.is_file():
        raise DatasetError(f"{data_dir} is a file: give the dataset's directory, which holds Products.csv, Images.csv and images/")


def write_jsonl(frame: pd.DataFrame, path: Path) -> None:
    """One JSON object per row, the file written whole or not at all."""
    write_atomic(path, "".join(json.dumps(_json_safe(record), ensure_ascii=False) + "\n" for record in frame.to_dict(orient="records")))


def write_table(frame: pd.DataFrame, path: Path, text_columns: list[str]) -> None:
    """A table for people as well as programs: CSV with a UTF-8 byte-order mark (a spreadsheet
    otherwise reads '£' as 'Â£'), and each cell of `text_columns` (a seller's words) that would
    start a formula (=, +, -, @, as `=HYPERLINK(…)` would) led by an apostrophe, which a spreadsheet
    shows as text. Read it back with `pd.read_csv(path, dtype=str, keep_default_na=False)`: an id
    or title such as `NA` is otherwise read as missing."""
    safe = {column: frame[column].map(lambda cell: "'" + cell if isinstance(cell, str) and cell.startswith(_FORMULA_START) else cell) for column in text_columns}
    frame.assign(**safe).to_csv(path, index=False, encoding="utf-8-sig")


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` characters, ending in '…' when cut."""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def read_jsonl(path: Path) -> pd.DataFrame:
    with Path(path).open(encoding="utf-8") as f:
        return pd.DataFrame([json.loads(line) for line in f if line.strip()])


def _read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "not found"
        raise MissingFileError(f"{path} {problem}: a dataset directory needs Products.csv, Images.csv and images/", path)
    _refuse_other_separators(path, required)  # before pandas splits its fields on the commas inside them
    frame = read_raw_csv(path)
    if not isinstance(frame.index, pd.RangeIndex):
        # A row with more fields than the header: pandas took its first field as an index and
        # shifted every column. Delimiters at the ends of lines (a spreadsheet's export) are harmless.
        _refuse_extra_fields(path, frame, len(frame.columns))
        frame = read_raw_csv(path, index_col=False)
    frame = frame.rename(columns=lambda c: c.strip())
    _refuse_repeated_columns(path, list(frame.columns))
    if _unnamed(frame.columns[-1]):  # the header ends in a delimiter too: its rows' last fields are empty
        _refuse_extra_fields(path, frame, len(frame.columns) - 1)
    frame = frame.drop(columns=[c for c in frame.columns if _unnamed(c)])
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise MissingColumnsError(f"{path} lacks column(s) {missing}; its header is {_header(path)!r} (comma-separated, with the columns {required})", missing)
    return frame.apply(lambda column: column.str.replace("\r", " ", regex=False).str.strip())


def _header(path: Path) -> str:
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        return f.readline().strip()[:200]


def _refuse_other_separators(path: Path, required: list[str]) -> None:
    """A DatasetError when the file's start is not UTF-8 text (a photo or a spreadsheet saved under
    the name), or its header is separated by semicolons, tabs or bars rather than commas."""
    with path.open("rb") as handle:
        start = handle.read(4096)
    if _utf16(start):
        raise DatasetError(f"{path} is UTF-16 text (a spreadsheet's \"Unicode text\"): save it as UTF-8 CSV")
    try:
        start.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(start) - 3:  # not merely a character cut at the end of the block
            raise DatasetError(f"{path} is not UTF-8 text (byte {start[exc.start]:#04x} at offset {exc.start}): save it as UTF-8 CSV") from None
    header = _header(path)
    other = [name for mark, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")) if mark in header]
    if "," not in header and other:
        raise DatasetError(f"{path} is separated by {other[0]}, not commas: save it as comma-separated (CSV) with the columns {required}")


def _utf16(start: bytes) -> bool:
    """Whether a file's first bytes are UTF-16: its byte-order mark, or a NUL beside most ASCII
    characters. A stray NUL in UTF-8 text is a control character as any other (read as a space)."""
    if start.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    return len(start) >= 4 and max(start[0::2].count(0), start[1::2].count(0)) > len(start) // 4


def _refuse_repeated_columns(path: Path, columns: list[str]) -> None:
    """A DatasetError when the header names a column twice: pandas keeps both as `name` and
    `name.1`, and only the first would be read."""
    repeated = {c for c in columns if columns.count(c) > 1}
    repeated |= {m[1] for c in columns if (m := re.fullmatch(r"(.+)\.\d+", c)) and m[1] in columns}
    if repeated - {""}:
        raise DatasetError(f"{path} names the column(s) {sorted(repeated - {''})} more than once in its header ({_header(path)!r}): keep one of each")


def _unnamed(column: str) -> bool:
    return column == "" or column.startswith("Unnamed")


def _refuse_extra_fields(path: Path, frame: pd.DataFrame, named: int) -> None:
    """A value in the last column, past the header's `named` names, is a field too many (an unquoted
    comma), which shifted the fields after it in its row."""
    extra = frame[frame.columns[-1]].str.strip().ne("").to_numpy()
    if extra.any():
        record = int(extra.argmax()) + 1
        raise DatasetError(f"{path}: record {record} (after the header) has more fields than the header names ({named}); check its quoting")


def read_raw_csv(path: Path, **options) -> pd.DataFrame:
    """Every field as text, as the file has it (`_read_csv` then checks and tidies it). Fields carry
    bare '\r': only '\n' ends a row (a '\r\n' ending leaves a '\r')."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.ParserWarning)  # the trailing-delimiter re-read
            return pd.read_csv(path, lineterminator="\n", dtype=str, keep_default_na=False, encoding="utf-8-sig", **options)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path} is empty: it needs a header line and one row per record") from None
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{path} is not a well-formed CSV file: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}): save it as UTF-8") from None


def _keep(frame: pd.DataFrame, mask: pd.Series, reason: str, dropped: dict[str, list[str]]) -> pd.DataFrame:
    """The rows of `frame` where `mask` holds; the ids of the others are kept under `reason`."""
    mask = mask.astype(bool)  # a mask mapped over no rows has dtype object: `frame[mask]` took it for columns
    if not mask.all():
        dropped.setdefault(reason, []).extend(frame.loc[~mask, "id"])
    return frame[mask]


def _is_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))


def _as_text(raw: object) -> str:
    """The text of a field, HTML entities decoded, control characters made spaces, and in Unicode's
    composed form (NFC): 'é' typed as 'e' and a combining accent is the same word, and the same category."""
    if raw is None or (isinstance(raw, float) and raw != raw):
        return ""
    return unicodedata.normalize("NFC", without_controls(unescape_html(str(raw))))


def unescape_html(text: str) -> str:
    """`html.unescape`, safe from a numeric character reference of thousands of digits (`&#999…;`), which
    Python refuses to convert to an int (a ValueError): one past the largest code point, at most
    8 digits after leading zeros, is read as html.unescape reads any out-of-range one, U+FFFD."""

    def bounded(reference: re.Match) -> str:
        hex_mark, digits = reference[1] or "", (reference[2] or reference[3]).lstrip("0") or "0"
        return "\ufffd" if len(digits) > 8 else f"&#{hex_mark}{digits}{reference[4]}"

    return html.unescape(_NUMERIC_REFERENCE.sub(bounded, text))


def without_controls(text: str, replacement: str = " ") -> str:
    """`text` with control characters (NUL, line breaks, escape sequences, the bidirectional overrides that
    reorder what follows them, and the zero-width spaces that would make a blank title look written)
    turned into spaces (or `replacement`): a listing's text is shown in terminals and pages."""
    return _CONTROL.sub(replacement, text)


def _tidy(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def clean_text(raw: object) -> str:
    """Any other field (a location): HTML entities decoded, controls and runs of whitespace made one space."""
    return _tidy(_as_text(raw))


def _json_safe(record: dict) -> dict:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in record.items()}
