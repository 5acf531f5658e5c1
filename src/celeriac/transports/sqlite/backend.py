"""Result backend in a SQLite file (by default the broker's own file).

URL forms as for the SQLite broker: ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
``sqlite://`` (``./celeriac.sqlite3``). Metas are stored as JSON text
(``protocol.json_dumps``) in ``celeriac_results``; rows past their expiry are invisible
and deleted lazily (at most every ``cleanup_interval`` seconds, default 60, by a writer).
``wait`` polls ``PRAGMA data_version`` (no lock, no row reads) and reads the rows only
when another connection committed. SQL lives in ``sql/backend_queries.sql``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from celeriac import states
from celeriac.exceptions import BackendError
from celeriac.protocol import json_dumps, json_loads
from celeriac.transports.backend import (
    CHORD_CLAIM_SECONDS,
    CHORD_DONE_SECONDS,
    ChordClaim,
    ChordPart,
    ResultBackend,
)
from celeriac.transports.capabilities import ScheduledSend, ScheduleStore
from celeriac.transports.sqlite import db as _sql
from celeriac.transports.sqlite import schedule as _schedule

_READY_JSON = json.dumps(sorted(states.READY_STATES))


class SQLiteBackend(ResultBackend, ScheduleStore):
    """SQLite result backend; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)

    def __init__(self, url: str = "sqlite://", *, options: dict[str, Any] | None = None):
        path, url_options = _sql.parse_url(url)
        super().__init__(url, options={**url_options, **(options or {})})
        self.path = path
        self._database = _sql.Database(
            path, busy_timeout=float(self.options.get("busy_timeout", 5)), error=BackendError
        )
        self._db = self._database.get
        self._watch = _sql.ChangeWatcher(0.001, float(self.options.get("polling_interval", 0.05)))
        self._cleanup_interval = float(self.options.get("cleanup_interval", 60.0))
        self._next_cleanup = 0.0
        self._q = _sql.load_queries("backend_queries.sql")
        self._cq = _sql.load_queries("canvas_queries.sql")
        self._kq = _sql.load_queries("kv_queries.sql")
        self._next_canvas_cleanup = 0.0

    async def connect(self) -> None:
        self._db()

    async def close(self) -> None:
        self._database.close()

    async def store(self, task_id: str, meta: dict[str, Any], ttl: float | None) -> None:
        await self.store_many([(task_id, meta, ttl)])

    async def store_many(self, items: Sequence[tuple[str, dict[str, Any], float | None]]) -> None:
        now = time.time()
        rows = [
            {
                "task_id": task_id,
                "meta": json_dumps(meta),
                "status": str(meta.get("status")),
                "expires": None if ttl is None else now + ttl,
            }
            for task_id, meta, ttl in items
        ]
        conn = self._db()
        with _sql.Transaction(conn, BackendError):
            conn.executemany(self._q["store"], rows)
            if now >= self._next_cleanup:
                self._next_cleanup = now + self._cleanup_interval
                conn.execute(self._q["delete_expired"], {"now": now})
        self._watch.bump()

    def _read(self, query: str, params: dict[str, Any]) -> list[Any]:
        try:
            return self._db().execute(self._q[query], params).fetchall()
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite result backend: {exc}") from exc

    async def get(self, task_id: str) -> dict[str, Any] | None:
        rows = self._read("get", {"task_id": task_id, "now": time.time()})
        return dict(json_loads(rows[0][0])) if rows else None

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        params = {"task_ids": json.dumps(list(task_ids)), "now": time.time()}
        return {tid: dict(json_loads(meta)) for tid, meta in self._read("get_many", params)}

    def _ready(self, ids_json: str) -> dict[str, dict[str, Any]]:
        params = {"task_ids": ids_json, "states": _READY_JSON, "now": time.time()}
        return {tid: dict(json_loads(meta)) for tid, meta in self._read("get_ready", params)}

    async def recent_results(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        rows = self._read("recent", {"limit": limit, "now": time.time()})
        return [(tid, dict(json_loads(meta))) for tid, meta in rows]

    async def forget(self, task_id: str) -> None:
        conn = self._db()
        with _sql.Transaction(conn, BackendError):
            conn.execute(self._q["forget"], {"task_id": task_id})

    # -- raw key values (app.backend.get/set/delete) ----------------------------
    async def kv_get(self, key: str) -> bytes | None:
        try:
            rows = self._db().execute(self._kq["kv_get"], {"key": key, "now": time.time()})
            found = rows.fetchall()
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite result backend: {exc}") from exc
        return bytes(found[0][0]) if found else None

    async def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        params = {"key": key, "value": bytes(value), "expires": _expiry(time.time(), ttl)}
        conn = self._db()
        with _sql.Transaction(conn, BackendError):
            conn.execute(self._kq["kv_set"], params)

    async def kv_delete(self, key: str) -> None:
        """Delete ``key`` (and any expired key, so they do not pile up)."""
        conn = self._db()
        with _sql.Transaction(conn, BackendError):
            conn.execute(self._kq["kv_delete"], {"key": key, "now": time.time()})

    # -- groups and chords ---------------------------------------------------
    def _canvas_cleanup(self, conn: sqlite3.Connection, now: float) -> None:
        if now >= self._next_canvas_cleanup:
            self._next_canvas_cleanup = now + self._cleanup_interval
            for name in (
                "delete_expired_groups",
                "delete_expired_chord_parts",
                "delete_expired_chords",
            ):
                conn.execute(self._cq[name], {"now": now})

    async def save_group(self, group_id: str, meta: dict[str, Any], ttl: float | None) -> None:
        now = time.time()
        params = {
            "group_id": group_id,
            "meta": json_dumps(meta),
            "expires": None if ttl is None else now + ttl,
        }
        conn = self._db()
        with _sql.Transaction(conn, BackendError):
            conn.execute(self._cq["save_group"], params)
            self._canvas_cleanup(conn, now)

    async def restore_group(self, group_id: str) -> dict[str, Any] | None:
        try:
            rows = (
                self._db()
                .execute(self._cq["restore_group"], {"group_id": group_id, "now": time.time()})
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite result backend: {exc}") from exc
        return dict(json_loads(rows[0][0])) if rows else None

    async def forget_group(self, group_id: str) -> None:
        conn = self._db()
        with _sql.Transaction(conn, BackendError):
            conn.execute(self._cq["forget_group"], {"group_id": group_id})

    async def chord_start(self, group_id: str, size: int, ttl: float | None) -> None:
        now = time.time()
        conn = self._db()
        with _sql.Transaction(conn, BackendError):
            self._live_chord(conn, group_id, now)
            params = {"group_id": group_id, "size": size, "expires": _expiry(now, ttl)}
            conn.execute(self._cq["chord_start"], params)

    def _live_chord(self, conn: sqlite3.Connection, group_id: str, now: float) -> Any:
        """The chord's row ``(size, claim, claim_expires, expires)``, None when absent;
        an expired row and its parts are deleted first."""
        row = conn.execute(self._cq["chord_get"], {"group_id": group_id}).fetchone()
        if row is not None and row[3] is not None and row[3] <= now:
            conn.execute(self._cq["chord_reset"], {"group_id": group_id})
            conn.execute(self._cq["chord_drop"], {"group_id": group_id})
            return None
        return row

    async def chord_grow(self, group_id: str, count: int) -> None:
        conn = self._db()
        with _sql.Transaction(conn, BackendError):
            params = {"group_id": group_id, "count": count}
            if not conn.execute(self._cq["chord_grow"], params).rowcount:
                raise BackendError(f"chord {group_id} was not started: cannot add to it")

    async def chord_join(self, parts: Sequence[ChordPart], ttl: float | None) -> list[ChordClaim]:
        """One write transaction for the whole batch; see ``ResultBackend.chord_join``."""
        now = time.time()
        claims: list[ChordClaim] = []
        conn = self._db()
        with _sql.Transaction(conn, BackendError):
            for part in parts:
                claim = self._join(conn, part, ttl, now)
                if claim is not None:
                    claims.append(claim)
            self._canvas_cleanup(conn, now)
        return claims

    def _join(
        self, conn: sqlite3.Connection, part: ChordPart, ttl: float | None, now: float
    ) -> ChordClaim | None:
        gid = part.group_id
        row = self._live_chord(conn, gid, now)
        if row is not None and row[1] == "done":
            return None
        conn.execute(
            self._cq["chord_add_part"],
            {
                "group_id": gid,
                "task_id": part.task_id,
                "idx": part.index,
                "part": json_dumps([1, part.task_id, part.state, part.result]),
            },
        )
        params = {"group_id": gid, "size": part.size, "expires": _expiry(now, ttl)}
        conn.execute(self._cq["chord_touch"], params)
        size = row[0] if row is not None and row[0] is not None else part.size
        if size is None:
            return None
        (count,) = conn.execute(self._cq["chord_count"], {"group_id": gid}).fetchone()
        if count < size:
            return None
        holder, holder_expires = (row[1], row[2]) if row is not None else (None, 0.0)
        if holder not in (None, part.task_id) and holder_expires > now:
            return None
        conn.execute(
            self._cq["chord_claim"],
            {"group_id": gid, "token": part.task_id, "claim_expires": now + CHORD_CLAIM_SECONDS},
        )
        results = []
        for (text,) in conn.execute(self._cq["chord_parts"], {"group_id": gid}):
            _, task_id, state, result = json_loads(text)
            results.append((str(task_id), str(state), result))
        return ChordClaim(gid, part.task_id, results)

    async def chord_done(self, group_id: str, token: str) -> None:
        now = time.time()
        conn = self._db()
        with _sql.Transaction(conn, BackendError):
            params = {"group_id": group_id, "token": token, "expires": now + CHORD_DONE_SECONDS}
            if conn.execute(self._cq["chord_done"], params).rowcount:
                conn.execute(self._cq["chord_reset"], {"group_id": group_id})

    async def wait(
        self, task_ids: Sequence[str], timeout: float | None, interval: float = 0.005
    ) -> dict[str, dict[str, Any]]:
        """Wait until one of ``task_ids`` is ready; rows are re-read only after a commit
        (``PRAGMA data_version``) or a store through this instance."""
        conn = self._db()
        ids_json = json.dumps(list(task_ids))
        deadline = float("inf") if timeout is None else time.time() + timeout
        snap = self._watch.snapshot(conn)
        while True:
            ready = self._ready(ids_json)
            if ready:
                return ready
            changed = await self._watch.wait(conn, snap, deadline)
            if changed is None:
                return {}
            snap = changed

    # -- beat's claims, for a broker that cannot hold them (ScheduleStore) ---------
    async def schedule_runs(self, names: Sequence[str]) -> dict[str, int]:
        return _schedule.runs(self._db(), names)

    async def schedule_claim(
        self, name: str, last: int | None, slot: int, send: ScheduledSend | None = None
    ) -> bool:
        if send is not None:
            raise NotImplementedError("a result backend claims; the broker publishes")
        return _schedule.claim(self._db(), BackendError, name, last, slot)

    async def schedule_entries(self) -> dict[str, bytes]:
        return _schedule.entries(self._db())

    async def schedule_set_entry(self, name: str, data: bytes | None) -> None:
        _schedule.set_entry(self._db(), BackendError, name, data)


def _expiry(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl


__all__ = ["SQLiteBackend"]
