"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis + hypothesis).

Every operation of `/openapi.json` gets schema-driven cases (schemathesis' coverage cases, then
fuzzed ones) sent over real HTTP to a live loopback uvicorn with the fake predictor and a real
index. Each answer must not be a 5xx and must conform to the schema (documented status, content
type, body and headers); schema-invalid input must be refused; a write without the key must be.

One check is left out: `positive_data_acceptance` (ST202) demands that every schema-valid request
succeed, but the API rightly refuses, with its documented 422, requests the schema cannot
express as invalid: photos that are not images (the schema only says "bytes"), blank texts, a
`k` over `index.max_k`, `min_price` above `max_price`, an unknown category.

The photos schemathesis sends are random bytes, so a second fuzzer sends real images of every
mode and format, truncated, bit-flipped or with headers claiming billions of pixels.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from test_api_fakes import FakePredictor, fake_services, live_server, tiny_config

KEY = "fuzz-key"
FUZZ = settings(max_examples=25, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))

# The schema is the app's own; it does not depend on what is served, so it is read once at import.
schema = schemathesis.openapi.from_dict(create_app(tiny_config(Path("unused"))).openapi())


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    config = tiny_config(tmp_path_factory.mktemp("fuzz"), api_key=KEY)
    services = fake_services(config)
    with live_server(config, services) as url:
        yield url
    services.index.close()


@schema.parametrize()
@FUZZ
def test_every_operation_conforms_to_its_schema_and_never_fails_with_5xx(case, base_url):
    case.call_and_validate(base_url=base_url, headers={"X-API-Key": KEY}, excluded_checks=[positive_data_acceptance], timeout=30)


class _BrokenPredictor(FakePredictor):
    def predict_prepared(self, items):
        raise RuntimeError("the model fell over")


def test_the_schema_checks_do_catch_a_server_error(tmp_path):
    """The same checks against a server whose model raises: the fuzzer must report it (no false calm)."""
    config = tiny_config(tmp_path, api_key=KEY)
    services = fake_services(config)  # the catalogue is built with a working model
    services.predictor = _BrokenPredictor()
    operation = schema["/text"]["POST"]
    with live_server(config, services) as url:
        case = operation.Case(body={"txt": "oak dining chair"}, media_type="application/x-www-form-urlencoded")
        with pytest.raises(FailureGroup, match="Server error"):
            case.call_and_validate(base_url=url, excluded_checks=[positive_data_acceptance], timeout=30)
    services.index.close()


# --- real images, broken in the ways uploads break ----------------------------------------------

MODES = ["RGB", "L", "RGBA", "P", "CMYK", "1", "LA", "I;16", "I", "F"]
FORMATS = {"JPEG": {"RGB", "L", "CMYK", "1"}, "PNG": {"RGB", "L", "RGBA", "P", "1", "LA", "I;16", "I"}, "GIF": {"P", "L"},
           "BMP": {"RGB", "L", "P", "1"}, "WEBP": {"RGB", "RGBA"}, "TIFF": {"RGB", "L", "RGBA", "CMYK", "1", "I;16", "I", "F", "LA"}}


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width`×`height` pixels (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@st.composite
def uploads(draw) -> tuple[bytes, str]:
    """(bytes, what they are): a real image, possibly damaged, or a header-only giant."""
    if draw(st.integers(0, 9)) == 0:
        side = draw(st.sampled_from([20_000, 65_535, 2**31 - 1]))
        return png_claiming(side, draw(st.sampled_from([side, 1]))), "giant"
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(sorted(FORMATS[fmt])))
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    pixels = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").convert("L" if mode == "I;16" else mode)
    image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "prefix", "suffix"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    elif damage == "prefix":
        data = draw(st.binary(min_size=1, max_size=64)) + data
    elif damage == "suffix":
        data = data + draw(st.binary(min_size=1, max_size=64))
    return data, f"{fmt} {mode} {width}x{height} {damage}"


@pytest.mark.parametrize("url", ["/image", "/combined", "/similar"])
def test_real_and_damaged_images_never_cause_a_server_error(url, base_url):
    operation = schema[url]["POST"]
    seen = set()

    @FUZZ
    @given(upload=uploads(), name=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40))
    def check(upload, name):
        data, what = upload
        text = {"txt": "lamp"} if url != "/image" else None
        response = requests.post(f"{base_url}{url}", files=[("img", (name, data, "image/jpeg"))], data=text, timeout=30)
        assert response.status_code in (200, 413, 422), f"{what}: {response.status_code} {response.text[:300]}"
        if what == "giant":
            assert response.status_code in (413, 422), f"a {what} was accepted"
        operation.validate_response(response)  # documented status, JSON body of the documented shape
        seen.add(response.status_code)

    check()
    assert {200, 422} <= seen, f"the fuzzer never reached both a decoded and a refused photo: {seen}"
