"""Shared by the reliability tests: servers in their own processes on loopback, health polling, RSS.

Every wait here is bounded; every process started here is stopped by the test that started it.
"""
from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import httpx2

from listings.config import REPO_ROOT

TESTS_DIR = Path(__file__).resolve().parent.parent
MODEL_DIRS = ("image_model", "text_model", "combined_model", "index")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a server started by a test: one thread each for the math libraries."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def fbm_command() -> list[str]:
    """The installed `fbm` console script of this interpreter's environment, else its module."""
    script = Path(sys.executable).with_name("fbm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "scripts.cli"]


def copy_model_artifacts(source: Path, target: Path) -> Path:
    """What `fbm serve` reads (the three models and the index), copied so a test may break or write them."""
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_DIRS:
        shutil.copytree(Path(source) / name, target / name)
    return target


def start_fbm_serve(artifacts: Path, port: int, api_key: str, log_dir: Path, name: str = "serve") -> subprocess.Popen:
    """The real `fbm serve` on 127.0.0.1:`port`, its output in `log_dir`/`name`.{out,err}."""
    command = [*fbm_command(), "serve", "--artifacts", str(artifacts), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--set", "serve.torch_threads=1"]
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.out", "wb") as out, open(log_dir / f"{name}.err", "wb") as err:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=child_env(FBM_API_KEY=api_key), stdin=subprocess.DEVNULL, stdout=out, stderr=err)


def wait_healthy(base_url: str, process: subprocess.Popen | None = None, timeout_s: float = 120.0) -> dict:
    """Poll GET /health until it answers 200; fails when the process exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode} before it was healthy ({last})")
        try:
            response = httpx2.get(f"{base_url}/health", timeout=5)
            if response.status_code == 200:
                return response.json()
            last = f"{response.status_code} {response.text[:200]}"
        except httpx2.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise AssertionError(f"{base_url} was not healthy within {timeout_s:.0f} s ({last})")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
    """Signal a process started by this test and wait for it; SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)
    return process.returncode


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def index_files(index_dir: Path) -> tuple[Path, Path]:
    """The live build's SQLite database and FAISS file."""
    build_id = (Path(index_dir) / "CURRENT").read_text().strip()
    return Path(index_dir) / f"listings-{build_id}.sqlite", Path(index_dir) / f"vectors-{build_id}.faiss"


def sqlite_product_ids(db_path: Path) -> set[str]:
    """Product ids in an index database, leaving its files untouched.

    After a SIGKILL a hot rollback journal (or a write-ahead log) can hold what only a writable
    connection may settle: the journal undoes a commit the kill cut short, whose pages may already
    be in the database file (a `mode=ro` connection fails with "attempt to write a readonly
    database"; a copy without its journal would count the uncommitted listing). So the database
    is read from a copy that carries its journal or log, and is settled there."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / db_path.name
        for suffix in ("", "-journal", "-wal"):
            if Path(f"{db_path}{suffix}").exists():
                shutil.copyfile(f"{db_path}{suffix}", f"{copy}{suffix}")
        with sqlite3.connect(copy) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            ids = {product_id for (product_id,) in db.execute("SELECT product_id FROM listings")}
            vectors = db.execute("SELECT count(*) FROM vectors").fetchone()[0]
        db.close()
    assert vectors == len(ids), f"{db_path}: {len(ids)} listings but {vectors} vectors"
    return ids


class OpenOnUnpickle:
    """A pickle payload: unpickling it calls open(marker, "w"), so the marker file exists only if it ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickle_payload(weights: Path, marker: Path) -> Path:
    """Rewrite a model.pt as an attacker would: its real tensors, with a code-running object placed first."""
    import collections

    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    torch.save(collections.OrderedDict([("payload", OpenOnUnpickle(marker)), *state.items()]), weights)
    return weights


def unpickle_like_an_unsafe_loader(weights: Path) -> None:
    """Unpickle a model.pt's data.pkl with plain pickle (tensors not restored): its payload, placed
    first, runs before anything can fail. Proves a planted payload is live; never used on real input."""
    import io
    import pickle
    import zipfile

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid):
            return None

    with zipfile.ZipFile(weights) as archive:
        data = archive.read(next(name for name in archive.namelist() if name.endswith("/data.pkl")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the file object the payload opened
        try:
            Unpickler(io.BytesIO(data)).load()
        except Exception:  # noqa: BLE001 - the tensors cannot be rebuilt without their storages
            pass
        gc.collect()
