"""RabbitMQ broker over AMQP 0-9-1 (aiormq), wire-compatible with Celery: ``amqp://``,
``amqps://``, ``pyamqp://`` (``amqp://user:pass@host:5672/vhost``; ``//`` is vhost ``/``).

**Topology and messages** are Celery's defaults: every queue ``q`` is durable and bound to
a durable direct exchange ``q`` with key ``q``; tasks go to the default exchange ``""``
with routing key ``q``. Basic properties carry ``content_type``, ``content_encoding``,
``delivery_mode`` 2, ``priority``, ``correlation_id`` (task id), ``reply_to`` and
``expiration`` (only when set); ``application_headers`` are the protocol v2 headers and
the body is the serialized bytes. Publisher confirms are on: ``publish`` returns once
RabbitMQ has the message. Queue arguments (``broker_transport_options``):
``queue_max_priority`` (``x-max-priority``; RabbitMQ ignores priorities without it, as
Celery's ``task_queue_max_priority``) and ``queue_type`` (``"quorum"`` declares
``x-queue-type: quorum``; quorum queues take no priorities). Declaring a queue that exists
with other arguments raises :class:`ImproperlyConfigured` naming these options.

**Delays** (``not_before``; Celery ETA messages a worker requeues) live on the server in
a binary cascade, the "delay exchange" technique: 32 levels, level ``k`` a queue per
target queue ``celeriac.delay.<q>.<kk>`` with ``x-message-ttl`` 2^k ms that dead-letters
to the topic exchange of level ``k-1`` (level 0 to ``celeriac.delay.out``, where ``q`` is
bound). The routing key spells the delay in binary, most significant bit first, then a
hash of ``q``; each level exchange sends a message with a 1 in its position to its queue
and skips it to the next level otherwise. A message therefore waits exactly its delay
(rounded up to a millisecond, plus ~1 ms per set bit) in at most 32 hops and reaches
``q`` only when due. Why: Celery holds ETA messages unacked in worker memory, so a long
countdown trips RabbitMQ's ``consumer_timeout`` (30 min), inflates prefetch and is
redelivered on every worker restart; one TTL queue would block short delays behind long
ones (RabbitMQ expires messages at the head only); buckets that dead-letter into ``q``
early would surface messages before their time (a Celery worker on ``q`` would take them)
and need a worker to move them on; the delayed-message plugin is not installed by
default. Here no worker holds a delayed message; all TTL queues have fixed TTLs, so none
blocks another. The cost: up to 32 small durable queues per queue that gets delayed
messages (a level is declared when a delay first needs it: creating one takes RabbitMQ
~5-30 ms, so the first delayed message of a fresh queue may arrive that much late), and
delays over 2^32 ms (49.7 days), which arrive early and are sent round again by the
worker that receives them (header ``x-celeriac-not-before``). ``size``/``purge`` count
and purge a queue's existing delay levels too. A delayed message loses its
``expiration`` property (it would expire inside the cascade); the ``expires`` header
still applies.

**Consuming**: ``basic.consume`` with acks, one consumer per queue, per-consumer prefetch
(``basic.qos`` global=False, so quorum queues work too) set to what the caller holds plus
``max_count``: a worker's window (per queue: a worker on n queues may prefetch n windows;
RabbitMQ applies a new prefetch to new consumers only, so consumers restart when the
window grows). RabbitMQ tracks unacked messages natively: ``extend``
is a no-op, ``recover`` returns 0 (a dead process's channel closes and RabbitMQ requeues
its messages), and after a lost connection ``BrokerError`` is raised, the next call
reconnects and acks of the old connection's deliveries are dropped (RabbitMQ has already
requeued them). ``requeue`` and ``close`` (for prefetched messages never handed out)
republish the message (to the back of its queue) and then ack it, rather than
``basic.reject``, which would mark it redelivered (and count a delivery on quorum queues)
for a message no worker lost: the copy carries our count in ``x-celeriac-delivery-count``.
``dead_letter`` moves the message to the queue ``celeriac.dead_letter`` (option
``dead_letter_queue``) with ``x-celeriac-reason``.
**Delivery count** = that header + 1 + RabbitMQ's own count: ``x-delivery-count`` on
quorum queues. Classic queues only flag a redelivery, which cannot tell a second loss from
the first: a flagged message is therefore republished (to the back of its queue) with its
count in the header before it is handed out, so the poison limit
(``task_max_redeliveries``) works on both queue types. A delivery held longer than the
server's ``consumer_timeout`` (30 min by default; raise it for longer tasks) closes the
channel and is redelivered. Other options: ``heartbeat`` (s, default 60),
``connect_timeout`` (s, default 10), ``confirm_publish`` (default True),
``revoke_retention`` (s, default 86400: how long the revocation stream keeps records).

**Revocations and global rate limits** live in RabbitMQ too: a stream every broker
instance reads from its start and then follows (``revoked`` answers from memory), and per
rate-limited task a bounded token queue refilled by one worker elected through a
single-active-consumer queue. The design, and why it beat the alternatives, is in
:mod:`celeriac.transports.amqp.control`.

**Speed**: aiormq writes every frame with its own ``send``; the connection's transport
here gathers the frames of one event-loop pass into one write (an ack, a fetch's qos and
a reply go together). Deliveries to our consumers skip aiormq: the connection's protocol
splits frames itself and assembles those messages at once (:class:`.connection.Wire`;
aiormq's two queue hops and task per message cost more than the rest of the worker).
Acks of deliveries that finish in order are one ``basic.ack`` with
``multiple`` (the channel's outstanding tags are tracked, so it never covers a delivery
still held); the others are acked one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar

from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelLockedResource,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
)
from aiormq.exceptions import PublishError as Returned
from pamqp.commands import Basic

from celeriac.exceptions import BrokerError, CeleriacError, ImproperlyConfigured
from celeriac.protocol import JSON, Message
from celeriac.transports.amqp import connection as _amqp
from celeriac.transports.amqp import control as _ctl
from celeriac.transports.amqp.connection import Session
from celeriac.transports.broker import Broker, DeadLetter, Delivery, Revocation
from celeriac.transports.capabilities import (
    DeadLetterStore,
    RateLimitStore,
    RemoteControl,
    RevocationStore,
)
from celeriac.utils.log import mask_url

logger = logging.getLogger("celeriac.transports.amqp.broker")

DEAD_LETTER_QUEUE = "celeriac.dead_letter"
#: after consumers start, how long a fetch waits for more of the burst RabbitMQ sends
FILL_WINDOW = 0.005
DEAD_LETTER_SCAN = 10_000
#: a worker's control queue's arguments, as Celery declares them
_PIDBOX_QUEUE_ARGS: dict[str, Any] = {"x-expires": 10_000, "x-message-ttl": 300_000}
_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, asyncio.TimeoutError)


class AMQPBroker(Broker, RevocationStore, RateLimitStore, RemoteControl, DeadLetterStore):
    """RabbitMQ broker; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("amqp", "amqps", "pyamqp")

    def __init__(self, url: str = "amqp://", *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        opts = self.options
        self._url = _amqp.connection_url(url, opts.get("heartbeat"))
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
        _amqp.quiet_aiormq()
        self._lock = asyncio.Lock()
        self._qos_lock = asyncio.Lock()  # a qos change and the consumers it is meant for
        self._follow_lock = asyncio.Lock()
        self._join_lock = asyncio.Lock()
        self._log = _ctl.RevocationLog()
        self._retention = float(opts.get("revoke_retention", _ctl.DEFAULT_RETENTION))
        self._warned_retention = False
        self._buckets_made = 0
        self._control_channel: AbstractChannel | None = None

    # -- lifecycle --------------------------------------------------------
    async def connect(self) -> None:
        async with self._errors():
            await self._session()

    async def close(self) -> None:
        s = self._s
        if s is None:
            return
        if s.error is None:
            with contextlib.suppress(*_ERRORS, CeleriacError):
                for tag in list(s.consumers.values()):
                    await s.consume.basic_cancel(tag)
                await asyncio.sleep(0)  # deliveries before the CancelOk reach the buffer
                items, s.buffer = list(s.buffer), deque()
                await self._release(s, items)
        self._s = None
        s.fail(None)
        with contextlib.suppress(Exception):
            await s.conn.close()

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
        conn = _amqp.connection(self._url)
        try:
            await asyncio.wait_for(conn.connect(), self._timeout)
            consume = await conn.channel(publisher_confirms=False)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.close()
            if isinstance(exc, _ERRORS):
                where = mask_url(self._url)
                raise BrokerError(f"cannot connect to RabbitMQ at {where}: {exc!r}") from exc
            raise
        self._sessions += 1
        s = Session(self._sessions, conn, consume)
        conn.closing.add_done_callback(s.on_close)
        consume.closing.add_done_callback(s.on_close)
        consume.on_consumer_cancel_callbacks.add(lambda frame: self._cancelled(s, frame))
        return s

    @staticmethod
    def _cancelled(s: Session, frame: Basic.Cancel) -> None:
        """RabbitMQ cancelled a consumer (its queue was deleted): declare it again."""
        if frame.consumer_tag == _stream_tag(s):  # the revocation stream was deleted
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
        if isinstance(exc, _ERRORS) or (
            isinstance(exc, asyncio.CancelledError) and lost and not _amqp.cancelled_by_caller()
        ):
            if self._s is not None:
                self._s.fail(exc)
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

    async def _channel(self, s: Session, kind: str) -> AbstractChannel:
        ch: AbstractChannel | None = getattr(s, kind)
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
        ms = 2**_amqp.LEVELS - 1 if ms is None else min(ms, 2**_amqp.LEVELS - 1)
        known = s.delays.setdefault(queue, set())
        levels = [k for k in range(_amqp.LEVELS) if ms >> k & 1 and k not in known]
        if not levels and known:
            return
        await self._declare(s, queue)
        ch = await self._channel(s, "admin")
        if not s.cascade:
            await _amqp.declare_cascade(ch)
        await _amqp.declare_levels(ch, queue, levels)
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
                self._send(s, q, m.body, _amqp.message_properties(m, p), nb)
                for q, m, p, nb in pending
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
            await self._send(s, queue, bytes(raw), _amqp.Properties(priority=priority), None)

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
        props: Basic.Properties | _amqp.Props,
        not_before: float | None,
        retried: bool = False,
    ) -> None:
        await self._declare(s, queue)
        headers = dict(props.headers or {})
        headers.pop(_amqp.H_NOT_BEFORE, None)
        ms = math.ceil((not_before - time.time()) * 1000) if not_before else 0
        exchange, key, sent = "", queue, _amqp.copy_properties(props, headers=headers)
        if ms > 0:
            assert not_before is not None
            await self._declare_delays(s, queue, ms)  # no wait once this session knows them
            headers[_amqp.H_NOT_BEFORE] = float(not_before)
            exchange, key = _amqp.delay_exchange(_amqp.LEVELS - 1), _amqp.delay_key(ms, queue)
            sent = _amqp.copy_properties(props, headers=headers, expiration=None)
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

    # -- consuming --------------------------------------------------------
    async def fetch(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        return await self.ack_and_fetch((), queues, max_count, timeout)

    async def ack_and_fetch(
        self, acks: Sequence[Delivery], queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        async with self._errors():
            s = await self._session()
            await self._ack(s, acks)
            if max_count <= 0 or not queues:
                return []
            await self._consume(s, list(dict.fromkeys(queues)), max_count)
            return await self._collect(s, queues, max_count, timeout)

    async def _consume(self, s: Session, queues: list[str], max_count: int) -> None:
        """Consume exactly ``queues``, each with a prefetch of what the caller holds plus
        ``max_count`` (RabbitMQ applies a per-consumer prefetch to new consumers only)."""
        for queue in queues:
            await self._declare(s, queue)
        need = min(s.held + max_count, 65535)
        restart = need > s.prefetch
        stale = [q for q in s.consumers if restart or q not in queues]
        for queue in stale:
            await s.consume.basic_cancel(s.consumers.pop(queue))
        if stale:
            await asyncio.sleep(0)
            gone = [(q, m) for q, m in s.buffer if q not in queues]
            if gone:
                s.buffer = deque((q, m) for q, m in s.buffer if q in queues)
                await self._release(s, gone)
        if not restart and all(q in s.consumers for q in queues):
            return

        def on_message(message: _amqp.Incoming) -> None:
            tag = getattr(message.delivery, "consumer_tag", None) or ""
            s.outstanding.add(_delivery_tag(message))
            s.buffer.append((s.queue_of.get(tag, ""), message))
            s.wake.set()

        async def on_message_slow(message: DeliveredMessage) -> None:
            on_message(message)  # were the fast lane (s.tap) ever to pass one on

        # The revocation stream shares this channel: follow it before taking deliveries.
        # Right after RabbitMQ restarts the stream may not be up yet; failing now (and
        # retrying) costs nothing, while failing later would close the channel under
        # deliveries already running, which RabbitMQ would then deliver again.
        if not s.following:
            async with self._follow_lock:
                if not s.following:
                    await self._follow(s)
        async with self._qos_lock:  # the revocation stream sets its own prefetch
            if restart:
                await s.consume.basic_qos(prefetch_count=need, global_=False)
                s.prefetch = need
            for queue in queues:
                if queue not in s.consumers:  # tag known first: deliveries precede ConsumeOk
                    tag = f"celeriac.{s.number}.{len(s.queue_of)}"
                    s.consumers[queue], s.queue_of[tag] = tag, queue
                    s.tap.callbacks[tag] = on_message
                    await s.consume.basic_consume(
                        queue, on_message_slow, no_ack=False, consumer_tag=tag
                    )
                    s.fresh = True

    async def _collect(
        self, s: Session, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        probed = False
        while True:
            s.wake.clear()
            out = await self._take(s, queues, max_count)
            while out and s.fresh and len(out) < max_count:  # the rest of the burst
                s.wake.clear()
                more = await self._take(s, queues, max_count - len(out))
                if not more:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(s.wake.wait(), FILL_WINDOW)
                    more = await self._take(s, queues, max_count - len(out))
                    if not more:
                        break
                out += more
            if out:
                s.fresh = False
                return out
            if s.error is not None:
                raise BrokerError(f"RabbitMQ connection lost: {s.error!r}")
            left = deadline - loop.time()
            if left <= 0:
                if probed:
                    s.fresh = False
                    return []
                # before giving up, ask the queues: what RabbitMQ was already dispatching
                # to our consumers arrives before the answer
                probed = True
                await self._probe(s, queues, max_count)
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(s.wake.wait(), left)

    async def _probe(self, s: Session, queues: Sequence[str], max_count: int) -> None:
        for queue in queues:
            while len(s.buffer) < max_count:
                got = await s.consume.basic_get(queue, no_ack=False)
                if isinstance(got.delivery, Basic.GetEmpty):
                    break
                s.outstanding.add(_delivery_tag(got))
                s.buffer.append((queue, got))
        await asyncio.sleep(0)

    async def _take(self, s: Session, queues: Sequence[str], max_count: int) -> list[Delivery]:
        out: list[Delivery] = []
        keep: list[tuple[str, _amqp.Incoming]] = []
        now = time.time()
        while s.buffer and len(out) < max_count:
            queue, message = s.buffer.popleft()
            if queue not in queues:
                keep.append((queue, message))
                continue
            delivery = self._delivery(s, queue, message)
            not_before = _amqp.header_number(message, _amqp.H_NOT_BEFORE)
            early = not_before is not None and not_before - now > 0.01
            # early: a delay beyond the cascade's range, sent round again; recount: a
            # classic queue's redelivery, whose flag cannot count a second loss, goes back
            # as a copy carrying its count, so a message that keeps killing workers ends
            if early or _amqp.needs_recount(message):
                s.held += 1
                due = not_before if early else None
                await self._republish(s, [delivery], delivery.delivery_count - 1, due)
                continue
            out.append(delivery)
        s.buffer.extendleft(reversed(keep))
        s.held += len(out)
        return out

    @staticmethod
    def _delivery(s: Session, queue: str, message: _amqp.Incoming) -> Delivery:
        delivery = _amqp.to_delivery(queue, f"{s.number}.", message)
        delivery.extra["amqp"] = (s, message)
        return delivery

    @staticmethod
    def _live(s: Session, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Deliveries of session ``s`` not settled yet. Those of a lost connection went
        back to their queue when it closed: acking them is neither needed nor possible."""
        if s.error is not None:
            return []
        return [
            d for d in deliveries
            if d.extra.get("amqp", (None,))[0] is s and "settled" not in d.extra
        ]  # fmt: skip

    async def _ack(self, s: Session, deliveries: Sequence[Delivery]) -> None:
        """One ``basic.ack`` with ``multiple`` for the tags below every tag still
        outstanding on the channel (the usual case: tasks finish in order), one each for
        the others."""
        live = self._live(s, deliveries)
        if not live:
            return
        tags = []
        for d in live:
            d.extra["settled"] = True
            s.held -= 1
            tags.append(_delivery_tag(d.extra["amqp"][1]))
        s.outstanding.difference_update(tags)
        low = min(s.outstanding, default=math.inf)
        rest = sorted(t for t in tags if t > low)
        covered = max((t for t in tags if t < low), default=0)
        if covered:
            await s.consume.basic_ack(covered, multiple=True, wait=not rest)
        for i, tag in enumerate(rest):
            await s.consume.basic_ack(tag, wait=i == len(rest) - 1)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        async with self._errors():
            await self._ack(await self._session(), deliveries)

    async def _republish(
        self, s: Session, deliveries: Sequence[Delivery], base: int, not_before: float | None
    ) -> None:
        """Publish copies whose delivery count starts at ``base``, then ack these."""
        live = self._live(s, deliveries)
        await self._prepare(s, [d.queue for d in live])
        sends = []
        for d in live:
            message: _amqp.Incoming = d.extra["amqp"][1]
            props = message.header.properties
            headers = _amqp.clean_headers(props.headers)
            if base > 0:
                headers[_amqp.H_COUNT] = base
            copy = _amqp.copy_properties(props, headers=headers)
            sends.append(self._send(s, d.queue, message.body, copy, not_before))
        await _amqp.gather(sends)
        await self._ack(s, live)

    async def _release(self, s: Session, items: list[tuple[str, _amqp.Incoming]]) -> None:
        """Return prefetched messages never handed out, without counting a delivery."""
        for queue, message in items:
            delivery = self._delivery(s, queue, message)
            s.held += 1
            await self._republish(
                s,
                [delivery],
                delivery.delivery_count - 1,
                _amqp.header_number(message, _amqp.H_NOT_BEFORE),
            )

    async def requeue(
        self,
        deliveries: Sequence[Delivery],
        *,
        not_before: float | None = None,
        count_delivery: bool = False,
    ) -> None:
        async with self._errors():
            s = await self._session()
            for d in deliveries:  # one at a time: each carries its own count
                base = d.delivery_count if count_delivery else d.delivery_count - 1
                await self._republish(s, [d], base, not_before)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        async with self._errors():
            s = await self._session()
            if not self._live(s, [delivery]):
                return
            message: _amqp.Incoming = delivery.extra["amqp"][1]
            props = message.header.properties
            headers = _amqp.clean_headers(props.headers)
            headers.update(
                {
                    _amqp.H_REASON: reason,
                    _amqp.H_QUEUE: delivery.queue,
                    _amqp.H_FAILED_AT: time.time(),
                }
            )
            props = _amqp.copy_properties(props, headers=headers, expiration=None, delivery_mode=2)
            await self._send(s, self._dlq, message.body, props, None)
            await self._ack(s, [delivery])

    async def extend(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Nothing to do: RabbitMQ keeps a delivery until its channel closes."""

    @property
    def lease_seconds(self) -> float:
        return 3600.0

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
        names = [queue, *(_amqp.delay_queue(queue, k) for k in range(_amqp.LEVELS))]
        return await _amqp.ready_counts(s.conn, names)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest of the first ``DEAD_LETTER_SCAN`` messages of the dead-letter queue
        (read with ``basic.get``, then put back in place)."""
        async with self._errors():
            s = await self._session()
            await self._declare(s, self._dlq)
            letters = await _amqp.peek(s.conn, self._dlq, DEAD_LETTER_SCAN)
            return [
                DeadLetter(
                    str(h.get(_amqp.H_QUEUE, "")), body, str(h.get(_amqp.H_REASON)),
                    float(h.get(_amqp.H_FAILED_AT) or 0.0),
                )
                for h, body in reversed(letters[-limit:])
            ]  # fmt: skip

    # -- control state: durable revocations, global rate limits -------------------
    # (the design, and why, is in celeriac.transports.amqp.control)

    async def revoke(
        self, task_ids: Sequence[str], ttl: float, *, terminate: bool = False,
        signal: str | None = None,
    ) -> None:  # fmt: skip
        """Append one record to the revocation stream (confirmed before returning)."""
        if not task_ids:
            return
        if ttl > self._retention and not self._warned_retention:
            self._warned_retention = True
            logger.warning(
                "Revocations last %.0f s (worker_revoke_expires) but the revocation stream "
                "keeps %.0f s (broker_transport_options revoke_retention)",
                ttl, self._retention,
            )  # fmt: skip
        body = _ctl.revocation_record(list(task_ids), time.time() + ttl, terminate, signal)
        async with self._errors():
            await self._append(await self._session(), body)
        self._log.read(body)

    async def revoked(self, task_ids: Sequence[str]) -> dict[str, Revocation]:
        """From memory, once this connection has read the stream up to a marker of its
        own (the first call waits for that)."""
        if not task_ids:
            return {}
        async with self._errors():
            s = await self._session()
            if not s.following:
                async with self._follow_lock:
                    if not s.following:
                        await self._follow(s)
        return self._log.lookup(task_ids)

    async def broadcast_control(self, message: Message) -> None:
        """Publish to Celery's ``celery.pidbox`` fanout exchange (declared as Celery
        declares it), where each Celery worker's control queue is bound."""
        async with self._errors():
            s = await self._session()
            if "celery.pidbox" not in s.declared:
                ch = await self._channel(s, "admin")
                with contextlib.suppress(ChannelPreconditionFailed):  # made otherwise: use it
                    await ch.exchange_declare(
                        "celery.pidbox", exchange_type="fanout", durable=False
                    )
                s.declared.add("celery.pidbox")
            ch = await self._channel(s, "publish")
            props = _amqp.message_properties(message, 0)
            await ch.basic_publish(message.body, exchange="celery.pidbox", properties=props)

    async def listen_control(
        self,
        hostname: str,
        handler: Callable[[Message], Awaitable[None]],
        listening: Callable[[], None] | None = None,
    ) -> None:
        """Celery's per-worker control queue (``<hostname>.celery.pidbox``: exclusive,
        auto-delete, bound to the ``celery.pidbox`` fanout exchange), on a connection of
        its own so that control never waits behind task traffic."""
        queue = f"{hostname}.celery.pidbox"
        failures = 0
        while True:
            conn = _amqp.connection(self._url)
            try:
                await asyncio.wait_for(conn.connect(), self._timeout)
                ch = await self._pidbox_channel(conn)
                # Celery's name, or one of our own when another worker has that name
                names = (
                    f"{hostname}.celery.pidbox",
                    f"{hostname}.{uuid.uuid4().hex[:12]}.celery.pidbox",
                )
                for queue in names:
                    try:
                        await ch.queue_declare(queue, exclusive=True, auto_delete=True,
                                               arguments=_PIDBOX_QUEUE_ARGS)  # fmt: skip
                        break
                    except ChannelLockedResource:  # the channel is closed: a new one
                        logger.warning(
                            "Remote control: another worker is named %s; give each worker "
                            "its own name (-n) so that requests can tell them apart", hostname,
                        )  # fmt: skip
                        ch = await conn.channel()
                await ch.queue_bind(queue, "celery.pidbox", routing_key="")

                async def on_request(delivered: DeliveredMessage) -> None:
                    await handler(_control_message(delivered))

                await ch.basic_consume(queue, on_request, no_ack=True)
                self._control_channel = ch
                if listening is not None:
                    listening()
                if failures:
                    logger.info("Remote control: listening on %s again", queue)
                    failures = 0
                await conn.closing
            except (*_ERRORS, CeleriacError) as exc:
                if failures == 0:
                    logger.warning("Remote control: lost %s (%r); reconnecting", queue, exc)
                failures += 1
                await asyncio.sleep(min(5.0, 0.25 * failures))
            finally:
                self._control_channel = None
                with contextlib.suppress(Exception):
                    await conn.close()

    async def request_control(
        self, message: Message, reply_key: str, timeout: float, limit: int | None
    ) -> list[Message]:
        """The reply queue is exclusive to a connection of the request's own, bound to
        ``reply.celery.pidbox`` with ``reply_key``; it goes with the connection."""
        queue = f"{reply_key}.reply.celery.pidbox"
        replies: asyncio.Queue[Message] = asyncio.Queue()
        out: list[Message] = []
        conn = _amqp.connection(self._url)
        try:
            async with self._errors():
                await asyncio.wait_for(conn.connect(), self._timeout)
                ch = await self._pidbox_channel(conn)
                await ch.queue_declare(
                    queue, exclusive=True, auto_delete=True, arguments=_PIDBOX_QUEUE_ARGS
                )
                await ch.queue_bind(queue, "reply.celery.pidbox", routing_key=reply_key)

                async def on_reply(delivered: DeliveredMessage) -> None:
                    replies.put_nowait(_control_message(delivered))

                await ch.basic_consume(queue, on_reply, no_ack=True)
                await ch.basic_publish(
                    message.body, exchange="celery.pidbox",
                    properties=_amqp.message_properties(message, 0),
                )  # fmt: skip
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout
                while limit is None or len(out) < limit:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        out.append(await asyncio.wait_for(replies.get(), left))
                    except asyncio.TimeoutError:
                        break
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
        return out

    @staticmethod
    async def _pidbox_channel(conn: _amqp.Connection) -> AbstractChannel:
        """A channel on ``conn`` with Celery's two control exchanges declared (as
        Celery declares them; made otherwise, they are used as they are)."""
        ch = await conn.channel()
        for exchange, kind in (("celery.pidbox", "fanout"), ("reply.celery.pidbox", "direct")):
            try:
                await ch.exchange_declare(exchange, exchange_type=kind, durable=False)
            except ChannelPreconditionFailed:
                ch = await conn.channel()
        return ch

    async def reply_control(self, routing_key: str, message: Message) -> None:
        ch = self._control_channel
        if ch is None or ch.is_closed:
            raise BrokerError("RabbitMQ: the remote-control channel is not open")
        async with self._errors():
            await ch.basic_publish(
                message.body, exchange="reply.celery.pidbox", routing_key=routing_key,
                properties=_amqp.message_properties(message, 0),
            )  # fmt: skip

    async def _declare_stream(self, s: Session) -> None:
        if _ctl.REVOKED_STREAM in s.declared:
            return
        ch = await self._channel(s, "admin")
        args = _ctl.stream_arguments(self._retention)
        try:
            await ch.queue_declare(_ctl.REVOKED_STREAM, durable=True, arguments=args)
        except ChannelPreconditionFailed:  # made with another retention: use it as it is
            ch = await self._channel(s, "admin")
            await ch.queue_declare(_ctl.REVOKED_STREAM, passive=True)
        s.declared.add(_ctl.REVOKED_STREAM)

    async def _append(self, s: Session, body: bytes) -> None:
        props = _amqp.Properties(content_type=JSON, delivery_mode=2)
        for attempt in (1, 2):
            await self._declare_stream(s)
            ch = await self._channel(s, "publish")
            try:
                await ch.basic_publish(
                    body, routing_key=_ctl.REVOKED_STREAM, properties=props, mandatory=True
                )
                return
            except Returned:  # the stream was deleted behind our back
                if attempt == 2:
                    raise BrokerError("RabbitMQ routed a revocation to no queue") from None
                s.declared.discard(_ctl.REVOKED_STREAM)

    async def _follow(self, s: Session) -> None:
        """Consume the revocation stream on the task consumers' channel (see the module
        of the design for why that channel), then wait until a marker appended now has
        been read back."""
        await self._declare_stream(s)
        loop = asyncio.get_running_loop()
        marker = uuid.uuid4().hex
        seen = s.markers[marker] = loop.create_future()
        log = self._log

        async def on_record(message: DeliveredMessage) -> None:
            offset = (message.header.properties.headers or {}).get("x-stream-offset")
            if isinstance(offset, int):
                log.next_offset = offset + 1
            found = log.read(message.body)
            if found is not None:
                waiter = s.markers.pop(found, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            tag = _delivery_tag(message)
            s.outstanding.discard(tag)
            with contextlib.suppress(*_ERRORS):
                await s.consume.basic_ack(tag, wait=False)

        start: int | str = "first" if log.next_offset is None else log.next_offset
        async with self._qos_lock:
            await s.consume.basic_qos(prefetch_count=_ctl.STREAM_PREFETCH, global_=False)
            try:
                await s.consume.basic_consume(
                    _ctl.REVOKED_STREAM, on_record, no_ack=False,
                    consumer_tag=_stream_tag(s), arguments={"x-stream-offset": start},
                )  # fmt: skip
            finally:
                if s.prefetch:  # a per-consumer prefetch applies to later consumers only
                    await s.consume.basic_qos(prefetch_count=s.prefetch, global_=False)
        await self._append(s, _ctl.marker_record(marker))
        read = log.next_offset
        while True:  # a long stream may take a while: wait as long as reading goes on
            try:
                await asyncio.wait_for(asyncio.shield(seen), self._timeout)
                break
            except asyncio.TimeoutError:
                if log.next_offset == read:
                    s.markers.pop(marker, None)
                    raise BrokerError("RabbitMQ stopped delivering the revocation stream") from None
                read = log.next_offset
        s.following = True

    async def take_token(self, key: str, rate: float, capacity: float) -> float:
        """``basic.get`` a token from the bucket's queue (joining its leader election on
        first use); without one, the seconds until just after the next refill."""
        async with self._errors():
            s = await self._session()
            for attempt in (1, 2):
                ch = await self._rate_channel(s)
                try:
                    bucket = s.buckets.get(key)
                    if bucket is None:
                        async with self._join_lock:  # one candidate per key and connection
                            bucket = s.buckets.get(key)
                            if bucket is None:
                                bucket = await self._join(s, ch, key, rate, capacity)
                    bucket.rate, bucket.used = rate, time.monotonic()
                    got = await ch.basic_get(_ctl.tokens_queue(key), no_ack=True)
                    break
                except (ChannelNotFoundEntity, ChannelPreconditionFailed) as exc:
                    # a queue expired or was deleted: the channel closed; declare again
                    s.drop_buckets()
                    if attempt == 2:
                        raise BrokerError(f"RabbitMQ token bucket {key!r}: {exc!r}") from exc
        if isinstance(got.delivery, Basic.GetOk):
            return 0.0
        return _ctl.token_wait(rate, time.time())

    async def _rate_channel(self, s: Session) -> AbstractChannel:
        ch = s.rate
        if ch is None or ch.is_closed:
            s.drop_buckets()
            ch = s.rate = await s.conn.channel(publisher_confirms=False)
            opened = ch

            def closed(_: object) -> None:
                if s.rate is opened:  # its consumers are gone: RabbitMQ requeued batons
                    s.drop_buckets()

            ch.closing.add_done_callback(closed)
            ch.on_consumer_cancel_callbacks.add(lambda frame: self._bucket_gone(s, frame))
            await ch.basic_qos(prefetch_count=10, global_=False)
        return ch

    @staticmethod
    def _bucket_gone(s: Session, frame: Basic.Cancel) -> None:
        """RabbitMQ cancelled a leader-queue consumer (the queue went): forget it."""
        for key, bucket in list(s.buckets.items()):
            if bucket.tag == frame.consumer_tag:
                s.buckets.pop(key)
                if bucket.refill is not None:
                    bucket.refill.cancel()

    async def _join(
        self, s: Session, ch: AbstractChannel, key: str, rate: float, capacity: float
    ) -> _ctl.Bucket:
        """Declare the bucket's queues, consume its leader queue and add a baton."""
        leader = _ctl.leader_queue(key)
        await ch.queue_declare(_ctl.tokens_queue(key), arguments=_ctl.tokens_arguments(capacity))
        await ch.queue_declare(leader, arguments=_ctl.leader_arguments())
        self._buckets_made += 1
        bucket = _ctl.Bucket(
            key, rate, capacity, tag=f"celeriac.{s.number}.rate.{self._buckets_made}"
        )
        s.buckets[key] = bucket

        async def on_baton(message: DeliveredMessage) -> None:
            tag = _delivery_tag(message)
            with contextlib.suppress(*_ERRORS):
                if s.buckets.get(key) is not bucket:  # resigned meanwhile: pass it on
                    await ch.basic_reject(tag, requeue=True)
                elif bucket.baton is not None:  # one is enough
                    await ch.basic_ack(tag)
                else:
                    bucket.baton = tag
                    bucket.refill = asyncio.get_running_loop().create_task(
                        self._refill(s, ch, bucket)
                    )

        await ch.basic_consume(leader, on_baton, no_ack=False, consumer_tag=bucket.tag)
        await ch.basic_publish(b"", routing_key=leader)
        return bucket

    async def _refill(self, s: Session, ch: AbstractChannel, bucket: _ctl.Bucket) -> None:
        """The leader's clock: one token at each grid point of ``1/rate`` seconds."""
        queue = _ctl.tokens_queue(bucket.key)
        rate = bucket.rate
        index = math.floor(time.time() * rate)
        try:
            while True:
                if time.monotonic() - bucket.used > _ctl.RESIGN_AFTER:
                    await self._resign(s, ch, bucket)
                    return
                if bucket.rate != rate:
                    rate, index = bucket.rate, math.floor(time.time() * bucket.rate)
                await asyncio.sleep(max(0.0, (index + 1) / rate - time.time()))
                now = math.floor(time.time() * rate)
                if now <= index:
                    continue
                index = now  # one token per grid point, never a backlog
                await ch.basic_publish(b"", routing_key=queue)
        except _ERRORS:
            return  # the channel closed: RabbitMQ requeued the baton

    @staticmethod
    async def _resign(s: Session, ch: AbstractChannel, bucket: _ctl.Bucket) -> None:
        """Idle: leave the election and hand the baton to the next candidate."""
        if s.buckets.get(bucket.key) is bucket:
            del s.buckets[bucket.key]
        await ch.basic_cancel(bucket.tag)
        if bucket.baton is not None:
            await ch.basic_reject(bucket.baton, requeue=True)


def _control_message(delivered: DeliveredMessage) -> Message:
    """A control request or reply as read from its queue."""
    props = delivered.header.properties
    return Message(
        headers=dict(props.headers or {}), body=delivered.body,
        content_type=props.content_type or JSON,
        content_encoding=props.content_encoding or "utf-8",
    )  # fmt: skip


def _delivery_tag(message: _amqp.Incoming) -> int:
    return int(getattr(message.delivery, "delivery_tag", 0) or 0)


def _stream_tag(s: Session) -> str:
    return f"celeriac.{s.number}.revoked"


__all__ = ["DEAD_LETTER_QUEUE", "AMQPBroker"]
