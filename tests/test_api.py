"""The HTTP API on a stand-in predictor and the real listing index: every endpoint, every bad input."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.uploads import BodyLimitMiddleware, MultipartEndMiddleware, Utf8FormMiddleware
from listings.images import clean_image, stored_jpeg
from listings.photos import PhotoStore
from retrieval.index import ListingIndex
from retrieval.query import search_similar
from test_api_fakes import CLASSES, FakePredictor, fake_services, jpeg_bytes, live_server, synthetic_photo, tiny_config

KEY = "test-key-123"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """One catalogue for the module's read-only tests (built once: photos, index)."""
    path = tmp_path_factory.mktemp("artifacts")
    fake_services(tiny_config(path)).index.close()
    return path


def serving(config):
    services = fake_services(config)
    with TestClient(create_app(config, services)) as client:
        yield client
    services.index.close()


@pytest.fixture
def client(artifacts):
    yield from serving(tiny_config(artifacts, api_key=KEY))


@pytest.fixture
def writable(tmp_path):
    """A client on its own copy of the catalogue, for tests that add and delete listings."""
    yield from serving(tiny_config(tmp_path, api_key=KEY))


def catalogue_photo(artifacts, image_id: str) -> bytes:
    return (tiny_config(artifacts).paths.clean_images(256) / f"{image_id}.jpg").read_bytes()


def assert_prediction(body: dict, modalities: list[str]) -> None:
    assert body["modalities"] == modalities
    assert sorted(body["classes"]) == sorted(CLASSES)
    assert body["pred"] == body["classes"][0]
    probabilities = body["probabilities"]
    assert len(probabilities) == len(CLASSES) and abs(sum(probabilities) - 1) < 1e-4
    assert probabilities == sorted(probabilities, reverse=True)


# --- happy paths -----------------------------------------------------------------------------


def test_image_text_and_combined_predict_from_the_inputs_given(client):
    photo = jpeg_bytes(synthetic_photo("red", "circle"))
    image = client.post("/image", files={"img": ("kettle.jpg", photo, "image/jpeg")})
    assert image.status_code == 200, image.text
    assert_prediction(image.json(), ["image"])

    text = client.post("/text", data={"txt": "oak dining chair"})
    assert text.status_code == 200, text.text
    assert_prediction(text.json(), ["text"])

    both = client.post("/combined", files={"img": ("kettle.jpg", photo, "image/jpeg")}, data={"txt": "oak dining chair"})
    assert both.status_code == 200, both.text
    assert_prediction(both.json(), ["image", "text"])

    for data, files, used in (({"txt": "oak dining chair"}, None, ["text"]), ({}, {"img": ("k.jpg", photo)}, ["image"])):
        fallback = client.post("/combined", data=data, files=files)
        assert fallback.status_code == 200, fallback.text
        assert_prediction(fallback.json(), used)


def test_a_listing_pasted_from_the_site_reads_as_its_cleaned_text(client):
    """The Gumtree title suffix and the "Posted by" boilerplate (its categories leak the label) are
    cleaned from a query as prepare cleans them from the catalogue."""
    pasted = "Oak dining chair | in Leeds, West Yorkshire | Gumtree\nPosted by Sam in Home & Garden, Dining in Leeds. 25 February 2022 Solid oak, seats four"
    clean = "Oak dining chair. Solid oak, seats four"
    for path in ("/text", "/combined"):
        answers = [client.post(path, data={"txt": text}).json() for text in (pasted, clean)]
        assert answers[0] == answers[1]
    found = [client.post("/similar", data={"txt": text}).json() for text in (pasted, clean)]
    assert found[0] == found[1]


def test_several_photos_of_one_listing_and_other_formats_are_accepted(client):
    png = io.BytesIO()
    synthetic_photo("blue", "square").convert("RGBA").save(png, format="PNG")
    files = [("img", ("a.jpg", jpeg_bytes(synthetic_photo("red", "circle")))), ("img", ("b.png", png.getvalue()))]
    response = client.post("/image", files=files)
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), ["image"])


def test_similar_ranks_by_photo_by_text_and_by_both(client, artifacts):
    photo = catalogue_photo(artifacts, "img-01")  # the green oak dining chair
    by_photo = client.post("/similar", files={"img": ("chair.jpg", photo)}, data={"k": "3"}).json()
    assert by_photo["modalities"] == ["image"]
    assert by_photo["results"][0]["product_id"] == "prod-01"
    assert len(by_photo["results"]) == 3
    assert_prediction(by_photo["prediction"], ["image"])

    by_text = client.post("/similar", data={"txt": "Vintage rotary dial phone"}).json()
    assert by_text["modalities"] == ["text"]
    assert by_text["results"][0]["product_id"] == "prod-08"
    assert all(r["title"] for r in by_text["results"])  # text-only queries skip listings without text

    both = client.post("/similar", files={"img": ("chair.jpg", photo)}, data={"txt": "Green oak dining chair", "k": "5"}).json()
    assert both["modalities"] == ["image", "text"]
    top = both["results"][0]
    assert top["product_id"] == "prod-01" and top["score"] > 0.95
    assert set(top) == {"product_id", "title", "category", "price", "location", "image_ids", "score"}
    assert top["image_ids"] == ["img-01"] and top["price"] == 20.0 and top["location"] == "Town 1, County"
    scores = [r["score"] for r in both["results"]]
    assert scores == sorted(scores, reverse=True)


def test_similar_filters_by_category_and_price(client):
    found = client.post("/similar", data={"txt": "red kettle", "k": "20", "category": "home & garden"}).json()["results"]
    assert found and all(r["category"].startswith("Home & Garden") for r in found)
    found = client.post("/similar", data={"txt": "phone", "k": "20", "category": "Phones, Mobile Phones & Telecoms / Home Phones"}).json()
    assert {r["product_id"] for r in found["results"]} == {"prod-05", "prod-08"}
    found = client.post("/similar", data={"txt": "red kettle", "k": "20", "min_price": "25", "max_price": "60"}).json()["results"]
    assert found and all(25 <= r["price"] <= 60 for r in found)


def test_more_like_an_indexed_listing_by_its_own_modalities(client):
    like = client.get("/listings/prod-00/similar", params={"k": 4})  # the red round kettle: photo and text
    assert like.status_code == 200, like.text
    body = like.json()
    assert body["listing"]["product_id"] == "prod-00" and body["listing"]["title"] == "Red round kettle, 1.7 litre"
    assert body["modalities"] == ["image", "text"] and len(body["results"]) == 4
    ids = [r["product_id"] for r in body["results"]]
    assert "prod-00" not in ids and ids[0] == "prod-10"  # the red circle photo of the photo-only listing
    assert set(body["results"][0]) == {"product_id", "title", "category", "price", "location", "image_ids", "score"}
    assert client.get("/listings/prod-10/similar").json()["modalities"] == ["image"]  # photo only
    by_text = client.get("/listings/prod-08/similar", params={"k": 20}).json()  # text only: listings without text are left out
    assert by_text["modalities"] == ["text"] and all(r["title"] for r in by_text["results"]) and "prod-08" not in [r["product_id"] for r in by_text["results"]]
    filtered = client.get("/listings/prod-00/similar", params={"k": 20, "category": "home & garden", "max_price": 70}).json()["results"]
    assert filtered and all(r["category"].startswith("Home & Garden") and r["price"] <= 70 for r in filtered)

    assert client.get("/listings/prod-99/similar").status_code == 404
    assert "no listing 'prod-99'" in client.get("/listings/prod-99/similar").json()["detail"]
    for params, words in [({"k": 0}, "k must be between 1 and 100"), ({"category": "Spaceships"}, "unknown category"), ({"min_price": "x"}, "min_price"),
                          ({"category": "//"}, "unknown category '//'"), ({"maxprice": 1}, "unknown field(s) 'maxprice': /listings/prod-00/similar takes category, k, max_price, min_price"),
                          ({"category": "Appliances / Attic"}, "no listing in category 'Appliances / Attic'; 'Appliances' has: Kitchen; Laundry"),
                          ({"min_price": 50, "max_price": 10}, "min_price 50 is above max_price 10")]:
        refused = client.get("/listings/prod-00/similar", params=params)
        assert refused.status_code == 422 and words in refused.json()["detail"], refused.text
    assert client.get("/listings/..%2Fetc/similar").status_code in (404, 422)
    blank = client.get("/listings/prod-00/similar?k=&min_price=&category=&max_price=70")  # blank filters are not given, as in a form
    assert blank.status_code == 200 and blank.json()["results"] and all(r["price"] <= 70 for r in blank.json()["results"] if r["price"] is not None)
    as_listed = client.get("/listings/prod-00/similar", params={"max_price": "£70.00"})  # a price as the catalogue writes it
    assert as_listed.status_code == 200 and as_listed.json()["results"] == blank.json()["results"]
    empty_title = client.post("/listings", data={"title": ""}, headers={"X-API-Key": KEY})
    assert empty_title.status_code == 422 and empty_title.json()["detail"] == "title: required: it was not sent, or sent empty"


def test_health_categories_photos_and_page(client, artifacts):
    response = client.get("/health")
    health = response.json()
    assert health["status"] == "ok" and health["listings"] == 12
    assert "directory" not in health["index"] and str(artifacts) not in response.text  # no server path to a client
    assert health["models"] == {"image": "fake-image", "text": "fake-text", "fusion": "fake-fusion"}
    assert health["index"]["count"] == 12 and health["index"]["dim"] == 512
    assert client.get("/categories").json() == {"categories": CLASSES}

    photo = client.get("/images/img-03")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.headers["x-content-type-options"] == "nosniff"  # a browser never reads a photo as a page
    assert client.get("/images/img-03.jpg").content == photo.content
    assert Image.open(io.BytesIO(photo.content)).size == (256, 256)

    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="search-form"' in page.text and "/static/app.js" in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200
    for response in (page, script, client.get("/static/style.css")):  # revalidated on each load: an upgraded server's page runs its new script
        assert response.headers["cache-control"] == "no-cache"
    assert client.get("/static/app.js", headers={"If-None-Match": script.headers["etag"]}).status_code == 304
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text and "cdn." not in docs.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200  # served here: the docs work offline
    assert client.get("/docs-assets/index.html").status_code == 404  # the package's demo page (the Petstore) is not
    assert "/similar" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("path", ["/health", "/categories", "/limits", "/images/img-03", "/", "/static/app.js", "/docs", "/listings/prod-01/similar"])
def test_head_answers_like_get_without_a_body(client, path):
    """What uptime probes and `curl -I` send: the GET's status and headers, no body."""
    get, head = client.get(path), client.head(path)
    assert get.status_code == head.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == get.headers["content-length"]


def test_head_on_a_post_only_route_is_refused(client):
    assert client.head("/similar").status_code == 405


def test_the_price_filters_schema_is_json_schema_and_takes_the_catalogues_form(client):
    """pydantic wrote `ge`/`le` (no JSON Schema words) beside a number type that refused '£1,234.00'."""
    schema = client.get("/openapi.json").json()

    def keys(node) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {key for value in node.values() for key in keys(value)}
        return {key for value in node for key in keys(value)} if isinstance(node, list) else set()

    assert not keys(schema) & {"ge", "le", "gt", "lt"}
    body = schema["components"]["schemas"]["Body_similar_similar_post"]["properties"]["min_price"]
    assert {"type": "string", "examples": ["45.50", "£1,234.00"]} in body["anyOf"]
    assert {"type": "number", "minimum": 0, "maximum": 1e12} in body["anyOf"]
    assert client.post("/similar", data={"txt": "oak chair", "min_price": "£1,000.00", "max_price": "2000"}).status_code == 200
    refused = client.post("/similar", data={"txt": "oak chair", "max_price": "-3"})
    assert refused.status_code == 422 and "from 0 to £1,000,000,000,000" in refused.text


def test_openapi_says_which_forms_each_route_reads_and_which_texts_it_needs(client):
    """FastAPI names one kind of form per route; every form route reads both, as the README's curl
    examples do (-F and -d), save /image, whose photo a url-encoded form cannot carry."""
    schema = client.get("/openapi.json").json()
    both = ["multipart/form-data", "application/x-www-form-urlencoded"]
    kinds = {path: sorted(ops["post"]["requestBody"]["content"]) for path, ops in schema["paths"].items() if "requestBody" in ops.get("post", {})}
    assert kinds == {"/image": ["multipart/form-data"], **{path: sorted(both) for path in ("/text", "/combined", "/similar", "/listings")}}
    assert client.post("/text", files={"txt": (None, "oak chair")}).status_code == 200  # multipart, as documented now
    assert client.post("/combined", data={"txt": "oak chair"}).status_code == 200  # url-encoded
    forms = schema["components"]["schemas"]
    text = forms[schema["paths"]["/text"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert text["properties"]["txt"]["minLength"] == 1 and text["properties"]["txt"]["pattern"] == r"\S"
    assert client.post("/text", data={"txt": " "}).status_code == 422
    combined = forms[schema["paths"]["/combined"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert "minLength" not in combined["properties"]["txt"]  # optional: a photo may come with an empty text
    encoded = schema["paths"]["/combined"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert "img" in combined["properties"] and set(encoded["properties"]) == set(combined["properties"]) - {"img"}  # no photo in a url-encoded form
    photo = schema["paths"]["/images/{image_id}"]["get"]["responses"]
    assert sorted(photo) == ["200", "304", "404", "422"]


def test_openapi_describes_every_route_and_what_its_errors_mean(client):
    """/image and /text had no description; DELETE /listings and GET /images said their 422 meant
    "a photo cannot be decoded", though neither takes a photo; /listings' 422 left out the listing
    that cannot be indexed; /health's fields were undescribed."""
    schema = client.get("/openapi.json").json()
    operations = {(method, path): op for path, ops in schema["paths"].items() for method, op in ops.items()}
    assert all(op.get("description") for op in operations.values()), [key for key, op in operations.items() if not op.get("description")]
    for key in (("delete", "/listings/{product_id}"), ("get", "/images/{image_id}")):
        assert "photo" not in operations[key]["responses"]["422"]["description"]
    assert "cannot be indexed" in operations[("post", "/listings")]["responses"]["422"]["description"]
    assert all(field.get("description") for field in schema["components"]["schemas"]["HealthOut"]["properties"].values())


def test_a_search_without_k_is_not_refused_when_max_k_is_below_ten(artifacts):
    """The default of 10 was refused as over index.max_k: the default is at most max_k."""
    config = tiny_config(artifacts)
    config.index.max_k = 2
    for client in serving(config):
        found = client.post("/similar", data={"txt": "chair"})
        assert found.status_code == 200 and len(found.json()["results"]) == 2
        like = client.get("/listings/prod-00/similar")
        assert like.status_code == 200 and len(like.json()["results"]) == 2
        form = client.get("/openapi.json").json()["components"]["schemas"]["Body_similar_similar_post"]["properties"]
        assert form["k"]["default"] == 2 and form["k"]["maximum"] == 2
        empty = client.post("/similar", data={"txt": "chair", "k": ""})  # a form's empty box: left out, as a browser sends it
        assert empty.status_code == 200 and len(empty.json()["results"]) == 2


def test_openapi_shows_the_configured_limits(artifacts):
    """k's maximum and the number of photos come from the configuration, as the routes enforce them."""
    config = tiny_config(artifacts, max_photos=3)
    config.index.max_k = 37
    for client in serving(config):
        schema = client.get("/openapi.json").json()

        def form(path: str) -> dict:
            reference = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
            return schema["components"]["schemas"][reference.rsplit("/", 1)[1]]["properties"]

        assert form("/similar")["k"]["minimum"] == 1 and form("/similar")["k"]["maximum"] == 37 and form("/similar")["img"]["maxItems"] == 3
        assert form("/combined")["img"]["maxItems"] == 3 and form("/image")["img"]["maxItems"] == 3
        assert client.post("/similar", data={"txt": "chair", "k": "38"}).status_code == 422
        assert form("/similar")["k"]["default"] == 10 and form("/similar")["k"]["type"] == "integer"
        like = {p["name"]: p["schema"] for p in schema["paths"]["/listings/{product_id}/similar"]["get"]["parameters"]}
        assert like["k"]["maximum"] == 37 and client.get("/listings/prod-00/similar", params={"k": 38}).status_code == 422
        limits = client.get("/limits").json()  # the same limits for a client to check before sending (the search page does)
        assert limits == {
            "max_text_chars": config.serve.max_text_chars, "max_photos": 3, "max_photo_bytes": config.serve.max_upload_bytes,
            "max_request_bytes": config.serve.max_request_bytes, "max_photo_pixels": config.data.max_image_pixels, "max_k": 37,
            "max_title_chars": 300, "max_location_chars": 200, "max_category_chars": 300,
        }
        too_long = "a" * (config.serve.max_text_chars + 1)
        assert client.post("/text", data={"txt": too_long[:-1]}).status_code == 200 and client.post("/text", data={"txt": too_long}).status_code == 422
        lines = "chair\r\n" * (config.serve.max_text_chars // 6)  # a form sends a text box's line breaks as CR LF: one character each, as the box counts them
        assert len(lines.replace("\r\n", "\n").strip()) <= config.serve.max_text_chars < len(lines.strip())
        assert client.post("/text", data={"txt": lines}).status_code == 200


# --- bad input: a 4xx JSON error that says what was wrong, and the server keeps serving ---------


def _truncated_jpeg() -> bytes:
    data = jpeg_bytes(synthetic_photo("red", "circle", (800, 600)))
    return data[: len(data) // 2]


BAD_REQUESTS = [
    # (path, form fields, files, expected status, words the message must contain)
    ("/image", {}, None, 422, "img"),
    ("/image", {"img": "not a file"}, None, 422, "img: send a file here"),
    ("/text", {}, {"txt": ("notes.txt", b"a file where text belongs")}, 422, "txt: send text here, not a file"),
    ("/text", {}, None, 422, "txt"),
    ("/text", {"txt": "   "}, None, 422, "txt is empty"),
    ("/text", {"txt": "word " * 5000}, None, 422, "at most 20,000"),
    ("/text", {"txt": "chair" + " " * 30_000 + "table"}, None, 422, "txt has 30,010 characters"),  # the limit is on what was sent
    ("/similar", {"txt": "&amp;" * 5000}, None, 422, "txt has 25,000 characters"),
    ("/combined", {}, None, 422, "a photo (img), a text (txt) or both"),
    ("/image", {}, {"img": ("notes.txt", b"hello, I am not a picture")}, 422, "not an image: the accepted formats are JPEG, PNG"),
    ("/image", {}, {"img": ("half.jpg", _truncated_jpeg())}, 422, "truncated"),
    ("/image", {}, {"img": ("empty.jpg", b"")}, 422, "empty"),
    ("/similar", {"txt": "chair"}, {"img": ("x.gif", b"GIF89a\x01\x00")}, 422, "photo 1"),
    ("/similar", {"txt": "chair", "k": "0"}, None, 422, "k must be between 1 and 100, got 0"),
    ("/similar", {"txt": "chair", "k": "101"}, None, 422, "k must be between 1 and 100"),
    ("/similar", {"txt": "chair", "k": "ten"}, None, 422, "k"),
    ("/similar", {"txt": "chair", "k": "5_0"}, None, 422, "k: a whole number such as 10 is wanted, got '5_0'"),  # Python's int() reads 50
    ("/similar", {"txt": "chair", "k": "+05"}, None, 422, "k: a whole number such as 10 is wanted"),
    ("/similar", {"txt": "chair", "category": "Spaceships"}, None, 422, "unknown category 'Spaceships'"),
    ("/similar", {"txt": "chair", "category": "/"}, None, 422, "unknown category '/'"),
    # a misspelt field was dropped unsaid: the filter not applied, the photo not read
    ("/similar", {"txt": "chair", "max-price": "1"}, None, 422, "unknown field(s) 'max-price': /similar takes category, img, k, max_price, min_price, txt"),
    ("/text", {"txt": "chair", "text": "oak"}, None, 422, "unknown field(s) 'text': /text takes txt"),
    ("/combined", {"txt": "chair"}, {"image": ("a.jpg", b"\xff\xd8")}, 422, "unknown field(s) 'image': /combined takes img, txt"),
    ("/similar", {"txt": "chair", "category": "Home & Garden / Attic"}, None, 422, "no listing in category 'Home & Garden / Attic'; 'Home & Garden' has: Bedroom; Dining"),
    ("/similar", {"txt": "chair", "min_price": "50", "max_price": "10"}, None, 422, "min_price 50 is above max_price 10"),
    ("/similar", {"txt": "chair", "min_price": "-1"}, None, 422, "min_price"),
    ("/similar", {"txt": "chair", "max_price": "nan"}, None, 422, "max_price"),
    ("/similar", {"txt": "chair", "max_price": "inf"}, None, 422, "max_price"),
    ("/similar", {"txt": "chair", "max_price": "1_000"}, None, 422, "max_price: '1_000' is not a price: give pounds, such as 45, 45.50 or £1,234.00"),
    ("/similar", {"txt": "chair", "max_price": "Free"}, None, 422, "'Free' is not a price"),
    ("/similar", {}, None, 422, "a photo (img), a text (txt) or both"),
    # boilerplate only: cleaned away, and said so
    ("/text", {"txt": "Posted by Sam in Phones, Apple in Leeds. 25 February 2022"}, None, 422, "txt holds only spaces, control characters, HTML entities or a listing page's boilerplate"),
    ("/similar", {"txt": " | in Leeds, West Yorkshire | Gumtree"}, None, 422, "txt holds only spaces, control characters, HTML entities or a listing page's boilerplate (a \"Posted by …\" line"),
    ("/text", {"txt": "&nbsp;\u200b\x01"}, None, 422, "txt holds only spaces, control characters, HTML entities or"),  # no boilerplate: all three named
    ("/combined", {"txt": "Posted by Sam in Home & Garden in Leeds."}, None, 422, "which cleaning removes: send a photo (img), a text (txt) or both"),
    ("/image", {}, {"img": ("IMG_0001.HEIC", b"\x00\x00\x00\x18ftypheic" + bytes(64))}, 422, "photo 1 ('IMG_0001.HEIC') was refused: a format not accepted: a HEIC/HEIF photo"),
]


@pytest.mark.parametrize("path, data, files, status, words", BAD_REQUESTS, ids=[f"{r[0]}-{r[4][:25]}" for r in BAD_REQUESTS])
def test_bad_input_is_a_4xx_json_error_that_says_what_was_wrong(client, path, data, files, status, words):
    response = client.post(path, data=data, files=files)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert " object at 0x" not in response.json()["detail"]  # no Python object reprs for the client
    assert client.get("/health").status_code == 200


def test_malformed_bodies_are_400_or_422(client):
    broken = client.post("/text", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=zz"})
    assert broken.status_code == 400 and broken.json()["detail"]
    part = b'--zz\r\nContent-Disposition: form-data; name="txt"\r\n\r\noak chair\r\n'
    for cut_short in (part, part + b"--zz", b""):  # the parser drops a part whose end it never saw: it said "txt: required"
        response = client.post("/text", content=cut_short, headers={"content-type": 'multipart/form-data; boundary="zz"'})
        assert response.status_code == 400 and "malformed multipart form: the body ends before its closing boundary '--zz--'" in response.json()["detail"]
    whole = client.post("/text", content=part + b"--zz--\r\n", headers={"content-type": "multipart/form-data; boundary=zz"})
    assert whole.status_code == 200 and whole.json()["modalities"] == ["text"]
    as_json = client.post("/text", json={"txt": "chair"})
    assert as_json.status_code == 415 and "send a form, multipart/form-data" in as_json.json()["detail"]
    over_part_limit = client.post("/similar", data={"txt": "x" * 250_000})  # refused by the form parser itself
    assert over_part_limit.status_code == 422 and "a text field (txt, title, description) holds at most 20,000 characters" in over_part_limit.json()["detail"]
    assert client.get("/nowhere").status_code == 404
    assert client.get("/image").status_code == 405


def test_a_field_sent_twice_is_refused_rather_than_half_read(writable):
    """Only img repeats (one per photo); a second txt, k or title would silently replace the first."""
    twice = writable.post("/text", data={"txt": ["oak dining chair", "kettle"]})
    assert twice.status_code == 422 and "'txt' 2 times" in twice.json()["detail"]
    query = writable.get("/listings/prod-01/similar?k=3&k=5&category=")
    assert query.status_code == 422 and "'k' 2 times" in query.json()["detail"]
    listing = writable.post("/listings", data={"title": ["chair", "table"]}, headers={"X-API-Key": KEY})
    assert listing.status_code == 422 and "'title' 2 times" in listing.json()["detail"]
    assert writable.get("/health").json()["listings"] == 12
    photos = [("img", ("a.jpg", jpeg_bytes(synthetic_photo("red", "circle")))), ("img", ("b.jpg", jpeg_bytes(synthetic_photo("blue", "square"))))]
    assert writable.post("/similar", data={"txt": "chair", "k": "3"}, files=photos).status_code == 200


def test_a_trailing_slash_reaches_the_route_without_a_redirect(client):
    """FastAPI answered /text/ with an empty 307 to a URL built from the client's Host header."""
    text = client.post("/text/", data={"txt": "oak dining chair"}, headers={"Host": "evil.example"}, follow_redirects=False)
    assert text.status_code == 200 and text.json()["pred"]
    assert client.get("/health/", follow_redirects=False).status_code == 200
    assert client.get("/nowhere/", follow_redirects=False).status_code == 404


def test_a_body_without_a_content_type_is_told_to_be_a_form(client):
    response = client.post("/text", content=b"txt=chair", headers={"content-type": ""})
    assert response.status_code == 415 and "the body has no Content-Type: send a form" in response.json()["detail"]
    assert client.post("/text").json()["detail"] == "txt: required: it was not sent, or sent empty"


def test_query_parameters_of_spaces_alone_are_not_given(client):
    response = client.get("/listings/prod-01/similar?k=%20&min_price=+&category=%20%20")
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 10


def test_a_long_category_path_is_refused_at_once(client):
    """Each level of a category path was a database query over the path so far: quadratic time."""
    levels = " / ".join(["Home & Garden"] + ["z"] * 5000)
    for response in (client.post("/similar", data={"txt": "chair", "category": levels}), client.get("/listings/prod-01/similar", params={"category": levels})):
        assert response.status_code == 422 and "category" in response.json()["detail"]


def test_a_numeric_character_reference_of_thousands_of_digits_is_text_like_any_other(writable):
    """Python refuses to convert a 5,000-digit number: html.unescape raised, a 500 on /listings."""
    entity = "&#" + "9" * 5000 + ";"
    assert writable.post("/text", data={"txt": f"oak chair {entity}"}).status_code == 200
    created = writable.post("/listings", data={"title": "chair", "description": entity, "product_id": "entity"}, headers={"X-API-Key": KEY})
    assert created.status_code == 201, created.text


def test_a_query_string_on_a_route_that_reads_a_form_is_refused(writable):
    """POST /similar?category=… searched every category, POST /listings?product_id=… made a new id."""
    search = writable.post("/similar?category=Appliances&k=3", data={"txt": "chair"})
    assert search.status_code == 422 and "send category, k in the form" in search.json()["detail"]
    listing = writable.post("/listings?product_id=new-chair", data={"title": "chair"}, headers={"X-API-Key": KEY})
    assert listing.status_code == 422 and "send product_id in the form" in listing.json()["detail"]
    assert writable.post("/text?txt=sofa").status_code == 422
    foreign = writable.post("/text?k=5", data={"txt": "sofa"})  # /text takes no k: the advice to send it in the form was wrong
    assert foreign.status_code == 422 and foreign.json()["detail"] == "unknown field(s) 'k': /text takes txt"
    assert writable.get("/health").json()["listings"] == 12


def test_raw_utf8_in_a_url_encoded_form_reads_as_its_escapes(writable):
    """`curl -d 'title=chaise en chêne'` sends raw UTF-8 bytes; a browser sends %C3%AA. Both are
    'ê' (Starlette read the raw bytes as Latin-1: 'chÃªne'); raw bytes that are not UTF-8 are still
    read as Latin-1."""
    auth = {"X-API-Key": KEY, "content-type": "application/x-www-form-urlencoded"}
    forms = {
        "raw": "title=chaise en chêne £40&location=Zürich&product_id=raw".encode("utf-8"),
        "escaped": b"title=chaise+en+ch%C3%AAne+%C2%A340&location=Z%C3%BCrich&product_id=escaped",
        "latin-1": "title=chaise en chêne £40&location=Zürich&product_id=latin-1".encode("latin-1"),
    }
    for product_id, body in forms.items():
        assert writable.post("/listings", content=body, headers=auth).status_code == 201
        listing = writable.get(f"/listings/{product_id}/similar").json()["listing"]
        assert (listing["title"], listing["location"]) == ("chaise en chêne £40", "Zürich"), product_id


def test_a_character_split_between_two_chunks_of_a_form_is_read_whole():
    async def form_app(scope, receive, send):
        chunks.append((await receive())["body"])
        chunks.append((await receive())["body"])

    chunks = []
    messages = iter([{"type": "http.request", "body": b"txt=ch\xc3", "more_body": True}, {"type": "http.request", "body": b"\xaane"}])
    scope = {"type": "http", "headers": [(b"content-type", b"application/x-www-form-urlencoded")]}
    asyncio.run(Utf8FormMiddleware(form_app)(scope, lambda: _next(messages), None))
    assert b"".join(chunks) == b"txt=ch%C3%AAne"


async def _next(messages):
    return next(messages)


def test_a_closing_boundary_split_between_two_chunks_is_seen_wherever_it_splits():
    body = b'--zz\r\nContent-Disposition: form-data; name="txt"\r\n\r\noak chair\r\n--zz--\r\n'
    closing = body.index(b"--zz--")
    for cut in range(closing, closing + len(b"--zz--") + 1):
        received = bytearray()

        async def reading_app(scope, receive, send):
            while True:
                message = await receive()
                received.extend(message.get("body", b""))
                if not message.get("more_body"):
                    return

        messages = iter([{"type": "http.request", "body": body[:cut], "more_body": True}, {"type": "http.request", "body": body[cut:]}])
        scope = {"type": "http", "headers": [(b"content-type", b"multipart/form-data; boundary=zz")]}
        asyncio.run(MultipartEndMiddleware(reading_app)(scope, lambda: _next(messages), None))  # no 400 "cut short"
        assert bytes(received) == body, cut - closing


def test_the_body_limit_counts_every_chunk_of_a_body_that_streams_in():
    """Five chunks of 100 bytes, none over the 250-byte limit on its own: refused once the third arrives."""

    async def reading_app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass

    messages = iter([{"type": "http.request", "body": b"x" * 100, "more_body": True}] * 5 + [{"type": "http.request", "body": b""}])
    scope = {"type": "http", "headers": [(b"content-type", b"multipart/form-data; boundary=zz")]}
    with pytest.raises(HTTPException) as refused:
        asyncio.run(BodyLimitMiddleware(reading_app, max_bytes=250, max_other_bytes=250)(scope, lambda: _next(messages), None))
    assert refused.value.status_code == 413
    assert len(list(messages)) == 3  # the third chunk went past the limit: the rest were never read


def test_a_body_that_is_not_multipart_is_held_to_the_longest_text(client):
    """Bare '&' separators escape the form parser's field count: 30 MB of them took 14 s of CPU.
    A url-encoded body may be as long as the longest text spelt in %XX escapes, no longer."""
    longest = client.post("/text", data={"txt": "chair 📺" + "📺" * 19_993})  # 20,000 characters, 240 KB encoded
    assert longest.status_code == 200, longest.text
    separators = client.post("/text", content=b"&" * 400_000, headers={"content-type": "application/x-www-form-urlencoded"})
    assert separators.status_code == 413 and "not multipart/form-data" in separators.json()["detail"]
    assert client.post("/text", content=b"&" * 30_000_000, headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413


def test_photo_and_pixel_limits(artifacts):
    config = tiny_config(artifacts, max_upload_bytes=50_000, max_photos=2)
    config.data.max_image_pixels = 500 * 500
    with TestClient(create_app(config, fake_services(config))) as client:
        big_file = jpeg_bytes(Image.effect_noise((400, 400), 80).convert("RGB"), quality=100)
        assert len(big_file) > 50_000
        response = client.post("/image", files={"img": ("noise.jpg", big_file)})
        assert response.status_code == 413 and "the limit is 50,000" in response.json()["detail"]

        wide = Image.new("RGB", (1000, 600), (0, 0, 0))
        many_pixels = io.BytesIO()
        wide.save(many_pixels, "PNG")
        response = client.post("/image", files={"img": ("wide.png", many_pixels.getvalue())})
        assert response.status_code == 413 and "1000x600 decodes to 600,000 pixels, over the limit of 250,000" in response.json()["detail"]
        as_jpeg = client.post("/image", files={"img": ("wide.jpg", jpeg_bytes(wide))})  # decoded at half its sides, 150,000 pixels
        assert as_jpeg.status_code == 200

        small = jpeg_bytes(synthetic_photo("red", "circle"))
        response = client.post("/image", files=[("img", ("a.jpg", small))] * 3)
        assert response.status_code == 422 and "at most 2 files are accepted in one request (photos, in img)" in response.json()["detail"]
        elsewhere = client.post("/text", data={"txt": "chair"}, files=[("other", ("a.jpg", small))] * 3)  # files count in any field
        assert elsewhere.status_code == 422 and "at most 2 files" in elsewhere.json()["detail"]
        assert client.post("/image", files=[("img", ("a.jpg", small))] * 2).status_code == 200


@contextlib.contextmanager
def _posting_image(artifacts, max_request_bytes: int, framing: bytes):
    """A socket to a live server with a body cap, on which a raw `POST /image` has sent its headers
    (`framing`: how the body's length is declared); the test sends the body, or not."""
    config = tiny_config(artifacts, max_request_bytes=max_request_bytes)
    with live_server(config, fake_services(config)) as url, _raw_connection(url) as sock:
        sock.sendall(b"POST /image HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zz\r\n" + framing + b"\r\n\r\n")
        yield sock


def test_an_oversized_body_is_refused_while_it_streams_in(artifacts):
    """A chunked upload with no Content-Length: the server answers 413 once the cap is passed, mid-stream."""
    with _posting_image(artifacts, 200_000, b"Transfer-Encoding: chunked") as sock:
        part = b'--zz\r\nContent-Disposition: form-data; name="img"; filename="a.jpg"\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        chunk = b"\0" * 65536
        sent = 0
        while sent < 64_000_000 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        reply = _read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 413") and b"200,000 bytes" in reply
    assert sent < 16_000_000  # refused long before the 64 MB were sent (socket buffers hold a few MB)


def test_a_declared_oversized_body_is_refused_before_it_is_read(artifacts):
    """A raw request claims 1 GB and sends none of it: the answer must come at once."""
    with _posting_image(artifacts, 1_000_000, b"Content-Length: 1000000000") as sock:
        started = time.monotonic()
        reply = _read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 413") and b"1,000,000 bytes" in reply
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "request_line",
    [b"GET /listings/" + b"a" * 70_000 + b"/similar HTTP/1.1", "GET /listings/caf\u00e9/similar HTTP/1.1".encode(), b"GET /categories?q=\xff HTTP/1.1", b"HELLO"],
    ids=["url-over-64kb", "non-ascii-path", "raw-byte-in-query", "garbled"],
)
def test_a_request_that_is_not_http_gets_a_json_error_and_the_server_goes_on(artifacts, request_line):
    """uvicorn answers what it cannot parse itself, before the app sees it: the answer is still JSON."""
    config = tiny_config(artifacts)
    with live_server(config, fake_services(config)) as url:
        with _raw_connection(url) as sock:
            sock.sendall(request_line + b"\r\nHost: x\r\n\r\n")
            reply = _read_reply(sock)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
        assert "could not be read as HTTP/1.1" in json.loads(body)["detail"]
        with _raw_connection(url) as sock:
            sock.sendall(b"GET /categories HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_reply(sock).startswith(b"HTTP/1.1 200")


def test_an_upgrade_header_is_an_ordinary_request(artifacts):
    """No route speaks WebSocket: a request asking to upgrade gets the route's JSON, not uvicorn's bodiless 403."""
    config = tiny_config(artifacts)
    upgrade = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    with live_server(config, fake_services(config)) as url, _raw_connection(url) as sock:
        sock.sendall(b"GET /categories HTTP/1.1\r\nHost: x\r\n" + upgrade + b"\r\n")
        head, _, body = _read_reply(sock).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["categories"] == CLASSES


def test_a_request_head_that_never_ends_is_refused_before_it_is_held(artifacts):
    """A header sent without end (up to 64 MB of it) is refused once the head passes the cap, with a
    JSON 431, and the server goes on; uvicorn alone kept every byte in memory."""
    config = tiny_config(artifacts)
    with live_server(config, fake_services(config)) as url:
        with _raw_connection(url) as sock:
            sock.sendall(b"GET /categories HTTP/1.1\r\nHost: x\r\nX-Big: ")
            sent = 0
            while sent < 64_000_000 and not select.select([sock], [], [], 0)[0]:
                try:
                    sock.sendall(b"a" * 65536)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 65536
            reply = _read_reply(sock)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431") and "1,048,576 bytes" in json.loads(body)["detail"]
        assert sent < 16_000_000  # refused long before the 64 MB were sent (socket buffers hold a few MB)
        big_but_allowed = b"X-Big: " + b"a" * 500_000 + b"\r\n"
        with _raw_connection(url) as sock:
            sock.sendall(b"GET /categories HTTP/1.1\r\nHost: x\r\n" + big_but_allowed + b"\r\n")
            assert _read_reply(sock).startswith(b"HTTP/1.1 200")


def _raw_connection(url: str) -> socket.socket:
    parts = urllib.parse.urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def _read_reply(sock: socket.socket) -> bytes:
    """Read one small JSON response (headers and body)."""
    reply = b""
    while not (b"\r\n\r\n" in reply and reply.rstrip().endswith(b"}")):
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        reply += chunk
    return reply


def test_photo_ids_cannot_name_paths(client):
    for bad in ("...", "img-01.png", "img-01.jpg.jpg", ".hidden", "a..b", "a" * 200):
        response = client.get(f"/images/{bad}")
        assert response.status_code == 422, bad
        assert response.json()["detail"].startswith("image_id: a photo id: 1 to 128 letters, digits, '-' or '_'"), response.text  # in words, not a regex
    for traversal in ("/images/..%2F..%2Fetc%2Fpasswd", "/images/%2e%2e/categories.json", "/images/../../etc/passwd"):
        assert client.get(traversal).status_code in (404, 422)
    assert client.get("/images/no-such-photo").status_code == 404



def test_a_photo_is_sent_whole_whatever_its_range_header(client, artifacts):
    photo = catalogue_photo(artifacts, "img-01")
    for byte_range in ("bytes=0-9", "bytes=abc", "bytes=999999-", "bytes=0-" + "9" * 5000):
        response = client.get("/images/img-01", headers={"Range": byte_range})
        assert (response.status_code, response.content) == (200, photo), byte_range[:20]


def test_a_photo_whose_file_goes_while_it_is_asked_for_is_a_404(writable, tmp_path, monkeypatch):
    """A listing deleted or replaced takes its photo files away between the check and the read
    (a plain-text 500, or a 200 cut short, when the file was streamed after the answer began)."""
    image_id = writable.get("/listings/prod-01/similar").json()["listing"]["image_ids"][0]
    monkeypatch.setattr(writable.app.state.services.photos, "path", lambda image_id: tmp_path / "deleted-meanwhile.jpg")
    response = writable.get(f"/images/{image_id}")
    assert response.status_code == 404 and response.json()["detail"] == f"no photo {image_id!r}"


# --- writes: API key, add, search, delete -------------------------------------------------------


def test_writes_are_refused_without_a_configured_key(artifacts):
    config = tiny_config(artifacts)  # FBM_API_KEY unset
    with TestClient(create_app(config, fake_services(config))) as client:
        response = client.post("/listings", data={"title": "chair"}, headers={"X-API-Key": "anything"})
        assert response.status_code == 403 and "FBM_API_KEY" in response.json()["detail"]
        assert client.delete("/listings/prod-01", headers={"X-API-Key": "anything"}).status_code == 403


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}, {"X-API-Key": "ключ".encode()}])
def test_writes_need_the_right_key(writable, headers):
    assert writable.post("/listings", data={"title": "chair"}, headers=headers).status_code == 401
    assert writable.delete("/listings/prod-01", headers=headers).status_code == 401
    assert writable.get("/health").json()["listings"] == 12


def test_the_key_sent_twice_is_refused_whichever_copy_is_right(writable):
    """Only one copy would be read: a second, conflicting or not, is refused rather than ignored."""
    for keys in ([KEY, "wrong"], ["wrong", KEY], [KEY, KEY]):
        headers = [("X-API-Key", key) for key in keys]
        response = writable.post("/listings", data={"title": "chair", "product_id": "twice"}, headers=headers)
        assert (response.status_code, response.json()["detail"]) == (401, "X-API-Key was sent 2 times: send it once"), keys
        assert writable.delete("/listings/prod-01", headers=headers).status_code == 401
    assert writable.get("/health").json()["listings"] == 12


def test_spaces_around_the_key_are_not_part_of_it(writable):
    """RFC 9110: a header's value is what lies between the spaces around it (a proxy may trim them)."""
    response = writable.post("/listings", data={"title": "chair", "product_id": "spaced"}, headers={"X-API-Key": f"  {KEY}\t"})
    assert response.status_code == 201, response.text
    assert writable.delete("/listings/spaced", headers={"X-API-Key": f" {KEY} "}).status_code == 200


def test_an_added_listing_joins_the_categories_as_spelt_and_its_text_loses_control_characters(writable):
    form = {"title": "Corded\x00 phone\x1b[31m\u202e", "location": "Le\x00eds\r\nX-Injected: 1", "product_id": "live-phone"}
    form["category"] = "phones, mobile phones & telecoms / home PHONES / Corded"
    auth = {"X-API-Key": KEY}
    created = writable.post("/listings", data=form, headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["category"] == "Phones, Mobile Phones & Telecoms / Home Phones / Corded"  # not a second 'home PHONES'
    listing = writable.get("/listings/live-phone/similar").json()["listing"]
    assert listing["title"] == "Corded phone [31m" and listing["location"] == "Le eds X-Injected: 1"
    blank = writable.post("/listings", data={**form, "title": "\u200b\u200b"}, headers=auth)  # zero-width spaces only
    assert blank.status_code == 422 and "title is empty" in blank.json()["detail"]
    too_long = writable.post("/listings", data={**form, "category": "Other Goods / " + "z" * 300}, headers=auth)
    assert too_long.status_code == 422 and "category" in too_long.json()["detail"]


def test_an_added_listing_is_searchable_with_its_photos_then_deleted(writable):
    auth = {"X-API-Key": KEY}
    photo = jpeg_bytes(synthetic_photo("yellow", "circle", (640, 200)))
    form = {"title": "Purple velvet armchair", "description": "Deep seat, 2 years old", "price": "75", "location": "Bath, Somerset"}
    created = writable.post("/listings", data=form, files={"img": ("chair.jpg", photo)}, headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["category"] == body["predicted"]["pred"] and len(body["image_ids"]) == 1
    product_id, image_id = body["product_id"], body["image_ids"][0]

    stored = writable.get(f"/images/{image_id}")
    assert stored.status_code == 200 and Image.open(io.BytesIO(stored.content)).size == (256, 256)
    assert stored.headers["cache-control"] == "no-cache"  # a copy is reused only while the listing stands
    unchanged = writable.get(f"/images/{image_id}", headers={"If-None-Match": f'W/"other", {stored.headers["etag"]}'})
    assert unchanged.status_code == 304 and not unchanged.content
    assert stored.content == stored_jpeg(clean_image(io.BytesIO(photo), 256))  # encoded once, as the catalogue's cache
    assert writable.get("/health").json()["listings"] == 13

    hits = writable.post("/similar", data={"txt": "Purple velvet armchair. Deep seat, 2 years old"}).json()["results"]
    assert hits[0]["product_id"] == product_id
    assert hits[0] | {"score": 0} == {
        "product_id": product_id, "title": "Purple velvet armchair", "category": body["category"], "price": 75.0,
        "location": "Bath, Somerset", "image_ids": [image_id], "score": 0,
    }

    deleted = writable.delete(f"/listings/{product_id}", headers=auth)
    assert deleted.status_code == 200 and deleted.json() == {"product_id": product_id, "deleted": True}
    hits = writable.post("/similar", data={"txt": "Purple velvet armchair", "k": "100"}).json()["results"]
    assert product_id not in {h["product_id"] for h in hits}
    assert writable.get(f"/images/{image_id}").status_code == 404  # a deleted listing's photos are gone too
    again = writable.get(f"/images/{image_id}", headers={"If-None-Match": stored.headers["etag"]})
    assert again.status_code == 404  # and a cache asking to reuse its copy is told so
    assert writable.delete(f"/listings/{product_id}", headers=auth).status_code == 404
    assert writable.get("/health").json()["listings"] == 12


def test_a_listing_with_a_given_id_and_category_replaces_the_old_one(writable):
    auth = {"X-API-Key": KEY}
    form = {"title": "Green oak dining chair, set of four", "product_id": "prod-01", "category": "home & GARDEN / Dining"}
    assert writable.post("/listings", data=form, headers=auth).status_code == 200  # replaced
    hits = writable.post("/similar", data={"txt": "Green oak dining chair, set of four", "k": "100"}).json()["results"]
    mine = [h for h in hits if h["product_id"] == "prod-01"]
    assert len(mine) == 1 and mine[0]["title"] == form["title"]
    assert mine[0]["category"] == "Home & Garden / Dining"  # the root as the model spells it
    assert writable.get("/health").json()["listings"] == 12


def test_an_added_listing_is_cleaned_as_prepare_cleans_the_catalogue(writable):
    """The marketplace title suffix and the "Posted by" boilerplate (it leaks the label) are stripped."""
    auth = {"X-API-Key": KEY}
    form = {
        "title": "Walnut bookcase | in Leeds, West Yorkshire | Gumtree",
        "description": "Five shelves. Posted by Sam in Home & Garden, Furniture in Leeds.",
        "product_id": "clean-1",
    }
    assert writable.post("/listings", data=form, headers=auth).status_code == 201
    hits = writable.post("/similar", data={"txt": "walnut bookcase", "k": "100"}).json()["results"]
    (mine,) = [h for h in hits if h["product_id"] == "clean-1"]
    assert mine["title"] == "Walnut bookcase"
    assert writable.delete("/listings/clean-1", headers=auth).status_code == 200


def test_the_same_photo_sent_twice_is_stored_once_and_prices_are_in_pence(writable):
    auth = {"X-API-Key": KEY}
    photo, other = jpeg_bytes(synthetic_photo("red", "circle")), jpeg_bytes(synthetic_photo("blue", "square"))
    files = [("img", ("a.jpg", photo)), ("img", ("again.jpg", photo)), ("img", ("b.jpg", other))]
    created = writable.post("/listings", data={"title": "Red lamp", "product_id": "twice"}, files=files, headers=auth)
    assert created.status_code == 201 and len(created.json()["image_ids"]) == 2
    refused = writable.post("/listings", data={"title": "Red lamp", "price": "45.999"}, headers=auth)
    assert refused.status_code == 422 and "price 45.999 has more than two decimal places" in refused.json()["detail"]
    limit = writable.get("/limits").json()["max_text_chars"]  # title and description together, as /limits says
    assert writable.post("/listings", data={"title": "Red lamp 1", "description": "d" * (limit - 10)}, headers=auth).status_code == 201
    over = writable.post("/listings", data={"title": "Red lamp 1", "description": "d" * (limit - 9)}, headers=auth)
    assert over.status_code == 422 and f"title + description have {limit + 1:,} characters" in over.json()["detail"]
    assert writable.post("/listings", data={"title": "Red lamp", "price": "£1,045.50"}, headers=auth).status_code == 201


def test_replacing_a_listing_removes_the_photos_added_with_the_old_one(writable):
    auth = {"X-API-Key": KEY}
    form = {"title": "Red lamp", "product_id": "lamp-1"}
    first = writable.post("/listings", data=form, files={"img": ("a.jpg", jpeg_bytes(synthetic_photo("red", "circle")))}, headers=auth)
    assert first.status_code == 201 and first.json()["replaced"] is False
    old_photo = first.json()["image_ids"][0]
    assert writable.get(f"/images/{old_photo}").status_code == 200
    second = writable.post("/listings", data=form, files={"img": ("b.jpg", jpeg_bytes(synthetic_photo("blue", "square")))}, headers=auth)
    assert second.status_code == 200 and second.json()["replaced"] is True, second.text  # a client that mistyped an id can tell
    new_photo = second.json()["image_ids"][0]
    assert writable.get(f"/images/{old_photo}").status_code == 404
    assert writable.get(f"/images/{new_photo}").status_code == 200
    hits = writable.post("/similar", data={"txt": "x", "k": "100"}).json()["results"]
    (catalogue_photo,) = [h["image_ids"][0] for h in hits if h["product_id"] == "prod-01"]
    replaced = writable.post("/listings", data={"title": "Green chair", "product_id": "prod-01"}, headers=auth)
    assert replaced.status_code == 200 and writable.get(f"/images/{catalogue_photo}").status_code == 404  # no listing shows it now
    assert writable.delete("/listings/lamp-1", headers=auth).status_code == 200


def test_a_deleted_catalogue_listings_photos_are_no_longer_served(writable, tmp_path):
    """A seller who deletes a listing expects its photos gone; the catalogue's files stay on disk
    (they are `fbm prepare`'s), served again if a rebuild brings the listing back."""
    auth = {"X-API-Key": KEY}
    photo = writable.get("/listings/prod-00/similar").json()["listing"]["image_ids"][0]
    assert writable.get(f"/images/{photo}").status_code == 200
    assert writable.delete("/listings/prod-00", headers=auth).status_code == 200
    gone = writable.get(f"/images/{photo}")
    assert gone.status_code == 404 and gone.json()["detail"] == f"no photo {photo!r}"
    assert (tiny_config(tmp_path).paths.clean_images(256) / f"{photo}.jpg").is_file()


@pytest.mark.parametrize(
    "form, words",
    [
        ({}, "title"),
        ({"title": "   "}, "title is empty: send the listing's title"),
        ({"title": "chair", "category": "Spaceships"}, "unknown category"),
        ({"title": "chair", "category": " / "}, "unknown category ' / '"),
        ({"title": "chair", "image": "x"}, "unknown field(s) 'image': /listings takes category, description, img, location, price, product_id, title"),
        ({"title": "chair", "product_id": "../../etc"}, "product_id: an id is 1 to 128 letters, digits, '-' or '_', starting with a letter or a digit, got '../../etc'"),
        ({"title": "chair", "product_id": "x" * 1000}, f"starting with a letter or a digit, got '{'x' * 40}'…"),
        ({"title": "chair", "price": "-5"}, "price"),
        ({"title": "chair", "description": "x" * 30_000}, "at most 20,000"),
        ({"title": "chair", "description": "&amp;" * 5000}, "description has 25,000 characters"),  # as sent, not as cleaned
    ],
)
def test_bad_listings_are_refused(writable, form, words):
    response = writable.post("/listings", data=form, headers={"X-API-Key": KEY})
    assert response.status_code == 422 and words in response.json()["detail"]
    assert writable.get("/health").json()["listings"] == 12


def test_bad_listing_ids_on_delete(writable):
    auth = {"X-API-Key": KEY}
    assert writable.delete("/listings/no-such-listing", headers=auth).status_code == 404
    bad = writable.delete("/listings/bad.id", headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"] == "product_id: an id is 1 to 128 letters, digits, '-' or '_', starting with a letter or a digit, got 'bad.id'"
    dry_run = writable.delete("/listings/prod-01?dry_run=1", headers=auth)  # a caller expecting a dry run
    assert dry_run.status_code == 422 and "unknown field(s) 'dry_run'" in dry_run.json()["detail"]
    for body in ({"content": b"dry_run=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, {"content": b'{"dry_run": true}'}):
        in_body = writable.request("DELETE", "/listings/prod-01", headers=auth | body.pop("headers", {}), **body)
        assert in_body.status_code == 422 and "DELETE /listings/prod-01 reads no request body" in in_body.json()["detail"]
    assert writable.get("/health").json()["listings"] == 12  # nothing deleted


# --- serving -----------------------------------------------------------------------------------


def test_concurrent_requests_share_model_passes(artifacts):
    """Requests arriving while the model is busy are answered by one batched pass, each with its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    config = tiny_config(artifacts)
    predictor = FakePredictor(delay_s=0.05)
    services = fake_services(config, predictor)
    texts = [f"Vintage rotary dial phone {i}" if i % 2 else f"Pine wardrobe with two doors {i}" for i in range(16)]
    with TestClient(create_app(config, services)) as client, ThreadPoolExecutor(16) as pool:
        predictor.batch_sizes.clear()
        answers = list(pool.map(lambda t: client.post("/similar", data={"txt": t, "k": "1"}).json(), texts))
    assert [a["results"][0]["product_id"] for a in answers] == ["prod-09" if i % 2 == 0 else "prod-08" for i in range(16)]
    assert sum(predictor.batch_sizes) == 16 and max(predictor.batch_sizes) > 1


def test_a_request_cancelled_while_its_inputs_are_prepared_is_never_computed():
    """Its client gone during the preparation, the job it queued afterwards was run all the same."""
    from concurrent.futures import ThreadPoolExecutor

    from api.batching import MicroBatcher

    predictor, computed = FakePredictor(), []

    def slow_prepare(images, text, mode):
        time.sleep(0.3)
        return predictor.prepare(images, text, mode)

    async def client_leaves() -> None:
        request = asyncio.ensure_future(batcher.predict([], "oak chair", "text"))
        await asyncio.sleep(0.05)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.sleep(0.6)  # the preparation ends and queues its job

    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(slow_prepare, lambda items: computed.extend(items) or predictor.predict_prepared(items), pool=pool)
        batcher.start()
        try:
            asyncio.run(client_leaves())
        finally:
            batcher.stop()
    assert computed == [] and batcher.items == 0


def test_the_batcher_keeps_one_bad_item_from_failing_its_neighbours_and_skips_cancelled_requests():
    from api.batching import MicroBatcher

    predictor = FakePredictor(delay_s=0.05)

    def run_batch(items):
        if any(item.text == "poison" for item in items):
            raise RuntimeError("the model fell over on one listing")
        return predictor.predict_prepared(items)

    batcher = MicroBatcher(predictor.prepare, run_batch, max_photos=8)
    batcher.start()
    try:
        blocker = batcher.submit([], "first, while the others queue", "text")
        good = [batcher.submit([], f"text {i}", "text") for i in range(3)]
        refused = batcher.submit([], "   ", "text")  # refused by prepare: never queued
        poisoned = batcher.submit([], "poison", "text")  # fails inside the batch it shares
        cancelled = batcher.submit([], "nobody waits for this", "text")
        assert cancelled.cancel()
        photos = [batcher.submit([synthetic_photo("red", "circle")] * 3, None, "image") for _ in range(4)]
        assert blocker.result(10).modalities == ["text"]
        assert all(f.result(10).modalities == ["text"] for f in good)
        with pytest.raises(ValueError):
            refused.result(10)
        with pytest.raises(RuntimeError, match="fell over"):
            poisoned.result(10)
        assert all(f.result(10).modalities == ["image"] for f in photos)
    finally:
        batcher.stop()
    assert batcher.items == 8  # every request but the refused, the poisoned and the cancelled one was answered
    assert max(predictor.batch_sizes) > 1 and max(predictor.batch_sizes) <= 8


def test_requests_that_fill_the_photo_cap_exactly_share_one_pass():
    """Waiting requests join a pass up to `max_photos` photos, that many included."""
    import threading

    from api.batching import MicroBatcher

    started, release, passes = threading.Event(), threading.Event(), []

    def run_batch(items):
        passes.append([item.text for item in items])
        if items[0].text == "blocker":
            started.set()
            release.wait(10)
        return FakePredictor().predict_prepared(items)

    batcher = MicroBatcher(FakePredictor().prepare, run_batch, max_photos=4)
    batcher.start()
    try:
        blocker = batcher.submit([synthetic_photo("red", "circle")], "blocker", "combined")
        assert started.wait(10)
        pairs = [batcher.submit([synthetic_photo("red", "circle")] * 2, name, "combined") for name in ("a", "b")]
        release.set()
        assert [future.result(10).modalities for future in (blocker, *pairs)] == [["image", "text"]] * 3
    finally:
        batcher.stop()
    assert passes == [["blocker"], ["a", "b"]]


def test_two_inference_threads_run_passes_side_by_side_and_stop_answers_what_is_queued():
    import threading

    from api.batching import MicroBatcher

    predictor = FakePredictor()
    running, overlapped, threads_seen = [0], [False], set()
    lock = threading.Lock()

    def run_batch(items):
        with lock:
            running[0] += 1
            overlapped[0] |= running[0] > 1
            threads_seen.add(threading.current_thread().name)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return predictor.predict_prepared(items)

    batcher = MicroBatcher(predictor.prepare, run_batch, max_photos=2, workers=2)
    batcher.start()
    futures = [batcher.submit([], f"listing {i}", "text") for i in range(12)]
    batcher.stop()  # returns once everything queued has been answered
    assert all(f.done() and f.result().modalities == ["text"] for f in futures)
    assert overlapped[0] and len(threads_seen) == 2
    assert batcher.items == 12 and batcher.batches >= 6  # at most 2 listings (photos) per pass


def test_inference_layout_defaults_to_one_single_threaded_pass_per_core(tmp_path, monkeypatch):
    from api import services

    monkeypatch.setattr(services, "available_cores", lambda: 4)
    config = tiny_config(tmp_path)
    assert services.inference_layout(config) == (4, 1)
    config.serve.inference_workers = 1
    assert services.inference_layout(config) == (1, 4)
    config.serve.torch_threads = 2
    assert services.inference_layout(config) == (1, 2)


def test_the_inference_runtime_keeps_freed_memory_for_reuse(monkeypatch):
    """glibc's malloc is told to serve blocks under 32 MiB from its heaps and to trim them only past
    256 MiB free, so a pass's activations are not faulted in afresh every pass; where the C library
    has no mallopt, nothing is changed and the server still starts."""
    import ctypes

    from api import services

    calls = []

    class Libc:
        def mallopt(self, parameter, value):
            calls.append((parameter, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    assert services.keep_freed_memory() is True
    assert calls == [(-3, 32 * 1024 * 1024), (-1, 256 * 1024 * 1024)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    monkeypatch.setattr(ctypes, "CDLL", lambda name: SimpleNamespace())  # musl, macOS: no mallopt
    assert services.keep_freed_memory() is False


def test_serve_freezes_what_it_loaded_out_of_the_garbage_collector(tmp_path, monkeypatch):
    """A full collection scanned the ~320,000 objects the models load (160 ms holding Python's
    lock): `fbm serve` freezes them once loaded, before it serves."""
    import gc

    from api import server

    config = tiny_config(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        config.serve.host, config.serve.port = probe.getsockname()
    steps = []
    monkeypatch.setattr(server, "require_trained", lambda config: None)
    monkeypatch.setattr(server, "load_services", lambda config: steps.append("load") or SimpleNamespace())
    monkeypatch.setattr(server, "create_app", lambda *args, **kwargs: steps.append(("app", gc.get_freeze_count() > 0)))
    monkeypatch.setattr(server.uvicorn, "Config", lambda app, **options: SimpleNamespace())  # leaves the test run's logging alone
    monkeypatch.setattr(server.Server, "run", lambda self: steps.append("run"))
    try:
        server.serve(config)
    finally:
        gc.unfreeze()
    assert steps == ["load", ("app", True), "run"]


def test_serve_refuses_to_start_without_trained_models(tmp_path):
    from api.server import serve

    config = tiny_config(tmp_path)
    with socket.socket() as probe:  # a free port: 8008 may be serving `make run`'s models on this machine
        probe.bind(("127.0.0.1", 0))
        config.serve.host, config.serve.port = probe.getsockname()
    config.serve.api_key = "clé"
    with pytest.raises(ValueError, match="FBM_API_KEY must be ASCII"):
        serve(config)
    config.serve.api_key = "secret "
    with pytest.raises(ValueError, match="FBM_API_KEY starts or ends with white space"):
        serve(config)
    config.serve.api_key = ""
    with pytest.raises(FileNotFoundError, match=r"no trained models in .*: build them with `make run`"):
        serve(config)  # nothing trained there at all (a new Docker volume): what to do, not one stage's file
    config.paths.image_model.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="combined_model"):
        serve(config)  # some stages trained: the one missing is named


_SERVE_FAKE = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from test_api_fakes import fake_services, tiny_config
from api import server
config = tiny_config(Path(sys.argv[1]), api_key="k")
config.serve.host, config.serve.port = "127.0.0.1", int(sys.argv[2])
services = fake_services(config)
server.load_services = lambda _: services
server.serve(config)
"""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_serve_saves_the_live_writes_when_it_stops(tmp_path, stop):
    """`fbm serve` stopped by SIGTERM (docker stop, systemd, kill), Ctrl-C or SIGHUP (the terminal
    that ran `make run` closed) checkpoints the index: a clean stop must not leave the next start
    to reconcile as after a crash."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-c", _SERVE_FAKE, str(tmp_path), str(port), str(Path(__file__).parent)], cwd=Path(__file__).parent.parent)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            time.sleep(0.2)
        form = urllib.parse.urlencode({"title": "Oak dining chair", "product_id": "live-1"}).encode()
        added = urllib.request.urlopen(urllib.request.Request(f"{url}/listings", data=form, headers={"X-API-Key": "k"}), timeout=30)
        assert added.status == 201
    finally:
        process.send_signal(stop)
        process.wait(timeout=30)
    config = tiny_config(tmp_path)
    with ListingIndex.open(config.paths.index, config.index) as reopened:
        assert reopened.reconciled == {"re_added": 0, "removed": 0}
        assert reopened.stored("live-1") is not None


def test_an_index_of_another_dimension_is_refused_naming_its_file(artifacts):
    from api.services import check_index_matches

    services = fake_services(tiny_config(artifacts))
    services.predictor.text = type("Branch", (), {"embed_dim": 128})()
    with pytest.raises(ValueError, match=r"vectors-\w+\.faiss holds 512-d vectors but the models embed into 256\+128"):
        check_index_matches(services.index, services.predictor)


@pytest.mark.parametrize(
    "broken, failure",
    [("index.add", sqlite3.OperationalError("unable to open database file")), ("photos.add", PermissionError(13, "Permission denied", "/srv/secret/photo.tmp"))],
)
def test_a_write_the_disk_refuses_is_a_json_503_that_leaves_no_photo_behind(writable, monkeypatch, broken, failure):
    """It was Starlette's plain-text 500, and the photos already stored stayed as orphans."""
    services = writable.app.state.services
    owner, method = broken.split(".")
    stored = []
    add_photo = services.photos.add
    monkeypatch.setattr(services.photos, "add", lambda photo: stored.append(add_photo(photo)) or stored[-1])

    def refuse(*args, **kwargs):
        raise failure

    monkeypatch.setattr(getattr(services, owner), method, refuse)
    photo = jpeg_bytes(synthetic_photo("yellow", "circle", (300, 200)))
    response = writable.post("/listings", data={"title": "Oak chair", "product_id": "refused"}, files={"img": ("a.jpg", photo)}, headers={"X-API-Key": KEY})
    assert response.status_code == 503 and response.headers["content-type"] == "application/json"
    assert "the listing could not be stored" in response.json()["detail"] and "nothing was added" in response.json()["detail"]
    assert "/srv/secret" not in response.text and f"{type(failure).__name__}: " in response.json()["detail"]  # no server path to a client
    assert all(services.photos.path(image_id) is None for image_id in stored)
    monkeypatch.undo()
    assert writable.get("/listings/refused/similar").status_code == 404
    assert writable.post("/listings", data={"title": "Oak chair", "product_id": "accepted"}, headers={"X-API-Key": KEY}).status_code == 201


def test_a_delete_the_disk_refuses_is_a_json_503(writable, monkeypatch):
    services = writable.app.state.services

    def refuse(product_id):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(services.index, "delete", refuse)
    response = writable.delete("/listings/prod-01", headers={"X-API-Key": KEY})
    assert response.status_code == 503 and "it is still indexed" in response.json()["detail"]


def test_a_photo_the_decoder_fails_on_is_the_clients_fault_and_a_memory_shortage_the_servers(tmp_path, monkeypatch):
    import api.uploads

    config = tiny_config(tmp_path)
    photo = {"img": ("a.jpg", jpeg_bytes(synthetic_photo("red", "circle")))}
    with TestClient(create_app(config, fake_services(config)), raise_server_exceptions=False) as client:
        for failure, status, words in ((struct.error("unpack requires a buffer of 4 bytes"), 422, "could not be decoded: error"), (MemoryError(), 500, "internal error (MemoryError)")):
            monkeypatch.setattr(api.uploads, "clean_photo", lambda *args, failure=failure: (_ for _ in ()).throw(failure))
            response = client.post("/image", files=photo)
            assert response.status_code == status and words in response.json()["detail"], response.text


def test_a_fault_of_the_server_is_a_json_500(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, api_key=KEY)
    services = fake_services(config)
    with TestClient(create_app(config, services), raise_server_exceptions=False) as client:
        monkeypatch.setattr(services.index, "delete", lambda product_id: 1 / 0)
        fault = client.delete("/listings/prod-01", headers={"X-API-Key": KEY})
    services.index.close()
    assert fault.status_code == 500 and fault.json() == {"detail": "internal error (ZeroDivisionError): the server could not answer this request"}


def _add(client, product_id: str, colour: str) -> str:
    photo = jpeg_bytes(synthetic_photo(colour, "circle"))
    created = client.post("/listings", data={"title": "Red lamp", "product_id": product_id}, files={"img": ("a.jpg", photo)}, headers={"X-API-Key": KEY})
    assert created.status_code in (200, 201), created.text
    return created.json()["image_ids"][0]


def test_similar_returns_ten_listings_when_k_is_not_given(client):
    photo = jpeg_bytes(synthetic_photo("green", "square"))
    found = client.post("/similar", files={"img": ("a.jpg", photo)}, data={"txt": "green oak chair"})  # all 12 listings qualify
    assert found.status_code == 200 and len(found.json()["results"]) == 10


def test_deleting_a_listing_removes_its_added_photo_files(writable):
    photos = writable.app.state.services.photos
    image_id = _add(writable, "lamp-del", "red")
    assert photos.path(image_id) is not None
    assert writable.delete("/listings/lamp-del", headers={"X-API-Key": KEY}).status_code == 200
    assert photos.path(image_id) is None  # the file, not only the index's reference


def test_replacing_a_listing_removes_the_old_photo_files_and_keeps_the_new(writable):
    photos = writable.app.state.services.photos
    old, new = _add(writable, "lamp-rep", "red"), _add(writable, "lamp-rep", "blue")
    assert photos.path(old) is None and photos.path(new) is not None


def test_a_refused_listing_leaves_no_photo_file_behind(writable, monkeypatch):
    """index.add refusing the listing (ValueError) is a 422, and the photos stored for it go."""
    services = writable.app.state.services
    stored, add_photo = [], services.photos.add
    monkeypatch.setattr(services.photos, "add", lambda photo: stored.append(add_photo(photo)) or stored[-1])
    monkeypatch.setattr(services.index, "add", lambda *args, **kwargs: (_ for _ in ()).throw(ValueError("the listing's vectors are zero")))
    photo = jpeg_bytes(synthetic_photo("red", "circle"))
    refused = writable.post("/listings", data={"title": "Oak chair"}, files={"img": ("a.jpg", photo)}, headers={"X-API-Key": KEY})
    assert refused.status_code == 422 and "could not be indexed" in refused.json()["detail"]
    assert stored and all(services.photos.path(image_id) is None for image_id in stored)


@pytest.mark.parametrize("if_none_match", ["*", "W/{etag}", '"other", W/{etag}'])
def test_a_cache_holding_the_photo_by_any_or_a_weak_tag_gets_a_304(client, if_none_match):
    etag = client.get("/images/img-03").headers["etag"]
    again = client.get("/images/img-03", headers={"If-None-Match": if_none_match.format(etag=etag)})
    assert again.status_code == 304 and not again.content


def test_requests_before_the_models_and_index_are_loaded_are_a_503(artifacts):
    """Without the lifespan having run (no services yet), every route that needs them says so."""
    app = create_app(tiny_config(artifacts))
    client = TestClient(app)  # not entered: the start-up has not run
    photo = jpeg_bytes(synthetic_photo("red", "circle"))
    for response in (client.post("/image", files={"img": ("a.jpg", photo)}), client.post("/text", data={"txt": "chair"}), client.get("/categories")):
        assert response.status_code == 503 and response.json()["detail"] == "the models and the index are still loading"


def test_an_input_the_model_refuses_is_a_422_naming_it(client, monkeypatch):
    async def refuse(photos, text, mode):
        raise ValueError("text prediction needs input")

    monkeypatch.setattr(client.app.state.batcher, "predict", refuse)
    response = client.post("/text", data={"txt": "chair"})
    assert response.status_code == 422 and response.json()["detail"] == "text prediction needs input"


def test_a_photo_of_exactly_the_byte_limit_is_accepted_and_one_byte_more_refused(artifacts):
    photo = jpeg_bytes(synthetic_photo("red", "circle"))
    for limit, status in ((len(photo), 200), (len(photo) - 1, 413)):
        for client in serving(tiny_config(artifacts, max_upload_bytes=limit)):
            assert client.post("/image", files={"img": ("a.jpg", photo)}).status_code == status, limit


def test_a_content_type_in_capitals_is_checked_as_a_form(client):
    """Media types are case-insensitive: `Multipart/Form-Data` is still checked for unknown fields."""
    body = b'--zz\r\nContent-Disposition: form-data; name="txt"\r\n\r\noak chair\r\n--zz\r\nContent-Disposition: form-data; name="text"\r\n\r\noak\r\n--zz--\r\n'
    response = client.post("/text", content=body, headers={"content-type": "Multipart/Form-Data; boundary=zz"})
    assert response.status_code == 422 and "unknown field(s) 'text'" in response.json()["detail"]


def test_an_added_listings_description_is_indexed_without_its_posted_by_boilerplate(writable):
    """The boilerplate names categories (it leaks the label): the listing is embedded as prepare cleans it."""
    index = writable.app.state.services.index
    for product_id, description in (("raw", "Five shelves. Posted by Sam in Home & Garden, Furniture in Leeds."), ("clean", "Five shelves.")):
        form = {"title": "Walnut bookcase", "description": description, "product_id": product_id}
        assert writable.post("/listings", data=form, headers={"X-API-Key": KEY}).status_code == 201
    assert index.stored("raw").text_vec.tolist() == index.stored("clean").text_vec.tolist()


class RecordingIndex:
    def __init__(self):
        self.calls = []

    def search(self, image_vec, text_vec, **kwargs):
        self.calls.append(("search", text_vec, kwargs))
        return "found"


class Words:
    def row(self, tokens):
        return ("row", tuple(tokens))


def test_search_similar_re_ranks_by_the_query_words_with_the_filters_given():
    index = RecordingIndex()
    prediction = SimpleNamespace(low_confidence=False, image_embedding=None, text_embedding=np.ones(4), text_tokens=["oak", "chair"])
    assert search_similar(index, prediction, Words(), k=3, category="Appliances") == "found"
    (_, _, kwargs), = index.calls
    assert kwargs == {"terms": ("row", ("oak", "chair")), "k": 3, "category": "Appliances"}


@pytest.fixture
def load_with(monkeypatch, tmp_path):
    """`load_services` over the fake catalogue and a given stand-in predictor (no torch thread change)."""
    from api import services
    from combined_model.inference import Predictor
    from retrieval.terms import TermWeights

    config = tiny_config(tmp_path)
    fake_services(config).index.close()  # builds the catalogue
    monkeypatch.setattr(services, "set_torch_threads", lambda config: (1, 1))
    monkeypatch.setattr(TermWeights, "load", lambda config, tfidf=None: None)
    opened = []

    def load(predictor):
        predictor.tfidf = None
        monkeypatch.setattr(Predictor, "load", lambda config: predictor)
        loaded = services.load_services(config)
        opened.append(loaded.index)
        return loaded

    yield config, load
    for index in opened:
        index.close()


def test_start_up_removes_added_photos_no_listing_shows(load_with):
    config, load = load_with
    orphan = PhotoStore.for_config(config).add(Image.new("RGB", (256, 256)))  # a write killed before indexing
    loaded = load(FakePredictor())
    assert loaded.photos.path(orphan) is None and loaded.photos.path("img-00") is not None


def test_start_up_warms_up_the_model_and_names_missing_nltk_data(load_with):
    _, load = load_with

    class NoNltkData(FakePredictor):
        def predict_many(self, items, mode="combined"):
            raise LookupError("Resource stopwords not found")

    opened = []
    original_open = ListingIndex.open
    ListingIndex.open = classmethod(lambda cls, *args, **kwargs: opened.append(args) or original_open.__func__(cls, *args, **kwargs))
    try:
        with pytest.raises(ValueError, match="Resource stopwords not found"):
            load(NoNltkData())
    finally:
        ListingIndex.open = original_open
    assert opened == []  # refused before the index was opened, and reconciled (written) for nothing


def test_a_start_up_that_fails_after_opening_the_index_releases_it(load_with):
    """An index of other models' width is refused; the index it had opened stayed open with its
    serving lock, so a second try in the same process was refused as a second server."""
    config, load = load_with

    class OtherWidth(FakePredictor):
        def __init__(self):
            super().__init__()
            self.image = type("Branch", (), {"embed_dim": 64})()
            self.text = type("Branch", (), {"embed_dim": 64})()

    with pytest.raises(ValueError, match="rebuild the index with `fbm index`"):
        load(OtherWidth())
    with ListingIndex.open(config.paths.index, config.index, serving=True) as served:  # no "served by another process"
        assert len(served) > 0


def test_forwarded_headers_are_believed_only_from_the_proxies_named(tmp_path):
    """uvicorn believes X-Forwarded-For from 127.0.0.1 by default, so a local client could write any
    address into the access log; the server believes none unless `serve.trusted_proxies` names them."""
    from api.server import server_options

    config = tiny_config(tmp_path)
    assert server_options(config)["proxy_headers"] is False
    config.override("serve.trusted_proxies=10.0.0.2,10.0.0.3")
    assert (server_options(config)["proxy_headers"], server_options(config)["forwarded_allow_ips"]) == (True, "10.0.0.2,10.0.0.3")


@pytest.mark.parametrize("key, status", [("wrong", b"401"), (None, b"401")])
def test_a_write_without_the_key_is_refused_before_its_body_is_read(tmp_path, key, status):
    """A 5 MB upload announced with a wrong or no key gets its 401 at once, not `100 Continue` (an
    invitation to send it) nor an answer only once all of it has been received and spooled."""
    config = tiny_config(tmp_path, api_key=KEY)
    with live_server(config, fake_services(config)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            head = [b"POST /listings HTTP/1.1", b"Host: x", b"Content-Type: multipart/form-data; boundary=b", b"Content-Length: 5000000", b"Expect: 100-continue"]
            connection.sendall(b"\r\n".join(head + ([b"X-API-Key: " + key.encode()] if key else [])) + b"\r\n\r\n")
            answer = connection.recv(4096)  # no body sent: a server that waited for it would time out here
        assert answer.startswith(b"HTTP/1.1 " + status) and b"missing or wrong X-API-Key header" in answer
        deleted = urllib.request.Request(f"{url}/listings/prod-01", method="DELETE", headers={"X-API-Key": "wrong"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(deleted, timeout=10)
        assert refused.value.code == 401 and json.loads(refused.value.read())["detail"] == "missing or wrong X-API-Key header"
        assert urllib.request.urlopen(f"{url}/listings/prod-01/similar", timeout=10).status == 200  # a read needs no key


def test_a_request_that_does_not_arrive_in_time_is_a_408_and_frees_its_connection(tmp_path):
    """A client that connects and sends nothing, or stops half-way through its headers or its body,
    held a connection for ever (slow-client denial of service): after `serve.request_timeout_s` it
    gets a JSON 408 and the connection closes; the server goes on serving."""
    config = tiny_config(tmp_path, request_timeout_s=1.0)
    with live_server(config, fake_services(config)) as url:
        port = int(url.rsplit(":", 1)[1])
        starts = [b"", b"GET /hea", b"POST /text HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntxt=oak"]
        for start in starts:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
                connection.sendall(start)
                began = time.monotonic()
                answer = b""
                while chunk := connection.recv(4096):  # until the server closes the connection
                    answer += chunk
            assert 0.8 < time.monotonic() - began < 5, start
            assert answer.startswith(b"HTTP/1.1 408") and b'{"detail":"the request did not arrive whole within 1 s"}' in answer, (start, answer)
        assert urllib.request.urlopen(f"{url}/health", timeout=10).status == 200


def test_a_compressed_body_is_a_415_that_says_to_send_it_uncompressed(client):
    """The form parser read gzip's bytes as field names (`unknown field(s) '\\x1f\\x8b…'`)."""
    import gzip

    sent = client.post("/text", content=gzip.compress(b"txt=oak+chair"), headers={"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"})
    assert sent.status_code == 415 and sent.json()["detail"] == "the body is sent with Content-Encoding gzip, which is not read: send it uncompressed"
    assert client.post("/text", data={"txt": "oak chair"}, headers={"Content-Encoding": "identity"}).status_code == 200


def test_an_index_that_cannot_save_at_shutdown_is_one_line_in_the_log(tmp_path, monkeypatch, caplog):
    """A read-only or full disk at shutdown: the live writes stay in the index's database (the next
    start re-adds them), and the server ends with one line saying so, not a traceback and a failed shutdown."""
    config = tiny_config(tmp_path)
    services = fake_services(config)

    def refuse():
        raise RuntimeError("could not open vectors.faiss.tmp for writing")

    monkeypatch.setattr(services.index, "close", refuse)
    with TestClient(create_app(config, services, close_services=True)) as running:
        assert running.get("/health").status_code == 200
    assert "the index could not save its live writes at shutdown (could not open vectors.faiss.tmp for writing)" in caplog.text


def test_a_405_allows_head_where_get_is_allowed(client):
    assert client.put("/health").status_code == 405 and client.put("/health").headers["allow"] == "GET, HEAD"
    assert client.get("/similar").headers["allow"] == "POST"


def test_the_access_log_cuts_a_long_url():
    """A 60 KB query string was a 60 KB line of uvicorn's access log."""
    import logging

    from api.server import MAX_LOGGED_PATH, ShortPaths

    long_path = "/health?" + "x" * 60_000
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5", "GET", long_path, "1.1", 200), None)
    assert ShortPaths().filter(record)
    line = record.getMessage()
    assert len(line) < MAX_LOGGED_PATH + 100 and line.endswith(f"… ({len(long_path):,} characters) HTTP/1.1\" 200")
    short = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "%s %s %s %s %d", ("c", "GET", "/health", "1.1", 200), None)
    assert ShortPaths().filter(short) and short.getMessage() == "c GET /health 1.1 200"


def test_health_says_whether_writes_can_change_the_index(tmp_path):
    """Searches go on when the disk refuses writes; /health says so, rather than an `ok` that every
    POST and DELETE then contradicts with a 503."""
    import shutil

    config = tiny_config(tmp_path)
    services = fake_services(config)
    with TestClient(create_app(config, services)) as running:
        assert running.get("/health").json()["writes"] == "off: the server was started without FBM_API_KEY"
        config.serve.api_key = KEY
        assert running.get("/health").json()["writes"] == "on"
        shutil.rmtree(config.paths.root / "api", ignore_errors=True)
        shutil.move(services.index.directory, tmp_path / "moved-index")
        health = running.get("/health").json()
        assert health["status"] == "ok" and health["writes"].startswith("off: the disk refuses writes")
        shutil.move(tmp_path / "moved-index", services.index.directory)
