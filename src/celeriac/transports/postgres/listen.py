"""LISTEN on a session connection of its own, shared by everything of one broker or
backend that waits: queue wake-ups, result wake-ups, remote control and events.

A notification calls every handler of its channel on the event loop. Handlers must
not block; the queue and result waiters only set an event, so a burst of notifications
costs one re-check per waiter (the debounce), and a consumer that is busy (not waiting)
does nothing at all. When the connection breaks, the listener reconnects (after 0.1 s,
backing off to 2 s), LISTENs again and calls every handler with ``None``: whatever
happened meanwhile was not heard, so waiters look again.

PgBouncer: LISTEN needs a *session* connection (notifications are delivered to the
server session that listened). Behind PgBouncer in transaction pooling mode, point
``listen_url`` (a transport option) at a session-mode pool or at the server itself;
the other connections work in transaction mode (every statement is its own transaction
or one explicit transaction, and no prepared statements are kept unless PgBouncer
1.21+ with ``max_prepared_statements``; set ``prepare_threshold`` to None otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from celeriac.transports.postgres.db import _close_quietly, connect

logger = logging.getLogger("celeriac.transports.postgres")

Handler = Callable[[str | None], None]


class Listener:
    """One LISTEN connection and its handlers (channel -> callbacks)."""

    def __init__(self, conninfo: str, channels: list[str], error: type[Exception]) -> None:
        self.conninfo = conninfo
        self.error = error
        #: every channel is listened to as the connection opens: a LISTEN sent later
        #: would wait for the reader, which holds the connection
        self._handlers: dict[str, list[Handler]] = {c: [] for c in channels}
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None

    async def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler(payload)`` for each notification on ``channel``; returns once
        the server has the LISTEN (notifications committed after it are heard)."""
        self._handlers[channel].append(handler)
        await self._ensure()

    def unsubscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.get(channel, [])
        with contextlib.suppress(ValueError):
            handlers.remove(handler)

    async def _ensure(self) -> None:
        if self._task is not None and not self._task.done():
            assert self._ready is not None
            await self._ready.wait()
            return
        self._ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        waiting = asyncio.ensure_future(self._ready.wait())
        await asyncio.wait({waiting, self._task}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if self._task.done():
            self._task.result()  # raises why it could not start

    async def _run(self) -> None:
        delay = 0.1
        first = True
        while True:
            try:
                conn = await connect(self.conninfo, self.error)
            except self.error:
                if first:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            try:
                self._conn = conn
                for channel in self._handlers:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                assert self._ready is not None
                self._ready.set()
                if not first:
                    self._dispatch_all(None)  # what was sent meanwhile went unheard
                first, delay = False, 0.1
                async for note in conn.notifies():
                    for handler in list(self._handlers.get(note.channel, ())):
                        handler(note.payload)
            except psycopg.Error as exc:
                logger.warning("PostgreSQL LISTEN connection lost: %s; reconnecting", exc)
            finally:
                self._conn = None
                await _close_quietly(conn)
            await asyncio.sleep(delay)

    def _dispatch_all(self, payload: str | None) -> None:
        for handlers in list(self._handlers.values()):
            for handler in list(handlers):
                handler(payload)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


__all__ = ["Handler", "Listener"]
