"""AMQP 0-9-1 plumbing shared by the RabbitMQ broker and the ``rpc://`` result backend:
URLs, header tables as Celery's py-amqp writes them, and the delay cascade's names and
declarations (the design is in :mod:`celeriac.transports.amqp.broker`)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.connection import TransportFactory
from aiormq.exceptions import AMQPConnectionError, ChannelNotFoundEntity
from pamqp import decode, encode
from pamqp.commands import Basic
from yarl import URL

from celeriac.protocol import JSON, Message
from celeriac.transports.amqp.control import Bucket
from celeriac.transports.broker import Delivery

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


# -- the fast lane -------------------------------------------------------------
#
# aiormq turns every incoming frame into pamqp objects, passes it through two queues and
# a task per channel, and starts a task per delivered message; a publish takes a lock, a
# timeout scope, a queue and the writer task. For the two paths a worker takes per task
# (a delivery in, a result reply out) that costs more than the rest of the worker. So the
# connection's protocol splits the incoming byte stream into frames itself, and a *tap*
# registered for a channel takes the frames it handles (deliveries for celeriac's own
# consumers; publisher confirms of the reply channel) before aiormq sees them; every
# other frame goes on to aiormq, in order. Replies are written as frames directly.

_FRAME_HEAD = struct.Struct(">BHI")
_METHOD = struct.Struct(">HH")
_U8, _U16, _U32, _U64 = (struct.Struct(f) for f in (">B", ">H", ">I", ">Q"))
_I8, _I16, _I32, _I64 = (struct.Struct(f) for f in (">b", ">h", ">i", ">q"))
_F32, _F64 = struct.Struct(">f"), struct.Struct(">d")
_CONTENT_HEAD = struct.Struct(">HHQH")
FRAME_END = 0xCE
_DELIVER, _ACK, _NACK = (60, 60), (60, 80), (60, 120)

#: Basic properties in wire order with their flag bits (AMQP 0-9-1, pamqp's names)
_PROPERTY_FLAGS = (
    ("content_type", 0x8000), ("content_encoding", 0x4000), ("headers", 0x2000),
    ("delivery_mode", 0x1000), ("priority", 0x0800), ("correlation_id", 0x0400),
    ("reply_to", 0x0200), ("expiration", 0x0100), ("message_id", 0x0080),
    ("timestamp", 0x0040), ("message_type", 0x0020), ("user_id", 0x0010),
    ("app_id", 0x0008), ("cluster_id", 0x0004),
)  # fmt: skip
_OCTETS = frozenset({"delivery_mode", "priority"})


class Props:
    """Decoded basic properties (the attributes of pamqp's ``Basic.Properties``); an
    absent property reads None."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: Any = None
    message_type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None


class DeliverFrame:
    """A ``basic.deliver`` method's fields."""

    __slots__ = ("consumer_tag", "delivery_tag", "exchange", "redelivered", "routing_key")

    def __init__(
        self, consumer_tag: str, delivery_tag: int, redelivered: bool, exchange: str, key: str
    ) -> None:
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = key


class Header:
    __slots__ = ("body_size", "properties")

    def __init__(self, properties: Props, body_size: int) -> None:
        self.properties = properties
        self.body_size = body_size


class Received:
    """A message the fast lane delivered; reads like aiormq's ``DeliveredMessage``."""

    __slots__ = ("body", "delivery", "header")

    def __init__(self, delivery: DeliverFrame, header: Header, body: bytes) -> None:
        self.delivery = delivery
        self.header = header
        self.body = body


#: a message from a consumer: the fast lane's, or aiormq's (``basic.get``, other consumers)
Incoming = DeliveredMessage | Received


def _short(buf: bytes, pos: int) -> tuple[str, int]:
    n = buf[pos]
    end = pos + 1 + n
    return buf[pos + 1 : end].decode("utf-8"), end


def _decode_table(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
    (size,) = _U32.unpack_from(buf, pos)
    pos += 4
    end = pos + size
    if end > len(buf):
        raise ValueError("field table longer than its frame")
    table: dict[str, Any] = {}
    while pos < end:  # long strings and voids (most of Celery's headers) inline
        n = buf[pos]
        key = buf[pos + 1 : pos + 1 + n].decode()
        pos += 1 + n
        kind = buf[pos]
        if kind == 0x53:  # S
            (n,) = _U32.unpack_from(buf, pos + 1)
            raw = buf[pos + 5 : pos + 5 + n]
            pos += 5 + n
            try:
                table[key] = raw.decode()
            except UnicodeDecodeError:
                table[key] = raw
        elif kind == 0x56:  # V
            table[key] = None
            pos += 1
        else:
            table[key], pos = _decode_value(buf, pos)
    return table, end


def _decode_value(buf: bytes, pos: int) -> tuple[Any, int]:
    kind = buf[pos]
    pos += 1
    if kind == 0x53:  # S: long string
        (n,) = _U32.unpack_from(buf, pos)
        raw = buf[pos + 4 : pos + 4 + n]
        try:
            return raw.decode("utf-8"), pos + 4 + n
        except UnicodeDecodeError:
            return raw, pos + 4 + n
    if kind == 0x56:  # V: void
        return None, pos
    if kind == 0x74:  # t: boolean
        return bool(buf[pos]), pos + 1
    if kind == 0x46:  # F: table
        return _decode_table(buf, pos)
    if kind == 0x41:  # A: array
        (size,) = _U32.unpack_from(buf, pos)
        pos += 4
        end = pos + size
        items = []
        while pos < end:
            item, pos = _decode_value(buf, pos)
            items.append(item)
        return items, end
    fixed = _FIXED.get(kind)
    if fixed is not None:
        return fixed.unpack_from(buf, pos)[0], pos + fixed.size
    if kind == 0x78:  # x: byte array
        (n,) = _U32.unpack_from(buf, pos)
        return bytearray(buf[pos + 4 : pos + 4 + n]), pos + 4 + n
    rare = decode.TABLE_MAPPING.get(bytes((kind,)))  # decimal, timestamp: as pamqp does
    if rare is None:
        raise ValueError(f"unknown field type {chr(kind)!r}")
    used, value = rare(buf[pos:])
    return value, pos + used


_FIXED = {
    0x62: _I8, 0x42: _U8, 0x73: _I16, 0x75: _U16, 0x49: _I32, 0x69: _U32,
    0x6C: _I64, 0x4C: _I64, 0x66: _F32, 0x64: _F64,
}  # fmt: skip


#: (name, flag bit, how it is encoded: 0 short string, 1 table, 2 octet, 3 timestamp)
_CODES = {"headers": 1, "delivery_mode": 2, "priority": 2, "timestamp": 3}
_PROPERTY_CODES = tuple((name, bit, _CODES.get(name, 0)) for name, bit in _PROPERTY_FLAGS)


def decode_properties(buf: bytes, pos: int, flags: int) -> Props:
    props = Props()
    found = props.__dict__
    for name, bit, code in _PROPERTY_CODES:
        if not flags & bit:
            continue
        if code == 0:
            n = buf[pos]
            found[name] = buf[pos + 1 : pos + 1 + n].decode()
            pos += 1 + n
        elif code == 1:
            found[name], pos = _decode_table(buf, pos)
        elif code == 2:
            found[name] = buf[pos]
            pos += 1
        else:
            used, found[name] = decode.timestamp(buf[pos : pos + 8])
            pos += used
    return props


def _encode_short(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"AMQP short string over 255 bytes: {value[:40]!r}...")
    return bytes((len(raw),)) + raw


def encode_properties(**fields: Any) -> tuple[int, bytes]:
    """Flags and bytes of basic properties (those of :class:`Props`; None means absent;
    header tables as Celery's py-amqp writes them)."""
    flags, parts = 0, []
    for name, bit in _PROPERTY_FLAGS:
        value = fields.pop(name, None)
        if value is None:
            continue
        flags |= bit
        if name == "headers":
            parts.append(_table(value))
        elif name in _OCTETS:
            parts.append(_U8.pack(value))
        elif name == "timestamp":
            parts.append(_U64.pack(int(value)))
        else:
            parts.append(_encode_short(str(value)))
    if fields:
        raise TypeError(f"unknown basic properties: {sorted(fields)}")
    return flags, b"".join(parts)


def publish_frames(
    channel: int, exchange: str, routing_key: str, flags: int, props: bytes, body: bytes,
    frame_max: int, mandatory: bool = False,
) -> bytes:  # fmt: skip
    """The frames of one ``basic.publish`` with its content, as one bytes object."""
    method = (
        b"\x00\x3c\x00\x28\x00\x00" + _encode_short(exchange) + _encode_short(routing_key)
        + (b"\x01" if mandatory else b"\x00")
    )  # fmt: skip
    head = _CONTENT_HEAD.pack(60, 0, len(body), flags) + props
    out = [_FRAME_HEAD.pack(1, channel, len(method)), method, b"\xce"]
    out += [_FRAME_HEAD.pack(2, channel, len(head)), head, b"\xce"]
    step = max(1, frame_max - 8) if frame_max else len(body) or 1
    for start in range(0, len(body), step):
        chunk = body[start : start + step]
        out += [_FRAME_HEAD.pack(3, channel, len(chunk)), chunk, b"\xce"]
    return b"".join(out)


class Tap:
    """Takes some frames of one channel before aiormq sees them."""

    def take(self, kind: int, buf: bytes, start: int, end: int) -> bool:
        """Handle the frame whose payload is ``buf[start:end]`` and return True, or
        return False to pass it on to aiormq."""
        raise NotImplementedError

    def closed(self, exc: BaseException) -> None:
        """The channel or the connection closed."""


class ConsumerTap(Tap):
    """Deliveries to the consumer tags in ``callbacks``: each message is assembled here
    and handed to its (synchronous) callback. Deliveries to other consumers, ``basic.get``
    answers and every other frame go to aiormq."""

    def __init__(self, outstanding: set[int] | None = None) -> None:
        self.callbacks: dict[str, Callable[[Received], None]] = {}
        #: every delivery's tag is added here as its frame arrives, whichever consumer it
        #: is for, so an ack with ``multiple`` never covers one not acked yet (the
        #: revocation stream's records share the channel and are acked one by one)
        self.outstanding = outstanding
        self._mine = False  # the content frames that follow belong to a message of ours
        self._deliver: DeliverFrame | None = None
        self._header: Header | None = None
        self._parts: list[bytes] = []
        self._got = 0

    def take(self, kind: int, buf: bytes, start: int, end: int) -> bool:
        if kind == 1:
            self._mine = False
            if _METHOD.unpack_from(buf, start) != _DELIVER:
                return False
            tag, pos = _short(buf, start + 4)
            (delivery_tag,) = _U64.unpack_from(buf, pos)
            if self.outstanding is not None:
                self.outstanding.add(delivery_tag)
            if tag not in self.callbacks:
                return False
            redelivered = bool(buf[pos + 8] & 1)
            exchange, pos = _short(buf, pos + 9)
            key, pos = _short(buf, pos)
            self._deliver = DeliverFrame(tag, delivery_tag, redelivered, exchange, key)
            self._mine = True
            return True
        if not self._mine:
            return False
        if kind == 2:
            _, _, size, flags = _CONTENT_HEAD.unpack_from(buf, start)
            self._header = Header(decode_properties(buf, start + 14, flags), size)
            self._parts, self._got = [], 0
            if size == 0:
                self._complete(b"")
            return True
        if kind == 3:
            self._parts.append(buf[start:end])
            self._got += end - start
            assert self._header is not None
            if self._got >= self._header.body_size:
                parts = self._parts
                self._complete(parts[0] if len(parts) == 1 else b"".join(parts))
            return True
        return False

    def _complete(self, body: bytes) -> None:
        deliver, header = self._deliver, self._header
        assert deliver is not None and header is not None
        self._mine, self._deliver, self._header, self._parts = False, None, None, []
        callback = self.callbacks.get(deliver.consumer_tag)
        if callback is not None:
            callback(Received(deliver, header, body))


class ConfirmTap(Tap):
    """Publisher confirms of a channel on which only :meth:`publish` publishes."""

    def __init__(self, wire: Wire, channel: AbstractChannel) -> None:
        self._wire = wire
        self.number = int(channel.number)
        self._next = 0
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._loop = asyncio.get_running_loop()
        self._error: BaseException | None = None

    def publish(
        self, exchange: str, routing_key: str, props: tuple[int, bytes], body: bytes
    ) -> asyncio.Future[None]:
        """Write one publish now (sent with this loop pass's other frames); the future
        resolves when RabbitMQ confirms it."""
        if self._error is not None:
            raise self._error
        frames = publish_frames(
            self.number, exchange, routing_key, props[0], props[1], body, self._wire.frame_max
        )
        self._wire.write(frames)
        self._next += 1
        done: asyncio.Future[None] = self._loop.create_future()
        self._pending[self._next] = done
        return done

    def take(self, kind: int, buf: bytes, start: int, end: int) -> bool:
        if kind != 1:
            return False
        method = _METHOD.unpack_from(buf, start)
        if method not in (_ACK, _NACK):
            return False
        (tag,) = _U64.unpack_from(buf, start + 4)
        multiple = bool(buf[start + 12] & 1)
        pending = self._pending
        # multiple: every tag up to ``tag`` (the dict is in tag order: tags grow)
        done = [t for t in pending if t <= tag] if multiple else [tag] if tag in pending else []
        for t in done:
            future = pending.pop(t)
            if future.done():
                continue
            if method == _ACK:
                future.set_result(None)
            else:
                future.set_exception(ConnectionError(f"RabbitMQ refused publish {t} (nack)"))
        return True

    def closed(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)


class Wire:
    """A connection's fast lane: the taps by channel number and the transport."""

    def __init__(self) -> None:
        self.taps: dict[int, Tap] = {}
        self.transport: _Coalescing | None = None
        self.frame_max = 0

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("connection closed")
        self.transport.write(data)

    def tap(self, channel: AbstractChannel, tap: Tap) -> None:
        """Put ``tap`` in front of ``channel`` until it closes."""
        number = int(channel.number)
        self.taps[number] = tap

        def closed(future: asyncio.Future[Any]) -> None:
            if self.taps.get(number) is tap:
                del self.taps[number]
            exc = None if future.cancelled() else future.exception()
            tap.closed(exc or ConnectionError("channel closed"))

        channel.closing.add_done_callback(closed)

    def lost(self, exc: BaseException | None) -> None:
        taps, self.taps = list(self.taps.values()), {}
        for tap in taps:
            tap.closed(exc or ConnectionError("connection closed"))


class _WireProtocol(asyncio.StreamReaderProtocol):
    """Splits incoming data into frames; a channel's tap takes what it handles and the
    rest goes on to aiormq's reader, unchanged and in order. A frame split across reads
    is held back until it is complete."""

    def __init__(self, reader: asyncio.StreamReader, wire: Wire) -> None:
        super().__init__(reader)
        self._wire = wire
        self._rest = b""
        self._raw = False  # the server answered with a protocol header: pass all on

    def data_received(self, data: bytes) -> None:
        if self._raw:
            super().data_received(data)
            return
        buf = self._rest + data if self._rest else data
        if buf[:4] == b"AMQP":
            self._raw, self._rest = True, b""
            super().data_received(buf)
            return
        taps = self._wire.taps
        size, pos, sent = len(buf), 0, 0
        while size - pos >= 7:
            kind, channel, length = _FRAME_HEAD.unpack_from(buf, pos)
            end = pos + length + 8
            if end > size:
                break
            tap = taps.get(channel) if channel else None
            if (
                tap is not None
                and buf[end - 1] == FRAME_END
                and tap.take(kind, buf, pos + 7, end - 1)
            ):
                if pos > sent:
                    super().data_received(buf[sent:pos])
                sent = end
            pos = end
        if pos > sent:
            super().data_received(buf[sent:pos])
        self._rest = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._wire.lost(exc)
        super().connection_lost(exc)


class _CoalescingFactory(TransportFactory):
    """Opens the socket with :class:`_WireProtocol` and a coalescing transport."""

    def __init__(self, wire: Wire, tls: bool) -> None:
        self.wire = wire
        self.tls = tls

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        ssl = await provider.get_context() if self.tls and provider is not None else None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = _WireProtocol(reader, self.wire)
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
        coalescing = _Coalescing(transport)
        self.wire.transport = coalescing
        writer = asyncio.StreamWriter(coalescing, protocol, reader, loop)  # type: ignore[arg-type]
        return reader, writer


class Connection(aiormq.Connection):
    """An aiormq connection whose frames of one loop pass go out in one write, with a
    fast lane (:class:`Wire`) for deliveries and reply publishes."""

    def __init__(self, url: str) -> None:
        self.wire = Wire()
        tls = URL(url).scheme == "amqps"
        super().__init__(url, transport_factory=_CoalescingFactory(self.wire, tls))

    async def connect(self, client_properties: Any = None) -> bool:
        result = await super().connect(client_properties)
        self.wire.frame_max = int(getattr(self.connection_tune, "frame_max", 0) or 0)
        return bool(result)


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


def cancelled_by_caller() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or bool(cancelling())


class Session:
    """One connection with its channels, consumers and prefetched messages. A failure
    ends the whole session; the broker then opens a new one."""

    def __init__(self, number: int, conn: Connection, consume: AbstractChannel) -> None:
        self.number = number
        self.conn = conn
        self.consume = consume  # consumers, acks, basic.get
        self.outstanding: set[int] = set()  # delivery tags of ``consume`` not acked yet
        self.tap = ConsumerTap(self.outstanding)  # the fast lane for our consumers
        conn.wire.tap(consume, self.tap)
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


def copy_properties(props: Basic.Properties | Props, **changes: Any) -> Properties:
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


def header_number(message: Incoming, name: str) -> float | None:
    value = (message.header.properties.headers or {}).get(name)
    return float(value) if isinstance(value, (int, float)) else None


def to_delivery(queue: str, tag_prefix: str, message: Incoming) -> Delivery:
    """A delivered AMQP message as the worker core takes it. The delivery count is our
    header (copies we republished) + 1 + RabbitMQ's count: ``x-delivery-count`` on quorum
    queues, else 1 when the message is flagged redelivered."""
    props, frame = message.header.properties, message.delivery
    headers = props.headers or {}  # read only: clean_headers below copies
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


def needs_recount(message: Incoming) -> bool:
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
    "ConfirmTap",
    "Connection",
    "ConsumerTap",
    "Incoming",
    "Properties",
    "Props",
    "Received",
    "Session",
    "Wire",
    "cancelled_by_caller",
    "clean_headers",
    "connection",
    "connection_url",
    "copy_properties",
    "declare_cascade",
    "declare_levels",
    "decode_properties",
    "delay_exchange",
    "delay_key",
    "delay_queue",
    "encode_properties",
    "gather",
    "header_number",
    "message_properties",
    "needs_recount",
    "peek",
    "publish_frames",
    "quiet_aiormq",
    "ready_counts",
    "to_delivery",
]
