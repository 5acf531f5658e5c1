"""The SQLite broker's pub/sub (remote control and events): a table every listener
reads from the row it started at (polling every 0.1 s); rows older than a
minute are deleted by the publishers."""

from __future__ import annotations

import asyncio
import fnmatch
import sqlite3
import time
from collections.abc import Callable, Sequence

from celeriac.exceptions import BrokerError
from celeriac.transports.fanout import Fanout, Listener
from celeriac.transports.sqlite import db as _sql

#: publications older than this (seconds) are deleted
KEEP = 60.0
_TRIM_EVERY = 10.0
#: how often a listener reads new publications (seconds)
POLL = 0.1


class SQLiteFanout(Fanout):
    #: publishers of events batch them for this long (seconds): each publish is a write
    #: transaction, which the broker's own writes wait for
    fanout_interval = 0.5
    _db: Callable[[], sqlite3.Connection]
    _trimmed = 0.0

    def _fan_queries(self) -> dict[str, str]:
        return _sql.load_queries("fanout_queries.sql")

    async def fan_publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        if not items:
            return
        q, now = self._fan_queries(), time.time()
        conn = self._db()
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
        try:
            (after,) = conn.execute(q["fan_last"]).fetchone()
        except sqlite3.Error as exc:
            raise BrokerError(f"SQLite broker: {exc}") from exc
        if listening is not None:
            listening()
        while True:
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
