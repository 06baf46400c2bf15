"""Loading the marketplace CSVs: every quirk of Products.csv / Images.csv, and the text cleaning."""
from __future__ import annotations

import math
import time

import pandas as pd
import pytest

from listings.data import (
    LISTING_COLUMNS,
    DatasetError,
    checked_price,
    clean_description,
    clean_listing_text,
    clean_text,
    clean_title,
    listing_text,
    parse_price,
    read_dataset,
    read_jsonl,
    split_category,
    unescape_html,
    unify_spellings,
    write_jsonl,
    write_table,
)


@pytest.fixture
def listings(quirky_dataset):
    return read_dataset(quirky_dataset).listings.set_index("product_id", drop=False)


def test_columns_and_rows(listings):
    assert list(listings.columns) == LISTING_COLUMNS  # the unnamed index columns are dropped
    assert list(listings["product_id"]) == ["p-mirror", "p-dvd", "p-fridge", "p-bike", "p-chair"]


def test_titles_lose_the_gumtree_suffix_and_html_entities(listings):
    assert listings.loc["p-mirror", "title"] == "Mirror wall art"
    assert listings.loc["p-dvd", "title"] == 'Tom & Jerry "Classic" DVDs'
    assert not listings["title"].str.contains(r"\||Gumtree").any()


def test_a_listing_pasted_whole_is_cleaned_as_its_fields_are(quirky_dataset, listings):
    """Title (with its Gumtree suffix) and description (with "Posted by" boilerplate) pasted as one
    text, as a user queries the API, read as the listing's cleaned text; cleaning it again changes nothing."""
    raw = pd.read_csv(quirky_dataset / "Products.csv", lineterminator="\n").set_index("id")
    for product_id, row in listings.iterrows():
        cleaned = listing_text(row["title"], row["description"])
        pasted = f"{raw.loc[product_id, 'product_name']}\r\n{raw.loc[product_id, 'product_description']}"
        assert clean_listing_text(pasted) == cleaned, product_id
        assert clean_listing_text(cleaned) == cleaned
    assert clean_listing_text("Sofa | in Leeds, West Yorkshire | Gumtree") == "Sofa."
    assert clean_listing_text("Posted by Sam in Phones, Apple in Leeds. 25 February 2022") == ""
    assert clean_listing_text(None) == ""


def test_location_kept_in_its_own_field(listings):
    assert listings.loc["p-mirror", "location"] == "Wokingham, Berkshire"
    assert listings.loc["p-bike", "location"] == "Christow, Devon"


def test_prices(listings):
    assert listings.loc["p-mirror", "price"] == 1234.0
    assert listings.loc["p-fridge", "price"] == 75.0
    assert listings.loc["p-bike", "price"] == 120.5
    assert listings.loc["p-chair", "price"] == 1000.0
    assert math.isnan(listings.loc["p-dvd", "price"])  # "Free": no number


def test_bare_carriage_returns_and_entities_in_descriptions(listings):
    assert listings.loc["p-dvd", "description"] == 'Five discs, all working. Collection only & cash, "no" offers'
    assert not listings["description"].str.contains("\r").any()


def test_control_characters_become_spaces():
    """NUL, terminal escapes and bidirectional overrides would reach terminals and pages as sent."""
    assert clean_title("oak\x00chair\x1b[31m red\u202e | in Leeds, West Yorkshire | Gumtree") == "oak chair [31m red"
    assert clean_text("Le\x00eds\r\nX-Injected:\x7f 1") == "Le eds X-Injected: 1"
    assert clean_description("Problem\u202a+44 7448\u202cIf") == "Problem +44 7448 If"
    assert split_category("Home & Garden / \x01\x1b[31mred") == ["Home & Garden", "[31mred"]
    assert clean_title("\u200b\ufeff\u2060") == "" and clean_title("oak\u200bchair") == "oak chair"  # zero-width: no blank title that looks written
    assert clean_text("👨\u200d👩\u200d👧") == "👨\u200d👩\u200d👧"  # a joiner inside an emoji (or a word of some scripts) stays


def test_posted_by_cleaning_takes_linear_time_on_hostile_text():
    """A text of "Posted by in in in ..." made the boilerplate regex try every split of its words:
    43 s for 80,000 characters, on the API's event loop. A guard against that backtracking (now
    0.2 s), not a speed target."""
    hostile = (("Posted by " + "in " * 10) * 8000)[:80_000]
    spaced = (("Posted by x" + " in" * 30 + " " * 30) * 1600)[:80_000]
    started = time.perf_counter()
    for text in (hostile, spaced):
        clean_description(text)
        clean_title(text)
    assert time.perf_counter() - started < 8
    assert clean_description("Sofa. Posted by Ann in Home & Garden, Sofas in Leeds. Collection only") == "Sofa. Collection only"
    dated = "Road bike. Posted by Julie in Sports, Leisure & Travel, Bicycles in Christow 9 October 2021 Ridden twice, kept in a garage."
    assert clean_description(dated) == "Road bike. Ridden twice, kept in a garage."  # the seller's words after the date stay


def test_posted_by_boilerplate_is_stripped_in_every_date_form(listings):
    expected = {
        "p-mirror": "Mirror wall art. Size 45x45cm",
        "p-fridge": "Must collect Indesit fridge.",
        "p-bike": "Raleigh Hybrid, 21 speed.",  # no period after the town
        "p-chair": "Ikea chair.",
    }
    for product_id, description in expected.items():
        assert listings.loc[product_id, "description"] == description
    for description in listings["description"]:
        assert "Posted by" not in description
        assert "2022" not in description and "2021" not in description


def test_descriptions_do_not_leak_the_category(listings):
    for _, row in listings.iterrows():
        subcategories = row["category"].split(" / ")[1:]
        for name in subcategories:
            assert name not in row["description"], (row["product_id"], name)


def test_categories(listings):
    row = listings.loc["p-mirror"]
    assert row["category"] == "Home & Garden / Dining, Living Room Furniture / Mirrors, Clocks & Ornaments"
    assert row["root"] == "Home & Garden"
    assert listings.loc["p-dvd", "root"] == "Music, Films, Books & Games"
    assert split_category(" A /B / / C ") == ["A", "B", "C"]
    # a slash inside a word is part of the level's name (the dataset has one such level)
    assert split_category("Phones / Radio Communication Equipment / Ham/Amateur Radios") == ["Phones", "Radio Communication Equipment", "Ham/Amateur Radios"]
    assert split_category("A //B/C/ D") == ["A", "B/C", "D"]
    assert split_category("Home  &\tGarden / Sofas") == ["Home & Garden", "Sofas"]


def test_a_category_spelt_in_another_case_is_one_class(quirky_dataset):
    products = quirky_dataset / "Products.csv"
    products.write_text(products.read_text(encoding="utf-8").replace("Sports, Leisure & Travel / Cycling", "home  &  GARDEN / Cycling"), encoding="utf-8")
    listings = read_dataset(quirky_dataset).listings.set_index("product_id")
    assert listings.loc["p-bike", "root"] == listings.loc["p-mirror", "root"] == "Home & Garden"
    assert listings.loc["p-bike", "category"] == "Home & Garden / Cycling / Bicycles"


def test_spellings_are_unified_by_the_most_common():
    paths = pd.Series([["Home & Garden", "Sofas"], ["home & garden", "sofas"], ["Home & Garden", "Sofas"], ["HOME & GARDEN", "Lamps"], ["Other Goods", "Home & Garden"]])
    assert unify_spellings(paths).tolist() == [["Home & Garden", "Sofas"]] * 3 + [["Home & Garden", "Lamps"], ["Other Goods", "Home & Garden"]]


def test_image_ids_per_product(listings):
    assert listings.loc["p-mirror", "image_ids"] == ["img-m1", "img-m2"]
    assert listings.loc["p-dvd", "image_ids"] == []  # no photo: still a listing for the text branch
    assert listings.loc["p-fridge", "image_ids"] == ["img-f1", "img-f2", "img-f3"]


def test_jsonl_round_trip(listings, tmp_path):
    path = tmp_path / "listings.jsonl"
    write_jsonl(listings.reset_index(drop=True), path)
    back = read_jsonl(path)
    assert list(back.columns) == LISTING_COLUMNS
    assert back["image_ids"].tolist() == listings["image_ids"].tolist()
    assert back.loc[1, "price"] is None or math.isnan(back.loc[1, "price"])
    assert back.loc[0, "price"] == 1234.0


def test_duplicate_product_rows_are_dropped(quirky_dataset):
    products = quirky_dataset / "Products.csv"
    lines = products.read_text(encoding="utf-8").splitlines(keepends=True)
    products.write_text("".join(lines + lines[1:2]), encoding="utf-8")
    assert read_dataset(quirky_dataset).listings["product_id"].tolist().count("p-mirror") == 1


def test_duplicate_image_rows_are_dropped(quirky_dataset):
    images = quirky_dataset / "Images.csv"
    lines = images.read_text(encoding="utf-8").splitlines(keepends=True)
    images.write_text("".join(lines + lines[1:2]), encoding="utf-8")
    assert read_dataset(quirky_dataset).listings.loc[0, "image_ids"] == ["img-m1", "img-m2"]


def test_windows_line_endings_and_a_byte_order_mark_read_the_same(quirky_dataset, listings):
    for name in ("Products.csv", "Images.csv"):
        path = quirky_dataset / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    pd.testing.assert_frame_equal(read_dataset(quirky_dataset).listings, listings.reset_index(drop=True))


def test_missing_products_csv_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="Products.csv"):
        read_dataset(tmp_path)


def test_a_file_given_as_the_dataset_directory_is_a_clear_error(quirky_dataset):
    with pytest.raises(DatasetError, match="Products.csv is a file: give the dataset's directory"):
        read_dataset(quirky_dataset / "Products.csv")


def test_missing_images_csv_is_a_clear_error(quirky_dataset):
    (quirky_dataset / "Images.csv").unlink()
    with pytest.raises(DatasetError, match="Images.csv not found"):
        read_dataset(quirky_dataset)


def test_missing_column_is_a_clear_error(quirky_dataset):
    products = quirky_dataset / "Products.csv"
    products.write_text(products.read_text(encoding="utf-8").replace("product_description", "body", 1), encoding="utf-8")
    with pytest.raises(DatasetError, match="product_description"):
        read_dataset(quirky_dataset)


def test_delimiters_at_the_ends_of_lines_read_the_same(quirky_dataset, listings):
    """A spreadsheet's export may end every line with a comma: one empty field more than the header."""
    for name in ("Products.csv", "Images.csv"):
        path = quirky_dataset / name
        path.write_bytes(path.read_bytes().replace(b"\n", b",\n"))
    pd.testing.assert_frame_equal(read_dataset(quirky_dataset).listings, listings.reset_index(drop=True))


def test_a_row_with_a_field_more_than_the_header_is_a_clear_error(quirky_dataset):
    """Pandas would take its first field as an index and shift every column of every row."""
    products = quirky_dataset / "Products.csv"
    lines = products.read_text(encoding="utf-8").split("\n")
    lines[1] += ",stray"
    products.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DatasetError, match="record 1 .after the header. has more fields than the header"):
        read_dataset(quirky_dataset)


def test_a_row_with_a_field_more_among_lines_ending_in_delimiters_is_named(quirky_dataset):
    """Every line ends in a delimiter but one, whose unquoted comma makes up the missing field."""
    products = quirky_dataset / "Products.csv"
    lines = products.read_text(encoding="utf-8").rstrip("\n").split("\n")  # a comma more inside a quoted field is text
    lines = [line + (",stray" if line.startswith("6,p-fridge,") else ",") for line in lines]
    products.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="record 3 .after the header. has more fields"):
        read_dataset(quirky_dataset)


def test_a_nul_in_a_field_is_a_space_wherever_it_is(quirky_dataset):
    """A stray NUL was a space past the file's first 4 KB and refused the whole file before them."""
    products = quirky_dataset / "Products.csv"
    header, first, rest = products.read_text(encoding="utf-8").split("\n", 2)
    products.write_text("\n".join([header, first.replace("Mirror", "Mirror\x00", 1), rest]), encoding="utf-8")
    assert "Mirror\x00" in products.read_text(encoding="utf-8")[:4096]
    titles = read_dataset(quirky_dataset).listings["title"].tolist()
    assert "Mirror wall art" in titles and not any("\x00" in title for title in titles), titles  # a space, and spaces run together
    tiny = quirky_dataset / "tiny"
    tiny.mkdir()
    (tiny / "Products.csv").write_bytes(b"id,product_name\na1,PS4\x00\x00\x00 console\n")  # three NULs in 40 bytes
    assert read_dataset(tiny, labelled=False, metadata=False, photos=False).listings["title"].tolist() == ["PS4 console"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), ("id,product_name\nx,Caf\u00e9\n".encode("latin-1"), "not UTF-8"), (b"id;product_name;category\n1;a;b\n", "is separated by semicolons, not commas: save it as comma-separated"),
     (b"id;product_name;category\n1;a, b, c;d\n2;e;f\n", "is separated by semicolons"),  # commas inside fields: a parse error before
     (b"id\tproduct_name\tcategory\n1\ta, b\tc\n2\td\te, f, g\n", "is separated by tabs"),
     (b"id\tproduct_name\n1\ta\n", "is separated by tabs, not commas"), (b"id,title\n1,a\n", "its header is 'id,title'"),
     (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\t\x01", "is not UTF-8 text \\(byte 0xff at offset 0\\): save it as UTF-8 CSV"),  # a photo saved as Products.csv: "tabs"
     ("id,product_name\n1,a\n".encode("utf-16"), "is UTF-16 text \\(a spreadsheet's \"Unicode text\"\\): save it as UTF-8 CSV"),  # with its byte-order mark
     ("id,product_name\n1,a\n".encode("utf-16-be"), "is UTF-16 text"),  # without
     (b"id,product_name,product_name\n1,a,b\n", "names the column\\(s\\) \\['product_name'\\] more than once in its header"),  # the second was dropped
     (b"id, id,product_name\n1,2,a\n", "names the column\\(s\\) \\['id'\\] more than once")],
)
def test_unreadable_csv_files_are_clear_errors(quirky_dataset, content, message):
    (quirky_dataset / "Products.csv").write_bytes(content)
    with pytest.raises(DatasetError, match=message) as caught:
        read_dataset(quirky_dataset)
    assert "Products.csv" in str(caught.value)


def test_rows_left_out_are_counted_and_ids_never_name_a_path(quirky_dataset):
    products = quirky_dataset / "Products.csv"
    rows = products.read_text(encoding="utf-8")
    extra = ['99,"",Unnamed,Appliances,,£1,Leeds', '98,../escape,Rug,Home & Garden,,£2,Leeds', '97,p-dvd,Another DVD,Music,,£3,Leeds',
             '96,p-blank,Lamp, / ,,£4,Leeds', '95,p-short,Vase']  # no category: blank, or a row cut short
    products.write_text(rows + "\n".join(extra) + "\n", encoding="utf-8")
    images = quirky_dataset / "Images.csv"
    images.write_text(images.read_text(encoding="utf-8") + "90,../../outside,p-chair\n91,img-x,p-unknown\n", encoding="utf-8")
    dataset = read_dataset(quirky_dataset)
    assert list(dataset.listings["product_id"]) == ["p-mirror", "p-dvd", "p-fridge", "p-bike", "p-chair"]
    assert dataset.listings.set_index("product_id").loc["p-dvd", "title"] == 'Tom & Jerry "Classic" DVDs'  # the first row kept
    assert "../../outside" not in dataset.listings.set_index("product_id").loc["p-chair", "image_ids"]
    assert dataset.dropped == {
        "products: id not a token of letters, digits, - and _": 2,
        "products: id repeated (the first row kept)": 1,
        "products: no category": 2,
        "photos: id not a token of letters, digits, - and _": 1,
        "photos: of no listed product": 1,
    }
    assert dataset.dropped_ids["products: no category"] == ["p-blank", "p-short"]  # named, not only counted
    assert dataset.dropped_examples(1)["products: id not a token of letters, digits, - and _"] == "2 ('', …)"


def test_photos_of_a_product_left_out_are_counted_apart(quirky_dataset):
    """Not as photos of no listed product: the product is listed, and left out for its own reason."""
    products = quirky_dataset / "Products.csv"
    products.write_text(products.read_text(encoding="utf-8") + "96,bad.id,Lamp,Home & Garden,,£4,Leeds\n", encoding="utf-8")
    images = quirky_dataset / "Images.csv"
    images.write_text(images.read_text(encoding="utf-8") + "90,lamp-1,bad.id\n91,lamp-2,bad.id\n", encoding="utf-8")
    dataset = read_dataset(quirky_dataset)
    assert dataset.dropped["photos: of a product left out"] == 2 and "photos: of no listed product" not in dataset.dropped
    assert dataset.dropped_ids["products: id not a token of letters, digits, - and _"] == ["bad.id"]


def test_listings_to_score_need_no_price_or_location_and_text_alone_no_photos(quirky_dataset):
    """`fbm evaluate --data` and `classify --data` read no price or location (blank when absent), and
    `classify --mode text` no Images.csv; `fbm prepare` needs them all (the index shows them)."""
    products = quirky_dataset / "Products.csv"
    whole = read_dataset(quirky_dataset).listings
    frame = pd.read_csv(products, dtype=str, keep_default_na=False).drop(columns=["price", "location"])
    frame.to_csv(products, index=False)
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['price', 'location'\]"):
        read_dataset(quirky_dataset)
    listings = read_dataset(quirky_dataset, metadata=False).listings
    assert list(listings["product_id"]) == list(whole["product_id"]) and list(listings["title"]) == list(whole["title"])
    assert listings["price"].isna().all() and set(listings["location"]) == {""}
    assert list(listings["image_ids"]) == list(whole["image_ids"])

    (quirky_dataset / "Images.csv").unlink()
    with pytest.raises(DatasetError, match="Images.csv not found"):
        read_dataset(quirky_dataset, metadata=False)
    text_only = read_dataset(quirky_dataset, labelled=False, metadata=False, photos=False)
    assert list(text_only.listings["product_id"]) == list(whole["product_id"])
    assert set(map(len, text_only.listings["image_ids"])) == {0} and not any(reason.startswith("photos") for reason in text_only.dropped)


def test_listings_to_classify_need_no_category(quirky_dataset):
    products = quirky_dataset / "Products.csv"
    rows = products.read_text(encoding="utf-8")
    products.write_text(rows + '96,p-blank,Lamp, / ,,£4,Leeds\n', encoding="utf-8")
    assert "p-blank" not in set(read_dataset(quirky_dataset).listings["product_id"])  # training needs a category
    unlabelled = read_dataset(quirky_dataset, labelled=False)
    assert "p-blank" in set(unlabelled.listings["product_id"]) and "products: no category" not in unlabelled.dropped
    frame = pd.read_csv(products, dtype=str, keep_default_na=False).drop(columns=["category"])
    frame.to_csv(products, index=False)  # no category column at all
    listings = read_dataset(quirky_dataset, labelled=False).listings
    assert list(listings["product_id"]) == list(unlabelled.listings["product_id"]) and set(listings["category"]) == {""}
    with pytest.raises(DatasetError, match="lacks column"):
        read_dataset(quirky_dataset)
    frame.drop(columns=["product_description"]).to_csv(products, index=False)  # new listings, a title each
    titles_only = read_dataset(quirky_dataset, labelled=False).listings
    assert list(titles_only["title"]) == list(listings["title"]) and set(titles_only["description"]) == {""}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("£1,234.00", 1234.0),
        ("£5.00", 5.0),
        ("£0.00", 0.0),
        ("75", 75.0),
        (" £ 1,000 ", 1000.0),
        ("Free", None),
        ("", None),
        (None, None),
        ("£1.2.3", None),
        ("£1.234,00", None),
        ("£5 - £10", None),
        ("-£5", None),
        ("$1e5", None),
        ("€20", None),
        ("£12,34", None),
        ("٤٥", None),  # digits of other scripts (float() reads them) are no price
        ("£４５.００", None),
        ("£1,000,000,000,000", 1e12),
        ("£1,000,000,000,000.01", None),  # above what a price filter may ask for
        ("£" + "9" * 400, None),  # float() of 400 digits is inf: "no price" that passed every price filter
    ],
)
def test_parse_price(raw, expected):
    assert parse_price(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_a_blank_price_given_is_no_price(raw):
    assert checked_price(raw) is None


@pytest.mark.parametrize("raw", ["Free", "-5", "1e3"])
def test_a_price_given_that_is_no_price_is_refused(raw):
    with pytest.raises(ValueError, match="is not a price"):
        checked_price(raw)



@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Sofa | in Delph, Manchester | Gumtree", "Sofa"),
        ("Sofa | brand new | in Leeds, West Yorkshire | Gumtree", "Sofa | brand new"),
        ("  Plain   title ", "Plain title"),
    ],
)
def test_clean_title(raw, expected):
    assert clean_title(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Posted by Sam in Mobile Phones, Apple iPhone in East End. 25 February 2022", ""),
        ("Great phone. Posted by Sam in Mobile Phones, Apple iPhone in East End. 25 February 2022", "Great phone."),
        ("Good. Posted by Vicky, in Greenford. ", "Good."),
        ("Posted by Gordon in Books, Comics & Magazines, Books in Alexandria. February 12, 2022 Read once", "Read once"),
        ("No boilerplate here, posted by courier in 2 days.", "No boilerplate here, posted by courier in 2 days."),
    ],
)
def test_clean_description(raw, expected):
    assert clean_description(raw) == expected


def test_listing_text():
    assert listing_text("Sofa", "Grey, two seats") == "Sofa. Grey, two seats"
    assert listing_text("Sofa", "") == "Sofa"
    assert listing_text("", "Grey  sofa") == "Grey sofa"


@pytest.mark.parametrize(
    "text, expected",
    [("&#65;&#x42;&#0000000067;", "ABC"), ("&#38;#65; &amp;", "&#65; &"), ("&#1114112;x", "\ufffdx"),
     ("&#" + "9" * 5000 + ";x", "\ufffdx"), ("&#" + "0" * 5000 + "65;", "A"), ("&#x" + "f" * 5000, "\ufffd"), ("&#;", "&#;")],
    ids=["plain", "once", "past-unicode", "5000-digits", "leading-zeros", "hex", "empty"],
)
def test_html_references_unescape_as_html_unescape_does_at_any_length(text, expected):
    """Python will not convert 5,000 digits to an int: html.unescape raised a ValueError."""
    assert unescape_html(text) == expected


def test_csv_files_with_a_header_and_no_rows_read_as_no_listings(tmp_path):
    """A mask over no rows had dtype object, which pandas took for a list of columns: a KeyError."""
    (tmp_path / "images").mkdir()
    (tmp_path / "Products.csv").write_text("id,product_name,category,product_description,price,location\n\n", encoding="utf-8")
    (tmp_path / "Images.csv").write_text("id,product_id\n", encoding="utf-8")
    assert len(read_dataset(tmp_path).listings) == 0



def test_tables_for_people_open_as_text_in_a_spreadsheet(tmp_path):
    frame = pd.DataFrame({
        "product_id": ["NA", "-a1", "p3", "p4"],
        "title": ['=HYPERLINK("http://evil.example","click")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "£5 sofa = bargain"],
    })
    path = tmp_path / "table.csv"
    write_table(frame, path, ["title"])
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # UTF-8 marked: a spreadsheet reads the £ as £
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(back.columns) == ["product_id", "title"] and list(back["product_id"]) == ["NA", "-a1", "p3", "p4"]  # ids untouched
    assert list(back["title"]) == ["'=HYPERLINK(\"http://evil.example\",\"click\")", "'+cmd|' /C calc'!A0", "'@SUM(1+1)", "£5 sofa = bargain"]


def test_controls_written_as_html_entities_are_removed_too():
    """A bidi override or NUL sent as a numeric entity (&#8238; &#0;) is decoded, then removed like a raw one."""
    for cleaned in (clean_text("a&#8238;b&#x202E;c&#0;d&#27;e"), clean_title("Sofa&#8238;gnp.exe | in Leeds, Leeds | Gumtree"), clean_description("x&#8203;y")):
        assert not any(ch in cleaned for ch in "\u202e\x00\x1b\u200b"), repr(cleaned)
    assert clean_text("a&#8238;b") == "a b"
