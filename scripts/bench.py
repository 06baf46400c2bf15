"""`fbm bench`: the system measured the way a buyer would, written to BENCHMARKS.md and a JSON.

Five parts, each a plain function:

1. pipeline   `fbm train all` + `fbm index` from a cold cache into a fresh artifacts directory,
              timed per stage (trunk throughput and epoch speed-up from the image stage);
2. accuracy   the `fbm evaluate` table on the test split of that fresh run;
3. retrieval  `fbm index --evaluate`: test listings against a train+val index, precision@10 per
              query modality and search latency at the dataset's size;
4. serving    a real `fbm serve` process on loopback: latency p50/p95/p99 and throughput of
              `/image`, `/text`, `/combined`, `/similar` at several concurrencies (median of
              `repeats` runs), against the raw batched model throughput measured in this process,
              one raw run before each round of loads, and the server's peak RSS;
5. scale      the FAISS index at 1,000,000 synthetic vectors (`retrieval.bench`).

The report opens with the issues' goals, each against what this run measured (`GOALS`).

`--quick` is a smoke run for CI: a small subset of the dataset, tiny training settings, short
loads and 20,000 vectors; it writes BENCHMARKS.quick.md under the artifacts' reports, never the
committed BENCHMARKS.md.
"""
from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2
import numpy as np

from combined_model.fusion import LateWeights
from listings.config import REPO_ROOT, Config
from listings.metrics import plural
from listings.subset import subset_dataset
from retrieval.figures import GOAL_NUMBER, ROOT_PRECISION_GOAL
from scripts.loadgen import Request, form_request, run_load

PARTS = ("pipeline", "accuracy", "retrieval", "serving", "scale")
ENDPOINTS = ("image", "text", "combined", "similar")
RAW_BATCHES = (8, 32)  # listings per raw model pass; the best is the reference
RAW_SECONDS = 3.0  # each raw run repeats passes for at least this long
QUICK_SETTINGS = (  # every stage shrunk to a smoke run (64 px photos, one or two epochs)
    "image.input_size=64",
    "image.views=1",
    "image.epochs=2",
    "image.patience=2",
    "image.trunk_batch_size=64",
    "text.w2v_epochs=2",
    "text.w2v_min_count=1",
    "text.epochs=2",
    "text.max_tokens=64",
    "fusion.epochs=5",
)


@dataclass
class BenchPlan:
    quick: bool
    concurrencies: tuple[int, ...]
    requests_per_client: int
    repeats: int
    scale_vectors: int
    subset_per_class: int  # 0: the whole dataset

    @classmethod
    def make(cls, quick: bool, repeats: int) -> "BenchPlan":
        if quick:
            return cls(True, (1, 4), 4, 1, 20_000, 10)
        return cls(False, (1, 4, 16), 20, repeats, 1_000_000, 0)


# ---------------------------------------------------------------- 1. pipeline


def bench_pipeline(config: Config) -> dict:
    """Every training stage and the index from a cold cache, timed; `config` points at a fresh directory."""
    from scripts.cli import STAGES, TRAINING, run_stage

    summaries = {stage: run_stage(stage, config) for stage in STAGES}
    seconds = {stage: summary["stage_wall_time_s"] for stage, summary in summaries.items()}
    timing = summaries["image"]["timing"]
    return {
        "stage_seconds": seconds,
        "train_all_seconds": round(sum(seconds[s] for s in TRAINING), 1),
        "image_backbone": summaries["image"]["backbone"],
        "trunk_images_per_s": timing["trunk_images_per_s"],
        "cache_fill_images_per_s": timing["cache_fill_images_per_s"],
        "epoch_seconds_on_cache": timing["epoch_seconds_on_cache"],
        "naive_epoch_seconds_estimate": timing["naive_epoch_seconds_estimate"],
        "naive_over_cache_epoch_ratio": timing["naive_over_cache_epoch_ratio"],
        "combined_served_method": summaries["combined"]["served_method"],
        "late_fusion_weights": summaries["combined"]["late_weights"],
    }


# ---------------------------------------------------------------- 2. accuracy


def bench_accuracy(config: Config) -> dict:
    from combined_model.evaluate import evaluate, format_table

    result, _ = evaluate(config, None)
    print(format_table(result), file=sys.stderr)
    return {
        "source": result["source"],
        "n_products": result["n_products"],
        "n_images": result["n_images"],
        "served": result["served"],
        "models": {name: {k: round(v, 4) for k, v in m.items() if k in ("accuracy", "macro_f1", "top3")} for name, m in result["models"].items()},
    }


# ---------------------------------------------------------------- 3. retrieval


def bench_retrieval(config: Config) -> dict:
    from retrieval.build import evaluate_retrieval

    return evaluate_retrieval(config)


# ---------------------------------------------------------------- 4. serving


@dataclass
class Query:
    photo: bytes  # a dataset photo's JPEG, as a client would upload it
    text: str


def sample_queries(config: Config, n: int = 64) -> list[Query]:
    """Test-split listings that have a photo and a text, as a client would send them."""
    from listings.data import dataset_photos, listing_text, photo_path
    from listings.prepare import load_prepared

    prepared = load_prepared(config)
    test = prepared.split("test")
    test = test[test["image_ids"].map(len) > 0].head(n)
    return [
        Query(photo_path(dataset_photos(config.data.data_dir), ids[0]).read_bytes(), listing_text(title, description))
        for ids, title, description in zip(test["image_ids"], test["title"], test["description"])
    ]


def request_for(endpoint: str, query: Query) -> Request:
    photo = {"img": ("listing.jpg", query.photo, "image/jpeg")}
    if endpoint == "image":
        return form_request("/image", files=photo)
    if endpoint == "text":
        return form_request("/text", data={"txt": query.text})
    return form_request(f"/{endpoint}", data={"txt": query.text}, files=photo)


class RawThroughput:
    """Listings per second of the models alone (and the index, for similar), in-process and without
    HTTP, in the server's own layout (`api.services.inference_layout`: that many threads side by
    side, each passing whole batches). `best_batch(endpoint)` picks the fastest of `RAW_BATCHES`;
    `run(endpoint, batch)` is one run of at least `RAW_SECONDS`. The serving part alternates these
    runs with its loads, so the two figures of a ratio are taken over the same minutes: this
    2-core machine's speed drifts by 10–15% from one minute to the next."""

    def __init__(self, config: Config, queries: list[Query]):
        import io

        from api.services import freeze_loaded_objects, set_torch_threads
        from combined_model.inference import Predictor
        from listings.images import clean_photo
        from retrieval.index import ListingIndex
        from retrieval.terms import TermWeights

        self.workers, self.threads = set_torch_threads(config)
        self.predictor = Predictor.load(config)
        self.index = ListingIndex.open(config.paths.index, config.index)
        self.terms = TermWeights.load(config, self.predictor.tfidf)  # the server's re-ranking by words
        self.photos = [clean_photo(io.BytesIO(q.photo), config.data.image_size, config.data.max_image_pixels) for q in queries]
        self.texts = [q.text for q in queries]
        self.predictor.predict_many([([self.photos[0]], self.texts[0])] * 2, "combined")  # warm-up
        freeze_loaded_objects()  # as `fbm serve` does once loaded: the same runtime as the server's

    def best_batch(self, endpoint: str) -> tuple[int, dict[str, float]]:
        """The batch of `RAW_BATCHES` with the most listings per second (one run each), and each one's rate."""
        by_batch = {size: self.run(endpoint, size)[0] for size in RAW_BATCHES}
        return max(by_batch, key=by_batch.get), {str(size): round(rate, 2) for size, rate in by_batch.items()}

    def run(self, endpoint: str, size: int) -> tuple[float, float]:
        """(listings per second, CPU milliseconds per listing) of `workers` threads repeating passes
        of `size` listings for `RAW_SECONDS`."""
        import threading

        from retrieval.query import search_similar

        mode = "combined" if endpoint == "similar" else endpoint
        batch = [([self.photos[i % len(self.photos)]], self.texts[i % len(self.texts)]) for i in range(size)]
        stop_at = time.perf_counter() + RAW_SECONDS
        done = [0] * self.workers

        def worker(slot: int) -> None:
            while time.perf_counter() < stop_at:
                predictions = self.predictor.predict_many(batch, mode)
                if endpoint == "similar":
                    for prediction in predictions:
                        search_similar(self.index, prediction, self.terms, k=10)
                done[slot] += len(batch)

        cpu_start, start = time.process_time(), time.perf_counter()
        pool = [threading.Thread(target=worker, args=(slot,)) for slot in range(self.workers)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        listings = sum(done)
        return listings / (time.perf_counter() - start), 1000 * (time.process_time() - cpu_start) / max(listings, 1)

    def close(self) -> None:
        self.index.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(config: Config, port: int) -> subprocess.Popen:
    """A real `fbm serve` process on loopback, waited on until /health answers."""
    command = [sys.executable, "-m", "scripts.cli", "serve", "--artifacts", config.data.artifacts_dir, "--host", "127.0.0.1", "--port", str(port)]
    command += [arg for assignment in _overrides(config) for arg in ("--set", assignment)]
    server = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"fbm serve exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx2.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    raise RuntimeError("fbm serve did not answer /health within 300 s")


GIVEN_AS_OPTIONS = {("data", "data_dir"), ("data", "artifacts_dir")}  # locations: `--artifacts`, or unused by the server


def _overrides(config: Config) -> list[str]:
    """The settings that differ from the defaults, as --set assignments for a child process."""
    default, current = Config().to_dict(), config.to_dict()
    return [
        f"{section}.{name}={','.join(map(str, value)) if isinstance(value, tuple) else value}"
        for section, values in current.items()
        for name, value in values.items()
        if value != default[section][name] and (section, name) not in GIVEN_AS_OPTIONS
    ]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_load(url: str, server_pid: int, requests: list[Request], total: int, concurrency: int) -> dict:
    """`run_load`'s summary plus the server's CPU milliseconds per answered request."""
    cpu_start = process_cpu_s(server_pid)
    summary = run_load(url, lambda i: requests[i % len(requests)], total, concurrency).summary()
    summary["server_cpu_ms_per_request"] = round(1000 * (process_cpu_s(server_pid) - cpu_start) / max(summary["requests"], 1), 2)
    return summary


def serving_row(concurrency: int, runs: list[dict], raw_listings_per_s: float) -> dict:
    """One row of the serving table from repeated loads (`server_load`'s summaries): the median of
    each figure; every answer that was not a 2xx and every request that got no answer; the median
    throughput over the raw model's."""
    row = {"concurrency": concurrency, "requests": runs[0]["requests"]}
    for key in ("p50_ms", "p95_ms", "p99_ms", "throughput_rps", "server_cpu_ms_per_request", "client_cpu_ms_per_request"):
        row[key] = round(float(np.median([r[key] for r in runs])), 2)
    row["non_2xx"] = sum(n for r in runs for status, n in r["statuses"].items() if not status.startswith("2")) + sum(r["errors"] for r in runs)
    row["throughput_over_raw"] = round(row["throughput_rps"] / raw_listings_per_s, 2)
    return row


def serving_line(row: dict) -> str:
    """A `serving_row` in words, for the progress printed while `fbm bench` runs."""
    failed = f", {row['non_2xx']} failed" if row["non_2xx"] else ""
    return (
        f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, {row['throughput_rps']:,.1f} requests/s "
        f"({row['throughput_over_raw']:.2f}x the raw model){failed}"
    )


def bench_serving(config: Config, plan: BenchPlan) -> dict:
    queries = sample_queries(config)
    raw = RawThroughput(config, queries)
    port = free_port()
    server = start_server(config, port)
    url = f"http://127.0.0.1:{port}"
    results: dict = {"raw": {"workers": raw.workers, "torch_threads": raw.threads, "endpoints": {}}, "endpoints": {}}
    try:
        for endpoint in ENDPOINTS:
            requests = [request_for(endpoint, query) for query in queries]
            run_load(url, lambda i: requests[i % len(requests)], 4, 1)  # warm-up
            batch, by_batch = raw.best_batch(endpoint)
            raw_runs, loads = [], {concurrency: [] for concurrency in plan.concurrencies}
            for _ in range(plan.repeats):  # a raw run, then a load at each concurrency
                raw_runs.append(raw.run(endpoint, batch))
                for concurrency, runs in loads.items():
                    runs.append(server_load(url, server.pid, requests, plan.requests_per_client * concurrency, concurrency))
            reference = results["raw"]["endpoints"][endpoint] = {
                "listings_per_s": round(float(np.median([rate for rate, _ in raw_runs])), 2),
                "batch": batch,
                "by_batch": by_batch,
                "cpu_ms_per_listing": round(float(np.median([ms for _, ms in raw_runs])), 2),
            }
            print(f"raw /{endpoint}: {reference['listings_per_s']:,.1f} listings/s at batch {batch}, {reference['cpu_ms_per_listing']:.1f} ms CPU each", file=sys.stderr)
            rows = results["endpoints"][endpoint] = [serving_row(concurrency, runs, reference["listings_per_s"]) for concurrency, runs in loads.items()]
            for row in rows:
                print(f"serving /{endpoint} at concurrency {row['concurrency']}: {serving_line(row)}", file=sys.stderr)
        results["server_peak_rss_mib"] = peak_rss_mib(server.pid)
    finally:
        raw.close()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    return results


# ---------------------------------------------------------------- 5. scale


def bench_scale(config: Config, plan: BenchPlan) -> dict:
    from retrieval.bench import bench_scale as run

    index_config = config.index
    if plan.quick:
        index_config.exact_threshold = plan.scale_vectors // 2  # still exercise the HNSW path
    result = run(plan.scale_vectors, 512, 200 if plan.quick else 1000, config=index_config)
    return result


# ---------------------------------------------------------------- goals


@dataclass(frozen=True)
class Goal:
    issue: int
    what: str
    target: float
    at_least: bool  # the measure must reach the target from below (accuracy) rather than stay under it (time)
    unit: str
    measure: Callable[[dict], float | None]  # from the bench's result; None when this run did not measure it

    def met(self, value: float) -> bool:
        return value >= self.target if self.at_least else value <= self.target


def _served_accuracy(result: dict) -> float:
    models = result["accuracy"]["models"]
    return models[result["accuracy"]["served"]]["accuracy"]


def _served_margin(result: dict) -> float:
    """Points the served model is above the better of the image and text branches."""
    models = result["accuracy"]["models"]
    return _served_accuracy(result) - max(models["image"]["accuracy"], models["text"]["accuracy"])


def _serving_row(result: dict, endpoint: str, concurrency: int, key: str) -> float | None:
    rows = result["serving"]["endpoints"].get(endpoint, [])
    return next((row[key] for row in rows if row["concurrency"] == concurrency), None)


def _dataset_query_p50(result: dict) -> float | None:
    """The slowest query modality's median search latency at the dataset's size (model excluded)."""
    medians = [v["p50"] for k, v in result["retrieval"].items() if k.startswith("latency_ms_") and v]
    return max(medians) if medians else None


GOALS = (
    Goal(3, "`fbm train image` on the dataset", 900, False, "s", lambda r: r["pipeline"]["stage_seconds"]["image"]),
    Goal(3, "image epoch on the cache, speed-up over the naive loop", 10, True, "×", lambda r: r["pipeline"]["naive_over_cache_epoch_ratio"]),
    Goal(3, "image branch, test product accuracy", 0.68, True, "", lambda r: r["accuracy"]["models"]["image"]["accuracy"]),
    Goal(5, "served fusion, test product accuracy", 0.88, True, "", _served_accuracy),
    Goal(5, "served fusion above the best single branch", 0.02, True, "", _served_margin),
    Goal(5, "`fbm train all` from a cold cache", 1500, False, "s", lambda r: r["pipeline"]["train_all_seconds"]),
    Goal(GOAL_NUMBER, "retrieval precision@10, photo + text", ROOT_PRECISION_GOAL, True, "", lambda r: r["retrieval"]["precision@10_both"]),
    Goal(6, "query p50 at the dataset's size, model excluded", 5, False, "ms", _dataset_query_p50),
    Goal(6, "recall@10 at 1,000,000 vectors", 0.95, True, "", lambda r: r["scale"]["recall@10"] if r["scale"]["n"] >= 1_000_000 else None),
    Goal(6, "query p50 at 1,000,000 vectors", 5, False, "ms", lambda r: r["scale"]["p50_ms"] if r["scale"]["n"] >= 1_000_000 else None),
    Goal(7, "`/combined` p50 at concurrency 1", 150, False, "ms", lambda r: _serving_row(r, "combined", 1, "p50_ms")),
    Goal(7, "`/combined` at concurrency 16 over the raw model", 0.8, True, "×", lambda r: _serving_row(r, "combined", 16, "throughput_over_raw")),
    Goal(7, "server peak RSS", 1.5e9 / 2**20, False, "MiB", lambda r: r["serving"]["server_peak_rss_mib"]),
)


def goal_rows(result: dict) -> list[dict]:
    """Each goal whose part this run measured, with the figure and whether it is met."""
    rows = []
    for goal in GOALS:
        try:
            value = goal.measure(result)
        except KeyError:  # the part that measures it was not run
            continue
        if value is not None:
            rows.append({"issue": goal.issue, "goal": goal.what, "target": goal.target, "at_least": goal.at_least, "unit": goal.unit,
                         "measured": value, "met": goal.met(value)})
    return rows


def _figure(value: float, unit: str) -> str:
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    text = f"{value:.4g}" if unit in ("", "×") and value < 1.5 else f"{value:g}"
    return f"{text}{'' if unit in ('', '×') else ' '}{unit}"


# ---------------------------------------------------------------- report


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    memory_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    if commit and changed:
        commit += "+uncommitted"  # the code measured is not that commit's
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kib / 2**20, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "os": platform.platform(),
        "commit": commit or "unknown",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def markdown(result: dict) -> str:
    """BENCHMARKS.md: the machine, then a section for each part that ran."""
    m = result["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured with `{result['command']}` on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, no GPU "
        f"(Python {m['python']}, torch {m['torch']}, commit {m['commit']}, {m['date']}).",
        "Regenerate with the same command; absolute times drift between machines, ratios less so.",
    ]
    lines += _goals_section(result.get("goals", []), result["plan"]["quick"])
    if "pipeline" in result:
        lines += _pipeline_section(result["pipeline"])
    if "accuracy" in result:
        lines += _accuracy_section(result["accuracy"])
    if "serving" in result:
        lines += _serving_section(result["serving"], result["plan"]["repeats"])
    if "retrieval" in result:
        lines += _retrieval_section(result["retrieval"])
    if "scale" in result:
        lines += _scale_section(result["scale"])
    return "\n".join(lines) + "\n"


def _heading(title: str) -> list[str]:
    return ["", f"## {title}", ""]


def _goals_section(goals: list[dict], quick: bool) -> list[str]:
    """The issues' goals against this run's figures."""
    if not goals:
        return []
    lines = _heading("Goals (from the issues) against this run")
    if quick:
        lines += ["A quick run trains on a subset with tiny settings: its figures are not comparable with the goals.", ""]
    lines += ["| issue | goal | target | measured | met |", "|---:|---|---:|---:|:---:|"]
    lines += [
        f"| #{g['issue']} | {g['goal']} | {'≥' if g['at_least'] else '≤'} {_figure(g['target'], g['unit'])} | "
        f"{_figure(g['measured'], g['unit'])} | {'yes' if g['met'] else '**no**'} |"
        for g in goals
    ]
    return lines


def _pipeline_section(p: dict) -> list[str]:
    """The cold-cache training run: stage times and the feature cache's speed-up."""
    lines = [*_heading("Pipeline (cold cache, one run)"), "| stage | seconds |", "|---|---:|"]
    lines += [f"| {stage} | {s} |" for stage, s in p["stage_seconds"].items()]
    lines += [
        f"| **`fbm train all`** (prepare → image → text → combined) | **{p['train_all_seconds']}** |",
        "",
        f"Image backbone `{p['image_backbone']}`: trunk {p['trunk_images_per_s']} images/s in the training loop "
        f"({p['cache_fill_images_per_s']} images/s filling the feature cache); an epoch on the cache takes "
        f"{p['epoch_seconds_on_cache']} s against an estimated {p['naive_epoch_seconds_estimate']} s when the frozen trunk "
        f"runs every step (**×{p['naive_over_cache_epoch_ratio']}**). Served fusion: `{p['combined_served_method']}` (chosen on validation); "
        f"late-fusion weights {LateWeights.from_json(p['late_fusion_weights']).describe()}.",
    ]
    return lines


def _accuracy_section(a: dict) -> list[str]:
    """Every model's product-level accuracy."""
    lines = [
        *_heading(f"Accuracy ({a['source']}: {a['n_products']} products, {a['n_images']} photos; per product)"),
        "| model | accuracy | macro-F1 | top-3 |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {f'**{name}** (served)' if name == a['served'] else name} | {v['accuracy']:.3f} | {v['macro_f1']:.3f} | {v['top3']:.3f} |"
        for name, v in a["models"].items()
    ]
    return lines


def _serving_section(s: dict, repeats: int) -> list[str]:
    """The raw model's throughput and each endpoint's load, against it."""
    lines = [
        *_heading(f"Serving (a real `fbm serve` on loopback; {'median of ' + str(repeats) + ' runs' if repeats > 1 else 'one run'}; server peak RSS {s['server_peak_rss_mib']:,} MiB)"),
        f"Raw model throughput, median of runs alternated with each endpoint's loads (in-process, no HTTP, photos already decoded, "
        f"in the server's layout: {s['raw']['workers']} passes side by side × {plural(s['raw']['torch_threads'], 'torch thread')}; "
        f"the fastest batch of {', '.join(map(str, RAW_BATCHES))} listings): "
        + ", ".join(
            f"{e} {r['listings_per_s']} listings/s (batch {r['batch']}; {r['cpu_ms_per_listing']} ms of CPU per listing)"
            for e, r in s["raw"]["endpoints"].items()
        )
        + ". The load generator runs on the same cores as the server; the CPU columns say what each request cost "
        "the server process and the generator.",
        "",
        "| endpoint | concurrency | p50 ms | p95 ms | p99 ms | req/s | req/s ÷ raw | server CPU ms/req | generator CPU ms/req | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for endpoint, rows in s["endpoints"].items():
        lines += [
            f"| /{endpoint} | {r['concurrency']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['throughput_rps']} | {r['throughput_over_raw']} "
            f"| {r['server_cpu_ms_per_request']} | {r['client_cpu_ms_per_request']} | {r['non_2xx']} |"
            for r in rows
        ]
    return lines


def _retrieval_section(r: dict) -> list[str]:
    """Retrieval precision and search latency on the dataset."""
    lines = [
        *_heading(f"Retrieval quality (test listings against an index of the {r['catalogue']:,} train + validation listings)"),
        f"Precision@{r['k']}: the share of results in the query's root category (chance {r['chance_precision']}) and in its "
        f"full category path, the same kind of item (chance {r['chance_path_precision']}); a query with text re-ranks the "
        f"best candidates by its words. Search latency without the model on an index of all {r['latency_index_size']:,} "
        "listings, the query listing excluded.",
        "",
        f"| query | root precision@{r['k']} | path precision@{r['k']} | queries | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    k = r["k"]
    for mode in ("photo", "text", "both"):
        latency = r[f"latency_ms_{mode}"] or {"p50": "–", "p99": "–"}
        lines.append(
            f"| {mode} | {r[f'precision@{k}_{mode}']} | {r[f'path_precision@{k}_{mode}']} | {r[f'queries_{mode}']} | {latency['p50']} | {latency['p99']} |"
        )
    if r["other_photo_nn_rate"] is not None:
        lines += [
            "",
            f"A product's other photo is its photo query's nearest neighbour for {r['other_photo_nn_rate']} of "
            f"{r['other_photo_queries']:,} queries (an index of all {r['other_photo_index_size']:,} photos).",
        ]
    return lines


def _scale_section(r: dict) -> list[str]:
    """The approximate index on synthetic vectors at scale."""
    lines = [
        *_heading(f"Retrieval at scale ({r['n']:,} synthetic clustered vectors × {r['dim']}, `{r['kind']}` index, {r['threads']} threads)"),
        f"Build {r['build_s']} s; index {r['index_memory_mib']} MiB (vectors alone {r['vectors_mib']} MiB), process peak RSS "
        f"{r['peak_rss_mib']} MiB; exact search {r['exact_search_ms_per_query_batched']} ms/query batched. "
        f"Served setting ef_search={r['ef_search']}: recall@10 **{r['recall@10']}** against exact search, "
        f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, {r['queries_per_s_2_searchers']} queries/s with 2 searchers. "
        f"Writing the index file (a live index's checkpoint, every `index.checkpoint_every` writes) takes {r.get('checkpoint_write_s', '?')} s.",
        "",
        "| ef_search | recall@10 | p50 ms | p99 ms |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {ef} | {v['recall']} | {v['p50_ms']} | {v['p99_ms']} |" for ef, v in r["ef_sweep"].items()]
    return lines


def run_bench(config: Config, plan: BenchPlan, parts: tuple[str, ...], fresh: bool, command: str) -> dict:
    """Run the chosen parts. With `fresh`, first train from a cold cache in <artifacts>/bench (on a
    per-class subset of the dataset with the quick settings under --quick) and measure that run."""
    result: dict = {"command": command, "machine": machine(), "plan": {"quick": plan.quick, "repeats": plan.repeats}}
    if fresh:
        bench_dir = Path(config.data.artifacts_dir) / "bench"
        shutil.rmtree(bench_dir, ignore_errors=True)
        config.data.artifacts_dir = str(bench_dir / "artifacts")
        if plan.quick:
            config.data.data_dir = str(subset_dataset(Path(config.data.data_dir), bench_dir / "data", plan.subset_per_class))
            for assignment in QUICK_SETTINGS:
                config.override(assignment)
    if "pipeline" in parts:
        if not fresh:
            raise ValueError("the pipeline part trains from a cold cache: drop --reuse or leave out pipeline")
        result["pipeline"] = bench_pipeline(config)
    if "accuracy" in parts:
        result["accuracy"] = bench_accuracy(config)
    if "retrieval" in parts:
        result["retrieval"] = bench_retrieval(config)
    if "serving" in parts:
        result["serving"] = bench_serving(config, plan)
    if "scale" in parts:
        result["scale"] = bench_scale(config, plan)
    result["goals"] = goal_rows(result)
    return result
