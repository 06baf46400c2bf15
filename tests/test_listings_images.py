"""Image cleaning: odd modes and broken files → an RGB letterboxed square, or an ImageError with its reason."""
from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from listings import images
from listings.images import STORED_JPEG, ImageError, build_clean_cache, clean_image, clean_photo, letterbox, stored_form, to_rgb

SIZE = 64
# a file left open by cleaning (found when it is garbage-collected) fails the test
pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A few-hundred-byte PNG whose header claims width×height RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def noisy_jpeg(size=(160, 120)) -> bytes:
    return encode(Image.effect_noise(size, 60).convert("RGB"), "JPEG")


def pixel(image: Image.Image, x: int, y: int) -> np.ndarray:
    return np.asarray(image, dtype=int)[y, x]


def assert_clean(image: Image.Image, size: int = SIZE) -> None:
    assert image.mode == "RGB"
    assert image.size == (size, size)


def close(actual: np.ndarray, expected: tuple[int, int, int], tolerance: int = 12) -> bool:
    return bool(np.abs(actual - np.array(expected)).max() <= tolerance)


def test_plain_rgb_is_letterboxed_on_black_keeping_the_aspect_ratio():
    image = clean_image(encode(Image.new("RGB", (80, 40), (200, 30, 30)), "PNG"), SIZE)
    assert_clean(image)
    assert close(pixel(image, 32, 32), (200, 30, 30), 0)  # content in the middle band
    assert close(pixel(image, 32, 2), (0, 0, 0), 0)  # padding above and below
    assert close(pixel(image, 32, 61), (0, 0, 0), 0)


def test_a_photo_already_square_at_the_size_keeps_its_pixels_exactly():
    """The dataset's photos are 256×256 already: cleaning takes them as decoded, copied out of the
    file it closes (no resize, no padding), which is what resizing to their own size would give."""
    photo = Image.effect_noise((SIZE, SIZE), 80).convert("RGB")
    data = encode(photo, "PNG")
    image = clean_image(data, SIZE)
    assert_clean(image)
    assert np.array_equal(np.asarray(image), np.asarray(photo))
    assert np.array_equal(np.asarray(clean_image(data, SIZE // 2)), np.asarray(photo.resize((SIZE // 2, SIZE // 2), Image.Resampling.BICUBIC)))


def test_png_with_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 16, 32))  # left half opaque red, right half transparent
    image = clean_image(encode(rgba, "PNG"), SIZE)
    assert_clean(image)
    assert close(pixel(image, 10, 32), (255, 0, 0))
    assert close(pixel(image, 54, 32), (255, 255, 255))


def test_grey_with_alpha_is_composited_on_white():
    image = clean_image(encode(Image.new("LA", (16, 16), (0, 0)), "PNG"), SIZE)
    assert close(pixel(image, 32, 32), (255, 255, 255))


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_png(transparent: bool):
    palette_image = Image.new("P", (32, 32), 1)
    palette_image.putpalette([0, 0, 255] + [0, 200, 0] + [0, 0, 0] * 254)
    palette_image.paste(0, (0, 0, 16, 32))  # left half colour 0 (blue), right half colour 1 (green)
    params = {"transparency": 0} if transparent else {}
    image = clean_image(encode(palette_image, "PNG", **params), SIZE)
    assert_clean(image)
    assert close(pixel(image, 10, 32), (255, 255, 255) if transparent else (0, 0, 255))
    assert close(pixel(image, 54, 32), (0, 200, 0))


def test_cmyk_jpeg():
    data = encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    image = clean_image(data, SIZE)
    assert_clean(image)
    assert close(pixel(image, 32, 32), (255, 0, 0), 20)


def test_16_bit_grayscale_png_keeps_its_brightness():
    gradient = np.tile(np.linspace(0, 65535, 32), (32, 1)).astype(np.uint16)
    gradient[:, 8:24] = 32768  # a mid-grey band
    source = Image.fromarray(gradient)
    data = encode(source, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    image = clean_image(data, SIZE)
    assert_clean(image)
    array = np.asarray(image, dtype=int)
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    assert array[32, 0, 0] < 10 and array[32, 63, 0] > 245
    assert abs(array[32, 32, 0] - 128) <= 3  # not stretched to white, not clipped


def test_16_bit_grayscale_is_not_stretched_to_its_maximum():
    dark = Image.fromarray(np.full((16, 16), 4112, dtype=np.uint16))  # 4112 / 257 = 16
    image = clean_image(encode(dark, "PNG"), SIZE)
    assert abs(pixel(image, 32, 32)[0] - 16) <= 1


def _large(mode: str) -> Image.Image:
    """A 1,000 × 600 photo in `mode` with smooth content: a horizontal ramp and a bright band."""
    ramp = np.tile(np.linspace(0.0, 1.0, 1000), (600, 1))
    ramp[200:400] = 0.8
    if mode == "I;16":
        return Image.fromarray((ramp * 65535).astype(np.uint16))
    if mode == "F":
        return Image.fromarray((ramp * 65535).astype(np.float32))
    if mode == "1":
        return Image.fromarray(ramp > 0.5)
    grey = Image.fromarray((ramp * 255).astype(np.uint8))
    if mode == "P":
        return grey.convert("RGB").quantize(16)
    return Image.merge("RGBA", (grey, grey.point(lambda v: 255 - v), grey, Image.new("L", grey.size, 160)))


@pytest.mark.parametrize("mode", ["I;16", "F", "1", "P", "RGBA"])
def test_a_large_photo_is_box_averaged_before_it_is_converted_to_the_same_pixels(mode, monkeypatch):
    """Converted whole, a 40-megapixel 16-bit PNG took 0.98 GB to clean; a photo over four times the
    square's side is now reduced first, to the pixels converting it whole gives."""
    converted_sizes = []

    def recording_to_rgb(image: Image.Image) -> Image.Image:
        converted_sizes.append(image.size)
        return to_rgb(image)

    monkeypatch.setattr(images, "to_rgb", recording_to_rgb)
    source = _large(mode)
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90° anticlockwise to display": the orientation survives the reduction
    data = encode(source, "TIFF" if mode == "F" else "PNG", exif=exif)
    cleaned = np.asarray(clean_image(data, SIZE), dtype=float)
    whole = np.asarray(letterbox(to_rgb(source.transpose(Image.Transpose.ROTATE_90)), SIZE), dtype=float)
    assert cleaned.shape == whole.shape == (SIZE, SIZE, 3)
    assert np.abs(cleaned - whole).mean() < 2.0
    assert converted_sizes == [(86, 143)]  # a seventh of each side, upright: at least twice the square's


def test_a_float_photo_with_infinite_or_missing_samples_keeps_its_brightness():
    grey = np.full((16, 16), 128.0, dtype=np.float32)
    grey[0, 0], grey[0, 1] = np.inf, np.nan  # one bad sample must not set the scale of the whole photo
    image = clean_image(encode(Image.fromarray(grey), "TIFF"), SIZE)
    assert abs(pixel(image, 32, 32)[0] - 128) <= 1


def test_exif_orientation_is_applied():
    stored = Image.new("RGB", (80, 40), (255, 0, 0))
    stored.paste((0, 0, 255), (40, 0, 80, 40))  # left red, right blue, stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": portrait, red on top
    image = clean_image(encode(stored, "JPEG", exif=exif), SIZE)
    assert_clean(image)
    assert close(pixel(image, 32, 10), (255, 0, 0), 30)
    assert close(pixel(image, 32, 54), (0, 0, 255), 30)
    assert close(pixel(image, 3, 32), (0, 0, 0), 0)  # portrait: padding left and right


def test_corrupt_exif_does_not_crash():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = bytearray(encode(Image.new("RGB", (40, 20), (0, 128, 0)), "WEBP", exif=exif))
    header = data.index(b"MM\x00*") if b"MM\x00*" in data else data.index(b"II*\x00")
    data[header + 2] = 0x81  # the TIFF header inside the EXIF block is no longer valid
    image = clean_image(bytes(data), SIZE)
    assert_clean(image)


def test_sources_as_path_bytes_and_stream(tmp_path: Path):
    data = encode(Image.new("RGB", (20, 20), (10, 200, 10)), "JPEG")
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    stream = io.BytesIO(data)
    for source in (path, str(path), data, stream):
        assert_clean(clean_image(source, 32), 32)
    assert not stream.closed  # the caller's stream is the caller's to close


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("truncated.jpg", noisy_jpeg()[:1500], "truncated"),
        ("empty.jpg", b"", "empty"),
        ("text.jpg", b"this is a text file, not a photo\n" * 20, "not_an_image"),
        ("bomb.png", png_claiming(30000, 30000), "too_large"),
        ("large.png", png_claiming(8000, 8000), "too_large"),  # under Pillow's limit, over ours
    ],
)
def test_broken_files_raise_image_error(tmp_path: Path, name: str, content: bytes, reason: str):
    path = tmp_path / name
    path.write_bytes(content)
    start = time.perf_counter()
    with pytest.raises(ImageError) as error:
        clean_image(path, SIZE)
    assert error.value.reason == reason
    assert time.perf_counter() - start < 2.0  # a bomb is refused from its header, never decoded


HEIC_START = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)  # an iPhone photo's first bytes
SVG = b'<?xml version="1.0"?>\n<!-- drawn by hand -->\n<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"/>'


@pytest.mark.parametrize(
    ("fmt", "named"),
    [("ICO", "an ICO icon"), ("PPM", "a Netpbm (PBM/PGM/PPM) image"), ("EPS", "a PostScript (EPS) file"), ("PDF", "a PDF document"),
     ("JPEG2000", "a JPEG 2000 image"), ("HEIC", "a HEIC/HEIF photo"), ("SVG", "an SVG drawing"), ("TGA", None), ("PCX", None)],
)
def test_formats_that_are_not_photos_are_refused_before_decoding_and_named(fmt: str, named: str | None):
    """Pillow reads some formats whole on opening (an ICO around a large PNG) or through an outside
    program (EPS: Ghostscript); only the formats photos come in are opened. A refusal names the
    format it was sent in when its first bytes tell (HEIC, an iPhone's own, above all)."""
    special = {"EPS": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n", "HEIC": HEIC_START, "SVG": SVG}
    data = special.get(fmt) or encode(Image.new("RGB", (32, 32), (0, 128, 0)), fmt)
    with pytest.raises(ImageError) as error:
        clean_image(data, SIZE)
    if named:
        assert error.value.reason == "unaccepted_format", error.value
        assert str(error.value).startswith(f"a format not accepted: {named}") and "the accepted formats are JPEG, PNG" in str(error.value)
    else:
        assert error.value.reason == "not_an_image"
        assert str(error.value) == "not an image: the accepted formats are JPEG, PNG, WEBP, GIF, BMP, TIFF, AVIF"


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"\xef\xbb\xbf" + SVG, True),  # saved with a byte-order mark
        (b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" [ <!ENTITY oak "oak"> ]>\n<svg/>', True),  # an internal subset
        (b"<!-- " + b"x" * 2000 + b" -->\n<svg/>", True),  # a long comment first
        (b"P1 chair, oak, nearly new\n", False),  # text that starts as a Netpbm file's magic does
        (b"P6\n# made by hand\n32 32\n255\n" + bytes(32 * 32 * 3), True),
        (b"<!---->" * 585 + b"<!--" * 10, False),  # comments that split many ways: a backtracking pattern never returned
    ],
)
def test_sniffed_formats_are_named_only_when_their_start_says_so(data: bytes, named: bool):
    start = time.perf_counter()
    with pytest.raises(ImageError) as error:
        clean_image(data, SIZE)
    assert (error.value.reason == "unaccepted_format") == named, error.value
    assert time.perf_counter() - start < 1.0


def test_a_bomb_is_refused_in_terms_of_our_limit():
    with pytest.raises(ImageError, match="too large: its header declares more than 40000000 pixels"):
        clean_image(png_claiming(30000, 30000), SIZE, max_pixels=40_000_000)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ImageError) as error:
        clean_image(tmp_path / "nope.jpg", SIZE)
    assert error.value.reason == "missing"


def test_max_pixels_is_configurable():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageError, match=r"too large: 100x100 decodes to 10,000 pixels, over the limit of 5,000 \(data.max_image_pixels\)"):
        clean_image(data, SIZE, max_pixels=5000)


def test_the_pixel_limit_counts_the_pixels_a_large_jpeg_decodes_to():
    """A phone's 48-megapixel JPEG decodes at 1/8 of its sides for a 256-pixel square (0.8 megapixels):
    it was refused by its declared size, over the 40-megapixel limit. Here in miniature: 200x200
    photos, a 16-pixel square, a limit of 5,000 pixels."""
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    assert clean_image(encode(photo, "JPEG"), 16, max_pixels=5000).size == (16, 16)  # decoded at 25x25
    with pytest.raises(ImageError, match=r"200x200 decodes to 40,000 pixels, over the limit of 5,000"):
        clean_image(encode(photo, "PNG"), 16, max_pixels=5000)  # no reduced decoding: the pixels held whole
    with pytest.raises(ImageError, match=r"200x200 decodes to 10,000 pixels \(at 100x100\), over the limit of 5,000"):
        clean_image(encode(photo, "JPEG"), 64, max_pixels=5000)  # a larger square: decoded at 1/2
    with pytest.raises(ImageError, match=r"200x200 decodes to 40,000 pixels, over the limit of 5,000"):
        clean_image(encode(photo, "JPEG", progressive=True), 16, max_pixels=5000)  # its scans are held whole at any scale


def test_build_clean_cache_counts_skipped_files_and_reuses_the_cache(tmp_path: Path, monkeypatch):
    source = tmp_path / "images"
    source.mkdir()
    good = {
        "rgb": encode(Image.new("RGB", (60, 30), (200, 10, 10)), "JPEG"),
        "rgba": encode(Image.new("RGBA", (30, 30), (0, 0, 255, 100)), "PNG"),
        "copy": encode(Image.new("RGB", (60, 30), (200, 10, 10)), "JPEG"),
        "cmyk": encode(Image.new("CMYK", (30, 30), (0, 0, 0, 0)), "JPEG"),
    }
    bad = {
        "truncated": noisy_jpeg()[:1500],
        "empty": b"",
        "text": b"hello",
        "bomb": png_claiming(30000, 30000),
    }
    for image_id, content in {**good, **bad}.items():
        (source / f"{image_id}.jpg").write_bytes(content)
    (source / "folder.jpg").mkdir()  # there, but not a file (as a FIFO): not "missing"
    ids = [*good, *bad, "missing", "folder", "rgb"]  # an id listed twice must not race with itself
    cache = tmp_path / "cache"

    digests, skipped = build_clean_cache(ids, source, cache, 32, max_pixels=1_000_000, workers=2)

    assert set(digests) == set(good)
    assert digests["rgb"] == digests["copy"] and digests["rgb"] != digests["rgba"]
    assert skipped == {"truncated": "truncated", "empty": "empty", "text": "not_an_image", "bomb": "too_large", "missing": "missing", "folder": "not_a_file"}
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{i}.jpg" for i in good)  # no .tmp left behind
    for image_id in good:
        with Image.open(cache / f"{image_id}.jpg") as cached:
            assert cached.format == "JPEG" and cached.mode == "RGB" and cached.size == (32, 32)

    cleaned_again: list[str] = []

    def recording_stored_form(path, size, max_pixels):
        cleaned_again.append(Path(path).stem)
        return stored_form(path, size, max_pixels)

    monkeypatch.setattr("listings.images.stored_form", recording_stored_form)
    (source / "copy.jpg").unlink()  # a source that has gone is missing, cached or not
    digests_again, skipped_again = build_clean_cache(ids, source, cache, 32, max_pixels=1_000_000, workers=2)
    assert set(cleaned_again) == {"truncated", "empty", "text", "bomb"}  # cached images are not cleaned again
    assert digests_again == {k: v for k, v in digests.items() if k != "copy"}
    assert skipped_again == {**skipped, "copy": "missing"}

    # a lower pixel limit checks the cached photos again: the 60x30 ones are now over it
    cleaned_again.clear()
    digests_lower, skipped_lower = build_clean_cache(ids, source, cache, 32, max_pixels=1_000, workers=2)
    assert set(cleaned_again) == {"truncated", "empty", "text", "bomb", "rgb", "rgba", "cmyk"}
    assert set(digests_lower) == {"rgba", "cmyk"} and skipped_lower["rgb"] == "too_large"


def test_a_fresh_photo_is_cleaned_into_the_pixels_the_cache_holds(tmp_path):
    """Serving (`clean_photo`) and training (the cleaned-image cache) see the same pixels."""
    source = tmp_path / "src"
    source.mkdir()
    Image.effect_noise((300, 180), 80).convert("RGB").save(source / "noisy.jpg", quality=90)
    build_clean_cache(["noisy"], source, tmp_path / "cache", 64, 40_000_000, workers=1)
    cached = np.asarray(clean_image(tmp_path / "cache" / "noisy.jpg", 64))
    fresh = np.asarray(clean_photo(source / "noisy.jpg", 64))
    assert np.array_equal(fresh, cached)
    assert not np.array_equal(np.asarray(clean_image(source / "noisy.jpg", 64)), cached)  # the JPEG step matters


def test_a_photo_already_clean_is_kept_byte_for_byte_and_served_as_cached(tmp_path):
    """An RGB JPEG at the size with no metadata (every dataset photo) is stored as sent: no second,
    lossy encoding, and serving decodes the very bytes the cache holds."""
    source = tmp_path / "src"
    source.mkdir()
    sent = encode(Image.effect_noise((SIZE, SIZE), 80).convert("RGB"), "JPEG", quality=80)
    (source / "clean.jpg").write_bytes(sent)
    build_clean_cache(["clean"], source, tmp_path / "cache", SIZE, 40_000_000, workers=1)
    assert (tmp_path / "cache" / "clean.jpg").read_bytes() == sent

    photo = clean_photo(io.BytesIO(sent), SIZE)
    assert photo.info[STORED_JPEG] == sent
    assert np.array_equal(np.asarray(photo), np.asarray(clean_image(tmp_path / "cache" / "clean.jpg", SIZE)))
    assert np.array_equal(np.asarray(photo), np.asarray(Image.open(io.BytesIO(sent)).convert("RGB")))


@pytest.mark.parametrize("metadata", ["exif", "icc_profile", "comment"])
def test_a_photo_with_metadata_is_cleaned_and_encoded_again(metadata):
    """Metadata could turn the photo (EXIF orientation) or leak from the photo store (location, notes): re-encoded."""
    image = Image.effect_noise((SIZE, SIZE), 80).convert("RGB")
    image.paste((255, 0, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    params = {"exif": {"exif": exif}, "icc_profile": {"icc_profile": b"not really a profile"}, "comment": {"comment": b"note"}}
    sent = encode(image, "JPEG", **params[metadata])
    encoded, pixels = stored_form(sent, SIZE)
    assert pixels is None and encoded != sent
    with Image.open(io.BytesIO(encoded)) as stored:
        assert {"exif", "icc_profile", "comment"}.isdisjoint(stored.info)
        turned = metadata == "exif"  # the top-left corner is displayed at the top right
        assert close(pixel(stored.convert("RGB"), SIZE - 4 if turned else 3, 3), (255, 0, 0), 40)


@pytest.mark.parametrize(
    "smuggled",
    [
        lambda jpeg: jpeg[:2] + b"\xff\xe4" + (2 + 26).to_bytes(2, "big") + b"GPS 51.5007,-0.1246 home.." + jpeg[2:],  # an APP4 segment
        lambda jpeg: jpeg + b"<html><script>alert(document.domain)</script>",  # bytes after the end of the image
        lambda jpeg: jpeg[:-2] + b"\xff\xfe\x00\x06note\xff\xd9",  # a comment after the scans
    ],
    ids=["application-segment", "after-the-end", "comment-after-the-scans"],
)
def test_what_pillow_skips_in_a_photo_is_not_stored_as_sent(smuggled):
    """Pillow reads these files as plain RGB JPEGs; the bytes a seller hid in them must not reach
    the photo store, which serves its files as they are."""
    sent = smuggled(encode(Image.effect_noise((SIZE, SIZE), 80).convert("RGB"), "JPEG", quality=80))
    with Image.open(io.BytesIO(sent)) as opened:
        assert opened.size == (SIZE, SIZE) and set(opened.info) <= {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi"}
    encoded, pixels = stored_form(sent, SIZE)
    assert pixels is None and encoded != sent
    assert not any(secret in encoded for secret in (b"GPS", b"script", b"note"))


def test_a_truncated_photo_in_the_clean_form_is_refused():
    sent = encode(Image.effect_noise((SIZE, SIZE), 80).convert("RGB"), "JPEG")
    with pytest.raises(ImageError) as refused:
        clean_photo(sent[: len(sent) // 2], SIZE)
    assert refused.value.reason == "truncated"


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_with_the_same_look():
    """libjpeg's DCT scaling (1/8 here) instead of a full decode: the same picture within a level on
    average, and the same function for the cache and for serving."""
    photo = Image.effect_noise((64, 48), 60).convert("RGB").resize((1024, 768), Image.Resampling.BICUBIC)
    photo.paste((255, 0, 0), (0, 0, 512, 768))  # left half red
    sent = encode(photo, "JPEG", quality=95)
    cleaned = clean_image(sent, SIZE)

    reduced = Image.open(io.BytesIO(sent))
    reduced.draft("RGB", (SIZE, SIZE * 3 // 4))
    reduced.load()
    assert reduced.size == (128, 96)
    assert np.array_equal(np.asarray(cleaned), np.asarray(letterbox(reduced, SIZE)))  # what the cleaning decodes
    full = Image.open(io.BytesIO(sent)).convert("RGB").resize((SIZE, SIZE * 3 // 4), Image.Resampling.BICUBIC)
    letterboxed = np.asarray(cleaned, dtype=float)[8:56]
    assert np.abs(letterboxed - np.asarray(full, dtype=float)).mean() < 2.0
    assert close(pixel(cleaned, 10, 32), (255, 0, 0), 20)
    assert np.array_equal(np.asarray(clean_photo(sent, SIZE)), np.asarray(Image.open(io.BytesIO(stored_form(sent, SIZE)[0])).convert("RGB")))
