"""The RabbitMQ broker's core, which the rest of it builds on (:mod:`.revocations`,
:mod:`.consume`, :mod:`.ratelimit`, :mod:`.remote`; assembled in :mod:`.broker`): its
configuration, the session (one connection, reopened after a failure) and its channels,
connection errors as :class:`BrokerError`, the topology (Celery's: a durable direct
exchange per queue, and the delay cascade's levels), publishes with confirms, and purge
and size. The design: docs/internals/amqp.md."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

from celeriac.exceptions import BrokerError, CeleriacError, ImproperlyConfigured
from celeriac.protocol import Message
from celeriac.transports.amqp import control as _ctl
from celeriac.transports.amqp.codec import AnyProperties, Cancel, Properties, copy_properties
from celeriac.transports.amqp.connection import (
    DEFAULT_HEARTBEAT,
    ERRORS,
    REFUSED,
    Channel,
    ChannelPreconditionFailed,
    Returned,
    Session,
    cancelled_by_caller,
    connection,
    connection_url,
    quiet_aiormq,
    ready_counts,
)
from celeriac.transports.amqp.delay import (
    LEVELS,
    declare_cascade,
    declare_levels,
    delay_exchange,
    delay_key,
    delay_queue,
)
from celeriac.transports.amqp.messages import H_NOT_BEFORE, message_properties
from celeriac.transports.broker import Broker
from celeriac.utils.log import mask_url

DEAD_LETTER_QUEUE = "celeriac.dead_letter"


class AMQPCore(Broker):
    """Session, channels, topology and publishes of :class:`.broker.AMQPBroker`."""

    schemes: ClassVar[tuple[str, ...]] = ("amqp", "amqps", "pyamqp")

    def __init__(self, url: str = "amqp://", *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        opts = self.options
        heartbeat = opts.get("heartbeat")
        self._url = connection_url(url, DEFAULT_HEARTBEAT if heartbeat is None else heartbeat)
        self._timeout = float(opts.get("connect_timeout", 10))
        self._confirm = bool(opts.get("confirm_publish", True))
        self._dlq = str(opts.get("dead_letter_queue", DEAD_LETTER_QUEUE))
        self._queue_args: dict[str, Any] = {}
        if opts.get("queue_max_priority"):
            self._queue_args["x-max-priority"] = int(opts["queue_max_priority"])
        if opts.get("queue_type") not in (None, "", "classic"):
            self._queue_args["x-queue-type"] = str(opts["queue_type"])
        if len(self._queue_args) == 2:
            raise ImproperlyConfigured(
                "broker_transport_options: quorum queues take no queue_max_priority"
            )
        self._s: Session | None = None
        self._sessions = 0
        quiet_aiormq()
        self._lock = asyncio.Lock()
        # the state of the modules that build on this one:
        self._qos_lock = asyncio.Lock()  # a qos change and the consumers it is meant for
        self._follow_lock = asyncio.Lock()  # revocations.py: one reader starts following
        self._join_lock = asyncio.Lock()  # ratelimit.py: one candidate per key
        self._log = _ctl.RevocationLog()
        self._retention = float(opts.get("revoke_retention", _ctl.DEFAULT_RETENTION))
        self._warned_retention = False
        self._buckets_made = 0
        self._control_channel: Channel | None = None  # remote.py: a worker's pidbox

    # -- lifecycle --------------------------------------------------------
    async def connect(self) -> None:
        async with self._errors():
            await self._session()

    async def _session(self) -> Session:
        s = self._s
        if s is not None and s.error is None:
            return s
        async with self._lock:
            if self._s is not None and self._s.error is None:
                return self._s
            if self._s is not None:
                with contextlib.suppress(Exception):
                    await self._s.conn.close()
            self._s = await self._open()
            return self._s

    async def _open(self) -> Session:
        conn = connection(self._url)
        try:
            await asyncio.wait_for(conn.connect(), self._timeout)
            consume = await conn.channel(publisher_confirms=False)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.close()
            if isinstance(exc, ERRORS):
                where = mask_url(self._url)
                error = BrokerError(f"cannot connect to RabbitMQ at {where}: {exc!r}")
                error.refused = isinstance(exc, REFUSED)
                raise error from exc
            raise
        self._sessions += 1
        s = Session(self._sessions, conn, consume)
        conn.closing.add_done_callback(s.on_close)
        consume.closing.add_done_callback(s.on_close)
        consume.on_consumer_cancel_callbacks.add(lambda frame: self._cancelled(s, frame))
        return s

    @staticmethod
    def _cancelled(s: Session, frame: Cancel) -> None:
        """RabbitMQ cancelled a consumer (its queue was deleted): declare it again."""
        if frame.consumer_tag == s.stream_tag:  # the revocation stream was deleted
            s.following = False
            s.declared.discard(_ctl.REVOKED_STREAM)
            return
        queue = s.queue_of.get(frame.consumer_tag or "", "")
        s.consumers.pop(queue, None)
        s.declared.discard(queue)
        s.delays.pop(queue, None)
        s.wake.set()

    def _error(self, exc: BaseException) -> BaseException:
        """The exception to raise for ``exc``: connection trouble becomes BrokerError."""
        if isinstance(exc, CeleriacError):
            return exc
        lost = self._s is not None and self._s.error is not None
        if isinstance(exc, ERRORS) or (
            isinstance(exc, asyncio.CancelledError) and lost and not cancelled_by_caller()
        ):
            if self._s is not None:
                self._s.fail(exc)
                exc = self._s.conn.dead or exc  # the heartbeat check's reason first
            return BrokerError(f"RabbitMQ {mask_url(self._url)}: {exc!r}")
        return exc

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except (Exception, asyncio.CancelledError) as exc:
            error = self._error(exc)
            if error is exc:
                raise
            raise error from exc

    async def _channel(self, s: Session, kind: str) -> Channel:
        ch: Channel | None = getattr(s, kind)
        if ch is None or ch.is_closed:
            ch = await s.conn.channel(publisher_confirms=self._confirm and kind == "publish")
            if kind == "publish":
                ch.closing.add_done_callback(s.on_close)
            setattr(s, kind, ch)
        return ch

    # -- topology ---------------------------------------------------------
    async def declare(self, queue: str) -> None:
        async with self._errors():
            await self._declare(await self._session(), queue)

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Bind ``queue`` to the durable direct ``exchange`` (declared if need be) with
        ``routing_key`` (capability QueueBindings), as Celery's worker binds it."""
        async with self._errors():
            s = await self._session()
            await self._declare(s, queue)
            ch = await self._channel(s, "admin")
            await ch.exchange_declare(exchange, exchange_type="direct", durable=True)
            await ch.queue_bind(queue, exchange, routing_key=routing_key)

    async def _declare(self, s: Session, queue: str) -> None:
        if queue in s.declared:
            return
        ch = await self._channel(s, "admin")
        try:
            await ch.exchange_declare(queue, exchange_type="direct", durable=True)
            await ch.queue_declare(queue, durable=True, arguments=dict(self._queue_args))
        except ChannelPreconditionFailed as exc:
            raise ImproperlyConfigured(
                f"RabbitMQ queue or exchange {queue!r} exists with other arguments ({exc}); "
                f"celeriac declares the queue with {self._queue_args or 'no arguments'} from "
                "broker_transport_options queue_max_priority / queue_type. Make them match "
                "the existing queue (Celery: task_queue_max_priority, x-queue-type) or "
                "delete the queue."
            ) from exc
        await ch.queue_bind(queue, queue, routing_key=queue)
        s.declared.add(queue)

    async def _declare_delays(self, s: Session, queue: str, ms: int | None = None) -> None:
        """The shared cascade (once per connection), ``queue``'s exit binding, and the
        levels a delay of ``ms`` passes through (all levels for None)."""
        ms = 2**LEVELS - 1 if ms is None else min(ms, 2**LEVELS - 1)
        known = s.delays.setdefault(queue, set())
        levels = [k for k in range(LEVELS) if ms >> k & 1 and k not in known]
        if not levels and known:
            return
        await self._declare(s, queue)
        ch = await self._channel(s, "admin")
        if not s.cascade:
            await declare_cascade(ch)
        await declare_levels(ch, queue, levels)
        s.cascade = True
        known.update(levels)

    # -- producing --------------------------------------------------------
    async def publish(
        self, queue: str, message: Message, *, priority: int = 0, not_before: float | None = None
    ) -> None:
        await self.publish_many([(queue, message, priority, not_before)])

    async def publish_many(self, items: Sequence[tuple[str, Message, int, float | None]]) -> None:
        pending = list(items)
        for attempt in (1, 2):
            async with self._errors():
                s = await self._session()
                await self._prepare(s, [q for q, _, _, _ in pending])
            sends = [
                self._send(s, q, m.body, message_properties(m, p), nb) for q, m, p, nb in pending
            ]
            results = await asyncio.gather(*sends, return_exceptions=True)
            failed = [
                (i, r)
                for i, r in zip(pending, results, strict=True)
                if isinstance(r, BaseException)
            ]
            if not failed:
                return
            error = self._error(failed[0][1])
            # a connection that died while this process was idle: reconnect once and
            # send what was not confirmed (at-least-once: that may duplicate one)
            if attempt == 2 or not isinstance(error, BrokerError):
                raise error from failed[0][1]
            pending = [item for item, _ in failed]

    async def publish_raw(self, queue: str, raw: bytes, priority: int = 0) -> None:
        """Publish ``raw`` as a body with no properties (tests inject bad messages)."""
        async with self._errors():
            s = await self._session()
            await self._send(s, queue, bytes(raw), Properties(priority=priority), None)

    async def _prepare(self, s: Session, queues: Sequence[str]) -> None:
        """Declare what ``_send`` needs first, so concurrent sends publish in order."""
        for queue in dict.fromkeys(queues):
            await self._declare(s, queue)
        await self._channel(s, "publish")

    async def _send(
        self,
        s: Session,
        queue: str,
        body: bytes,
        props: AnyProperties,
        not_before: float | None,
        retried: bool = False,
    ) -> None:
        await self._declare(s, queue)
        headers = dict(props.headers or {})
        headers.pop(H_NOT_BEFORE, None)
        ms = math.ceil((not_before - time.time()) * 1000) if not_before else 0
        exchange, key, sent = "", queue, copy_properties(props, headers=headers)
        if ms > 0:
            assert not_before is not None
            await self._declare_delays(s, queue, ms)  # no wait once this session knows them
            headers[H_NOT_BEFORE] = float(not_before)
            exchange, key = delay_exchange(LEVELS - 1), delay_key(ms, queue)
            sent = copy_properties(props, headers=headers, expiration=None)
        ch = await self._channel(s, "publish")
        try:
            await ch.basic_publish(
                body, exchange=exchange, routing_key=key, properties=sent, mandatory=True
            )
        except Returned:  # routed nowhere: the queue was deleted behind our back
            if retried:
                raise BrokerError(f"RabbitMQ routed a message for {queue!r} to no queue") from None
            s.declared.discard(queue)
            s.delays.pop(queue, None)
            await self._send(s, queue, body, props, not_before, retried=True)

    # -- administration ---------------------------------------------------
    async def purge(self, queue: str) -> int:
        async with self._errors():
            s = await self._session()
            ch = await self._channel(s, "admin")
            total = 0
            for name in await self._existing(s, queue):
                total += (await ch.queue_purge(name)).message_count or 0
            return total

    async def size(self, queue: str) -> int:
        async with self._errors():
            return sum((await self._existing(await self._session(), queue)).values())

    async def _existing(self, s: Session, queue: str) -> dict[str, int]:
        """Ready counts of ``queue`` and of its delay levels that exist."""
        await self._declare(s, queue)
        names = [queue, *(delay_queue(queue, k) for k in range(LEVELS))]
        return await ready_counts(s.conn, names)


__all__ = ["DEAD_LETTER_QUEUE", "AMQPCore"]
