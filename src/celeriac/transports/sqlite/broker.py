"""The default broker: one SQLite file shared by any number of producer and worker
processes (``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite://`` for
``./celeriac.sqlite3``).

At-least-once: a fetch leases rows in one write transaction (``UPDATE ... RETURNING``,
never select-then-delete); a lease that is not acked, requeued or extended in time makes
its row visible again with ``delivery_count`` + 1. Delayed messages wait in the same
table (``eta``) and are promoted by whoever fetches next.

The stdlib ``sqlite3`` module is called directly on the event-loop thread: WAL mode and
``synchronous=NORMAL`` make each call take microseconds, so a thread hop would cost more
than the call. A waiting fetch takes no lock: it checks ``PRAGMA data_version`` when
another process writes the file (Linux: inotify, :mod:`.filewatch`; then once a second
when idle) or else polls it (1 ms, backing off to ``polling_interval``), and wakes when
a delayed message or a lease comes due. Options: ``visibility_timeout`` (s, default
60), ``polling_interval`` (s, default 0.05), ``busy_timeout`` (s, default 5). SQL
lives in ``sql/broker_queries.sql``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from celeriac.exceptions import BrokerError
from celeriac.protocol import Message, decode_envelope, encode_envelope
from celeriac.transports.broker import Broker, DeadLetter, Delivery, Revocation, bucket_take
from celeriac.transports.capabilities import (
    DeadLetterRemoval,
    DeadLetterStore,
    EventChannel,
    LeaseRecovery,
    RateLimitStore,
    RemoteControl,
    RevocationStore,
    ScheduledSend,
    ScheduleStore,
)
from celeriac.transports.sqlite import db as _sql
from celeriac.transports.sqlite import schedule as _schedule
from celeriac.transports.sqlite.fanout import SQLiteFanout


def _delivery(queue: str, tag: str, raw: bytes, count: int) -> Delivery:
    try:
        return Delivery(queue, tag, raw, decode_envelope(raw), count)
    except Exception as exc:  # bad bytes must reach the worker as a dead-letter case
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return Delivery(queue, tag, raw, None, count, error=str(reason))


def _ack_rows(deliveries: Sequence[Delivery]) -> list[dict[str, Any]]:
    return [{"id": i, "token": t} for i, t in (_parse_tag(d.tag) for d in deliveries)]


def _parse_tag(tag: str) -> tuple[int, int]:
    row_id, _, token = tag.partition(":")
    return int(row_id), int(token)


class SQLiteBroker(
    SQLiteFanout,
    Broker,
    LeaseRecovery,
    RevocationStore,
    RateLimitStore,
    DeadLetterStore,
    DeadLetterRemoval,
    RemoteControl,
    EventChannel,
    ScheduleStore,
):
    """SQLite broker; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)

    def __init__(self, url: str = "sqlite://", *, options: dict[str, Any] | None = None):
        path, url_options = _sql.parse_url(url)
        super().__init__(url, options={**url_options, **(options or {})})
        self.path = path
        self._database = _sql.Database(
            path, busy_timeout=float(self.options.get("busy_timeout", 5)), error=BrokerError
        )
        self._db = self._database.get
        self._turn = 0
        self._watch = _sql.ChangeWatcher(
            0.001, float(self.options.get("polling_interval", 0.05)), path=path
        )
        self._q = _sql.load_queries("broker_queries.sql")

    # -- lifecycle --------------------------------------------------------
    async def connect(self) -> None:
        self._db()

    async def close(self) -> None:
        self._watch.close()
        self._database.close()

    # -- producing --------------------------------------------------------
    async def publish(
        self, queue: str, message: Message, *, priority: int = 0, not_before: float | None = None
    ) -> None:
        self.publish_raw(queue, encode_envelope(message, queue=queue), priority, not_before)

    async def publish_many(self, items: Sequence[tuple[str, Message, int, float | None]]) -> None:
        now = time.time()
        rows = [
            self._row(queue, encode_envelope(message, queue=queue), priority, not_before, now)
            for queue, message, priority, not_before in items
        ]
        conn = self._db()
        with _sql.Transaction(conn, BrokerError):
            conn.executemany(self._q["publish"], rows)
        self._watch.bump()

    def publish_raw(
        self, queue: str, raw: bytes, priority: int = 0, not_before: float | None = None
    ) -> None:
        """Store ``raw`` bytes as they are (tests use it to inject undecodable messages)."""
        conn = self._db()
        row = self._row(queue, bytes(raw), priority, not_before, time.time())
        with _sql.Transaction(conn, BrokerError):
            conn.execute(self._q["publish"], row)
        self._watch.bump()

    @staticmethod
    def _row(
        queue: str, raw: bytes, priority: int, not_before: float | None, now: float
    ) -> dict[str, Any]:
        eta = not_before if not_before is not None and not_before > now else None
        return {"queue": queue, "priority": priority, "payload": raw, "eta": eta, "now": now}

    # -- consuming --------------------------------------------------------
    async def fetch(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        return await self.ack_and_fetch((), queues, max_count, timeout)

    async def ack_and_fetch(
        self, acks: Sequence[Delivery], queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        if max_count <= 0 or not queues:
            await self.ack(acks)
            return []
        conn = self._db()
        deadline = time.time() + timeout
        snap = self._watch.snapshot(conn)
        found, due = self._lease(conn, queues, max_count, acks)
        while not found:
            until = deadline if due is None else min(deadline, due)
            changed = await self._watch.wait(conn, snap, until)
            if changed is not None:  # someone committed: look before taking the lock
                snap = changed
                ready, due = self._peek(conn, queues)
                if not ready and (due is None or due > time.time()):
                    continue
            elif time.time() >= deadline:
                return []
            found, due = self._lease(conn, queues, max_count)
        return [_delivery(queue, f"{r[0]}:{r[3]}", r[2], r[4]) for queue, r in found]

    def _lease(
        self,
        conn: sqlite3.Connection,
        queues: Sequence[str],
        max_count: int,
        acks: Sequence[Delivery] = (),
    ) -> tuple[list[tuple[str, Any]], float | None]:
        """One write transaction: ack ``acks``, promote due rows, lease up to
        ``max_count``; when none, also return the earliest time something comes due."""
        now = time.time()
        q = self._q
        found: list[tuple[str, Any]] = []
        due: float | None = None
        self._turn += 1
        k = self._turn % len(queues)
        with _sql.Transaction(conn, BrokerError):
            if acks:
                conn.executemany(q["ack"], _ack_rows(acks))
            conn.execute(q["promote_delayed"], {"now": now})
            conn.execute(q["expire_leases"], {"now": now})
            for queue in [*queues[k:], *queues[:k]]:
                params = {
                    "queue": queue,
                    "limit": max_count - len(found),
                    "expires": now + self.lease_seconds,
                    "owner": self.consumer_id or None,
                }
                rows = conn.execute(q["lease"], params).fetchall()
                rows.sort(key=lambda r: (-r[1], r[0]))  # RETURNING order is unspecified
                found += [(queue, r) for r in rows]
                if len(found) >= max_count:
                    break
            if not found:
                due = _earliest(conn.execute(q["next_due"]).fetchone())
        return found, due

    def _peek(self, conn: sqlite3.Connection, queues: Sequence[str]) -> tuple[bool, float | None]:
        """Read only (no lock): is anything ready in ``queues``, and what comes due next."""
        (row,) = self._read(conn, "peek", {"queues": json.dumps(list(queues))})
        return bool(row[0]), _earliest(row[1:])

    def _read(self, conn: sqlite3.Connection, query: str, params: dict[str, Any]) -> list[Any]:
        try:
            return conn.execute(self._q[query], params).fetchall()
        except sqlite3.Error as exc:
            raise BrokerError(f"SQLite broker: {exc}") from exc

    def _write_many(self, query: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn = self._db()
            with _sql.Transaction(conn, BrokerError):
                conn.executemany(self._q[query], rows)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._write_many("ack", _ack_rows(deliveries))

    async def requeue(
        self,
        deliveries: Sequence[Delivery],
        *,
        not_before: float | None = None,
        count_delivery: bool = False,
    ) -> None:
        eta = not_before if not_before is not None and not_before > time.time() else None
        uncount = 0 if count_delivery else 1
        rows = [
            {"id": i, "token": t, "eta": eta, "uncount": uncount}
            for i, t in (_parse_tag(d.tag) for d in deliveries)
        ]
        self._write_many("requeue", rows)
        self._watch.bump()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        row_id, token = _parse_tag(delivery.tag)
        params = {"id": row_id, "token": token, "reason": reason, "now": time.time()}
        conn = self._db()
        with _sql.Transaction(conn, BrokerError):
            conn.execute(self._q["dead_letter"], params)
            conn.execute(self._q["ack"], params)

    async def extend(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        expires = time.time() + seconds
        rows = [
            {"id": i, "token": t, "expires": expires}
            for i, t in (_parse_tag(d.tag) for d in deliveries)
        ]
        self._write_many("extend", rows)

    async def recover(self, consumer_id: str, keep: Sequence[Delivery] = ()) -> int:
        if not consumer_id:
            return 0
        kept = json.dumps([_parse_tag(d.tag)[0] for d in keep])
        conn = self._db()
        with _sql.Transaction(conn, BrokerError):
            count = conn.execute(self._q["recover"], {"owner": consumer_id, "keep": kept}).rowcount
        self._watch.bump()
        return count

    # -- control state ----------------------------------------------------

    async def revoke(
        self,
        task_ids: Sequence[str],
        ttl: float,
        *,
        terminate: bool = False,
        signal: str | None = None,
    ) -> None:
        now = time.time()
        rows = [
            {"task_id": t, "expires": now + ttl, "terminate": int(terminate), "signal": signal}
            for t in task_ids
        ]
        conn = self._db()
        with _sql.Transaction(conn, BrokerError):
            conn.execute(self._q["forget_revoked"], {"now": now})
            conn.executemany(self._q["revoke"], rows)

    async def revoked(self, task_ids: Sequence[str]) -> dict[str, Revocation]:
        if not task_ids:
            return {}
        conn = self._db()
        rows = self._read(conn, "revoked", {"now": time.time(), "ids": json.dumps(list(task_ids))})
        return {r[0]: Revocation(bool(r[1]), r[2]) for r in rows}

    async def revoked_ids(self, limit: int) -> list[str]:
        rows = self._read(self._db(), "revoked_ids", {"now": time.time(), "limit": limit})
        return [str(r[0]) for r in rows]

    async def take_token(self, key: str, rate: float, capacity: float) -> float:
        conn = self._db()
        now = time.time()
        with _sql.Transaction(conn, BrokerError):
            row = conn.execute(self._q["bucket_get"], {"key": key}).fetchone()
            tokens, wait = bucket_take(
                row[0] if row else None, row[1] if row else now, now, rate, capacity
            )
            conn.execute(self._q["bucket_set"], {"key": key, "tokens": tokens, "now": now})
        return wait

    # -- beat's store (ScheduleStore: sqlite/schedule.py) -------------------------
    async def schedule_runs(self, names: Sequence[str]) -> dict[str, int]:
        return _schedule.runs(self._db(), names)

    async def schedule_claim(
        self, name: str, last: int | None, slot: int, send: ScheduledSend | None = None
    ) -> bool:
        publish = None
        if send is not None:
            queue, message, priority, not_before = send
            row = self._row(
                queue, encode_envelope(message, queue=queue), priority, not_before, time.time()
            )

            def publish(conn: sqlite3.Connection) -> None:
                conn.execute(self._q["publish"], row)

        claimed = _schedule.claim(self._db(), BrokerError, name, last, slot, publish)
        if claimed and send is not None:
            self._watch.bump()
        return claimed

    async def schedule_entries(self) -> dict[str, bytes]:
        return _schedule.entries(self._db())

    async def schedule_set_entry(self, name: str, data: bytes | None) -> None:
        _schedule.set_entry(self._db(), BrokerError, name, data)

    # -- administration ---------------------------------------------------
    async def purge(self, queue: str) -> int:
        conn = self._db()
        with _sql.Transaction(conn, BrokerError):
            conn.execute(self._q["expire_leases"], {"now": time.time()})
            ready = conn.execute(self._q["purge_ready"], {"queue": queue}).rowcount
            return ready + conn.execute(self._q["purge_delayed"], {"queue": queue}).rowcount

    async def size(self, queue: str) -> int:
        (row,) = self._read(self._db(), "size", {"queue": queue, "now": time.time()})
        return int(row[0])

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._read(self._db(), "dead_letters", {"limit": limit})
        return [DeadLetter(q, bytes(raw), reason, at) for q, raw, reason, at in rows]

    async def remove_dead_letter(self, letter: DeadLetter) -> bool:
        params = {"queue": letter.queue, "failed_at": letter.failed_at, "payload": letter.raw}
        conn = self._db()
        with _sql.Transaction(conn, BrokerError):
            cursor = conn.execute(self._q["remove_dead_letter"], params)
        return cursor.rowcount > 0


def _earliest(values: Sequence[float | None]) -> float | None:
    times = [v for v in values if v is not None]
    return min(times) if times else None


__all__ = ["SQLiteBroker"]
