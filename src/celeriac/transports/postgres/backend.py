"""The PostgreSQL result backend (``postgresql://`` or ``postgres://``, psycopg 3).

Metas are JSON text (``protocol.json_dumps``) in ``<schema>.results``, written in
batches by one statement (the ``store_results`` SQL function), which NOTIFYs the ids
of the ready ones at commit. A waiting client LISTENs (:mod:`.listen`) and reads the
rows only when one of its ids was announced: no polling. Expired rows are invisible
and deleted lazily (every ``cleanup_interval`` seconds, default 60, by a writer).
Saved groups, chord counters (row locks in one transaction per batch), raw key values
and beat's claims live in the same schema. Options as for the broker: ``schema``,
``listen_url``; SQL in ``sql/backend_queries.sql``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import psycopg
from psycopg import sql

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
from celeriac.transports.postgres import db as _db
from celeriac.transports.postgres import schedule as _schedule
from celeriac.transports.postgres.listen import Listener

logger = logging.getLogger("celeriac.transports.postgres")
_READY = sorted(states.READY_STATES)
OPTIONS = frozenset({"schema", "listen_url", "cleanup_interval"})
BROKER_OPTIONS = frozenset({"visibility_timeout", "synchronous_commit"})


def _expiry(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl


class PostgresBackend(ResultBackend, ScheduleStore):
    """PostgreSQL result backend; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")

    def __init__(
        self, url: str = "postgresql://", *, options: dict[str, Any] | None = None
    ) -> None:
        conninfo, merged = _db.parse_url(url, options)
        super().__init__(url, options=merged)
        # the broker's options too when results share its URL: those are the broker's
        unknown = sorted(set(self.options) - OPTIONS - BROKER_OPTIONS)
        if unknown:
            logger.warning("PostgreSQL result backend: options %s do nothing", ", ".join(unknown))
        self.schema = str(self.options["schema"])
        self._db = _db.Connection(conninfo, self.schema, BackendError)
        self._channel = _db.channel(self.schema, "r")
        listen_url = str(self.options.get("listen_url") or conninfo)
        self._listener = Listener(_db.parse_url(listen_url)[0], BackendError)
        self._q = _db.load_queries("backend_queries.sql", self.schema)
        self._cleanup_interval = float(self.options.get("cleanup_interval", 60.0))
        self._next_cleanup = 0.0
        self._next_canvas_cleanup = 0.0
        self._waiters: list[tuple[frozenset[str], asyncio.Event]] = []

    async def connect(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._listener.close()
        await self._db.close()

    # -- results ---------------------------------------------------------------
    async def store(self, task_id: str, meta: dict[str, Any], ttl: float | None) -> None:
        await self.store_many([(task_id, meta, ttl)])

    async def store_many(self, items: Sequence[tuple[str, dict[str, Any], float | None]]) -> None:
        if not items:
            return
        now = time.time()
        params = (
            self._channel,
            [task_id for task_id, _, _ in items],
            [json_dumps(meta) for _, meta, _ in items],
            [str(meta.get("status")) for _, meta, _ in items],
            [_expiry(now, ttl) for _, _, ttl in items],
            _READY,
        )
        await self._db.execute(self._q["store"], params)
        if now >= self._next_cleanup:
            self._next_cleanup = now + self._cleanup_interval
            await self._db.execute(self._q["delete_expired"], (now,))

    async def get(self, task_id: str) -> dict[str, Any] | None:
        return (await self.get_many([task_id])).get(task_id)

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = await self._db.fetchall(self._q["get_many"], (list(task_ids), time.time()))
        return {tid: dict(json_loads(meta)) for tid, meta in rows}

    async def forget(self, task_id: str) -> None:
        await self._db.execute(self._q["forget"], (task_id,))

    def _on_note(self, payload: str | None) -> None:
        ids = None if payload is None else payload.split(",")
        for wanted, event in self._waiters:
            if ids is None or not wanted.isdisjoint(ids):
                event.set()

    async def wait(
        self, task_ids: Sequence[str], timeout: float | None, interval: float = 0.005
    ) -> dict[str, dict[str, Any]]:
        """Wait until one of ``task_ids`` is ready; rows are read again only when a
        notification names one of them (or the LISTEN connection was lost)."""
        ids = list(task_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        event = asyncio.Event()
        waiter = (frozenset(ids), event)
        self._waiters.append(waiter)
        try:
            if timeout is not None and timeout <= 0:  # one look
                rows = await self._db.fetchall(self._q["get_ready"], (ids, _READY, time.time()))
                return {tid: dict(json_loads(meta)) for tid, meta in rows}
            while True:
                event.clear()
                # LISTEN and look, in one round trip; once woken (or at the deadline),
                # UNLISTEN and look, in one round trip: a client listens only while
                # it waits
                query = self._ready_query(ids)
                rows = await self._listener.subscribe(self._channel, self._on_note, query)
                if not rows:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is None or remaining > 0:
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(event.wait(), remaining)
                    query = self._ready_query(ids)
                    rows = await self._listener.unsubscribe(self._channel, self._on_note, query)
                if rows:
                    return {tid: dict(json_loads(meta)) for tid, meta in rows}
                if deadline is not None and time.monotonic() >= deadline:
                    return {}
        finally:
            self._waiters.remove(waiter)
            if self._on_note in self._listener.handlers(self._channel):
                await self._listener.unsubscribe(self._channel, self._on_note)

    def _ready_query(self, ids: list[str]) -> sql.Composed:
        """``get_ready`` as one literal statement (it follows a LISTEN in one string)."""
        return sql.SQL(
            "SELECT task_id, meta FROM {}.results WHERE task_id = ANY({}::text[]) "
            "AND status = ANY({}::text[]) AND (expires IS NULL OR expires > {})"
        ).format(sql.Identifier(self.schema), sql.Literal(ids), sql.Literal(_READY),
                 sql.Literal(time.time()))  # fmt: skip

    # -- raw key values ----------------------------------------------------------
    async def kv_get(self, key: str) -> bytes | None:
        rows = await self._db.fetchall(self._q["kv_get"], (key, time.time()))
        return bytes(rows[0][0]) if rows else None

    async def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        params = (key, bytes(value), _expiry(time.time(), ttl))
        await self._db.execute(self._q["kv_set"], params)

    async def kv_delete(self, key: str) -> None:
        """Delete ``key`` (and any expired key, so they do not pile up)."""
        await self._db.execute(self._q["kv_delete"], (key, time.time()))

    def client(self) -> Any:
        """A new sync psycopg connection to the backend's database (autocommit)."""
        return psycopg.connect(self._db.conninfo, autocommit=True)

    # -- groups and chords -------------------------------------------------------
    async def _canvas_cleanup(self, conn: psycopg.AsyncConnection[Any], now: float) -> None:
        if now >= self._next_canvas_cleanup:
            self._next_canvas_cleanup = now + self._cleanup_interval
            await conn.execute(self._q["delete_expired_canvas"], (now, now, now))

    async def save_group(self, group_id: str, meta: dict[str, Any], ttl: float | None) -> None:
        now = time.time()
        async with self._db.use() as conn:
            params = (group_id, json_dumps(meta), _expiry(now, ttl))
            await conn.execute(self._q["save_group"], params)
            await self._canvas_cleanup(conn, now)

    async def restore_group(self, group_id: str) -> dict[str, Any] | None:
        rows = await self._db.fetchall(self._q["restore_group"], (group_id, time.time()))
        return dict(json_loads(rows[0][0])) if rows else None

    async def forget_group(self, group_id: str) -> None:
        await self._db.execute(self._q["forget_group"], (group_id,))

    async def _live_chord(
        self, conn: psycopg.AsyncConnection[Any], group_id: str, now: float
    ) -> Any:
        """The chord's locked row ``(size, claim, claim_expires, expires)``, None when
        absent; an expired row and its parts are deleted first."""
        cur = await conn.execute(self._q["chord_lock"], (group_id,))
        row = await cur.fetchone()
        if row is not None and row[3] is not None and row[3] <= now:
            await conn.execute(self._q["chord_reset"], (group_id,))
            await conn.execute(self._q["chord_drop"], (group_id,))
            return None
        return row

    async def chord_start(self, group_id: str, size: int, ttl: float | None) -> None:
        now = time.time()
        async with self._db.use() as conn, conn.transaction():
            await self._live_chord(conn, group_id, now)
            await conn.execute(self._q["chord_start"], (group_id, size, _expiry(now, ttl)))

    async def chord_grow(self, group_id: str, count: int) -> None:
        async with self._db.use() as conn:
            cur = await conn.execute(self._q["chord_grow"], (count, group_id))
            if not cur.rowcount:
                raise BackendError(f"chord {group_id} was not started: cannot add to it")

    async def chord_join(self, parts: Sequence[ChordPart], ttl: float | None) -> list[ChordClaim]:
        """One transaction for the batch, chords locked in group order (no deadlock
        between two workers' batches); see ``ResultBackend.chord_join``."""
        now = time.time()
        claims: list[ChordClaim] = []
        async with self._db.use() as conn:
            async with conn.transaction():
                for part in sorted(parts, key=lambda p: p.group_id):
                    claim = await self._join(conn, part, ttl, now)
                    if claim is not None:
                        claims.append(claim)
            await self._canvas_cleanup(conn, now)
        return claims

    async def _join(
        self, conn: psycopg.AsyncConnection[Any], part: ChordPart, ttl: float | None, now: float
    ) -> ChordClaim | None:
        gid, q = part.group_id, self._q
        row = await self._live_chord(conn, gid, now)
        if row is not None and row[1] == "done":
            return None
        part_json = json_dumps([1, part.task_id, part.state, part.result])
        await conn.execute(q["chord_add_part"], (gid, part.task_id, part.index, part_json))
        cur = await conn.execute(q["chord_touch"], (gid, part.size, _expiry(now, ttl)))
        touched = await cur.fetchone()
        assert touched is not None
        size, holder, holder_expires = touched
        if size is None or holder == "done":
            return None
        cur = await conn.execute(q["chord_count"], (gid,))
        counted = await cur.fetchone()
        if counted is None or counted[0] < size:
            return None
        if holder not in (None, part.task_id) and holder_expires > now:
            return None
        await conn.execute(q["chord_claim"], (part.task_id, now + CHORD_CLAIM_SECONDS, gid))
        cur = await conn.execute(q["chord_parts"], (gid,))
        results = []
        for (text,) in await cur.fetchall():
            _, task_id, state, result = json_loads(text)
            results.append((str(task_id), str(state), result))
        return ChordClaim(gid, part.task_id, results)

    async def chord_done(self, group_id: str, token: str) -> None:
        async with self._db.use() as conn, conn.transaction():
            params = (time.time() + CHORD_DONE_SECONDS, group_id, token)
            cur = await conn.execute(self._q["chord_done"], params)
            if cur.rowcount:
                await conn.execute(self._q["chord_reset"], (group_id,))

    # -- beat's claims, for a broker that cannot hold them (ScheduleStore) ---------
    async def schedule_runs(self, names: Sequence[str]) -> dict[str, int]:
        return await _schedule.runs(self._db, names)

    async def schedule_claim(
        self, name: str, last: int | None, slot: int, send: ScheduledSend | None = None
    ) -> bool:
        if send is not None:
            raise NotImplementedError("a result backend claims; the broker publishes")
        return await _schedule.claim(self._db, name, last, slot)

    async def schedule_entries(self) -> dict[str, bytes]:
        return await _schedule.entries(self._db)

    async def schedule_set_entry(self, name: str, data: bytes | None) -> None:
        await _schedule.set_entry(self._db, name, data)


__all__ = ["PostgresBackend"]
