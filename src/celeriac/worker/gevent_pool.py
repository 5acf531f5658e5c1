"""The gevent pool (``-P gevent -c N``): up to N tasks at once, each in a greenlet of the
worker's own process and thread, for I/O-bound tasks by the hundred.

Design. ``celeriac ... worker -P gevent`` monkey patches the process before anything
imports sockets (:mod:`celeriac._concurrency`), as Celery does; asyncio's default
selector is then gevent's, so the consumer's event loop waits *inside the gevent hub*.
Whenever the loop waits for the broker, the hub runs the task greenlets; whenever a
greenlet waits (``time.sleep``, a socket, a lock: all patched), the hub runs the others
or the loop. So a task blocking on I/O holds no thread, and N of them wait at once.
A CPU-bound task holds everything until it yields, as on Celery's gevent pool.

* sync tasks run in greenlets (``gevent.spawn``), ``async def`` tasks on the loop itself
  (as on the asyncio pool); both count towards N;
* an outcome, and the end of a greenlet, reach the loop through
  ``call_soon_threadsafe`` (the loop may be waiting in the hub), so the pool's state is
  only touched on the loop;
* a task's blocking celeriac call (``delay()``, ``get()``) is handed to the worker's loop
  and waited for cooperatively (:func:`celeriac._loop.run_sync`): asyncio cannot run a
  second loop in a thread whose loop is running;
* soft time limits and ``terminate`` raise in the greenlet at once, even in a sleep or a
  socket read (``Greenlet.kill`` with the exception, not waiting for it).

Without the early patching (a worker started by ``app.worker_main()`` or with
``worker_pool="gevent"`` in the settings) the worker patches when it starts and says so
in one warning line: the modules imported before keep what they bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from celeriac import _loop
from celeriac._concurrency import GEVENT_MISSING, gevent_patched, patch_gevent
from celeriac.exceptions import ImproperlyConfigured
from celeriac.worker.core import Handler, Job
from celeriac.worker.pools import Deliver, Pool

logger = logging.getLogger("celeriac.worker")


def ensure_patched() -> None:
    """Monkey patch now if the command line did not (one warning line), or stop."""
    if gevent_patched():
        return
    if not patch_gevent():
        raise ImproperlyConfigured(GEVENT_MISSING)
    logger.warning(
        "-P gevent: monkey patched at worker start, after the app's modules were "
        "imported; start the worker with `celeriac -A ... worker -P gevent` so that "
        "happens before anything imports sockets"
    )


class GeventPool(Pool):
    """Tasks in greenlets of the loop's thread; see the module docstring."""

    name = "gevent"

    def __init__(self, concurrency: int) -> None:
        super().__init__(concurrency)
        try:
            import gevent  # noqa: PLC0415 - an optional dependency
        except ImportError:
            raise ImproperlyConfigured(GEVENT_MISSING) from None
        if not gevent_patched():  # the loop would never let the greenlets run
            raise ImproperlyConfigured(
                "the gevent pool needs the process monkey patched first: run "
                "`celeriac -A ... worker -P gevent` (in tests, use the threads pool)"
            )
        self._gevent: Any = gevent
        self._waiting: deque[Job] = deque()
        self._running: dict[Job, Any] = {}  # job -> its greenlet or asyncio task
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop, handler: Handler, deliver: Deliver) -> None:
        super().start(loop, handler, deliver)
        self._loop = loop
        _loop.run_by_greenlet(loop, self._gevent.getcurrent())

    def submit(self, job: Job) -> None:
        self._waiting.append(job)
        self._fill()

    def _fill(self) -> None:
        """Start waiting jobs while there are free slots (on the loop)."""
        loop = self._loop
        assert loop is not None
        while self._waiting and len(self._running) < self.concurrency:
            job = self._waiting.popleft()
            if job.task.is_async:
                task = loop.create_task(self._run_async(job))
                job.async_task = task
                self._running[job] = task
            else:
                self._running[job] = self._gevent.spawn(self._run, job)

    def _run(self, job: Job) -> None:
        """A greenlet: run a sync job."""
        handler, outbox, loop = self.handler, self.outbox, self._loop
        assert handler is not None and outbox is not None and loop is not None
        try:
            outbox.put(handler.execute(job))
        finally:
            loop.call_soon_threadsafe(self._finished, job)

    async def _run_async(self, job: Job) -> None:
        assert self.handler is not None and self.outbox is not None
        try:
            self.outbox.put(await self.handler.execute_async(job))
        finally:
            self._finished(job)

    def _finished(self, job: Job) -> None:
        self._running.pop(job, None)
        self._fill()

    def interrupt(self, job: Job, exc_type: type[BaseException]) -> bool:
        with job.lock:
            if job.finished or not job.started:
                return False
            job.interrupt = exc_type
        runner = self._running.get(job)
        if runner is None:
            return False
        if isinstance(runner, asyncio.Task):
            runner.cancel()  # execute_async turns it into job.interrupt
        else:
            text = f"{exc_type.__name__} in {job.call.name}[{job.call.id}]"
            runner.kill(exc_type(text), block=False)
        return True

    def reclaim(self) -> list[Job]:
        jobs = list(self._waiting)
        self._waiting.clear()
        return jobs


def make_gevent_pool(concurrency: int) -> Pool:
    return GeventPool(concurrency)


__all__ = ["GeventPool", "ensure_patched", "make_gevent_pool"]
