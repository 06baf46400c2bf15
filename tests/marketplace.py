"""Writing marketplace-format files in tests: `Products.csv` rows as the marketplace writes them, and small photos."""
from __future__ import annotations

import io

from PIL import Image

PRODUCTS_HEADER = ["Unnamed: 0", "id", "product_name", "category", "product_description", "price", "location"]


def csv_line(fields: list[str]) -> str:
    """One CSV row as the marketplace writes it: quoted only when needed, rows end in '\\n'."""
    out = []
    for value in fields:
        if any(c in value for c in ',"\r\n'):
            value = '"' + value.replace('"', '""') + '"'
        out.append(value)
    return ",".join(out) + "\n"


def image_bytes(color: tuple[int, ...], size: tuple[int, int] = (48, 32), mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()
