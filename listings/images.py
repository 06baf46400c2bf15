"""Image cleaning: any file a seller uploads → an RGB, letterboxed square, or a clear reason why not.

`clean_image` is the one implementation of cleaning; `stored_form` is what the cleaned-image cache
keeps of a photo (written once by `fbm prepare`), and `clean_photo` gives a new photo's pixels as
that cache would hold them, for evaluation on new data and for the API.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from listings.config import DataConfig
from listings.data import photo_path

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not half a picture
LETTERBOX_FILL = (0, 0, 0)  # the dataset's photos are letterboxed on black
JPEG_QUALITY = 95
# what Pillow reports of a JPEG that holds pixels only (its JFIF header and progressive scans)
PLAIN_JPEG_INFO = {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "progressive", "progression"}
# the JPEG segments that code pixels: frames and Huffman or arithmetic tables (0xC0–0xCF), scans,
# quantisation tables, the restart interval; the JFIF header (APP0) is checked apart
_PIXEL_SEGMENTS = frozenset(range(0xC0, 0xD0)) | {0xDA, 0xDB, 0xDD}
STORED_JPEG = "fbm.stored_jpeg"  # `clean_photo`'s info key for the encoding its pixels were decoded from
# The formats photos come in. Pillow reads forty more, some of which decode everything on opening
# (an ICO holding a 9000×9000 PNG: 320 MB before the pixel limit is checked) or run an outside
# program (EPS: Ghostscript); none is a photo a marketplace seller uploads.
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
# Formats a file sent as a photo is sometimes in, known by its first bytes, so that a refusal names
# what was sent (an iPhone's HEIC photo) rather than calling it not an image. Never opened.
_REFUSED_FORMATS = (
    (re.compile(rb"^....ftyp(heic|heix|hevc|hevx|heim|heis|mif1|msf1)", re.S), "a HEIC/HEIF photo (an iPhone's own format)"),
    (re.compile(rb"^\x00\x00\x01\x00"), "an ICO icon"),
    (re.compile(rb"^%PDF-"), "a PDF document"),
    (re.compile(rb"^(%!PS|\xc5\xd0\xd3\xc6)"), "a PostScript (EPS) file"),
    # possessive and atomic: a comment matched is never split again, so no input backtracks
    (re.compile(rb"^(?:\xef\xbb\xbf)?\s*+(?:<\?xml[^>]*+>\s*+)?(?:(?><!--.*?-->)\s*+|<!DOCTYPE svg[^>\[]*+(?:\[[^\]]*+\])?\s*+>\s*+)*+<svg", re.S | re.I), "an SVG drawing"),
    (re.compile(rb"^(\x00\x00\x00\x0cjP  \r\n\x87\n|\xffO\xffQ)"), "a JPEG 2000 image"),
    (re.compile(rb"^(\x00\x00\x00\x0cJXL \r\n\x87\n|\xff\x0a)"), "a JPEG XL image"),
    (re.compile(rb"^8BPS"), "a Photoshop (PSD) file"),
    (re.compile(rb"^P[1-7]\s++(?:#[^\n]*+\n\s*+)*+\d"), "a Netpbm (PBM/PGM/PPM) image"),
)
_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I", "F")  # grey modes of more than 8 bits a sample
_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(ValueError):
    """An image that cannot be cleaned; `reason` is a short machine-readable word (the key of
    summaries), the message says it in words."""

    WORDS = {
        "missing": "no such file",
        "not_a_file": "not a file",
        "empty": "empty file",
        "not_an_image": "not an image",
        "unaccepted_format": "a format not accepted",
        "too_large": "too large",
        "truncated": "truncated or corrupt",
    }

    @classmethod
    def in_words(cls, counts: dict[str, int]) -> dict[str, int]:
        """Counts by reason, each reason in words (`not_an_image` → `not an image`)."""
        return {cls.WORDS.get(reason, reason): count for reason, count in counts.items()}

    def __init__(self, reason: str, detail: str = ""):
        words = self.WORDS[reason]
        super().__init__(f"{words}: {detail}" if detail else words)
        self.reason = reason


Source = str | Path | bytes | BinaryIO


MAX_PIXELS = DataConfig.max_image_pixels  # the default of `data.max_image_pixels`


def clean_image(source: Source, size: int, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open, validate and normalise one image: EXIF-upright, RGB, letterboxed to `size`×`size`.

    Raises ImageError with reason missing | not_a_file | empty | not_an_image | unaccepted_format | too_large | truncated.
    """
    return _cleaned(_open(_read(source), max_pixels, size), size)


def _cleaned(image: Image.Image, size: int) -> Image.Image:
    """`clean_image` of an opened image, which it closes."""
    try:
        _load(image)
        return letterbox(to_rgb(upright(_reduced(image, size))), size)
    finally:
        image.close()


def _reduced(image: Image.Image, size: int) -> Image.Image:
    """A photo over four times the square's side box-averaged down by a whole factor (to at least
    twice the side, as `_decode_reduced` has a large JPEG decoded) before it is converted: each
    conversion then copies a fraction of its pixels. Converted whole, a 16-bit greyscale PNG of 40
    megapixels (77 KB of file) took 0.98 GB to clean, an RGBA one 0.76 GB. The image's `info`
    (its EXIF orientation) is kept."""
    factor = max(image.size) // (2 * size)
    if factor < 2:
        return image
    reduced = _eight_bit_samples(image).reduce(factor)
    reduced.info = dict(image.info)
    return reduced


def _eight_bit_samples(image: Image.Image) -> Image.Image:
    """A palette, 1-bit or high-depth photo in a mode of 8-bit samples (RGB(A) or L), as `reduce`
    and the conversion to RGB take it; any other as it is."""
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "1":
        return image.convert("L")
    if image.mode in _HIGH_DEPTH:
        return _eight_bit(image)
    return image


def _eight_bit(image: Image.Image) -> Image.Image:
    """High-depth grey (16-bit, 32-bit integer or float samples) as 8-bit grey, a block of rows at
    a time (a float copy of a whole 40-megapixel photo is 320 MB). 16-bit samples span 0..65535;
    kept in I or F they may also be plain 8-bit values."""
    array = np.asarray(image)
    finite = array[np.isfinite(array)] if image.mode == "F" else array  # one inf must not darken the photo
    peak = 65535.0 if image.mode.startswith("I;16") or (finite.size and finite.max() > 255) else 255.0
    grey = np.empty(array.shape, np.uint8)
    rows = max(1, 1_000_000 // max(1, array.shape[1]))
    for start in range(0, array.shape[0], rows):
        block = np.nan_to_num(array[start : start + rows] * (255.0 / peak))
        grey[start : start + rows] = block.round().clip(0, 255)
    return Image.fromarray(grey)


def _decode_reduced(image: Image.Image, size: int) -> None:
    """Let a large JPEG decode straight at 1/2, 1/4 or 1/8 of its size, the smallest that still
    covers the letterboxed square (libjpeg's DCT scaling): a 12-megapixel phone photo cleans in
    15–33 ms instead of 170, at a mean difference of 0.14 levels from decoding it whole. Other
    formats, and photos under twice the square's side, decode whole."""
    width, height = image.size
    scale = size / max(width, height)
    if image.format == "JPEG" and scale < 0.5:
        image.draft(image.mode, (max(1, round(width * scale)), max(1, round(height * scale))))


def _load(image: Image.Image) -> None:
    """Decode the pixels; a truncated or corrupt file is an ImageError, and the image is closed."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        image.close()
        raise ImageError("truncated", str(exc)) from exc


def clean_photo(source: Source, size: int, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A new photo cleaned into exactly the pixels the cleaned-image cache holds for it
    (`stored_form`): serving and evaluation see what training saw. The encoding rides along in
    `info[STORED_JPEG]`, so storing the photo writes these bytes, not a second encoding."""
    encoded, photo = stored_form(source, size, max_pixels)
    if photo is None:
        photo = Image.open(io.BytesIO(encoded))  # an RGB JPEG, decoded into memory by load(): no copy to convert
        photo.load()
    photo.info[STORED_JPEG] = encoded
    return photo


def stored_form(source: Source, size: int, max_pixels: int = MAX_PIXELS) -> tuple[bytes, Image.Image | None]:
    """(the bytes the cleaned-image cache holds for a photo, their decoded pixels when already at hand).

    A photo that is already clean, an RGB JPEG at `size`×`size` with no metadata (no EXIF, so
    upright as stored; the dataset's photos are all like this), is kept byte for byte and its
    decoded pixels come back with it; any other is cleaned by `clean_image` and encoded as JPEG
    (`stored_jpeg`), without decoding that encoding here. Raises ImageError like `clean_image`.
    """
    data = _read(source)
    image = _open(data, max_pixels, size)
    if not _already_clean(image, data, size):
        return stored_jpeg(_cleaned(image, size)), None
    _load(image)
    return data, image


def stored_jpeg(image: Image.Image) -> bytes:
    """The encoding of a cleaned photo in the cache (and in the API's photo store): pixels only.
    (Pillow would copy a JPEG comment it decoded; EXIF and colour profiles it drops unless asked.)"""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, comment=b"")
    return buffer.getvalue()


def upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation. A photo whose EXIF block is corrupt is kept as stored.

    Unlike `ImageOps.exif_transpose` this never rewrites the EXIF, which raises on corrupt tags.
    """
    try:
        fix = _ORIENTATION_FIX.get(int(image.getexif().get(ExifTags.Base.Orientation, 1)))
    except Exception:  # corrupt EXIF fails in many ways (SyntaxError, struct.error, TypeError, ...)
        fix = None
    return image.transpose(fix) if fix is not None else image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB; transparency is composited on white."""
    image = _eight_bit_samples(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def letterbox(image: Image.Image, size: int) -> Image.Image:
    """Scale the longer side to `size` and pad the shorter one, keeping the aspect ratio (an RGB image
    already `size`×`size`, like the dataset's photos, is copied once: resizing it to its own size and
    pasting it whole would give the same pixels)."""
    width, height = image.size
    if (width, height) == (size, size) and image.mode == "RGB":
        return image.copy()
    scale = size / max(width, height)
    resized = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), LETTERBOX_FILL)
    canvas.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return canvas


def _already_clean(image: Image.Image, data: bytes, size: int) -> bool:
    """Whether `clean_image` would give this photo's decoded pixels unchanged, and its file `data`
    carries nothing but pixels (no EXIF, colour profile or comment to store or serve on)."""
    return (
        image.format == "JPEG"
        and image.mode == "RGB"
        and image.size == (size, size)
        and set(image.info) <= PLAIN_JPEG_INFO
        and _jpeg_holds_pixels_only(data)
    )


def _jpeg_holds_pixels_only(data: bytes) -> bool:
    """Whether a JPEG file is made of the segments that code its pixels (a JFIF header, tables,
    frame and scans) and nothing else: Pillow skips the application segments it does not know and
    the bytes after the end marker, where a seller's file can carry anything (a location, a page)."""
    if not data.startswith(b"\xff\xd8"):
        return False
    position, end = 2, len(data)
    while position + 1 < end and data[position] == 0xFF:
        while position < end and data[position] == 0xFF:  # fill bytes may precede a marker
            position += 1
        if position >= end:
            return False
        marker = data[position]
        position += 1
        if marker == 0xD9:  # the end of the image, which must end the file
            return position == end
        length = int.from_bytes(data[position : position + 2], "big")
        if length < 2 or position + length > end:
            return False
        segment = data[position + 2 : position + length]
        if not (marker in _PIXEL_SEGMENTS or (marker == 0xE0 and segment.startswith(b"JFIF\0"))):
            return False
        position += length
        if marker == 0xDA:  # a scan's coded data runs to the next marker that is not a stuffed zero or a restart
            position = _end_of_scan(data, position)
    return False


def _end_of_scan(data: bytes, position: int) -> int:
    while (position := data.find(b"\xff", position)) >= 0 and position + 1 < len(data):
        following = data[position + 1]
        if following == 0xFF:
            position += 1
        elif following == 0x00 or 0xD0 <= following <= 0xD7:
            position += 2
        else:
            return position
    return len(data)


def require_file(path: Path) -> None:
    """ImageError "missing" when nothing is at `path`, "not_a_file" when a folder or a FIFO is."""
    if not path.is_file():
        raise ImageError("not_a_file" if path.exists() else "missing", str(path))


def _read(source: Source) -> bytes:
    """The whole file (a photo kept as it is is stored byte for byte); ImageError when missing or empty."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        require_file(path)
        data = path.read_bytes()
        where = str(path)
    else:
        data = source if isinstance(source, bytes) else source.read()
        where = ""
    if not data:
        raise ImageError("empty", where)
    return data


def _open(data: bytes, max_pixels: int, size: int) -> Image.Image:
    """The image in `data`, header read, pixels not yet decoded (a large JPEG set to decode at a
    reduced scale for a `size` square); ImageError for what cannot be one, or whose pixels decoded
    would be over `max_pixels`: a 48-megapixel phone JPEG decodes at 1/8 of its sides, 0.8 megapixels.
    A progressive JPEG is held to its full size: libjpeg keeps every coefficient of its scans
    whatever the scale (a 169-megapixel one of 3 MB took 1 GB to decode at 1/8)."""
    stream = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit, on the pixels decoded, follows
            image = Image.open(stream, formats=PHOTO_FORMATS)
    except Image.DecompressionBombError as exc:  # Pillow's hard limit, twice its warning's
        raise ImageError("too_large", f"its header declares more than {min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS)} pixels") from exc
    except UnidentifiedImageError as exc:  # its message names the stream object, not the file
        accepted = f"the accepted formats are {', '.join(PHOTO_FORMATS)}"
        sent = next((name for pattern, name in _REFUSED_FORMATS if pattern.match(data, 0, 4096)), None)
        raise ImageError("unaccepted_format", f"{sent}; {accepted}") if sent else ImageError("not_an_image", accepted) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("not_an_image", str(exc)) from exc
    width, height = image.size
    try:
        if width == 0 or height == 0:
            raise ImageError("not_an_image", "zero-sized image")
        if not (image.info.get("progressive") or image.info.get("progression")):
            _decode_reduced(image, size)
        decoded = image.size[0] * image.size[1]
        if decoded > max_pixels:
            at = "" if image.size == (width, height) else f" (at {image.size[0]}x{image.size[1]})"
            raise ImageError("too_large", f"{width}x{height} decodes to {decoded:,} pixels{at}, over the limit of {max_pixels:,} (data.max_image_pixels)")
    except ImageError:
        image.close()
        raise
    return image


def file_digest(path: Path) -> str:
    """Content hash of a source file, used to find photos that appear under several ids."""
    return hashlib.sha1(path.read_bytes()).hexdigest()


def build_clean_cache(
    image_ids: list[str],
    source_dir: Path,
    cache_dir: Path,
    size: int,
    max_pixels: int,
    workers: int = 2,
) -> tuple[dict[str, str], dict[str, str]]:
    """Write `<cache_dir>/<id>.jpg` (`stored_form`) for every image not cached yet, or cached from
    another source file (a photo replaced under the same id) or under another pixel limit (a limit
    lowered refuses photos it had let in): `<cache_dir>.sources.json`, beside the photos, keeps the
    digest of the source each was cleaned from and the limit it was cleaned under.

    Returns (digests of the usable images' sources, reasons for the skipped ones), both keyed by
    image id. An image whose source file has gone is skipped as missing even when a cleaned copy is cached.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    image_ids = list(dict.fromkeys(image_ids))  # one worker per id: two would race on the same file
    sources_path = cache_dir.with_name(cache_dir.name + ".sources.json")
    cleaned_from = json.loads(sources_path.read_text()) if sources_path.is_file() else {}

    def cleaned_under(digest: str) -> str:
        return f"{digest} max_pixels={max_pixels}"

    def one(image_id: str) -> tuple[str, str | None, str | None]:
        source = photo_path(source_dir, image_id)
        target = photo_path(cache_dir, image_id)
        try:
            require_file(source)
            digest = file_digest(source)
            if not target.exists() or cleaned_from.get(image_id) != cleaned_under(digest):
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(stored_form(source, size, max_pixels)[0])
                tmp.replace(target)
            return image_id, digest, None
        except ImageError as exc:
            return image_id, None, exc.reason

    digests: dict[str, str] = {}
    skipped: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for image_id, digest, reason in tqdm(pool.map(one, image_ids), total=len(image_ids), desc="clean images", unit="img"):
            if reason is None:
                digests[image_id] = digest
            else:
                skipped[image_id] = reason
    tmp = sources_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cleaned_from | {image_id: cleaned_under(digest) for image_id, digest in digests.items()}))
    tmp.replace(sources_path)
    return digests, skipped
