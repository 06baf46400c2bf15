"""Faults: the server killed in the middle of listing writes, and broken artifacts at start-up.

Both run the real serving stack over the tiny trained pipeline (`trained_pipeline`), on copies of
its artifacts: `fbm serve` as a process of its own for the kill, and `fbm serve`'s own code path
(in this process, with uvicorn replaced so nothing could start serving) for the many broken-file
cases, plus two of them as real `fbm serve` processes to check what a person sees: the exit code
and one line on stderr naming the file, without a traceback.
"""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import faiss
import httpx2
import numpy as np
import pytest

import api.server
from listings.config import IndexConfig
from reliability_helpers import (
    copy_model_artifacts,
    free_port,
    index_files,
    plant_pickle_payload,
    sqlite_product_ids,
    start_fbm_serve,
    stop,
    wait_healthy,
)
from retrieval.index import ListingIndex
from retrieval.vectors import listing_vectors
from scripts.cli import main

KEY = "fault-key"
WRITERS = 4
ACKS_BEFORE_KILL = 16
WRITE_DEADLINE_S = 90.0


@pytest.fixture
def artifacts(trained_pipeline, tmp_path) -> Path:
    config, _ = trained_pipeline
    return copy_model_artifacts(Path(config.data.artifacts_dir), tmp_path / "artifacts")


@pytest.fixture
def unseen_photos(trained_pipeline) -> list[bytes]:
    _, unseen = trained_pipeline
    return [path.read_bytes() for path in sorted((unseen / "images").glob("*.jpg"))[:6]]


# --- the server killed during listing writes ---------------------------------------------------


def test_sigkill_during_listing_writes_loses_no_acknowledged_listing(artifacts, unseen_photos, tmp_path):
    catalogue = sqlite_product_ids(index_files(artifacts / "index")[0])
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = start_fbm_serve(artifacts, port, KEY, tmp_path / "logs", "first")
    try:
        assert wait_healthy(base_url, server)["listings"] == len(catalogue)
        lock = threading.Lock()
        acked_adds: set[str] = set()
        acked_deletes: set[str] = set()
        tried_deletes: set[str] = set()  # an unanswered delete may or may not have happened
        cut: list[str] = []  # requests the kill cut off
        killed = threading.Event()
        stop_at = time.monotonic() + WRITE_DEADLINE_S

        def writer(me: int) -> None:
            rng = random.Random(me)
            mine: list[str] = []
            with httpx2.Client(base_url=base_url, timeout=30, headers={"X-API-Key": KEY}) as client:
                for n in range(500):
                    if time.monotonic() > stop_at:
                        return
                    try:
                        if mine and n % 4 == 3:  # now and then, delete one of this writer's listings
                            victim = mine.pop(rng.randrange(len(mine)))
                            with lock:
                                tried_deletes.add(victim)
                            deleted = client.delete(f"/listings/{victim}")
                            assert deleted.status_code == 200, f"delete of acknowledged {victim}: {deleted.text}"
                            with lock:
                                acked_deletes.add(victim)
                            continue
                        product_id = f"kill-{me}-{n}"
                        files = [("img", ("p.jpg", rng.choice(unseen_photos), "image/jpeg"))] if n % 2 else None
                        data = {"title": f"sturdy oak table {me} {n}", "price": str(n + 1), "product_id": product_id}
                        response = client.post("/listings", data=data, files=files)
                        assert response.status_code == 201, response.text
                        mine.append(product_id)
                        with lock:
                            acked_adds.add(product_id)
                    except httpx2.HTTPError as exc:
                        if not killed.is_set():
                            raise
                        with lock:
                            cut.append(type(exc).__name__)
                        return

        failures: list[BaseException] = []

        def guarded(me: int) -> None:
            try:
                writer(me)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(WRITERS)]
        for thread in threads:
            thread.start()
        while len(acked_adds) < ACKS_BEFORE_KILL and time.monotonic() < stop_at and not failures:
            time.sleep(0.02)
        killed.set()
        server.send_signal(signal.SIGKILL)  # mid-write: the writers are still sending
        server.wait(30)
        for thread in threads:
            thread.join(40)
        assert not [t for t in threads if t.is_alive()], "a writer hung after the kill"
        assert not failures, failures
        assert len(acked_adds) >= ACKS_BEFORE_KILL, "the server acknowledged too few writes before the deadline"
        assert cut, "no request was in flight when the server was killed: the kill did not interrupt writing"
    finally:
        stop(server, signal.SIGKILL)

    must_exist = acked_adds - tried_deletes
    db_path, faiss_path = index_files(artifacts / "index")
    in_db = sqlite_product_ids(db_path)  # from a copy: the restarted server is the one to reconcile
    assert must_exist <= in_db, f"acknowledged listings lost: {sorted(must_exist - in_db)}"
    assert catalogue <= in_db, "listings of the built index were lost"
    assert not acked_deletes & in_db, f"acknowledged deletes came back: {sorted(acked_deletes & in_db)}"
    in_faiss = faiss.read_index(str(faiss_path)).ntotal  # as the kill left it, before any reconciliation
    print(f"killed after {len(acked_adds)} acknowledged adds, {len(acked_deletes)} deletes, {len(cut)} requests cut; "
          f"SQLite holds {len(in_db)} listings, the FAISS file {in_faiss} vectors")

    restarted = start_fbm_serve(artifacts, port, KEY, tmp_path / "logs", "restarted")
    try:
        health = wait_healthy(base_url, restarted)
        assert health["listings"] == len(in_db), health
        assert health["index"]["faiss_vectors"] == len(in_db), health  # FAISS reconciled to SQLite
        with httpx2.Client(base_url=base_url, timeout=30, headers={"X-API-Key": KEY}) as client:
            sample = sorted(must_exist)[:3]
            for product_id in sample:  # the restarted server knows them: deleting one finds it
                assert client.delete(f"/listings/{product_id}").status_code == 200, product_id
            added = client.post("/listings", data={"title": "oak table added after the crash", "product_id": "after-crash"})
            assert added.status_code == 201, added.text
            assert client.post("/similar", data={"txt": "oak table", "k": "5"}).status_code == 200
        assert stop(restarted) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful exit
        assert "Application shutdown complete" in (tmp_path / "logs" / "restarted.err").read_text()
    finally:
        stop(restarted, signal.SIGKILL)

    expected = (in_db - set(sample)) | {"after-crash"}
    assert sqlite_product_ids(db_path) == expected
    with ListingIndex.open(artifacts / "index", IndexConfig()) as index:
        info = index.info()
        assert len(index) == info["faiss_vectors"] == len(expected) and info["tombstones"] == 0


_KILLED_MID_TRANSACTION = """
import os, signal, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE listings (product_id TEXT PRIMARY KEY)")
db.execute("CREATE TABLE vectors (faiss_id INTEGER PRIMARY KEY, vector BLOB)")
db.execute("INSERT INTO listings VALUES ('committed')")
db.execute("INSERT INTO vectors VALUES (1, x'00')")
db.commit()
db.execute("PRAGMA cache_size = 1")  # the open transaction spills its pages into the database file
db.execute("BEGIN")
db.executemany("INSERT INTO listings VALUES (?)", [(f"uncommitted-{i}",) for i in range(3)])
db.executemany("INSERT INTO vectors VALUES (?, ?)", [(i, os.urandom(3000)) for i in range(2, 400)])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_listing_count_after_a_kill_leaves_out_what_the_hot_journal_undoes(tmp_path):
    """The helper the kill test counts with must settle a hot journal, as the restarted server does."""
    db_path = tmp_path / "listings.sqlite"
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_TRANSACTION, str(db_path)], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert Path(f"{db_path}-journal").exists(), "no hot journal: the case this test is about did not arise"
    assert sqlite_product_ids(db_path) == {"committed"}


# --- broken artifacts at start-up --------------------------------------------------------------


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _remove(path: Path) -> Path:
    path.unlink()
    return path


def _bad_json(path: Path) -> Path:
    path.write_text('{"classes": ["unterminated')
    return path


def _faiss(artifacts: Path) -> Path:
    return index_files(artifacts / "index")[1]


def _sqlite(artifacts: Path) -> Path:
    return index_files(artifacts / "index")[0]


def _index_of_another_dimension(artifacts: Path) -> Path:
    """A healthy index whose vectors are 2×8-d: built for other models than the served ones."""
    rng = np.random.default_rng(0)
    n, half = 4, 8
    vectors = listing_vectors(rng.normal(size=(n, half)), np.ones(n), rng.normal(size=(n, half)), np.ones(n))
    rows = [{"product_id": f"p{i}", "title": f"t{i}", "category": "Appliances"} for i in range(n)]
    ListingIndex.build(artifacts / "index", vectors, rows, IndexConfig()).close()
    return _faiss(artifacts)


BROKEN = {
    "image model.pt truncated": lambda a: _truncate(a / "image_model" / "model.pt"),
    "text model.pt garbage": lambda a: _garbage(a / "text_model" / "model.pt"),
    "fusion model.pt garbage": lambda a: _garbage(a / "combined_model" / "model.pt"),
    "image model.json missing": lambda a: _remove(a / "image_model" / "model.json"),
    "image model.json not JSON": lambda a: _bad_json(a / "image_model" / "model.json"),
    "fusion model.json missing": lambda a: _remove(a / "combined_model" / "model.json"),
    "text vocab.json not JSON": lambda a: _bad_json(a / "text_model" / "vocab.json"),
    "FAISS file corrupt": lambda a: _garbage(_faiss(a)),
    "FAISS file missing": lambda a: _remove(_faiss(a)),
    "SQLite file corrupt": lambda a: _garbage(_sqlite(a)),
    "index CURRENT missing": lambda a: _remove(a / "index" / "CURRENT"),
    "index of another dimension": _index_of_another_dimension,
    "image model.pt with a pickle payload": lambda a: plant_pickle_payload(a / "image_model" / "model.pt", a.parent / f"{a.name}.PAYLOAD_RAN"),
}


def _check_one_clear_error(code: int, err: str, named: Path) -> None:
    assert code == 2, f"exit code {code}; stderr: {err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("fbm serve: error: "), f"not one error line: {err[-3000:]}"
    message = errors[0]
    assert str(named) in message, f"the message does not name {named}: {message}"
    assert len(message) < 600 and "\x1b" not in message, f"not a short plain message: {message!r}"


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_artifact_stops_start_up_with_one_message_naming_the_file(case, artifacts, monkeypatch, capfd):
    named = BROKEN[case](artifacts)

    def refuse_to_serve(*args, **kwargs):
        raise AssertionError("fbm serve started serving over a broken artifact")

    monkeypatch.setattr(api.server.uvicorn, "run", refuse_to_serve)
    code = main(["serve", "--artifacts", str(artifacts), "--host", "127.0.0.1", "--port", "1", "--set", "serve.torch_threads=1"])
    _check_one_clear_error(code, capfd.readouterr().err, named)
    assert not list(artifacts.parent.glob("*.PAYLOAD_RAN")), "a pickle payload ran"


def test_real_fbm_serve_exits_with_one_line_for_broken_artifacts(trained_pipeline, tmp_path):
    """Broken copies served by real `fbm serve` processes at once: what an operator sees."""
    config, _ = trained_pipeline
    cases = {"text model.pt garbage": None, "index of another dimension": None, "image model.pt with a pickle payload": None}
    processes = {}
    for number, case in enumerate(cases):
        artifacts = copy_model_artifacts(Path(config.data.artifacts_dir), tmp_path / f"artifacts-{number}")
        cases[case] = BROKEN[case](artifacts)
        processes[case] = start_fbm_serve(artifacts, free_port(), KEY, tmp_path / "logs", f"case-{number}")
    try:
        for number, (case, process) in enumerate(processes.items()):
            code = process.wait(120)
            _check_one_clear_error(code, (tmp_path / "logs" / f"case-{number}.err").read_text(), cases[case])
        assert not list(tmp_path.glob("*.PAYLOAD_RAN")), "a pickle payload ran in fbm serve"
    finally:
        for process in processes.values():
            stop(process, signal.SIGKILL)
