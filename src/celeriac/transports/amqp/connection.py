"""The one module that imports aiormq (and yarl): connections, with the fast lane of
:mod:`.wire` plugged in under them through aiormq's ``transport_factory``; URLs as Celery
writes them; a :class:`Session` (one connection with its channels, consumers and
prefetched messages); passive counts and peeks; and the aiormq names the rest of the
transport uses (the channel and message types, the exceptions). The design:
docs/internals/amqp.md."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel as Channel
from aiormq.abc import DeliveredMessage
from aiormq.connection import TransportFactory
from aiormq.exceptions import (
    AMQPConnectionError,
    AMQPError,
    AuthenticationError,
    ChannelInvalidStateError,
    ChannelLockedResource,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    ConnectionNotAllowed,
    ProbableAuthenticationError,
)
from aiormq.exceptions import PublishError as Returned
from yarl import URL

from celeriac.transports.amqp.codec import GetEmpty, Received
from celeriac.transports.amqp.control import Bucket
from celeriac.transports.amqp.delay import LEVELS, delay_queue
from celeriac.transports.amqp.wire import Coalescing, ConsumerTap, Wire, WireProtocol
from celeriac.transports.keepalive import tune_keepalive

#: a message from a consumer: the fast lane's, or aiormq's (``basic.get``, other consumers)
Incoming = DeliveredMessage | Received
#: what connection trouble raises
ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, asyncio.TimeoutError)
#: what RabbitMQ raises when it refuses the connection (credentials, vhost): connecting
#: again cannot help
REFUSED = (AuthenticationError, ProbableAuthenticationError, ConnectionNotAllowed)
#: the heartbeat (seconds) a broker connection asks for when ``broker_heartbeat`` is not
#: set: RabbitMQ's advice is 5 to 20 s; a connection silent this long is dropped
DEFAULT_HEARTBEAT = 10


class _QuietConnect(logging.Filter):
    """aiormq logs each failed connection attempt and each connection the server closes
    (with a traceback); celeriac raises BrokerError/BackendError for those instead, so the
    worker logs one line per outage and an idle producer reconnects quietly."""

    NOISE = (
        "error when creating transport",
        "Unexpected connection close from remote",
        "Cancelling cause reader exited abnormally",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def quiet_aiormq() -> None:
    aiormq_log = logging.getLogger("aiormq.connection")
    if not any(isinstance(f, _QuietConnect) for f in aiormq_log.filters):
        aiormq_log.addFilter(_QuietConnect())


class _CoalescingFactory(TransportFactory):
    """Opens the socket with :class:`WireProtocol` and a coalescing transport."""

    def __init__(self, wire: Wire, tls: bool, heartbeat: float) -> None:
        self.wire = wire
        self.tls = tls
        self.heartbeat = heartbeat

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        ssl = await provider.get_context() if self.tls and provider is not None else None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = WireProtocol(reader, self.wire)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol,
                url.host or "localhost",
                url.port or (5671 if self.tls else 5672),
                ssl=ssl,
                **kwargs,
            )
        except OSError as exc:
            raise AMQPConnectionError(*exc.args) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tune_keepalive(sock, self.heartbeat)
        coalescing = Coalescing(transport)
        self.wire.transport = coalescing
        writer = asyncio.StreamWriter(coalescing, protocol, reader, loop)  # type: ignore[arg-type]
        return reader, writer


class Connection(aiormq.Connection):
    """An aiormq connection whose frames of one loop pass go out in one write, with a
    fast lane (:class:`Wire`) for deliveries and reply publishes.

    Its deadline is the heartbeat negotiated: RabbitMQ sends a frame every half of it,
    so a connection from which nothing came for a whole heartbeat (two missed, as
    RabbitMQ itself counts) is dead, and is dropped with :attr:`dead` saying why (aiormq
    would wait three heartbeats and a second before it noticed)."""

    def __init__(self, url: str) -> None:
        self.wire = Wire()
        parsed = URL(url)
        tls = parsed.scheme == "amqps"
        asked = parsed.query.get("heartbeat")
        # TCP keepalive's timers follow the heartbeat; a connection without heartbeats
        # (rpc:// results, by default) gets the default's, its only deadline
        heartbeat = float(asked) if asked and float(asked) > 0 else DEFAULT_HEARTBEAT
        super().__init__(url, transport_factory=_CoalescingFactory(self.wire, tls, heartbeat))
        #: why the heartbeat check dropped the connection (None: it did not)
        self.dead: BaseException | None = None
        self._watch: asyncio.TimerHandle | None = None

    async def connect(self, client_properties: Any = None) -> bool:
        result = await super().connect(client_properties)
        self.wire.frame_max = int(getattr(self.connection_tune, "frame_max", 0) or 0)
        beat = float(getattr(self.connection_tune, "heartbeat", 0) or 0)
        if beat > 0:
            self.wire.last_read = time.monotonic()
            self._check_heartbeat(beat)
        return bool(result)

    def _check_heartbeat(self, beat: float) -> None:
        self._watch = None
        transport = self.wire.transport
        if self.is_closed or transport is None or transport.is_closing():
            return
        silent = time.monotonic() - self.wire.last_read
        if silent >= beat:
            self.dead = ConnectionError(
                f"missed heartbeats: nothing from RabbitMQ for {silent:.1f} s "
                f"(heartbeat {beat:g} s)"
            )
            self.wire.lost(self.dead)
            transport.abort()
            return
        loop = asyncio.get_running_loop()
        self._watch = loop.call_later(max(beat - silent, beat / 4), self._check_heartbeat, beat)


def connection(url: str) -> Connection:
    """An aiormq connection with the fast lane (see :class:`Connection`)."""
    return Connection(url)


def connection_url(url: str, heartbeat: Any = None) -> str:
    """A Celery/kombu AMQP URL as aiormq takes it (``pyamqp`` -> ``amqp``, guest defaults;
    ``amqp://host//`` is vhost ``/``)."""
    p = URL(url)
    scheme = "amqps" if p.scheme == "amqps" else "amqp"
    user = p.raw_user or "guest"
    password = p.raw_password if p.raw_password is not None else "guest"
    port = f":{p.port}" if p.explicit_port else ""
    query = f"?{p.raw_query_string}" if p.raw_query_string else ""
    host = p.host_subcomponent or "localhost"
    out = URL(f"{scheme}://{user}:{password}@{host}{port}{p.raw_path or '/'}{query}")
    if heartbeat is not None and "heartbeat" not in out.query:
        out = out.update_query(heartbeat=str(int(float(heartbeat))))
    return str(out)


def has_host(url: str) -> bool:
    """Whether ``url`` names a host (``rpc://`` alone does not)."""
    return bool(URL(url).host)


def cancelled_by_caller() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or bool(cancelling())


class Session:
    """One connection with its channels, consumers and prefetched messages. A failure
    ends the whole session; the broker then opens a new one."""

    def __init__(self, number: int, conn: Connection, consume: Channel) -> None:
        self.number = number
        self.conn = conn
        self.consume = consume  # consumers, acks, basic.get
        self.outstanding: set[int] = set()  # delivery tags of ``consume`` not acked yet
        self.tap = ConsumerTap(self.outstanding)  # the fast lane for our consumers
        conn.wire.tap(consume, self.tap)
        self.publish: Channel | None = None  # publishes, with confirms
        self.admin: Channel | None = None  # declarations; reopened after an error
        self.rate: Channel | None = None  # global token buckets
        self.declared: set[str] = set()
        self.delays: dict[str, set[int]] = {}  # queue -> delay levels declared
        self.cascade = False
        self.consumers: dict[str, str] = {}  # queue -> consumer tag
        self.queue_of: dict[str, str] = {}  # consumer tag -> queue
        self.prefetch = 0
        self.fresh = False  # consumers just started: RabbitMQ sends a burst
        self.buffer: deque[tuple[str, Incoming]] = deque()
        self.held = 0  # handed to the caller, not settled
        self.error: BaseException | None = None
        self.wake = asyncio.Event()
        self.following = False  # reading the revocation stream
        self.markers: dict[str, asyncio.Future[None]] = {}
        self.buckets: dict[str, Bucket] = {}  # global token buckets (rate channel)

    def fail(self, exc: BaseException | None) -> None:
        if self.error is None:
            self.error = exc or ConnectionError("connection closed")
        self.wake.set()
        self.drop_buckets()
        for marker in self.markers.values():
            if not marker.done():
                marker.set_exception(self.error)
                marker.exception()  # retrieved: nobody may be waiting any more
        self.markers.clear()

    def drop_buckets(self) -> None:
        """Forget the buckets of the rate channel (it closed: RabbitMQ requeued batons)."""
        for bucket in self.buckets.values():
            if bucket.refill is not None:
                bucket.refill.cancel()
        self.buckets.clear()

    def on_close(self, future: asyncio.Future[Any]) -> None:
        dead = self.conn.dead  # the heartbeat check's reason comes first
        self.fail(dead or (None if future.cancelled() else future.exception()))

    @property
    def stream_tag(self) -> str:
        """The consumer tag of the revocation stream on ``consume``."""
        return f"celeriac.{self.number}.revoked"


async def ready_counts(conn: aiormq.Connection, queues: Sequence[str]) -> dict[str, int]:
    """Ready messages of those ``queues`` that exist, by passive declares on channels of
    their own (a missing queue closes the channel that asked)."""
    counts: dict[str, int] = {}
    ch: Channel | None = None
    try:
        for name in queues:
            if ch is None or ch.is_closed:
                ch = await conn.channel(publisher_confirms=False)
            try:
                ok = await ch.queue_declare(name, passive=True)
            except ChannelNotFoundEntity:
                continue
            except asyncio.CancelledError:
                # aiormq may cancel the pending declare as the NOT_FOUND closes the
                # channel; a cancellation of this task itself leaves the channel open
                if not ch.is_closed:
                    raise
                continue
            counts[name] = ok.message_count or 0
    finally:
        if ch is not None and not ch.is_closed:
            await ch.close()
    return counts


async def peek(conn: aiormq.Connection, queue: str, limit: int) -> list[DeliveredMessage]:
    """The first ``limit`` messages of ``queue``, read with ``basic.get`` and put back
    in place."""
    ch = await conn.channel(publisher_confirms=False)
    out: list[DeliveredMessage] = []
    try:
        last = 0
        while len(out) < limit:
            got = await ch.basic_get(queue, no_ack=False)
            if isinstance(got.delivery, GetEmpty):
                break
            last = getattr(got.delivery, "delivery_tag", 0) or 0
            out.append(got)
        if last:
            await ch.basic_nack(last, multiple=True, requeue=True)
    finally:
        await ch.close()
    return out


async def take_first(
    conn: aiormq.Connection,
    queue: str,
    limit: int,
    match: Callable[[dict[str, Any], bytes], bool],
) -> bool:
    """Remove the first of the first ``limit`` messages of ``queue`` that ``match``-es
    (its headers, its body); the others are put back in place. False when none does.

    Each is read with ``basic.get`` and held unacked; the match is acked, the rest are
    returned together (``basic.nack`` with ``multiple``, which keeps their order)."""
    ch = await conn.channel(publisher_confirms=False)
    try:
        held, found = 0, False  # the last tag held unacked, not matching
        for _ in range(limit):
            got = await ch.basic_get(queue, no_ack=False)
            if isinstance(got.delivery, GetEmpty):
                break
            tag = getattr(got.delivery, "delivery_tag", 0) or 0
            if match(dict(got.header.properties.headers or {}), got.body):
                await ch.basic_ack(tag)
                found = True
                break
            held = tag
        if held:
            await ch.basic_nack(held, multiple=True, requeue=True)
    finally:
        await ch.close()
    return found


async def gather(coros: Sequence[Any]) -> None:
    """Await all (publishes pipeline; their confirms come back together); raise the first
    error once all are done."""
    for result in await asyncio.gather(*coros, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


__all__ = [
    "DEFAULT_HEARTBEAT",
    "ERRORS",
    "LEVELS",
    "REFUSED",  # re-exported: tests name the cascade's levels through this module
    "AMQPError",
    "Channel",
    "ChannelInvalidStateError",
    "ChannelLockedResource",
    "ChannelNotFoundEntity",
    "ChannelPreconditionFailed",
    "Connection",
    "DeliveredMessage",
    "Incoming",
    "Returned",
    "Session",
    "cancelled_by_caller",
    "connection",
    "connection_url",
    "delay_queue",
    "gather",
    "has_host",
    "peek",
    "quiet_aiormq",
    "ready_counts",
    "take_first",
]
