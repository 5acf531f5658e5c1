"""LISTEN on a session connection of its own, shared by everything of one broker or
backend that waits: queue wake-ups, result wake-ups, remote control and events.

A channel is listened to only while it has a handler: :meth:`Listener.subscribe` sends
``LISTEN`` (and returns once the server has it), :meth:`Listener.unsubscribe` sends
``UNLISTEN`` when its last handler goes. A client's event loop runs only during its
calls, and a session that LISTENs but does not read holds back PostgreSQL's
notification queue for the whole database; so a client listens only while it waits,
and a worker (whose loop always runs) keeps its queue channel. Notifications are read
by a reader on the connection's socket (no query, no polling) and passed to the
handlers; the queue and result waiters only set an event, so a burst of notifications
costs one re-check per waiter (the debounce), and a consumer that is busy (not
waiting) does nothing at all. A broken connection is dropped and every handler called
with ``None`` (what happened meanwhile was not heard, so waiters look again); the next
subscription or :meth:`Listener.ensure` reconnects.

PgBouncer: LISTEN needs a *session* connection (notifications are delivered to the
server session that listened). Behind PgBouncer in transaction pooling mode, point
``listen_url`` (a transport option) at a session-mode pool or at the server itself.
"""

from __future__ import annotations

import asyncio
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

    def __init__(self, conninfo: str, error: type[Exception]) -> None:
        self.conninfo = conninfo
        self.error = error
        self._handlers: dict[str, list[Handler]] = {}
        self._listening: set[str] = set()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    async def subscribe(
        self, channel: str, handler: Handler, then: sql.Composed | None = None
    ) -> list[Any]:
        """Call ``handler(payload)`` for each notification on ``channel``; returns once
        the server has the LISTEN (notifications committed after it are heard), with
        the rows of ``then``, a query run in the same round trip after the LISTEN."""
        self._handlers.setdefault(channel, []).append(handler)
        try:
            return await self.ensure(then)
        except BaseException:
            self._handlers[channel].remove(handler)
            raise

    def handlers(self, channel: str) -> list[Handler]:
        return list(self._handlers.get(channel, ()))

    async def unsubscribe(
        self, channel: str, handler: Handler, then: sql.Composed | None = None
    ) -> list[Any]:
        """Stop calling ``handler``; UNLISTEN when it was the channel's last one. The
        rows of ``then``, run after the UNLISTEN in the same round trip."""
        handlers = self._handlers.get(channel, [])
        if handler in handlers:
            handlers.remove(handler)
        if handlers or channel not in self._listening or self._conn is None:
            return await self.ensure(then) if then is not None else []
        async with self._lock:
            parts = [sql.SQL("UNLISTEN {}").format(sql.Identifier(channel))]
            if then is not None:
                parts.append(then)
            try:
                rows = await self._command(sql.SQL("; ").join(parts))
            except psycopg.Error as exc:
                await self._broken(exc)
                raise self.error(f"PostgreSQL UNLISTEN: {exc}") from exc
            self._listening.discard(channel)
            return rows

    async def ensure(self, then: sql.Composed | None = None) -> list[Any]:
        """Connected and listening to every channel that has a handler; the rows of
        ``then`` (run after the LISTENs, in the same round trip)."""
        wanted = {c for c, h in self._handlers.items() if h}
        if self._conn is not None and wanted <= self._listening and then is None:
            return []
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    conn = await connect(self.conninfo, self.error)
                    conn.add_notify_handler(self._on_notify)
                    self._conn, self._listening = conn, set()
                    self._loop = asyncio.get_running_loop()
                    self._start_reading()
                new = sorted({c for c, h in self._handlers.items() if h} - self._listening)
                parts: list[sql.Composable] = [
                    sql.SQL("LISTEN {}").format(sql.Identifier(c)) for c in new
                ]
                if then is not None:
                    if parts:
                        # the statements of one string are one transaction, and a
                        # LISTEN takes effect at its commit: ``then`` must come after
                        # it, or a NOTIFY committed meanwhile is neither seen nor heard
                        parts = [sql.SQL("BEGIN"), *parts, sql.SQL("COMMIT")]
                    parts.append(then)
                rows = await self._command(sql.SQL("; ").join(parts)) if parts else []
                self._listening.update(new)
                return rows
            except psycopg.Error as exc:
                await self._broken(exc)
                raise self.error(f"PostgreSQL LISTEN: {exc}") from exc

    async def _command(self, query: sql.Composed) -> list[Any]:
        """Run ``query`` (statements separated by ``;``) on the connection; the rows of
        the last one. The socket reader stands aside meanwhile: psycopg waits on the
        same socket."""
        assert self._conn is not None
        self._stop_reading()
        try:
            cur = await self._conn.execute(query)
            while cur.nextset():
                pass
            return await cur.fetchall() if cur.description else []
        finally:
            if self._conn is not None and not self._conn.closed:
                self._start_reading()

    def _start_reading(self) -> None:
        assert self._conn is not None and self._loop is not None
        self._fd = self._conn.pgconn.socket
        self._loop.add_reader(self._fd, self._readable)
        # a notification that came in the same read as a command's last reply is in
        # libpq's buffer already: the socket will not say so again
        self._readable()

    def _stop_reading(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._fd = None

    def _readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        pgconn = conn.pgconn
        try:
            pgconn.consume_input()
        except psycopg.OperationalError as exc:
            assert self._loop is not None
            self._loop.create_task(self._broken(exc))
            return
        while (note := pgconn.notifies()) is not None:
            self._dispatch(note.relname.decode(), note.extra.decode())

    def _on_notify(self, note: psycopg.Notify) -> None:  # read while a command ran
        self._dispatch(note.channel, note.payload)

    def _dispatch(self, channel: str, payload: str | None) -> None:
        for handler in list(self._handlers.get(channel, ())):
            handler(payload)

    async def _broken(self, exc: BaseException) -> None:
        logger.warning("PostgreSQL LISTEN connection lost: %s", exc)
        self._stop_reading()
        conn, self._conn, self._listening = self._conn, None, set()
        if conn is not None:
            await _close_quietly(conn)
        for channel in list(self._handlers):
            self._dispatch(channel, None)  # look again: notifications may be lost

    async def close(self) -> None:
        self._stop_reading()
        conn, self._conn, self._listening = self._conn, None, set()
        if conn is not None:
            await _close_quietly(conn)


__all__ = ["Handler", "Listener"]
