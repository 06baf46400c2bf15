"""A bounded HTTP load generator for the benchmark and the soak test (loopback only).

`run_load` sends `requests` requests from `concurrency` threads, each request built by
`make_request(i)`, and reports latency percentiles, throughput and the status codes seen.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np

RequestSpec = dict  # keyword arguments of httpx.Client.request: method, url, data, files, headers...


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    wall_s: float
    latencies_ms: list[float] = field(repr=False)
    statuses: dict[int, int]
    errors: int

    @property
    def throughput(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> dict:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "p50_ms": round(self.percentile(50), 1),
            "p95_ms": round(self.percentile(95), 1),
            "p99_ms": round(self.percentile(99), 1),
            "throughput_rps": round(self.throughput, 2),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
        }


def run_load(
    base_url: str,
    make_request: Callable[[int], RequestSpec],
    requests: int,
    concurrency: int,
    timeout_s: float = 60.0,
    deadline_s: float = 600.0,
) -> LoadResult:
    """Send `requests` requests over `concurrency` threads; stops early at `deadline_s`."""
    if not base_url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError(f"load is only ever sent to loopback, not {base_url}")
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    stop_at = time.monotonic() + deadline_s

    def worker() -> None:
        nonlocal errors
        with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
            while time.monotonic() < stop_at:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                spec = make_request(i)
                start = time.perf_counter()
                try:
                    status = client.request(**spec).status_code
                except httpx.HTTPError:
                    with lock:
                        errors += 1
                    continue
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    latencies.append(elapsed)
                    statuses[status] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=deadline_s + timeout_s)
    wall = time.perf_counter() - start
    return LoadResult(concurrency, len(latencies), wall, latencies, dict(statuses), errors)
