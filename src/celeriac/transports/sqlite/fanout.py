"""The SQLite broker's pub/sub (remote control and events): a table every listener
reads from the row it started at (polling every 0.1 s); rows older than a
minute are deleted by the publishers. Listeners say what they listen to (a row
refreshed every :data:`REFRESH` seconds), and a publication that no live listener wants
is not written at all, as a Redis PUBLISH nobody subscribed to is dropped (events
only: remote control is always written)."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence

from celeriac.exceptions import BrokerError
from celeriac.transports.fanout import EVENTS, Fanout, Listener
from celeriac.transports.sqlite import db as _sql

#: publications older than this (seconds) are deleted
KEEP = 60.0
_TRIM_EVERY = 10.0
#: how often a listener reads new publications (seconds)
POLL = 0.1
#: a listener refreshes its row this often; one not seen for LISTENER_TTL is gone
REFRESH = 5.0
LISTENER_TTL = 15.0
#: a publisher reads the listeners at most this often (seconds)
LOOK_EVERY = 1.0


class SQLiteFanout(Fanout):
    #: publishers of events batch them for this long (seconds): each publish is a write
    #: transaction, which the broker's own writes wait for
    fanout_interval = 0.5
    _db: Callable[[], sqlite3.Connection]
    _trimmed = 0.0
    _looked = 0.0
    _listening: tuple[str, ...] = ()

    def _fan_queries(self) -> dict[str, str]:
        return _sql.load_queries("fanout_queries.sql")

    def _wanted(self, conn: sqlite3.Connection, channel: str, now: float) -> bool:
        """Remote control is always written (a reply must not wait for a publisher to
        notice its caller); an event only when someone listens (a monitor that just
        started may miss up to :data:`LOOK_EVERY` seconds of them)."""
        if not channel.startswith(EVENTS):
            return True
        if now - self._looked > LOOK_EVERY:
            self._looked = now
            rows = conn.execute(self._fan_queries()["fan_listeners"], {"since": now - LISTENER_TTL})
            self._listening = tuple(glob for (glob,) in rows)
        return any(fnmatch.fnmatchcase(channel, g) for g in self._listening)

    def task_events_listened(self) -> bool:
        """Whether a live listener wants the task events (``task.multi``), as
        :meth:`fan_publish` would decide: a worker builds none while nobody does."""
        try:
            return self._wanted(self._db(), EVENTS + "task.multi", time.time())
        except sqlite3.Error:
            return True

    async def fan_publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        if not items:
            return
        q, now = self._fan_queries(), time.time()
        conn = self._db()
        try:
            items = [(c, r) for c, r in items if self._wanted(conn, c, now)]
        except sqlite3.Error as exc:
            raise BrokerError(f"SQLite broker: {exc}") from exc
        if not items:
            return
        with _sql.Transaction(conn, BrokerError):
            conn.executemany(
                q["fan_publish"], [{"channel": c, "payload": r, "now": now} for c, r in items]
            )
            if now - self._trimmed > _TRIM_EVERY:
                self._trimmed = now
                conn.execute(q["fan_trim"], {"before": now - KEEP})

    async def fan_listen(
        self, globs: Sequence[str], handler: Listener, listening: Callable[[], None] | None
    ) -> None:
        q = self._fan_queries()
        conn = self._db()
        me = uuid.uuid4().hex
        rows = [{"id": f"{me}-{i}", "glob": g, "now": 0.0} for i, g in enumerate(globs)]

        def refresh() -> None:
            for row in rows:
                row["now"] = time.time()
            with _sql.Transaction(conn, BrokerError):
                conn.executemany(q["fan_listening"], rows)

        try:
            refresh()
            (after,) = conn.execute(q["fan_last"]).fetchone()
        except sqlite3.Error as exc:
            raise BrokerError(f"SQLite broker: {exc}") from exc
        if listening is not None:
            listening()
        refreshed = time.monotonic()
        try:
            await self._follow(conn, q, globs, handler, after, refresh, refreshed)
        finally:
            with (
                contextlib.suppress(sqlite3.Error, BrokerError),
                _sql.Transaction(conn, BrokerError),
            ):
                conn.executemany(q["fan_unlisten"], [{"id": r["id"]} for r in rows])

    async def _follow(
        self,
        conn: sqlite3.Connection,
        q: dict[str, str],
        globs: Sequence[str],
        handler: Listener,
        after: int,
        refresh: Callable[[], None],
        refreshed: float,
    ) -> None:
        while True:
            if time.monotonic() - refreshed > REFRESH:
                refreshed = time.monotonic()
                with contextlib.suppress(sqlite3.OperationalError, BrokerError):
                    refresh()
            try:
                rows = conn.execute(q["fan_read"], {"after": after}).fetchall()
            except sqlite3.OperationalError:  # busy: try again at the next poll
                rows = []
            for row_id, channel, raw in rows:
                after = row_id
                if any(fnmatch.fnmatchcase(channel, g) for g in globs):
                    await handler(channel, bytes(raw))
            if len(rows) < 1000:
                await asyncio.sleep(POLL)


__all__ = ["SQLiteFanout"]
