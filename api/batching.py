"""Micro-batching: a few inference threads; requests that arrive while they are busy share a pass.

No request waits for a timer: a lone request runs at once, and under load a free inference thread
takes whatever has queued up (capped in photos), so throughput approaches the model's batched
throughput without adding latency at concurrency 1. Only these threads call the model, so one copy
of the networks serves every request. On a small CPU, `workers` single-threaded passes side by side
outrun one pass spread over every core (torch's threads wait for each other at every layer, and
stall whenever the web server takes a core); `api.services.inference_layout` picks the split. The
preprocessing that needs no network (input views, tokens) runs before a request is queued, on the
decode workers, so it overlaps the passes in flight instead of lengthening the next one.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from concurrent.futures import Executor, Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from PIL import Image


class Prepared(Protocol):
    photos: int  # photos the item carries: the micro-batch cap counts these


Prepare = Callable[[list[Image.Image], str | None, str], Prepared]  # (photos, text, mode) → model input
RunBatch = Callable[[list[Prepared]], list[Any]]  # model inputs → one answer each


@dataclass
class _Job:
    item: Prepared
    future: Future

    @property
    def photos(self) -> int:
        return max(1, self.item.photos)


class MicroBatcher:
    """`prepare` turns a request's inputs into the model's (on the caller's thread, or `pool` from
    async code); `workers` inference threads run `run_batch` on whatever is waiting."""

    def __init__(self, prepare: Prepare, run_batch: RunBatch, max_photos: int = 32, pool: Executor | None = None, workers: int = 1):
        self.prepare = prepare
        self.run_batch = run_batch
        self.max_photos = max(1, max_photos)
        self.pool = pool
        self.workers = max(1, workers)
        self._waiting: deque[_Job] = deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.batches = 0  # passes run, for tests and the benchmark
        self.items = 0

    def start(self) -> None:
        if not self._threads:
            self._stopping = False
            self._threads = [threading.Thread(target=self._run, name=f"fbm-inference-{i}", daemon=True) for i in range(self.workers)]
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Answer what is queued, then end the inference threads."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def submit(self, images: list[Image.Image], text: str | None, mode: str, answer: Future | None = None) -> Future:
        """Prepare on this thread and queue; `answer` (a new future unless given) gets the result,
        or the error of an input `prepare` refuses. An answer cancelled meanwhile is not queued."""
        answer = answer if answer is not None else Future()
        try:
            item = self.prepare(images, text, mode)
        except Exception as exc:
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile: nobody waits for it
                answer.set_exception(exc)
            return answer
        if not answer.cancelled():
            with self._changed:
                self._waiting.append(_Job(item, answer))
                self._changed.notify()
        return answer

    async def predict(self, images: list[Image.Image], text: str | None, mode: str) -> Any:
        """`submit` on `pool` (preparing off the event loop and the inference threads), then wait for
        the answer. A request cancelled (its client gone) cancels its answer, through `wrap_future`:
        while its inputs are prepared, it is then never queued; once queued, the batch skips it."""
        answer: Future = Future()
        asyncio.get_running_loop().run_in_executor(self.pool, self.submit, images, text, mode, answer)
        return await asyncio.wrap_future(answer)

    def _next_batch(self) -> list[_Job] | None:
        """The jobs waiting, oldest first, up to `max_photos` photos (always at least one job);
        None once stopping with nothing left."""
        with self._changed:
            while not self._waiting and not self._stopping:
                self._changed.wait()
            if not self._waiting:
                return None
            batch, photos = [], 0
            while self._waiting and (not batch or photos + self._waiting[0].photos <= self.max_photos):
                photos += self._waiting[0].photos
                batch.append(self._waiting.popleft())
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            # A future whose request went away (client disconnected) is dropped, not computed.
            self._run_batch([job for job in batch if job.future.set_running_or_notify_cancel()])

    def _run_batch(self, batch: list[_Job]) -> None:
        if not batch:
            return
        try:
            results = self.run_batch([job.item for job in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
            else:
                for job in batch:  # one bad item must not fail its neighbours
                    self._run_batch([job])
            return
        with self._changed:
            self.batches += 1
            self.items += len(batch)
        for job, result in zip(batch, results):
            job.future.set_result(result)

