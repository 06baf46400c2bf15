"""Soak: concurrent mixed traffic against a live server, bounded in time and count.

The server (fake predictor, real `ListingIndex`, real uvicorn) runs in a process of its own, started
from `soak_server.py`, so that its VmRSS in /proc is the server's memory alone: measured in this
process it would also count the client threads, their connections and every response they hold.

Eight client threads mix valid /image /text /combined /similar requests, bad inputs and listing
adds/deletes for a fixed time; then every acknowledged add must be searchable, every acknowledged
delete gone, and after a clean shutdown the index on disk must hold exactly those listings.
"""
from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest

from reliability_helpers import child_env, index_files, rss_kib, sqlite_product_ids, wait_healthy
from listings.config import IndexConfig
from retrieval.index import ListingIndex
from test_api_fakes import CLASSES, COLOURS, catalogue_rows, jpeg_bytes, synthetic_photo

KEY = "soak-key"
THREADS = 8
WARM_UP_S = 6.0
SOAK_S = 16.0  # after the warm-up: about 22 s of load in all
MAX_REQUESTS_PER_THREAD = 5_000
CLIENT_TIMEOUT_S = 30.0
JOIN_TIMEOUT_S = WARM_UP_S + SOAK_S + 2 * CLIENT_TIMEOUT_S
RSS_GROWTH_LIMIT = 0.10

PHOTOS = [jpeg_bytes(synthetic_photo(colour, shape)) for colour in COLOURS for shape in ("circle", "square")]
WORDS = "oak pine chair table lamp kettle phone bench sofa drill bike toaster washer cable charger mirror".split()


@dataclass
class ThreadLog:
    statuses: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    live: dict[str, str] = field(default_factory=dict)  # product id -> title of its latest acknowledged add
    deleted: set[str] = field(default_factory=set)  # acknowledged deletes
    requests: int = 0


def unique_title(rng: random.Random) -> str:
    """Common words plus four random tokens: its hashed text embedding is, in practice, its own."""
    return " ".join([rng.choice(WORDS), rng.choice(WORDS)] + [f"q{rng.getrandbits(40):x}" for _ in range(4)])


def photo_part(rng: random.Random, count: int = 1, name: str = "photo.jpg") -> list:
    return [("img", (name, rng.choice(PHOTOS), "image/jpeg")) for _ in range(count)]


def request_for(kind: str, rng: random.Random, me: int, log: ThreadLog) -> tuple[dict, set[int]] | None:
    """One request of `kind` and the statuses it may get; None when the kind has nothing to do now."""
    text = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {rng.randint(1, 99)}"
    auth = {"X-API-Key": KEY}
    if kind == "image":
        return {"method": "POST", "url": "/image", "files": photo_part(rng, rng.randint(1, 3))}, {200}
    if kind == "text":
        return {"method": "POST", "url": "/text", "data": {"txt": text}}, {200}
    if kind == "combined":
        return {"method": "POST", "url": "/combined", "files": photo_part(rng), "data": {"txt": text}}, {200}
    if kind == "similar":
        data = {"txt": text, "k": str(rng.randint(1, 100))}
        if rng.random() < 0.3:
            data["category"] = rng.choice(CLASSES)
        if rng.random() < 0.3:
            data["min_price"], data["max_price"] = "5", str(rng.randint(5, 500))
        files = photo_part(rng) if rng.random() < 0.5 else None
        return {"method": "POST", "url": "/similar", "data": data, "files": files}, {200}
    if kind == "add":
        own = list(log.live)
        product_id = rng.choice(own) if own and rng.random() < 0.2 else f"soak-{me}-{log.requests}"  # some replace
        data = {"title": unique_title(rng), "price": str(rng.randint(1, 900)), "product_id": product_id, "location": "Soakton"}
        files = photo_part(rng) if rng.random() < 0.5 else None
        return {"method": "POST", "url": "/listings", "data": data, "files": files, "headers": auth}, {200, 201}  # 200: a replace
    if kind == "delete":
        if not log.live:
            return None
        return {"method": "DELETE", "url": f"/listings/{rng.choice(sorted(log.live))}", "headers": auth}, {200}
    # bad inputs: each must be refused with its 4xx, never a 5xx
    bad = {
        "garbage_photo": ({"method": "POST", "url": "/image", "files": [("img", ("x.jpg", rng.randbytes(rng.randint(1, 4000)), "image/jpeg"))]}, {422}),
        "truncated_photo": ({"method": "POST", "url": "/combined", "files": [("img", ("t.jpg", rng.choice(PHOTOS)[:300], "image/jpeg"))]}, {422}),
        "empty_text": ({"method": "POST", "url": "/text", "data": {"txt": rng.choice(["", "   ", "\n"])}}, {422}),
        "huge_k": ({"method": "POST", "url": "/similar", "data": {"txt": text, "k": str(rng.choice([101, 10**6, 2**63]))}}, {422}),
        "bad_k": ({"method": "POST", "url": "/similar", "data": {"txt": text, "k": rng.choice(["0", "-1", "ten", "1.5"])}}, {422}),
        "bad_price": ({"method": "POST", "url": "/similar", "data": {"txt": text, "min_price": rng.choice(["-1", "abc", "nan", "inf", "1e400"])}}, {422}),
        "price_order": ({"method": "POST", "url": "/similar", "data": {"txt": text, "min_price": "50", "max_price": "10"}}, {422}),
        "bad_category": ({"method": "POST", "url": "/similar", "data": {"txt": text, "category": "Spaceships / Rockets"}}, {422}),
        "no_query": ({"method": "POST", "url": "/similar", "data": {"k": "3"}}, {422}),
        "too_many_photos": ({"method": "POST", "url": "/image", "files": photo_part(rng, 11)}, {422}),  # the form parser refuses the 11th file
        "bad_add_price": ({"method": "POST", "url": "/listings", "data": {"title": "x", "price": "-5"}, "headers": auth}, {422}),
        "add_no_key": ({"method": "POST", "url": "/listings", "data": {"title": "sneaky"}}, {401}),
        "delete_wrong_key": ({"method": "DELETE", "url": "/listings/prod-00", "headers": {"X-API-Key": "nope"}}, {401}),
        "delete_missing": ({"method": "DELETE", "url": f"/listings/never-{me}-{log.requests}", "headers": auth}, {404}),
        "delete_bad_id": ({"method": "DELETE", "url": "/listings/..%2F..%2Fetc", "headers": auth}, {404, 422}),
    }
    return bad[rng.choice(sorted(bad))]


KINDS = ["image"] * 10 + ["text"] * 15 + ["combined"] * 10 + ["similar"] * 20 + ["add"] * 15 + ["delete"] * 7 + ["bad"] * 23


def client_loop(base_url: str, me: int, stop_at: float, log: ThreadLog) -> None:
    rng = random.Random(1000 + me)
    with httpx2.Client(base_url=base_url, timeout=CLIENT_TIMEOUT_S) as client:
        while time.monotonic() < stop_at and log.requests < MAX_REQUESTS_PER_THREAD:
            kind = rng.choice(KINDS)
            made = request_for(kind, rng, me, log)
            if made is None:
                continue
            spec, expected = made
            log.requests += 1
            try:
                response = client.request(**{k: v for k, v in spec.items() if v is not None})
            except httpx2.HTTPError as exc:
                log.errors.append(f"{kind} {spec['url']}: {type(exc).__name__}: {exc}")
                continue
            log.statuses[response.status_code] += 1
            if response.status_code not in expected:
                log.unexpected.append(f"{kind} {spec['method']} {spec['url']} -> {response.status_code} {response.text[:200]}")
                continue
            if kind == "add":
                log.live[spec["data"]["product_id"]] = spec["data"]["title"]
                log.deleted.discard(spec["data"]["product_id"])
            elif kind == "delete":
                product_id = spec["url"].rsplit("/", 1)[1]
                log.live.pop(product_id)
                log.deleted.add(product_id)


@pytest.fixture
def soak_server(tmp_path):
    with open(tmp_path / "server.err", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("soak_server.py")), str(tmp_path / "artifacts")],
            env=child_env(FBM_API_KEY=KEY),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        url = process.stdout.readline().strip()  # the server prints its URL once it listens
        assert url.startswith("http://127.0.0.1:"), f"the soak server did not start: {(tmp_path / 'server.err').read_text()[-2000:]}"
        wait_healthy(url, process, timeout_s=60)
        yield process, url, tmp_path / "artifacts"
    finally:
        if process.poll() is None:
            process.stdin.close()  # a clean shutdown: uvicorn exits, the index is closed
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def test_soak_mixed_traffic_no_5xx_no_deadlock_bounded_memory_and_durable_writes(soak_server):
    process, base_url, artifacts = soak_server
    logs = [ThreadLog() for _ in range(THREADS)]
    start = time.monotonic()
    stop_at = start + WARM_UP_S + SOAK_S
    threads = [threading.Thread(target=client_loop, args=(base_url, i, stop_at, logs[i]), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()

    # RSS: sampled through the warm-up (every endpoint and error path has run by its end), then at the end
    while time.monotonic() < start + WARM_UP_S:
        time.sleep(0.25)
    warm_rss = rss_kib(process.pid)
    for thread in threads:
        thread.join(max(0.0, start + JOIN_TIMEOUT_S - time.monotonic()))
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert not hung, f"client threads still waiting after {JOIN_TIMEOUT_S:.0f} s (deadlock?): {hung}"
    end_rss = rss_kib(process.pid)
    elapsed = time.monotonic() - start

    statuses = sum((log.statuses for log in logs), Counter())
    total = sum(statuses.values())
    server_errors = {status: n for status, n in statuses.items() if status >= 500}
    report = f"{total} responses in {elapsed:.1f} s, statuses {dict(sorted(statuses.items()))}, RSS {warm_rss} -> {end_rss} KiB"
    print(report)
    assert not server_errors, report
    assert not [e for log in logs for e in log.errors], [e for log in logs for e in log.errors][:10]
    unexpected = [u for log in logs for u in log.unexpected]
    assert not unexpected, f"{len(unexpected)} unexpected statuses, e.g. {unexpected[:10]}"
    assert total >= 200, f"too little traffic to mean anything: {report}"
    assert statuses[201] >= 20 and statuses[200] >= 50, report
    assert process.poll() is None, "the server died during the soak"
    growth = (end_rss - warm_rss) / warm_rss
    assert growth < RSS_GROWTH_LIMIT, f"server RSS grew {growth:.1%} after the warm-up: {report}"

    # every acknowledged add is searchable by its exact text, every acknowledged delete is gone
    live = {pid: title for log in logs for pid, title in log.live.items()}
    deleted = {pid for log in logs for pid in log.deleted} - set(live)
    assert deleted, "the soak acknowledged no delete"
    checked = time.monotonic()
    with httpx2.Client(base_url=base_url, timeout=CLIENT_TIMEOUT_S, limits=httpx2.Limits(max_connections=4)) as client:

        def found(product_id: str, title: str) -> float:
            hits = client.post("/similar", data={"txt": title, "k": "5"}).json()["results"]
            return {hit["product_id"]: hit["score"] for hit in hits}.get(product_id, 0.0)

        with ThreadPoolExecutor(4) as pool:
            scores = dict(zip(live, pool.map(found, live, live.values(), timeout=120)))
            gone = dict(zip(deleted, pool.map(lambda pid: client.delete(f"/listings/{pid}", headers={"X-API-Key": KEY}).status_code, deleted, timeout=120)))
        health = client.get("/health").json()
    missing = {pid: live[pid] for pid, score in scores.items() if score < 0.999}
    assert not missing, f"{len(missing)} acknowledged adds are not found by their own text, e.g. {list(missing.items())[:5]}"
    assert set(gone.values()) == {404}, {pid: status for pid, status in gone.items() if status != 404}
    print(f"verified {len(live)} live and {len(deleted)} deleted listings in {time.monotonic() - checked:.1f} s")
    catalogue = {row["product_id"] for row in catalogue_rows()}
    assert health["listings"] == len(catalogue) + len(live)

    # after a clean shutdown the files hold exactly the acknowledged state
    process.stdin.close()
    assert process.wait(30) == 0
    db_path, _ = index_files(artifacts / "index")
    assert sqlite_product_ids(db_path) == catalogue | set(live)
    with ListingIndex.open(artifacts / "index", IndexConfig()) as index:
        assert index.reconciled == {"re_added": 0, "removed": 0}, "a clean shutdown left FAISS behind SQLite"
        info = index.info()
        assert len(index) == info["faiss_vectors"] == len(catalogue) + len(live)
