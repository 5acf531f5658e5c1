"""The PostgreSQL broker (``postgresql://`` or ``postgres://``, psycopg 3, async).

Messages wait in ``<schema>.messages``; a fetch moves up to a batch of them into
``<schema>.leases`` in one round trip (the ``fetch`` SQL function: it also acks the
previous batch, brings due delayed messages and expired leases back, and picks rows
with ``FOR UPDATE SKIP LOCKED``, so consumers never wait on each other). A lease that
is not acked, requeued or extended by its deadline goes back with ``delivery_count``
+ 1; ``recover(consumer_id)`` returns a dead worker's leases at once. Delayed
messages wait in the same table, in the indexed ``eta`` column.

An idle consumer waits on LISTEN (:mod:`.listen`): every publish NOTIFYs the queue's
name at commit, so a waiting fetch runs again within a round trip, and otherwise
sleeps until its timeout or the next delayed message or lease deadline. No polling.

Options (``broker_transport_options`` or URL query): ``schema`` (default
``celeriac``), ``visibility_timeout`` (lease seconds, default 60), ``listen_url`` (a
session connection for LISTEN, for PgBouncer in transaction mode; see :mod:`.listen`).
SQL lives in ``sql/`` (``migrations/`` creates the schema, ``broker_queries.sql``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import psycopg

from celeriac.exceptions import BrokerError, ImproperlyConfigured
from celeriac.protocol import Message, decode_envelope, encode_envelope
from celeriac.transports.broker import Broker, DeadLetter, Delivery, Revocation
from celeriac.transports.capabilities import (
    DeadLetterStore,
    EventChannel,
    LeaseRecovery,
    RateLimitStore,
    RemoteControl,
    RevocationStore,
    ScheduledSend,
    ScheduleStore,
    revocations_of,
)
from celeriac.transports.postgres import db as _db
from celeriac.transports.postgres import schedule as _schedule
from celeriac.transports.postgres.fanout import PostgresFanout
from celeriac.transports.postgres.listen import Listener

logger = logging.getLogger("celeriac.transports.postgres")

#: the options this broker reads; any other is said at start-up to do nothing
OPTIONS = frozenset({"schema", "visibility_timeout", "listen_url", "synchronous_commit"})
_REVOKE_GC_EVERY = 60.0


def _delivery(queue: str, tag: str, raw: bytes, count: int) -> Delivery:
    try:
        return Delivery(queue, tag, raw, decode_envelope(raw), count)
    except Exception as exc:  # bad bytes reach the worker as a dead-letter case
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return Delivery(queue, tag, raw, None, count, error=str(reason))


def _ids(deliveries: Sequence[Delivery]) -> list[int]:
    return [int(d.tag) for d in deliveries]


def publish_args(
    channel: str, items: Sequence[tuple[str, bytes, int, float | None]], now: float
) -> dict[str, Any]:
    """The parameters of the ``publish`` query for ``(queue, raw, priority, not_before)``."""
    queues, priorities, payloads, etas = [], [], [], []
    for queue, raw, priority, not_before in items:
        queues.append(queue)
        priorities.append(max(-32768, min(32767, int(priority))))
        payloads.append(raw)
        etas.append(not_before if not_before is not None and not_before > now else None)
    return {
        "chan": channel,
        "queues": queues,
        "priorities": priorities,
        "payloads": payloads,
        "etas": etas,
        "now": now,
    }


class PostgresBroker(
    PostgresFanout,
    Broker,
    LeaseRecovery,
    RevocationStore,
    RateLimitStore,
    DeadLetterStore,
    RemoteControl,
    EventChannel,
    ScheduleStore,
):
    """PostgreSQL broker; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")

    def __init__(
        self, url: str = "postgresql://", *, options: dict[str, Any] | None = None
    ) -> None:
        conninfo, merged = _db.parse_url(url, options)
        super().__init__(url, options=merged)
        unknown = sorted(set(self.options) - OPTIONS)
        if unknown:
            logger.warning("PostgreSQL broker: options %s do nothing here", ", ".join(unknown))
        self.schema = str(self.options["schema"])
        self._db = _db.Connection(conninfo, self.schema, BrokerError)
        self._queue_channel = _db.channel(self.schema, "q")
        self._fan_channel = _db.channel(self.schema, "f")
        listen_url = str(self.options.get("listen_url") or conninfo)
        self._listener = Listener(_db.parse_url(listen_url)[0], BrokerError)
        self._q = _db.load_queries("broker_queries.sql", self.schema)
        self._waiters: list[tuple[frozenset[str], asyncio.Event]] = []
        self._turn = 0
        self._revoke_gc = 0.0
        sync = str(self.options.get("synchronous_commit", "on")).lower()
        if sync not in ("on", "off"):
            raise ImproperlyConfigured(f"PostgreSQL broker: synchronous_commit {sync!r}: on or off")
        self._durable = sync == "on"

    def _fq(self) -> dict[str, str]:
        return self._q

    # -- lifecycle --------------------------------------------------------
    async def connect(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._listener.close()
        await self._db.close()

    # -- producing --------------------------------------------------------
    async def publish(
        self, queue: str, message: Message, *, priority: int = 0, not_before: float | None = None
    ) -> None:
        await self._publish([(queue, encode_envelope(message, queue=queue), priority, not_before)])

    async def publish_many(self, items: Sequence[tuple[str, Message, int, float | None]]) -> None:
        await self._publish([(q, encode_envelope(m, queue=q), p, nb) for q, m, p, nb in items])

    async def publish_raw(self, queue: str, raw: bytes, priority: int = 0) -> None:
        """Store ``raw`` bytes as they are (tests inject undecodable messages)."""
        await self._publish([(queue, bytes(raw), priority, None)])

    async def _publish(self, items: Sequence[tuple[str, bytes, int, float | None]]) -> None:
        if not items:
            return
        now = time.time()
        query = self._q["publish" if self._durable else "publish_async"]
        await self._db.execute(query, publish_args(self._queue_channel, items, now))

    # -- consuming --------------------------------------------------------
    def _on_queue_note(self, payload: str | None) -> None:
        for queues, event in self._waiters:
            if not payload or payload in queues:
                event.set()

    async def fetch(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        return await self.ack_and_fetch((), queues, max_count, timeout)

    async def ack_and_fetch(
        self, acks: Sequence[Delivery], queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        if max_count <= 0 or not queues:
            await self.ack(acks)
            return []
        self._turn += 1
        k = self._turn % len(queues)
        order = [*queues[k:], *queues[:k]]
        deadline = time.monotonic() + timeout
        event = asyncio.Event()
        waiter = (frozenset(queues), event)
        self._waiters.append(waiter)
        listening = False
        try:
            ack_ids = _ids(acks)
            while True:
                event.clear()  # a notification from now on means: look again
                rows = await self._lease(order, max_count, ack_ids)
                ack_ids = []
                if rows:
                    found = [_delivery(q, str(i), bytes(raw), n) for i, q, raw, n, _ in rows]
                    if not rows[0][4]:
                        for delivery in found:
                            delivery.extra["pg_unrevoked"] = True
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if not listening:  # LISTEN, then look once more before waiting
                    await self._listener.subscribe(self._queue_channel, self._on_queue_note)
                    listening = True
                    continue
                await self._listener.ensure()  # back after a lost connection
                due = await self._next_due(order)
                if due is not None:
                    remaining = min(remaining, max(0.0, due - time.time()) + 0.001)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
        finally:
            self._waiters.remove(waiter)
            if listening and not self.consumer_id:  # a client: its loop may stop now
                await self._listener.unsubscribe(self._queue_channel, self._on_queue_note)

    async def _lease(self, queues: list[str], max_count: int, acks: list[int]) -> list[Any]:
        params = (
            queues,
            max_count,
            self.consumer_id or None,
            self.lease_seconds,
            time.time(),
            acks,
        )
        return await self._db.fetchall(self._q["fetch"], params)

    async def _next_due(self, queues: list[str]) -> float | None:
        rows = await self._db.fetchall(self._q["next_due"], (queues, queues))
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            await self._db.execute(self._q["ack"], (_ids(deliveries),))

    async def requeue(
        self,
        deliveries: Sequence[Delivery],
        *,
        not_before: float | None = None,
        count_delivery: bool = False,
    ) -> None:
        if not deliveries:
            return
        eta = not_before if not_before is not None and not_before > time.time() else None
        params = (_ids(deliveries), eta, 0 if count_delivery else 1, self._queue_channel)
        await self._db.execute(self._q["give_back"], params)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        params = (int(delivery.tag), reason, time.time())
        await self._db.execute(self._q["dead_letter"], params)

    async def extend(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        if deliveries:
            await self._db.execute(self._q["extend"], (_ids(deliveries), time.time() + seconds))

    async def recover(self, consumer_id: str, keep: Sequence[Delivery] = ()) -> int:
        if not consumer_id:
            return 0
        rows = await self._db.fetchall(
            self._q["recover"], (consumer_id, _ids(keep), self._queue_channel)
        )
        return int(rows[0][0]) if rows else 0

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
        if now - self._revoke_gc > _REVOKE_GC_EVERY:
            self._revoke_gc = now
            await self._db.execute(self._q["forget_revoked"], (now,))
        params = (now + ttl, terminate, signal, list(task_ids))
        await self._db.execute(self._q["revoke"], params)

    async def revoked(self, task_ids: Sequence[str]) -> dict[str, Revocation]:
        if not task_ids:
            return {}
        rows = await self._db.fetchall(self._q["revoked"], (list(task_ids), time.time()))
        return {r[0]: Revocation(bool(r[1]), r[2]) for r in rows}

    async def revoked_among(self, deliveries: Sequence[Delivery]) -> dict[str, Revocation]:
        """No look-up when the fetch found no revocation in force."""
        if all(d.extra.get("pg_unrevoked") for d in deliveries):
            return {}
        return await revocations_of(self, [d.message for d in deliveries if d.message])

    async def take_token(self, key: str, rate: float, capacity: float) -> float:
        params = (key, float(rate), float(capacity), time.time())
        rows = await self._db.fetchall(self._q["take_token"], params)
        return float(rows[0][0])

    # -- beat's store (ScheduleStore: postgres/schedule.py) -----------------------
    async def schedule_runs(self, names: Sequence[str]) -> dict[str, int]:
        return await _schedule.runs(self._db, names)

    async def schedule_claim(
        self, name: str, last: int | None, slot: int, send: ScheduledSend | None = None
    ) -> bool:
        publish = None
        if send is not None:
            queue, message, priority, not_before = send
            now = time.time()
            items = [(queue, encode_envelope(message, queue=queue), priority, not_before)]
            params = publish_args(self._queue_channel, items, now)

            async def publish(conn: psycopg.AsyncConnection[Any]) -> None:
                await conn.execute(self._q["publish"], params)

        return await _schedule.claim(self._db, name, last, slot, publish)

    async def schedule_entries(self) -> dict[str, bytes]:
        return await _schedule.entries(self._db)

    async def schedule_set_entry(self, name: str, data: bytes | None) -> None:
        await _schedule.set_entry(self._db, name, data)

    # -- administration ---------------------------------------------------
    async def purge(self, queue: str) -> int:
        rows = await self._db.fetchall(self._q["purge"], (queue, queue, time.time()))
        return int(rows[0][0])

    async def size(self, queue: str) -> int:
        rows = await self._db.fetchall(self._q["size"], (queue, queue, time.time()))
        return int(rows[0][0])

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = await self._db.fetchall(self._q["dead_letters"], (limit,))
        return [DeadLetter(q, bytes(raw), reason, at) for q, raw, reason, at in rows]


__all__ = ["PostgresBroker", "publish_args"]
