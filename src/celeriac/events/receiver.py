"""Receiving Celery's events: from celeriac's workers and clients and from Celery's,
on any broker with an :class:`~celeriac.transports.capabilities.EventChannel`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import ImproperlyConfigured, MessageError
from celeriac.protocol import Message
from celeriac.protocol.events import read_events
from celeriac.transports.capabilities import EventChannel

if TYPE_CHECKING:
    from celeriac.app import Celeriac

Handler = Callable[[dict[str, Any]], Any]


class EventReceiver:
    """Calls ``handlers[event type]`` (or ``handlers["*"]``) for each event received.

    ``patterns`` are routing-key patterns (``#``: everything, ``worker.#``: worker events
    only). Each event gets ``local_received`` (the time it arrived), as Celery's do."""

    def __init__(
        self,
        app: Celeriac,
        handlers: dict[str, Handler] | None = None,
        patterns: Sequence[str] = ("#",),
    ) -> None:
        self.app = app
        self.handlers = dict(handlers or {})
        self.patterns = list(patterns)

    def dispatch(self, event: dict[str, Any]) -> None:
        handler = self.handlers.get(event["type"]) or self.handlers.get("*")
        if handler is not None:
            handler(event)

    async def acapture(
        self,
        timeout: float | None = None,
        limit: int | None = None,
        listening: Callable[[], None] | None = None,
    ) -> int:
        """Receive events for ``timeout`` seconds (None: until cancelled) or until
        ``limit`` came; returns how many came."""
        broker = await self.app.get_broker()
        if not isinstance(broker, EventChannel):
            raise ImproperlyConfigured(f"the {type(broker).__name__} broker carries no events")
        count = 0
        done = asyncio.Event()

        async def on_message(message: Message) -> None:
            nonlocal count
            try:
                events = read_events(message)
            except MessageError:
                return
            now = time.time()
            for event in events:
                if done.is_set():
                    return
                event["local_received"] = now
                count += 1
                self.dispatch(event)
                if limit is not None and count >= limit:
                    done.set()

        task = asyncio.get_running_loop().create_task(
            broker.listen_events(self.patterns, on_message, listening)
        )
        try:
            waiter = asyncio.get_running_loop().create_task(done.wait())
            await asyncio.wait([task, waiter], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if task.done():
                task.result()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return count

    def capture(
        self,
        timeout: float | None = None,
        limit: int | None = None,
        listening: Callable[[], None] | None = None,
    ) -> int:
        """:meth:`acapture` for sync code (runs on the app's event-loop thread)."""
        from celeriac._loop import run_sync  # noqa: PLC0415

        return run_sync(self.acapture(timeout, limit, listening))


__all__ = ["EventReceiver"]
