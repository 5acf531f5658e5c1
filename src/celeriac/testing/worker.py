"""An in-process worker for a user's own tests: ``with TestWorker(app) as w: ...; w.join()``.

It runs the real consumer (decode, execute, store, ack) on a background thread against
the app's broker (usually ``memory://``), so tests go through serialisation and the real
worker code, without a second process. ``join()`` returns when the queues are drained.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from celeriac.exceptions import TimeoutError
from celeriac.worker.consumer import Consumer
from celeriac.worker.pools import make_pool

if TYPE_CHECKING:
    from celeriac.app import Celeriac


class TestWorker:
    """Run ``app``'s tasks in this process until stopped."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: Celeriac,
        *,
        queues: Sequence[str] | None = None,
        pool: str = "threads",
        concurrency: int = 1,
        hostname: str = "testworker@localhost",
    ) -> None:
        self.app = app
        self.queues = list(queues or [app.conf["task_default_queue"]])
        self.consumer = Consumer(
            app,
            make_pool(pool, concurrency),
            queues=self.queues,
            hostname=hostname,
            consumer_id=f"{hostname}:{id(self)}",
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> TestWorker:
        self._thread = threading.Thread(target=self._main, name="celeriac-testworker", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.consumer.run(on_ready=self._ready.set))
        except BaseException as exc:  # reported to the caller of start()/join()
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    def join(self, timeout: float = 10.0) -> None:
        """Wait until every queue is empty and nothing is being worked on."""
        if self._loop is None:
            raise RuntimeError("the worker is not started")
        future = asyncio.run_coroutine_threadsafe(self._drained(timeout), self._loop)
        future.result(timeout + 1)
        if self._error is not None:
            raise self._error

    async def _drained(self, timeout: float) -> None:
        consumer = self.consumer
        broker = consumer.broker
        assert broker is not None
        deadline = time.monotonic() + timeout
        while True:
            sizes = [await broker.size(q) for q in self.queues]
            if not any(sizes) and not consumer.held:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"queues not drained within {timeout}s: sizes {sizes}, "
                    f"{len(consumer.held)} message(s) in progress"
                )
            await consumer.wait_settled(0.01)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self.consumer.stop)
            self._thread.join(30)

    def __enter__(self) -> TestWorker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["TestWorker"]
