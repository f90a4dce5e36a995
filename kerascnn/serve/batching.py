"""Micro-batching: the face crops of requests that arrive together go through the model at once.

Each request thread hands its crops to a :class:`MicroBatcher` and waits; one worker thread
takes whatever is queued, waits up to ``wait_ms`` for more (bounded: a lone request pays at most
that), embeds everything in one model call and hands each caller its rows. The model runs on one
thread only, and throughput grows with concurrency instead of serialising on it.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable

import numpy as np

from kerascnn.face.pipeline import FacePipeline


class _Job:
    def __init__(self, crops: np.ndarray) -> None:
        self.crops = crops
        self.done = threading.Event()
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None


class MicroBatcher:
    """Gathers the crops of concurrent callers into one call of ``embed``.

    Args:
        embed: ``(n, s, s, c) crops -> (n, d) embeddings``, called from one worker thread only.
        wait_ms: how long the worker waits for more callers after the first (bounded latency).
        max_crops: embed at most this many crops per call (a caller's crops are never split).

    Attributes:
        calls: the number of ``embed`` calls made.
        crops: the number of crops embedded.
    """

    def __init__(self, embed: Callable[[np.ndarray], np.ndarray], wait_ms: float = 5.0, max_crops: int = 256):
        self._embed = embed
        self.wait = max(0.0, float(wait_ms)) / 1000.0
        self.max_crops = int(max_crops)
        self.calls = 0
        self.crops = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="kerascnn-embed", daemon=True)
        self._worker.start()

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """The embeddings of ``crops``, computed together with other callers' (blocks until done)."""
        job = _Job(np.asarray(crops))
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def close(self) -> None:
        """Stop the worker (pending callers are served first)."""
        self._queue.put(None)
        self._worker.join()

    def _run(self) -> None:
        pending: _Job | None = None
        while True:
            first = pending if pending is not None else self._queue.get()
            pending = None
            if first is None:
                return
            jobs, size = [first], len(first.crops)
            deadline = time.monotonic() + self.wait
            while size < self.max_crops:
                try:
                    job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # stop once this batch is served
                    break
                if size + len(job.crops) > self.max_crops:
                    pending = job  # the next batch's first
                    break
                jobs.append(job)
                size += len(job.crops)
            self._serve(jobs)

    def _serve(self, jobs: list[_Job]) -> None:
        try:
            out = self._embed(np.concatenate([job.crops for job in jobs]))
            self.calls += 1
            self.crops += sum(len(job.crops) for job in jobs)
            start = 0
            for job in jobs:
                job.result = out[start:start + len(job.crops)]
                start += len(job.crops)
        except BaseException as exc:  # every caller of the batch gets the error, the worker lives on
            for job in jobs:
                job.error = exc
        for job in jobs:
            job.done.set()


class BatchingPipeline(FacePipeline):
    """A :class:`~kerascnn.face.pipeline.FacePipeline` whose model calls go through a
    :class:`MicroBatcher` (detection and alignment stay in the calling thread).

    Args:
        wait_ms: the batcher's bounded wait.
        kwargs: the arguments of :class:`~kerascnn.face.pipeline.FacePipeline`.
    """

    def __init__(self, *, wait_ms: float = 5.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.batcher = MicroBatcher(super()._embed, wait_ms, max_crops=4 * self.batch_size)

    def _embed(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if len(crops) == 0:
            return super()._embed(crops)
        return self.batcher(crops)
