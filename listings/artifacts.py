"""Reading the artifacts the stages write: a missing or broken file is one error that names it;
and writing a file whole or not at all (`write_atomic`).

Weights are loaded with `torch.load(weights_only=True)`: plain tensors only, never unpickled objects.
`command` is what rewrites the file, so the message says how to mend it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from listings.config import Config

# what every training stage writes beside its model: its curves per epoch and a JSON summary
CURVES_FILE = "curves.png"
SUMMARY_FILE = "summary.json"


def temporary_path(path: Path) -> Path:
    """A temporary name for a new version of `path`, this process's and thread's own: two writers
    never write into one file, and a dead process's leftovers can be told apart by its id."""
    return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `path` whole or not at all (`replace_atomically`)."""
    encoded = data.encode("utf-8") if isinstance(data, str) else data

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            handle.write(encoded)

    replace_atomically(path, write)


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write` a new version of `path` into a temporary file, flush it to disk, then rename it over
    `path` and flush the rename. A reader never sees half a file, a crash leaves the old one, and a
    write that fails (a full disk, a read-only one) leaves no temporary behind and names the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a full disk's error names no file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def require_files(paths: Iterable[Path], command: str) -> None:
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found: run `{command}` first")


def read_json(path: Path, command: str) -> Any:
    require_files([path], command)
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not valid JSON ({first_line(exc)}): rerun `{command}`") from exc


def load_weights(path: Path, command: str) -> dict:
    """A state_dict of plain tensors; whatever a broken file raises, the answer is the same: name it."""
    import torch

    require_files([path], command)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable file of plain tensors ({first_line(exc)}): rerun `{command}`") from exc


def first_line(exc: Exception) -> str:
    """The gist of a loader's error on one line: torch's own reason rather than its advice around it."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    reason = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    text = (reason.group(1) if reason else text).strip()
    return re.split(r"(?<=\.)\s|\n", text, maxsplit=1)[0][:200] or type(exc).__name__


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's content, read in blocks (weights files are hundreds of MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hold_lock(path: Path, exclusive: bool, busy: Exception) -> int:
    """A descriptor holding a lock on `path` (made if missing), never waited for: raises `busy`
    when another process holds one that conflicts. Closing the descriptor, or the process ending,
    releases it."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise busy from None
    return descriptor


def require_trained(config: "Config") -> None:
    """A FileNotFoundError saying what to do when nothing at all is trained in the artifacts folder
    (a new Docker volume, a mistyped FBM_ARTIFACTS or --artifacts), rather than naming the first
    missing file of one stage (`run fbm train combined first`, where every stage is missing)."""
    paths = config.paths
    if paths.root.is_file():
        raise NotADirectoryError(f"{paths.root} is a file: give the artifacts directory (--artifacts or FBM_ARTIFACTS), the folder `fbm train` writes")
    if not any(path.exists() for path in (paths.image_model, paths.text_model, paths.combined_model, paths.index)):
        raise FileNotFoundError(
            f"no trained models in {paths.root}: build them with `make run` (or `fbm train all`, then `fbm index`) where the "
            "dataset is, into this folder (for Docker, the folder mounted at /artifacts)"
        )
