"""Request batching: concurrent requests with the same run options run as one padded batch.

A :class:`Batcher` serves one system. Requests (:class:`Job`: one or more rows, i.e. questions x
choices, each with its own seed) wait in a bounded queue; a worker takes the oldest, gathers the
waiting jobs with equal :class:`~recmas_graph.runtime.options.RunOptions` (up to ``max_batch_size``
rows, waiting at most ``batch_wait_s`` for more) and runs them with one ``system.run`` in a worker
thread. A row's answer depends only on its question, options and seed, never on its batch-mates (the
runtime's padded batches and per-question seeds), so a greedy answer is the one the question gets alone.

A full queue refuses a job (:class:`QueueFull`); a job cancelled before its batch starts (its client
left, or it timed out) is dropped from it; :meth:`Batcher.close` finishes the waiting jobs, then stops.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import RecmasError
from ..runtime.options import RunOptions
from .metrics import ServeMetrics

__all__ = ["Job", "JobResult", "Batcher", "QueueFull", "Closed"]


class QueueFull(Exception):
    """The queue is full: the job was not taken (``retry_after``: a suggested wait in seconds)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"queue full, retry after {retry_after} s")
        self.retry_after = retry_after


class Closed(Exception):
    """The batcher is shutting down and takes no new job."""


@dataclass
class JobResult:
    """What a job's rows got: answers, answer tokens, tokens of all text (messages too), latent steps per
    question, and the batch's trace (per-agent timings) and size."""

    answers: list[str]
    generated_tokens: list[int]
    question_tokens: list[int]
    latent_steps: int
    trace: list[dict[str, Any]]
    batch_rows: int
    wall_s: float


@dataclass(eq=False)
class Job:
    """One request's rows: ``questions[i]`` decoded with seed ``seeds[i]`` under ``options``.

    ``on_text(row, delta)`` (called on the event loop) receives each row's answer as it is decoded.
    """

    questions: list[str | Mapping[str, str]]
    seeds: list[int]
    options: RunOptions
    on_text: Callable[[int, str], None] | None = None
    arrived: float = field(default_factory=time.perf_counter)
    future: asyncio.Future[JobResult] | None = None
    cancelled: bool = False
    started: bool = False
    first_text_s: float | None = None

    @property
    def rows(self) -> int:
        """Rows (questions x choices) of this job."""
        return len(self.questions)

    def cancel(self) -> None:
        """Drop the job if its batch has not started (its client left or it timed out)."""
        self.cancelled = True


class Batcher:
    """Gathers compatible jobs for one system and runs them as batches, one batch at a time.

    ``run`` is the system's ``run`` (``run(questions, options, seeds=..., on_text=...)``);
    ``name`` labels the metrics.
    """

    def __init__(self, run: Callable[..., Any], *, name: str, metrics: ServeMetrics, max_batch_size: int = 8,
                 batch_wait_s: float = 0.01, max_queue: int = 256) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._run = run
        self.name = name
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.batch_wait_s = max(0.0, batch_wait_s)
        self.max_queue = max_queue
        self._pending: deque[Job] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"recmas-{name}")
        self._lock = threading.Lock()
        #: Wall time of the last batches (for ``Retry-After``).
        self._recent: deque[float] = deque(maxlen=16)
        #: Rows of every batch run so far (largest first in :attr:`max_rows_seen`).
        self.batches_run = 0
        self.max_rows_seen = 0

    # ------------------------------------------------------------------ submitting
    @property
    def queued(self) -> int:
        """Jobs waiting for a batch."""
        return sum(1 for job in self._pending if not job.cancelled)

    def submit(self, job: Job) -> asyncio.Future[JobResult]:
        """Queue ``job`` (on the event loop); its future gets the :class:`JobResult` or the run's error."""
        if self._closing:
            raise Closed("the server is shutting down")
        if self.queued >= self.max_queue:
            self.metrics.rejected.labels(self.name, "queue_full").inc()
            raise QueueFull(self.retry_after())
        loop = asyncio.get_running_loop()
        job.future = loop.create_future()
        self._pending.append(job)
        self._ensure_worker()
        assert self._wake is not None
        self._wake.set()
        self.metrics.queue_depth.labels(self.name).set(self.queued)
        return job.future

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue's batches at the recent pace (at least 1)."""
        per_batch = sum(self._recent) / len(self._recent) if self._recent else 1.0
        batches = max(1, self.queued // self.max_batch_size)
        return max(1, int(per_batch * batches + 0.999))

    def _ensure_worker(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"recmas-batcher-{self.name}")

    # ------------------------------------------------------------------ the worker
    async def _work(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            first = self._pending.popleft()
            if first.cancelled or (first.future is not None and first.future.done()):
                continue
            batch, rows = [first], first.rows
            deadline = loop.time() + self.batch_wait_s
            while rows < self.max_batch_size:
                rows += self._gather(batch, self.max_batch_size - rows)
                remaining = deadline - loop.time()
                if rows >= self.max_batch_size or remaining <= 0 or self._closing:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    rows += self._gather(batch, self.max_batch_size - rows)
                    break
            self.metrics.queue_depth.labels(self.name).set(self.queued)
            await self._run_batch(batch, loop)

    def _gather(self, batch: list[Job], room: int) -> int:
        """Move waiting jobs with the batch's options into it (in arrival order, while they fit)."""
        options = batch[0].options
        added = 0
        for job in list(self._pending):
            if job.cancelled:
                self._pending.remove(job)
            elif job.options == options and job.rows <= room - added:
                self._pending.remove(job)
                batch.append(job)
                added += job.rows
        return added

    async def _run_batch(self, batch: list[Job], loop: asyncio.AbstractEventLoop) -> None:
        batch = [job for job in batch if not job.cancelled]
        if not batch:
            return
        for job in batch:
            job.started = True
        questions = [q for job in batch for q in job.questions]
        seeds = [s for job in batch for s in job.seeds]
        owners = [(job, i) for job in batch for i in range(job.rows)]

        def on_text(row: int, delta: str) -> None:  # in the worker thread
            job, i = owners[row]
            loop.call_soon_threadsafe(self._text, job, i, delta)

        self.metrics.batch_size.labels(self.name).observe(len(questions))
        self.batches_run += 1
        self.max_rows_seen = max(self.max_rows_seen, len(questions))
        start = time.perf_counter()
        try:
            result = await loop.run_in_executor(self._executor, self._call, questions, batch[0].options, seeds,
                                                on_text)
        except Exception as err:  # noqa: BLE001 - handed to every waiting request
            for job in batch:
                if job.future is not None and not job.future.done():
                    job.future.set_exception(err)
            return
        wall = time.perf_counter() - start
        self._recent.append(wall)
        self.metrics.batch_seconds.labels(self.name).observe(wall)
        trace = [r.as_dict() for r in result.trace]
        latent = int(result.latent_steps)
        offset = 0
        for job in batch:
            rows = slice(offset, offset + job.rows)
            offset += job.rows
            tokens = list(result.question_tokens[rows]) if result.question_tokens else list(result.generated_tokens[rows])
            found = JobResult(list(result.answers[rows]), list(result.generated_tokens[rows]), tokens, latent, trace,
                              len(questions), wall)
            self.metrics.generated_tokens.labels(self.name).inc(sum(found.generated_tokens))
            self.metrics.latent_steps.labels(self.name).inc(latent * job.rows)
            if job.future is not None and not job.future.done():
                job.future.set_result(found)

    def _call(self, questions: Sequence[Any], options: RunOptions, seeds: Sequence[int],
              on_text: Callable[[int, str], None]) -> Any:
        return self._run(list(questions), options, seeds=list(seeds), on_text=on_text)

    def _text(self, job: Job, row: int, delta: str) -> None:
        if job.first_text_s is None:
            job.first_text_s = time.perf_counter() - job.arrived
            self.metrics.ttft.labels(self.name).observe(job.first_text_s)
        if job.on_text is not None and not job.cancelled:
            job.on_text(row, delta)

    # ------------------------------------------------------------------ starting and shutting down
    def open(self) -> None:
        """Take jobs again (an app's startup: its event loop may be a new one)."""
        if self._closing:
            self._closing = False
            self._wake, self._worker = None, None
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"recmas-{self.name}")

    async def close(self) -> None:
        """Take no new job, finish the waiting and running ones, then stop the worker."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._worker is not None:
            try:
                await self._worker
            except Exception:  # noqa: BLE001 - the worker's own failure was handed to its jobs
                pass
        self._executor.shutdown(wait=True)


def is_input_error(err: BaseException) -> bool:
    """Whether a run's error is about its input (a 400), not the server (a 500)."""
    return isinstance(err, RecmasError)
