"""AMQP 0-9-1 plumbing shared by the RabbitMQ broker and the ``rpc://`` result backend:
URLs, header tables as Celery's py-amqp writes them, and the delay cascade's names and
declarations (the design is in :mod:`celeriac.brokers.amqp`)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections import deque
from collections.abc import Sequence
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from aiormq.exceptions import ChannelNotFoundEntity
from pamqp import encode
from pamqp.commands import Basic
from yarl import URL

from celeriac._amqp_control import Bucket
from celeriac.brokers.base import Delivery
from celeriac.protocol import JSON, Message

#: delay levels: level k holds a message 2**k ms, so delays up to 2**LEVELS - 1 ms
LEVELS = 32
DELAY_OUT = "celeriac.delay.out"
H_COUNT = "x-celeriac-delivery-count"
H_NOT_BEFORE = "x-celeriac-not-before"
H_REASON, H_QUEUE, H_FAILED_AT = "x-celeriac-reason", "x-celeriac-queue", "x-celeriac-failed-at"
#: headers RabbitMQ or celeriac add; hidden from ``Delivery.message.headers``
OWN_HEADERS = ("x-celeriac-", "x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


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


class _Coalescing:
    """A transport that hands every frame written in one event-loop pass to the socket
    in one write. aiormq writes each frame on its own, a ``send`` system call each: an
    ack, a publish and a result reply per task. Writes keep their order; a close sends
    what is buffered first."""

    __slots__ = ("_buffer", "_loop", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._buffer: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self._buffer.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._buffer:
            return
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CoalescingFactory(TransportFactory):
    def __init__(self, inner: TransportFactory) -> None:
        self.inner = inner

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await self.inner.create(url, **kwargs)
        writer._transport = _Coalescing(writer._transport)  # type: ignore[attr-defined]
        return reader, writer


def connection(url: str) -> aiormq.Connection:
    """An aiormq connection whose frames of one loop pass go out in one write."""
    inner = TLSTransportFactory() if URL(url).scheme == "amqps" else TCPTransportFactory()
    return aiormq.Connection(url, transport_factory=_CoalescingFactory(inner))


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


def cancelled_by_caller() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or bool(cancelling())


class Session:
    """One connection with its channels, consumers and prefetched messages. A failure
    ends the whole session; the broker then opens a new one."""

    def __init__(self, number: int, conn: aiormq.Connection, consume: AbstractChannel) -> None:
        self.number = number
        self.conn = conn
        self.consume = consume  # consumers, acks, basic.get
        self.publish: AbstractChannel | None = None  # publishes, with confirms
        self.admin: AbstractChannel | None = None  # declarations; reopened after an error
        self.rate: AbstractChannel | None = None  # global token buckets
        self.declared: set[str] = set()
        self.delays: dict[str, set[int]] = {}  # queue -> delay levels declared
        self.cascade = False
        self.consumers: dict[str, str] = {}  # queue -> consumer tag
        self.queue_of: dict[str, str] = {}  # consumer tag -> queue
        self.prefetch = 0
        self.fresh = False  # consumers just started: RabbitMQ sends a burst
        self.buffer: deque[tuple[str, DeliveredMessage]] = deque()
        self.held = 0  # handed to the caller, not settled
        self.outstanding: set[int] = set()  # delivery tags of ``consume`` not acked yet
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
        self.fail(None if future.cancelled() else future.exception())


# -- the delay cascade -------------------------------------------------------


def delay_queue(queue: str, level: int) -> str:
    """The name of ``queue``'s delay queue for ``level`` (a TTL of 2**level ms)."""
    return f"celeriac.delay.{queue}.{level:02d}"


def delay_exchange(level: int) -> str:
    """The topic exchange of ``level``; level -1 is the exit, bound to target queues."""
    return f"celeriac.delay.{level:02d}" if level >= 0 else DELAY_OUT


def _token(queue: str) -> str:
    return hashlib.blake2b(queue.encode(), digest_size=8).hexdigest()


def _words(level: int, bit: str) -> list[str]:
    """Binding words up to and including ``level``'s position (most significant first)."""
    return ["*"] * (LEVELS - 1 - level) + [bit]


def delay_key(ms: int, queue: str) -> str:
    """The routing key of a delay of ``ms``: its bits, most significant first, and a
    token of the target queue (a hash: queue names may hold dots and wildcards)."""
    return ".".join([*format(min(ms, 2**LEVELS - 1), f"0{LEVELS}b"), _token(queue)])


async def declare_cascade(ch: AbstractChannel) -> None:
    """The shared level exchanges; each skips a message whose bit is 0 to the next."""
    for level in range(-1, LEVELS):
        await ch.exchange_declare(
            delay_exchange(level), exchange_type="topic", durable=True, nowait=True
        )
    for level in range(LEVELS):
        await ch.exchange_bind(
            destination=delay_exchange(level - 1), source=delay_exchange(level),
            routing_key=".".join([*_words(level, "0"), "#"]), nowait=True,
        )  # fmt: skip


async def declare_levels(ch: AbstractChannel, queue: str, levels: Sequence[int]) -> None:
    """``queue``'s delay queues for ``levels`` (each takes the messages whose bit is 1 and
    dead-letters them to the next level when their TTL ends) and ``queue``'s binding to
    the exit. The last call waits for an answer: an error before it closed the channel."""
    token = _token(queue)
    for level in levels:
        args: dict[str, Any] = {
            "x-message-ttl": 1 << level, "x-dead-letter-exchange": delay_exchange(level - 1)
        }  # fmt: skip
        name = delay_queue(queue, level)
        await ch.queue_declare(name, durable=True, arguments=args, nowait=True)
        key = ".".join([*_words(level, "1"), *["*"] * level, token])
        await ch.queue_bind(name, delay_exchange(level), routing_key=key, nowait=True)
    await ch.queue_bind(queue, DELAY_OUT, routing_key=".".join([*["*"] * LEVELS, token]))


# -- properties and headers ---------------------------------------------------


class Properties(Basic.Properties):
    """Basic properties whose header table carries floats as doubles and tuples as
    arrays, as Celery's py-amqp does (pamqp would send 32-bit floats: an epoch time
    would lose a minute)."""

    def encode_property(self, name: str, value: Any) -> bytes:
        if name == "headers" and isinstance(value, dict):
            return _table(value)
        return super().encode_property(name, value)


def _table(table: dict[str, Any]) -> bytes:
    data = b"".join(encode.short_string(k) + _field(v) for k, v in table.items())
    return struct.pack(">I", len(data)) + data


def _field(value: Any) -> bytes:
    if isinstance(value, float):
        return b"d" + struct.pack(">d", value)
    if isinstance(value, dict):
        return b"F" + _table(value)
    if isinstance(value, (list, tuple)):
        data = b"".join(_field(v) for v in value)
        return b"A" + struct.pack(">I", len(data)) + data
    if isinstance(value, (bytes, bytearray)):
        return b"x" + struct.pack(">I", len(value)) + bytes(value)
    return encode.encode_table_value(value)


_FIELDS = (
    "content_type", "content_encoding", "headers", "delivery_mode", "priority",
    "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "message_type",
    "user_id", "app_id",
)  # fmt: skip


def copy_properties(props: Basic.Properties, **changes: Any) -> Properties:
    fields = {name: getattr(props, name) for name in _FIELDS}
    fields.update(changes)
    return Properties(**fields)


def message_properties(message: Message, priority: int) -> Properties:
    """A task message's basic properties, as Celery sets them."""
    p = message.properties
    expiration = p.get("expiration")
    return Properties(
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=dict(message.headers),
        delivery_mode=int(p.get("delivery_mode") or 2),
        priority=max(0, min(255, int(priority or 0))),
        correlation_id=str(p.get("correlation_id") or message.task_id or "") or None,
        reply_to=str(p.get("reply_to") or "") or None,
        expiration=str(expiration) if expiration not in (None, "") else None,
    )


def clean_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """``headers`` without those RabbitMQ or celeriac added."""
    return {k: v for k, v in (headers or {}).items() if not k.startswith(OWN_HEADERS)}


def header_number(message: DeliveredMessage, name: str) -> float | None:
    value = (message.header.properties.headers or {}).get(name)
    return float(value) if isinstance(value, (int, float)) else None


def to_delivery(queue: str, tag_prefix: str, message: DeliveredMessage) -> Delivery:
    """A delivered AMQP message as the worker core takes it. The delivery count is our
    header (copies we republished) + 1 + RabbitMQ's count: ``x-delivery-count`` on quorum
    queues, else 1 when the message is flagged redelivered."""
    props, frame = message.header.properties, message.delivery
    headers = dict(props.headers or {})
    redelivered = bool(getattr(frame, "redelivered", False))
    native, base = headers.get("x-delivery-count"), headers.get(H_COUNT)
    count = (base if isinstance(base, int) else 0) + 1
    count += native if isinstance(native, int) else int(redelivered)
    exchange = str(getattr(frame, "exchange", "") or "")
    if exchange.startswith("celeriac.delay."):  # from the cascade: present it as sent
        info: dict[str, Any] = {"exchange": "", "routing_key": queue}
    else:
        info = {"exchange": exchange, "routing_key": getattr(frame, "routing_key", queue)}
    if redelivered or count > 1:
        info["redelivered"] = True
    clean = clean_headers(headers)
    tag = f"{tag_prefix}{getattr(frame, 'delivery_tag', 0)}"
    if not props.content_type and "task" not in clean:
        error = "AMQP message has no content_type property and no 'task' header"
        return Delivery(queue, tag, message.body, None, count, error=error)
    properties: dict[str, Any] = {
        "correlation_id": props.correlation_id,
        "reply_to": props.reply_to or "",
        "delivery_mode": props.delivery_mode or 1,
        "delivery_info": info,
        "priority": props.priority or 0,
    }
    if props.expiration:
        properties["expiration"] = props.expiration
    content_type, encoding = props.content_type or JSON, props.content_encoding or "utf-8"
    msg = Message(clean, message.body, content_type, encoding, properties)
    return Delivery(queue, tag, message.body, msg, count)


def needs_recount(message: DeliveredMessage) -> bool:
    """Redelivered from a classic queue (quorum queues count in ``x-delivery-count``)."""
    headers = message.header.properties.headers or {}
    return bool(getattr(message.delivery, "redelivered", False)) and (
        "x-delivery-count" not in headers
    )


async def ready_counts(conn: aiormq.Connection, queues: Sequence[str]) -> dict[str, int]:
    """Ready messages of those ``queues`` that exist, by passive declares on channels of
    their own (a missing queue closes the channel that asked)."""
    counts: dict[str, int] = {}
    ch: AbstractChannel | None = None
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


async def peek(
    conn: aiormq.Connection, queue: str, limit: int
) -> list[tuple[dict[str, Any], bytes]]:
    """The headers and bodies of the first ``limit`` messages of ``queue``, read with
    ``basic.get`` and put back in place."""
    ch = await conn.channel(publisher_confirms=False)
    out: list[tuple[dict[str, Any], bytes]] = []
    try:
        last = 0
        while len(out) < limit:
            got = await ch.basic_get(queue, no_ack=False)
            if isinstance(got.delivery, Basic.GetEmpty):
                break
            last = getattr(got.delivery, "delivery_tag", 0) or 0
            out.append((dict(got.header.properties.headers or {}), got.body))
        if last:
            await ch.basic_nack(last, multiple=True, requeue=True)
    finally:
        await ch.close()
    return out


async def gather(coros: Sequence[Any]) -> None:
    """Await all (publishes pipeline; their confirms come back together); raise the first
    error once all are done."""
    for result in await asyncio.gather(*coros, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


__all__ = [
    "DELAY_OUT",
    "LEVELS",
    "OWN_HEADERS",
    "Properties",
    "Session",
    "cancelled_by_caller",
    "clean_headers",
    "connection",
    "connection_url",
    "copy_properties",
    "declare_cascade",
    "declare_levels",
    "delay_exchange",
    "delay_key",
    "delay_queue",
    "gather",
    "header_number",
    "message_properties",
    "needs_recount",
    "peek",
    "quiet_aiormq",
    "ready_counts",
    "to_delivery",
]
