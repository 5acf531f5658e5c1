"""Redis broker, wire-compatible with Celery's Redis transport (``redis://host:port/db``,
``rediss://``, ``unix:///path?db=N`` or ``redis+socket://``, and
``sentinel://h1:26379;sentinel://h2:26379`` with ``master_name`` in the transport options).

Queues are Celery's lists (a Celery client can feed a celeriac worker and the reverse);
our leases, delivery counts, delays and dead letters sit beside them in keys of our own
(``lua/common.lua`` lists them all). One Lua script per batch acks, restores expired
leases, moves due delayed messages and leases up to N messages atomically; an idle
consumer waits on its queues' lists themselves (:mod:`.wakeup`), so any producer's push
wakes it, and the wait never takes a message out of its list (only the fetch script
does, recording the lease in the same step). Two envelopes sharing a delivery tag get a
lease each. At-least-once; a higher priority is served
first (``priority_order='lower_first'`` reads the buckets in Celery's order).

**Options** (``broker_transport_options`` or the URL's query string):
``global_keyprefix``, ``visibility_timeout``, ``polling_interval``, ``priority_order``,
``eta_in_queue``, ``foreign_visibility_timeout``, ``master_name`` and ``sentinel_kwargs``
(sentinel), and the client's ``socket_timeout`` (default 30), ``socket_connect_timeout``
(default 5), ``socket_keepalive``, ``health_check_interval`` (default 5: every
connection's deadline, :mod:`.resp_async`; ``max_connections`` is accepted and does
nothing: one warning line says so).

The layout, priorities, fetching, delays and delivery in detail:
``docs/internals/redis.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from celeriac.exceptions import BrokerError, ImproperlyConfigured, MessageError
from celeriac.protocol import Message, decode_envelope, encode_envelope
from celeriac.transports.broker import Broker, DeadLetter, Delivery, Revocation
from celeriac.transports.capabilities import (
    DeadLetterRemoval,
    DeadLetterStore,
    EventChannel,
    LeaseRecovery,
    QueueBindings,
    RateLimitStore,
    RemoteControl,
    RevocationStore,
    ScheduledSend,
    ScheduleStore,
)
from celeriac.transports.redis import pubsub
from celeriac.transports.redis import schedule as _schedule
from celeriac.transports.redis.events import RedisEvents
from celeriac.transports.redis.layout import (
    BINDING_SEP,
    binding_key,
    binding_member,
    bucket,
    declare_commands,
    eta_in_queue,
    exec_error,
    immediate_commands,
    list_key,
    notify_key,
    publish_group,
    when,
)
from celeriac.transports.redis.resp import Endpoint, Sentinels
from celeriac.transports.redis.scripts import (
    connection,
    first_error,
    key_prefix,
    run_fast,
    split_url,
    target,
    translated_errors,
)
from celeriac.transports.redis.wakeup import Wakeups

logger = logging.getLogger("celeriac.transports.redis.broker")

_BUCKETS = ("0", "3", "6", "9")
_ORDERS = {"higher_first": "9630", "lower_first": "0369"}
_MAX_BATCH = 1000  # messages per script call
_SWEEP_INTERVAL = 1.0  # at most; a quarter of the lease when that is shorter


def _delivery(queue: str, tag: str, raw: bytes, count: int) -> Delivery:
    try:
        return Delivery(queue, tag, raw, decode_envelope(raw), count)
    except Exception as exc:  # bad bytes must reach the worker as a dead-letter case
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return Delivery(queue, tag, raw, None, count, error=str(reason))


def _leases(deliveries: Sequence[Delivery]) -> bytes:
    """``tag\\0token\\0tag\\0token...`` in one script argument (one long argument packs
    faster than many short ones); the token is the fetch's delivery count."""
    return b"\0".join(
        b"%s\0%d" % (d.tag.encode("utf-8", "surrogateescape"), d.delivery_count) for d in deliveries
    )


class RedisBroker(
    RedisEvents,
    Broker,
    LeaseRecovery,
    RevocationStore,
    RateLimitStore,
    RemoteControl,
    DeadLetterRemoval,
    DeadLetterStore,
    EventChannel,
    ScheduleStore,
    QueueBindings,
):
    """Redis broker; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "unix", "redis+socket", "sentinel")

    def __init__(
        self, url: str = "redis://localhost:6379/0", *, options: dict[str, Any] | None = None
    ) -> None:
        self._url, url_options = split_url(url)
        super().__init__(url, options={**url_options, **(options or {})})
        self.prefix = key_prefix(self.options)
        order = self.options.get("priority_order", "higher_first")
        if order not in _ORDERS:
            raise ImproperlyConfigured(
                f"priority_order {order!r}: use 'higher_first' or 'lower_first'"
            )
        self._order = _ORDERS[order]
        self._poll = float(self.options.get("polling_interval", 1.0))
        # Celery workers sharing the broker share its transport options, so they restore
        # after `visibility_timeout` too (Celery's default: an hour)
        foreign = self.options.get("visibility_timeout", 3600.0)
        self._foreign = float(self.options.get("foreign_visibility_timeout", foreign))
        self._eta_in_queue = eta_in_queue(self.options)
        # (connected on first use) one for scripts and commands, one per watched key
        self._where: Endpoint | Sentinels = target(self._url, self.options)
        self._fast = connection(self._where)
        self._wakeups = Wakeups(self._where, self._url, self._poll)
        self._watch_keys: dict[tuple[str, ...], list[str]] = {}
        self._turn = 0
        self._next_sweep = 0.0
        self._declared: set[str] = set()

    # -- plumbing -----------------------------------------------------------
    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return translated_errors("Redis broker", self._url, BrokerError)

    async def _run(self, name: str, *args: Any) -> Any:
        with self._errors():
            return await run_fast(self._fast, name, self.prefix, *args)

    async def _commands(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run ``commands`` in one write; their replies (an error reply is raised)."""
        with self._errors():
            return first_error(await self._fast.pipeline(commands))

    async def _transaction(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """``commands`` in one MULTI/EXEC; EXEC's replies."""
        with self._errors():
            replies = await self._fast.pipeline([("MULTI",), *commands, ("EXEC",)])
            error = exec_error(replies)
            if error is not None:
                raise error
        return list(replies[-1])

    def _lists(self, queue: str) -> list[str]:
        return [list_key(self.prefix, queue, digit) for digit in _BUCKETS]

    def _delayed(self, queue: str) -> str:
        return f"{self.prefix}celeriac.delayed.{queue}"

    def _notify(self, queue: str) -> str:
        return notify_key(self.prefix, queue)

    # -- lifecycle ------------------------------------------------------------
    async def connect(self) -> None:
        await self._commands([("PING",)])

    async def close(self) -> None:
        self._fast.close()  # they reconnect if used again
        self._wakeups.close()

    async def declare(self, queue: str) -> None:
        """Record Celery's binding of the queue (also done on the first publish to it)."""
        self._declared.add(queue)
        await self._commands(declare_commands(self.prefix, queue))

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Add ``queue`` to kombu's binding set of ``exchange`` (capability QueueBindings):
        a Celery client publishing to that exchange with ``routing_key`` finds it."""
        member = binding_member(routing_key, queue)
        await self._commands(
            [
                ("SADD", binding_key(self.prefix, exchange), member),
                ("SADD", f"{self.prefix}_kombu.binding_permanent.{exchange}", member),
            ]
        )

    # -- producing ------------------------------------------------------------
    async def publish(
        self, queue: str, message: Message, *, priority: int = 0, not_before: float | None = None
    ) -> None:
        await self.publish_many([(queue, message, priority, not_before)])

    async def publish_many(self, items: Sequence[tuple[str, Message, int, float | None]]) -> None:
        for queue in {item[0] for item in items} - self._declared:
            await self.declare(queue)
        for start in range(0, len(items), _MAX_BATCH):
            args: list[Any] = []
            for queue, message, priority, not_before in items[start : start + _MAX_BATCH]:
                args += publish_group(
                    queue, message, priority, not_before, eta_visible=self._eta_in_queue
                )
            commands = immediate_commands(self.prefix, args)
            if commands is None:
                await self._run("publish", *args)
                continue
            with self._errors():
                error = exec_error(await self._fast.pipeline(commands))
                if error is not None:
                    raise error

    async def publish_raw(
        self, queue: str, raw: bytes, priority: int = 0, not_before: float | None = None
    ) -> None:
        """Store ``raw`` bytes as they are (tests use it to inject undecodable messages)."""
        if queue not in self._declared:
            await self.declare(queue)
        await self._run("publish", queue, bucket(priority), when(not_before), bytes(raw))

    # -- consuming ------------------------------------------------------------
    async def fetch(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        return await self.ack_and_fetch((), queues, max_count, timeout)

    async def ack_and_fetch(
        self, acks: Sequence[Delivery], queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Ack ``acks`` in the same script call as the first fetch attempt; while nothing
        is there, wait on the queues' lists (:mod:`.wakeup`) until a message, the next
        due delayed message or lease, or ``timeout``."""
        if max_count <= 0 or not queues:
            await self.ack(acks)
            return []
        max_count = min(max_count, _MAX_BATCH)
        now = time.monotonic()
        deadline = now + timeout
        found, due = await self._lease(queues, max_count, acks)
        while not found:
            due_at = math.inf if due is None else now + due
            until = min(deadline, due_at)
            if until <= now:
                return []
            woke = await self._wakeups.wait(self._watched(queues), until - now)
            now = time.monotonic()
            if not woke and now >= deadline and now < due_at:
                return []
            found, due = await self._lease(queues, max_count, ())
        return found

    def _watched(self, queues: Sequence[str]) -> list[str]:
        """The keys whose push wakes a consumer of ``queues``: their priority lists and
        notify lists."""
        key = tuple(queues)
        keys = self._watch_keys.get(key)
        if keys is None:
            keys = [k for q in queues for k in (*self._lists(q), self._notify(q))]
            self._watch_keys = {key: keys}
        return keys

    def _fetch_args(
        self, queues: Sequence[str], max_count: int, acks: Sequence[Delivery]
    ) -> tuple[list[str], list[Any]]:
        self._turn += 1
        k = self._turn % len(queues)
        order = [*queues[k:], *queues[:k]]
        now = time.monotonic()
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + min(_SWEEP_INTERVAL, self.lease_seconds / 4)
        args = [
            max_count,
            self.lease_seconds,
            self.consumer_id,
            "1" if sweep else "0",
            self._foreign,
            self._order,
            len(order),
            *order,
            _leases(acks),
        ]
        return order, args

    async def _lease(
        self, queues: Sequence[str], max_count: int, acks: Sequence[Delivery]
    ) -> tuple[list[Delivery], float | None]:
        order, args = self._fetch_args(queues, max_count, acks)
        return _leased(order, await self._run("fetch", *args))

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            await self._run("ack", _leases(deliveries))

    async def requeue(
        self,
        deliveries: Sequence[Delivery],
        *,
        not_before: float | None = None,
        count_delivery: bool = False,
    ) -> None:
        if deliveries:
            count = "1" if count_delivery else "0"
            await self._run("requeue", when(not_before), count, _leases(deliveries))

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        entry = {
            "queue": delivery.queue,
            # bytes that are not UTF-8 survive as \\udcXX escapes (see dead_letters)
            "payload": delivery.raw.decode("utf-8", "surrogateescape"),
            "reason": reason,
            "failed_at": time.time(),
        }
        await self._run("dead_letter", json.dumps(entry), _leases([delivery]))

    async def extend(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        if deliveries:
            await self._run("extend", seconds, _leases(deliveries))

    async def recover(self, consumer_id: str, keep: Sequence[Delivery] = ()) -> int:
        if not consumer_id:
            return 0
        return int(await self._run("recover", consumer_id, *(d.tag for d in keep)))

    async def sweep(self) -> int:
        """Return expired leases to their queues now (every fetch also does this)."""
        return int(await self._run("sweep", self._foreign))

    # -- administration -------------------------------------------------------
    async def purge(self, queue: str) -> int:
        keys = [*self._lists(queue), self._delayed(queue)]
        lengths = [("LLEN", key) for key in keys[:-1]]
        drop = ("DEL", *keys, self._notify(queue))
        counts = await self._transaction([*lengths, ("ZCARD", keys[-1]), drop])
        return sum(int(n) for n in counts[:-1])

    async def size(self, queue: str) -> int:
        commands = [*(("LLEN", key) for key in self._lists(queue)), ("ZCARD", self._delayed(queue))]
        return sum(int(n) for n in await self._transaction(commands))

    # -- control state: durable revocations, global rate limits ---------------

    async def revoke(
        self,
        task_ids: Sequence[str],
        ttl: float,
        *,
        terminate: bool = False,
        signal: str | None = None,
    ) -> None:
        """One key per revoked id (``Pceleriac.revoked.<id>``), expiring by itself."""
        value = json.dumps({"terminate": terminate, "signal": signal})
        if not task_ids:
            return
        until, px = repr(time.time() + ttl), max(1, int(ttl * 1000))
        commands: list[tuple[Any, ...]] = [
            ("SET", self._revoked_key(task_id), value, "PX", px) for task_id in task_ids
        ]
        # the fetch script counts the live ones: while there are none (the usual case) a
        # fetched batch needs no look-up of its own
        scores = [item for task_id in dict.fromkeys(task_ids) for item in (until, task_id)]
        commands.append(("ZADD", f"{self.prefix}celeriac.revocations", *scores))
        await self._commands(commands)

    async def revoked(self, task_ids: Sequence[str]) -> dict[str, Revocation]:
        if not task_ids:
            return {}
        keys = [self._revoked_key(t) for t in task_ids]
        (values,) = await self._commands([("MGET", *keys)])
        found: dict[str, Revocation] = {}
        for task_id, raw in zip(task_ids, values, strict=True):
            if raw is not None:
                data = json.loads(raw)
                found[task_id] = Revocation(bool(data.get("terminate")), data.get("signal"))
        return found

    async def revoked_ids(self, limit: int) -> list[str]:
        key, now = f"{self.prefix}celeriac.revocations", repr(time.time())
        (ids,) = await self._commands(
            [("ZREVRANGEBYSCORE", key, "+inf", f"({now}", "LIMIT", 0, limit)]
        )
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def revoked_among(self, deliveries: Sequence[Delivery]) -> dict[str, Revocation]:
        if all(d.extra.get("no_revocations") for d in deliveries):
            return {}
        return await super().revoked_among(deliveries)

    def _pidbox_channel(self) -> str:
        """``<prefix>/<db>.celery.pidbox``: kombu's fanout exchanges are pub/sub channels
        named after the database (and prefixed with ``global_keyprefix``, as kombu does)."""
        return f"{self.prefix}/{self._where.db}.celery.pidbox"

    async def broadcast_control(self, message: Message) -> None:
        """PUBLISH on Celery's pidbox channel, where Celery's workers listen."""
        await self._commands([("PUBLISH", self._pidbox_channel(), encode_envelope(message))])

    async def listen_control(
        self,
        hostname: str,
        handler: Callable[[Message], Awaitable[None]],
        listening: Callable[[], None] | None = None,
    ) -> None:
        await pubsub.listen(
            self._where,
            [self._pidbox_channel()],
            handler,
            listening,
            patterns=False,
            what="Remote control",
        )

    async def request_control(
        self, message: Message, reply_key: str, timeout: float, limit: int | None
    ) -> list[Message]:
        """The reply queue is a list bound to ``reply.celery.pidbox`` by a member of
        kombu's binding set (so workers find it), removed with the list afterwards."""
        queue = f"{reply_key}.reply.celery.pidbox"
        binding = binding_key(self.prefix, "reply.celery.pidbox")
        member = binding_member(reply_key, queue)
        replies: list[Message] = []
        await self._commands([("SADD", binding, member)])
        waiting = connection(self._where)  # BRPOP blocks its connection
        try:
            with self._errors():
                raw = encode_envelope(message)
                await self._fast.execute("PUBLISH", self._pidbox_channel(), raw)
                deadline = time.monotonic() + timeout
                while limit is None or len(replies) < limit:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    block = round(min(left, 1.0), 3)
                    brpop = ("BRPOP", self.prefix + queue, block)
                    (item,) = first_error(await waiting.pipeline([brpop], block))
                    if item is None:
                        continue
                    try:
                        replies.append(decode_envelope(item[1]))
                    except MessageError as exc:
                        logger.warning("Remote control: ignored an unreadable reply: %s", exc)
        finally:
            waiting.close()
            await self._commands([("SREM", binding, member), ("DEL", self.prefix + queue)])
        return replies

    async def reply_control(self, routing_key: str, message: Message) -> None:
        """LPUSH to the reply queues bound to ``reply.celery.pidbox`` with
        ``routing_key`` (kombu's direct exchange on Redis: its binding set names them); a
        caller that has gone has no binding left, so nothing is left behind."""
        raw = encode_envelope(message)
        (members,) = await self._commands(
            [("SMEMBERS", binding_key(self.prefix, "reply.celery.pidbox"))]
        )
        pushes = []
        for member in members:
            parts = member.decode("utf-8", "replace").split(BINDING_SEP)  # key, pattern, queue
            if len(parts) == 3 and parts[0] == routing_key and parts[2]:
                pushes.append(("LPUSH", self.prefix + parts[2], raw))
        if pushes:
            await self._commands(pushes)

    def _revoked_key(self, task_id: str) -> str:
        return f"{self.prefix}celeriac.revoked.{task_id}"

    async def take_token(self, key: str, rate: float, capacity: float) -> float:
        return float(await self._run("take_token", key, rate, capacity))

    # -- beat's store (ScheduleStore: redis/schedule.py) ------------------------
    async def schedule_runs(self, names: Sequence[str]) -> dict[str, int]:
        with self._errors():
            return await _schedule.runs(self._fast, self.prefix, names)

    async def schedule_claim(
        self, name: str, last: int | None, slot: int, send: ScheduledSend | None = None
    ) -> bool:
        group: list[Any] = []
        if send is not None:
            queue, message, priority, not_before = send
            if queue not in self._declared:
                await self.declare(queue)
            group = publish_group(queue, message, priority, not_before, eta_visible=False)
        with self._errors():
            return await _schedule.claim(self._fast, self.prefix, name, last, slot, group)

    async def schedule_entries(self) -> dict[str, bytes]:
        with self._errors():
            return await _schedule.entries(self._fast, self.prefix)

    async def schedule_set_entry(self, name: str, data: bytes | None) -> None:
        with self._errors():
            await _schedule.set_entry(self._fast, self.prefix, name, data)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        (items,) = await self._commands(
            [("LRANGE", f"{self.prefix}celeriac.dead_letter", 0, limit - 1)]
        )
        out = []
        for item in items:
            entry = json.loads(item)
            payload = str(entry.get("payload", "")).encode("utf-8", "surrogateescape")
            out.append(
                DeadLetter(
                    str(entry.get("queue", "")),
                    payload,
                    str(entry.get("reason", "")),
                    float(entry.get("failed_at") or 0.0),
                )
            )
        return out

    async def remove_dead_letter(self, letter: DeadLetter) -> bool:
        key = f"{self.prefix}celeriac.dead_letter"
        (items,) = await self._commands([("LRANGE", key, 0, -1)])
        for item in items:
            entry = json.loads(item)
            same = (
                str(entry.get("queue", "")) == letter.queue
                and float(entry.get("failed_at") or 0.0) == letter.failed_at
                and str(entry.get("payload", "")).encode("utf-8", "surrogateescape") == letter.raw
            )
            if same:
                (removed,) = await self._commands([("LREM", key, 1, item)])
                return bool(removed)
        return False

    # -- the sync publisher (celeriac.transports.redis.sync) builds on these -------------
    def sync_target(self) -> tuple[str, dict[str, Any]]:
        """The URL (celeriac's options taken out) and the options to connect with."""
        return self._url, self.options


def _leased(order: Sequence[str], reply: list[Any]) -> tuple[list[Delivery], float | None]:
    """Deliveries and next due time (seconds) from the fetch script's reply."""
    found = [
        _delivery(
            order[int(reply[i]) - 1],
            reply[i + 1].decode("utf-8", "surrogateescape"),
            reply[i + 2],
            reply[i + 3],
        )
        for i in range(2, len(reply), 4)
    ]
    if found and int(reply[1]) == 0:  # no live revocation when these were leased
        for delivery in found:
            delivery.extra["no_revocations"] = True
    due_ms = int(reply[0])
    return found, None if due_ms < 0 else due_ms / 1000


__all__ = ["RedisBroker", "bucket"]
