"""Micro-batching: one inference thread; requests that arrive while it is busy share its next pass.

No request waits for a timer: a lone request runs at once, and under load the batch is whatever
queued up during the previous pass (capped in photos), so throughput approaches the model's batched
throughput without adding latency at concurrency 1. Only this thread calls the model, so one copy
of the networks serves every request and torch's intra-op threads are not oversubscribed.
"""
from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image

Item = tuple[list[Image.Image], str | None]
PredictMany = Callable[[list[Item], str], list[Any]]


@dataclass
class _Job:
    item: Item
    mode: str
    future: Future = field(default_factory=Future)

    @property
    def photos(self) -> int:
        return max(1, len(self.item[0]))


class MicroBatcher:
    def __init__(self, predict_many: PredictMany, max_photos: int = 32):
        self.predict_many = predict_many
        self.max_photos = max(1, max_photos)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0  # passes run, for tests and the benchmark
        self.items = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fbm-inference", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def submit(self, images: list[Image.Image], text: str | None, mode: str) -> Future:
        job = _Job((images, text), mode)
        self._queue.put(job)
        return job.future

    async def predict(self, images: list[Image.Image], text: str | None, mode: str) -> Any:
        return await asyncio.wrap_future(self.submit(images, text, mode))

    def _run(self) -> None:
        waiting: list[_Job] = []
        stopping = False
        while waiting or not stopping:
            if not waiting:
                job = self._queue.get()
                if job is None:
                    return
                waiting.append(job)
            stopping = self._drain_into(waiting) or stopping
            batch, photos = [], 0
            while waiting and (not batch or photos + waiting[0].photos <= self.max_photos):
                photos += waiting[0].photos
                batch.append(waiting.pop(0))
            # A future whose request went away (client disconnected) is dropped, not computed.
            self._run_batch([job for job in batch if job.future.set_running_or_notify_cancel()])

    def _drain_into(self, waiting: list[_Job]) -> bool:
        """Move every queued job into `waiting`; True when a stop was requested."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return False
            if job is None:
                return True
            waiting.append(job)

    def _run_batch(self, batch: list[_Job]) -> None:
        by_mode: dict[str, list[_Job]] = {}
        for job in batch:
            by_mode.setdefault(job.mode, []).append(job)
        for mode, jobs in by_mode.items():
            try:
                results = self.predict_many([job.item for job in jobs], mode)
            except Exception as exc:
                if len(jobs) == 1:
                    jobs[0].future.set_exception(exc)
                else:
                    for job in jobs:  # one bad item must not fail its neighbours
                        self._run_batch([job])
                continue
            self.batches += 1
            self.items += len(jobs)
            for job, result in zip(jobs, results):
                job.future.set_result(result)
