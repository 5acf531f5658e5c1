"""Execution pools: strategies that run jobs through the shared :class:`Handler`.

``ThreadPool(n)`` runs jobs on n daemon threads (``solo`` is n=1, and each prefork child
uses one); each thread keeps its own event loop for ``async def`` tasks. ``AsyncioPool``
runs up to n ``async def`` tasks at once on the consumer's loop, and sync tasks on threads.
``gevent`` (:mod:`celeriac.worker.gevent_pool`) runs them in greenlets.
Outcomes come back to the consumer's loop in batches through an :class:`Outbox`.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextlib
import ctypes
import queue
import signal
import threading
import time
from collections.abc import Callable

from celeriac._outcome import Outcome
from celeriac.exceptions import SoftTimeLimitExceeded, Terminated, TimeLimitExceeded
from celeriac.worker.core import Handler, Job

Deliver = Callable[[list[Outcome]], None]

#: How long an outcome may wait in the outbox while its pool thread runs queued jobs.
HOLD = 0.002


class Outbox:
    """Hands outcomes from pool threads to the loop, one wake-up per batch.

    Each wake-up of the loop from a pool thread is a hand-off of the GIL between the two
    threads (and, on a busy machine, a wait for the scheduler). So a pool thread that has
    more queued jobs to run keeps its outcomes here and goes on: the loop is woken when
    the pool has nothing queued (``queued`` says), when ``batch`` outcomes wait, or when
    the oldest has waited ``hold`` seconds. Without ``queued`` every outcome wakes it at
    once (unless a wake-up is already on its way)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        deliver: Deliver,
        queued: Callable[[], bool] | None = None,
        hold: float = HOLD,
    ) -> None:
        self._loop = loop
        self._deliver = deliver
        self._queued = queued
        self._hold = hold
        self._lock = threading.Lock()
        self._items: list[Outcome] = []
        self._first = 0.0
        self._scheduled = False
        #: outcomes that wake the loop although more jobs are queued (the consumer sets
        #: it to half its prefetch limit)
        self.batch = 1

    def put(self, outcome: Outcome) -> None:
        with self._lock:
            self._items.append(outcome)
            if self._scheduled:
                return
            count = len(self._items)
            queued = self._queued
            if count < self.batch and queued is not None and queued():
                now = time.monotonic()
                if count == 1:
                    self._first = now
                if now - self._first < self._hold:
                    return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # loop closed during a cold shutdown
            self._loop.call_soon_threadsafe(self._drain)

    def flush(self) -> None:
        """Deliver what waits now (on the loop: after jobs were taken back, whose
        outcomes will never come to wake it)."""
        self._drain()

    def flush_aged(self) -> None:
        """Deliver what waits if it has waited ``hold`` (on the loop, from a timer: the
        job after a held outcome may run for long, and no other put would come)."""
        with self._lock:
            aged = bool(self._items) and time.monotonic() - self._first >= self._hold
        if aged:
            self._drain()

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        if items:
            self._deliver(items)


class Pool(abc.ABC):
    """A pool runs at most ``concurrency`` jobs at once."""

    name = "pool"

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.handler: Handler | None = None
        self.outbox: Outbox | None = None

    def start(self, loop: asyncio.AbstractEventLoop, handler: Handler, deliver: Deliver) -> None:
        self.handler = handler
        self.outbox = Outbox(loop, deliver, self.queued())
        handler.report = self.outbox.put

    def queued(self) -> Callable[[], bool] | None:
        """A cheap, thread-safe check that jobs wait for a thread of this pool (so that
        the outbox may hold outcomes meanwhile); None: outcomes go to the loop at once."""
        return None

    def interrupt(self, job: Job, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` inside the running ``job`` (soft time limit, hard limit,
        terminate). Returns False when the job is no longer running."""
        with job.lock:
            if job.finished or not job.started or job.thread_id is None:
                return False
            job.interrupt = exc_type
            return _raise_in_thread(job.thread_id, exc_type)

    @abc.abstractmethod
    def submit(self, job: Job) -> None:
        """Queue ``job``; it starts when a slot is free."""

    @abc.abstractmethod
    def reclaim(self) -> list[Job]:
        """Take back the jobs that have not started."""

    def stop(self) -> None:  # noqa: B027 - optional
        """Release threads; running jobs finish on their own."""


class ThreadPool(Pool):
    name = "threads"

    def __init__(self, concurrency: int) -> None:
        super().__init__(concurrency)
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._local = threading.local()

    def start(self, loop: asyncio.AbstractEventLoop, handler: Handler, deliver: Deliver) -> None:
        super().start(loop, handler, deliver)
        for index in range(self.concurrency):
            thread = threading.Thread(
                target=self._work, name=f"celeriac-pool-{index + 1}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while True:
            try:
                job = self._queue.get()
                if job is None:
                    break
                self._run_job(job)
            except BaseException as exc:  # a late interrupt must not end the thread
                if not isinstance(exc, (SoftTimeLimitExceeded, TimeLimitExceeded, Terminated)):
                    raise
        loop = getattr(self._local, "loop", None)
        if loop is not None:
            loop.close()

    def _run_job(self, job: Job) -> None:
        handler, outbox = self.handler, self.outbox
        assert handler is not None and outbox is not None
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if job.task.is_async and loop is None:
            loop = self._local.loop = asyncio.new_event_loop()  # this thread's, for async tasks
        outbox.put(handler.execute(job, loop))

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def queued(self) -> Callable[[], bool] | None:
        empty = self._queue.empty
        return lambda: not empty()

    def reclaim(self) -> list[Job]:
        jobs: list[Job] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return jobs
            if job is not None:
                jobs.append(job)

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


class MainThreadPool(ThreadPool):
    """The prefork child's pool: tasks run on the process's main thread (``serve``),
    while the consumer's loop runs on another thread. Being on the main thread, a task
    can be interrupted by a signal even inside a blocking call (``time.sleep``, socket
    reads), which is how soft time limits and terminate reach it, as in Celery."""

    name = "prefork-child"
    SIGNAL = signal.SIGUSR1

    def __init__(self, concurrency: int = 1) -> None:
        super().__init__(0)
        self.concurrency = 1
        self.current: Job | None = None
        self._main = threading.main_thread().ident
        #: told True when a job starts and False when it ends (the autoscaler's signal)
        self.on_busy: Callable[[bool], object] | None = None

    def start(self, loop: asyncio.AbstractEventLoop, handler: Handler, deliver: Deliver) -> None:
        Pool.start(self, loop, handler, deliver)  # no threads: ``serve`` runs the jobs

    def serve(self) -> None:
        """Run jobs on this (the main) thread until ``stop``."""
        signal.signal(self.SIGNAL, self._on_signal)
        self._work()

    def _run_job(self, job: Job) -> None:
        self.current = job
        on_busy = self.on_busy
        if on_busy is not None:
            on_busy(True)
        try:
            super()._run_job(job)
        finally:
            self.current = None
            if on_busy is not None:
                on_busy(False)

    def _on_signal(self, signum: int, frame: object) -> None:
        job = self.current
        if job is not None and job.interrupt is not None and not job.finished:
            raise job.interrupt(f"{job.interrupt.__name__} in {job.call.name}[{job.call.id}]")

    def interrupt(self, job: Job, exc_type: type[BaseException]) -> bool:
        with job.lock:
            if job.finished or not job.started or self.current is not job:
                return False
            job.interrupt = exc_type
        if self._main is not None:
            signal.pthread_kill(self._main, self.SIGNAL)
        return True

    def stop(self) -> None:
        self._queue.put(None)


class SoloPool(ThreadPool):
    """One task at a time (on one thread, so the consumer's loop stays responsive)."""

    name = "solo"

    def __init__(self, concurrency: int = 1) -> None:
        super().__init__(1)


class AsyncioPool(Pool):
    """Up to ``concurrency`` tasks at once on the loop; sync tasks on as many threads."""

    name = "asyncio"

    def __init__(self, concurrency: int) -> None:
        super().__init__(concurrency)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            concurrency, thread_name_prefix="celeriac-sync"
        )
        self._semaphore: asyncio.Semaphore | None = None
        self._waiting: dict[Job, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop, handler: Handler, deliver: Deliver) -> None:
        super().start(loop, handler, deliver)
        self._loop = loop
        self._semaphore = asyncio.Semaphore(self.concurrency)

    def submit(self, job: Job) -> None:
        assert self._loop is not None
        self._waiting[job] = self._loop.create_task(self._run(job))

    async def _run(self, job: Job) -> None:
        assert self._semaphore is not None and self.handler is not None and self.outbox
        async with self._semaphore:
            job.async_task = self._waiting.pop(job, None) if job.task.is_async else None
            if job.task.is_async:
                outcome = await self.handler.execute_async(job)
            else:
                loop = asyncio.get_running_loop()
                outcome = await loop.run_in_executor(self._executor, self.handler.execute, job)
            self.outbox.put(outcome)

    def interrupt(self, job: Job, exc_type: type[BaseException]) -> bool:
        if job.async_task is None:
            return super().interrupt(job, exc_type)  # a sync task on a thread
        if job.finished or not job.started:
            return False
        job.interrupt = exc_type
        job.async_task.cancel()
        return True

    def reclaim(self) -> list[Job]:
        jobs = []
        for job, task in list(self._waiting.items()):
            if not job.started:
                task.cancel()
                jobs.append(job)
        self._waiting.clear()
        return jobs

    def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Ask the interpreter to raise ``exc_type`` in another thread at its next bytecode
    (Python code only: a thread blocked in C code gets it when the call returns)."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )
    return bool(done == 1)


def _gevent_pool(concurrency: int) -> Pool:
    """The gevent pool, imported only when asked for (gevent is an optional extra)."""
    from celeriac.worker.gevent_pool import GeventPool  # noqa: PLC0415

    return GeventPool(concurrency)


POOLS: dict[str, Callable[[int], Pool]] = {
    "threads": ThreadPool,
    "solo": SoloPool,
    "prefork-child": MainThreadPool,
    "asyncio": AsyncioPool,
    "gevent": _gevent_pool,
}


def make_pool(name: str, concurrency: int) -> Pool:
    return POOLS[name](concurrency)


__all__ = ["AsyncioPool", "Outbox", "Pool", "SoloPool", "ThreadPool", "make_pool"]
