"""The index at scale: build time, memory, recall@10 against exact search and query latency.

The vectors are synthetic but clustered like embeddings (uniform noise would make every
neighbour equally far and recall meaningless): each point lies near one of `clusters` random
centres, spread over a `intrinsic`-dimensional subspace of its own plus a little isotropic noise,
then L2-normalised. Queries are fresh draws from the same clusters. The index is the one
`ListingIndex` builds at that size (`make_faiss_index`), searched one query at a time as a
server would, with FAISS limited to `threads` threads.

    python -m retrieval.bench            # 1,000,000 × 512 (about 6 minutes on 2 cores)
    python -m retrieval.bench --quick    # 50,000 × 512, a smoke run

The command line also writes the figures to `reports/retrieval_bench_<n>x<dim>.json`.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import threading
import time
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from listings.config import Config, IndexConfig
from listings.metrics import latency_percentiles
from retrieval.index import HNSW, index_kind, make_faiss_index, single_threaded, write_faiss_file
from retrieval.vectors import unit_rows

QUICK_N = 50_000


class ClusteredVectors:
    """Unit vectors near `clusters` centres, each cluster spread over its own low-dimensional subspace."""

    def __init__(self, dim: int, clusters: int = 1000, intrinsic: int = 32, spread: float = 1.0, noise: float = 0.3, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        self.bases = rng.standard_normal((clusters, intrinsic, dim), dtype=np.float32) / np.sqrt(intrinsic)
        self.spread, self.noise = spread, noise

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        cluster = rng.integers(0, len(self.centres), n)
        points = self.noise * rng.standard_normal((n, self.centres.shape[1]), dtype=np.float32)
        for c in np.unique(cluster):
            members = np.flatnonzero(cluster == c)
            latent = rng.standard_normal((len(members), self.bases.shape[1]), dtype=np.float32)
            points[members] += self.centres[c] + self.spread * (latent @ self.bases[c])
        return unit_rows(points)


def bench_scale(
    n: int = 1_000_000,
    dim: int = 512,
    queries: int = 1000,
    k: int = 10,
    config: IndexConfig | None = None,
    ef_sweep: tuple[int, ...] = (16, 32, 64, 128, 256),
    threads: int = 2,
    chunk: int = 50_000,
    seed: int = 0,
) -> dict:
    """Build the size-appropriate index over n synthetic vectors and measure it."""
    config = config or IndexConfig()
    faiss.omp_set_num_threads(threads)
    data = ClusteredVectors(dim, seed=seed)
    rng = np.random.default_rng(seed + 1)
    query_vectors = data.sample(queries, np.random.default_rng(seed + 2))

    rss_before = _rss_bytes()
    index = make_faiss_index(n, dim, config)
    start = time.perf_counter()
    for first in tqdm(range(0, n, chunk), desc=f"build {n:,}×{dim}", unit="chunk"):
        size = min(chunk, n - first)
        index.add_with_ids(data.sample(size, rng), np.arange(first, first + size, dtype=np.int64))
    build_s = time.perf_counter() - start
    index_bytes = _rss_bytes() - rss_before

    start = time.perf_counter()
    _, exact = _vector_store(index).search(query_vectors, k)  # the stored vectors, searched exhaustively
    exact_s = time.perf_counter() - start
    exact_ids = faiss.vector_to_array(index.id_map)[exact]

    kind = index_kind(index)
    sweep = ef_sweep if kind == HNSW else (0,)
    measured = {ef: _measure(index, query_vectors, exact_ids, k, ef) for ef in sorted(set(sweep) | ({config.ef_search} if kind == HNSW else set()))}
    chosen = measured[config.ef_search if kind == HNSW else 0]
    queries_per_s = _throughput(index, query_vectors, k, config.ef_search if kind == HNSW else 0, threads)
    with tempfile.TemporaryDirectory() as scratch:  # what a live index pays per FAISS checkpoint
        start = time.perf_counter()
        write_faiss_file(index, Path(scratch) / "checkpoint.faiss")
        checkpoint_s = time.perf_counter() - start
    return {
        "n": n,
        "dim": dim,
        "kind": kind,
        "threads": threads,
        "hnsw_m": config.hnsw_m if kind == HNSW else None,
        "ef_construction": config.ef_construction if kind == HNSW else None,
        "ef_search": config.ef_search if kind == HNSW else None,
        "build_s": round(build_s, 1),
        "index_memory_mib": round(index_bytes / 2**20),
        "vectors_mib": round(n * dim * 4 / 2**20),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "exact_search_ms_per_query_batched": round(exact_s / queries * 1000, 2),
        f"recall@{k}": chosen["recall"],
        "p50_ms": chosen["p50_ms"],
        "p99_ms": chosen["p99_ms"],
        f"queries_per_s_{threads}_searchers": round(queries_per_s),
        "checkpoint_write_s": round(checkpoint_s, 3),
        "ef_sweep": {str(ef): values for ef, values in measured.items()} if kind == HNSW else None,
        "goals_met": chosen["recall"] >= 0.95 and chosen["p50_ms"] <= 5.0,
    }


def _measure(index: faiss.IndexIDMap2, query_vectors: np.ndarray, exact_ids: np.ndarray, k: int, ef_search: int) -> dict:
    """Recall@k against exact search and per-query latency, one query per call."""
    params = None
    if ef_search:
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef_search
    latencies, found = [], []
    with single_threaded():
        for query in query_vectors:
            start = time.perf_counter()
            _, labels = index.search(query[None], k, params=params)
            latencies.append(time.perf_counter() - start)
            found.append(labels[0])
    recall = np.mean([len(set(got) & set(truth)) / k for got, truth in zip(found, exact_ids)])
    percentiles = latency_percentiles(np.array(latencies) * 1000)
    return {"recall": round(float(recall), 4), "p50_ms": percentiles["p50"], "p99_ms": percentiles["p99"]}


def _throughput(index: faiss.IndexIDMap2, query_vectors: np.ndarray, k: int, ef_search: int, searchers: int) -> float:
    """Queries per second with `searchers` threads each sending single queries, as a server would."""
    params = None
    if ef_search:
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef_search

    def search_share(share: np.ndarray) -> None:
        with single_threaded():
            for query in share:
                index.search(query[None], k, params=params)

    shares = np.array_split(query_vectors, searchers)
    threads = [threading.Thread(target=search_share, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(query_vectors) / (time.perf_counter() - start)


def _vector_store(index: faiss.IndexIDMap2) -> faiss.Index:
    inner = faiss.downcast_index(index.index)
    return faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_N:,} vectors (HNSW forced by a lower threshold)")
    args = parser.parse_args(argv)
    config = Config()
    n = args.n
    if args.quick:
        n, config.index.exact_threshold = QUICK_N, QUICK_N // 2
    result = bench_scale(n, args.dim, args.queries, config=config.index, threads=args.threads)
    config.paths.reports.mkdir(parents=True, exist_ok=True)
    (config.paths.reports / f"retrieval_bench_{n}x{args.dim}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
