"""``rpc://`` results over a SQLite broker: replies are rows of ``celeriac_replies`` in the
broker's file, one reply queue per client (its ``reply_to``), taken by that client alone,
oldest first, in one ``DELETE ... RETURNING``. A waiting client polls ``PRAGMA
data_version`` as the SQLite result backend does (no lock; the rows are read only after
a commit). A reply no client took is deleted ``reply_queue_expires`` after it was sent.
Celery has no SQLite transport, so this is celeriac's own layout. SQL lives in
``sql/rpc_queries.sql``; the shared part is :mod:`celeriac.transports.replies`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from celeriac.exceptions import BackendError
from celeriac.protocol import json_dumps
from celeriac.transports.replies import Reply, ReplyBackend
from celeriac.transports.sqlite import db as _sql

_CLEANUP_INTERVAL = 60.0


class SQLiteRPCBackend(ReplyBackend):
    """Replies in the broker's SQLite file; see the module docstring."""

    def __init__(self, url: str = "rpc://", *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        path, url_options = _sql.parse_url(str(self.options.get("broker_url") or "sqlite://"))
        opts = {**url_options, **(self.options.get("broker_options") or {})}
        self.path = path
        self._database = _sql.Database(
            path, busy_timeout=float(opts.get("busy_timeout", 5)), error=BackendError
        )
        self._watch = _sql.ChangeWatcher(0.001, float(opts.get("polling_interval", 0.05)))
        self._q = _sql.load_queries("rpc_queries.sql")
        self._next_cleanup = 0.0

    async def connect(self) -> None:
        self._database.get()

    async def _close(self) -> None:
        self._database.close()

    async def _push(self, replies: Sequence[Reply]) -> None:
        now = time.time()
        expires = now + self.reply_expires
        rows = [{"reply_to": r, "meta": json_dumps(m), "expires": expires} for r, _, m in replies]
        conn = self._database.get()
        with _sql.Transaction(conn, BackendError):
            conn.executemany(self._q["push"], rows)
            if now >= self._next_cleanup:
                self._next_cleanup = now + _CLEANUP_INTERVAL
                conn.execute(self._q["delete_expired"], {"now": now})
        self._watch.bump()

    async def _pull(self, queue: str, block: float) -> list[dict[str, Any]]:
        conn = self._database.get()
        deadline = time.time() + block
        snap = self._watch.snapshot(conn)
        while True:
            metas = self._take(conn, queue)
            if metas or block <= 0:
                return metas
            changed = await self._watch.wait(conn, snap, deadline)
            if changed is None:
                return []
            snap = changed

    def _take(self, conn: sqlite3.Connection, queue: str) -> list[dict[str, Any]]:
        params = {"reply_to": queue}
        try:
            if conn.execute(self._q["waiting"], params).fetchone() is None:
                return []  # the common case takes no write lock
        except sqlite3.Error as exc:
            raise BackendError(f"rpc result backend on SQLite: {exc}") from exc
        with _sql.Transaction(conn, BackendError):
            rows = conn.execute(self._q["take"], params).fetchall()
        metas = []
        for _, text in sorted(rows):
            meta = self._decode(text.encode("utf-8"), "application/json")
            if meta is not None:
                metas.append(meta)
        return metas


__all__ = ["SQLiteRPCBackend"]
