"""`listings.artifacts`: how artifacts are read, written and identified."""
from __future__ import annotations

import errno
import hashlib
import os

import pandas as pd
import pytest

from listings.artifacts import sha256_file
from listings.data import write_jsonl


def test_sha256_file_hashes_the_whole_file(tmp_path):
    """Weights files are hundreds of MB: the digest (part of the feature-cache key) must cover every block."""
    data = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MB, several 1 MiB blocks
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    changed = tmp_path / "w2.bin"
    changed.write_bytes(data[:-1] + b"\x00")  # differs only in the last block
    assert sha256_file(changed) != sha256_file(path)



def test_a_write_the_disk_refuses_keeps_the_old_file_leaves_no_temporary_and_names_the_file(tmp_path, monkeypatch):
    """`fbm prepare` on a full disk said only "[Errno 28] No space left on device" and left
    listings.jsonl.tmp behind, taking the space it had."""
    path = tmp_path / "data" / "listings.jsonl"
    write_jsonl(pd.DataFrame({"product_id": ["a"]}), path)
    real_open = open

    class DiskFull:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr("builtins.open", lambda file, mode="r", *a, **k: DiskFull(real_open(file, mode, *a, **k)) if "w" in mode else real_open(file, mode, *a, **k))
    with pytest.raises(OSError, match=r"No space left on device: '.*listings\.jsonl'"):
        write_jsonl(pd.DataFrame({"product_id": ["b"] * 1000}), path)
    monkeypatch.undo()
    assert path.read_text() == '{"product_id": "a"}\n' and [p.name for p in path.parent.iterdir()] == ["listings.jsonl"]
