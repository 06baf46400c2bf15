"""`listings.artifacts`: how artifacts are read, written and identified."""
from __future__ import annotations

import hashlib

from listings.artifacts import sha256_file


def test_sha256_file_hashes_the_whole_file(tmp_path):
    """Weights files are hundreds of MB: the digest (part of the feature-cache key) must cover every block."""
    data = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MB, several 1 MiB blocks
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    changed = tmp_path / "w2.bin"
    changed.write_bytes(data[:-1] + b"\x00")  # differs only in the last block
    assert sha256_file(changed) != sha256_file(path)
