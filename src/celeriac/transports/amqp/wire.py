"""The fast lane's I/O side, under aiormq's connection (design: docs/internals/amqp.md,
"The fast lane"): a transport that writes the frames of one event-loop pass in one
``send``, the stream protocol that hands a channel's frames to its *tap* before aiormq
sees them, and the two taps: deliveries to celeriac's consumers, and the publisher
confirms of a channel that only the fast lane publishes on. No aiormq import: a channel
is anything with a ``number`` and a ``closing`` future."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from celeriac.transports.amqp.codec import (
    ACK,
    BODY_FRAME,
    CONTENT_HEAD,
    DELIVER,
    HEADER_FRAME,
    METHOD,
    METHOD_FRAME,
    NACK,
    U64,
    DeliverFrame,
    Header,
    Received,
    decode_properties,
    publish_frames,
    read_short,
    split_frames,
)


class TappedChannel(Protocol):
    """What the fast lane needs of an (aiormq) channel."""

    @property
    def number(self) -> int: ...

    @property
    def closing(self) -> asyncio.Future[Any]: ...


class Coalescing:
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
        if kind == METHOD_FRAME:
            self._mine = False
            if METHOD.unpack_from(buf, start) != DELIVER:
                return False
            tag, pos = read_short(buf, start + 4)
            (delivery_tag,) = U64.unpack_from(buf, pos)
            if self.outstanding is not None:
                self.outstanding.add(delivery_tag)
            if tag not in self.callbacks:
                return False
            redelivered = bool(buf[pos + 8] & 1)
            exchange, pos = read_short(buf, pos + 9)
            key, pos = read_short(buf, pos)
            self._deliver = DeliverFrame(tag, delivery_tag, redelivered, exchange, key)
            self._mine = True
            return True
        if not self._mine:
            return False
        if kind == HEADER_FRAME:
            _, _, size, flags = CONTENT_HEAD.unpack_from(buf, start)
            self._header = Header(decode_properties(buf, start + 14, flags), size)
            self._parts, self._got = [], 0
            if size == 0:
                self._complete(b"")
            return True
        if kind == BODY_FRAME:
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

    def __init__(self, wire: Wire, channel: TappedChannel) -> None:
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
        if kind != METHOD_FRAME:
            return False
        method = METHOD.unpack_from(buf, start)
        if method not in (ACK, NACK):
            return False
        (tag,) = U64.unpack_from(buf, start + 4)
        multiple = bool(buf[start + 12] & 1)
        pending = self._pending
        # multiple: every tag up to ``tag`` (the dict is in tag order: tags grow)
        done = [t for t in pending if t <= tag] if multiple else [tag] if tag in pending else []
        for t in done:
            future = pending.pop(t)
            if future.done():
                continue
            if method == ACK:
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
        self.transport: Coalescing | None = None
        self.frame_max = 0
        self.last_read = 0.0  # time.monotonic() when data last came (heartbeat check)

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("connection closed")
        self.transport.write(data)

    def tap(self, channel: TappedChannel, tap: Tap) -> None:
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


class WireProtocol(asyncio.StreamReaderProtocol):
    """Splits incoming data into frames; a channel's tap takes what it handles and the
    rest goes on to aiormq's reader, unchanged and in order. A frame split across reads
    is held back until it is complete."""

    def __init__(self, reader: asyncio.StreamReader, wire: Wire) -> None:
        super().__init__(reader)
        self._wire = wire
        self._rest = b""
        self._raw = False  # the server answered with a protocol header: pass all on

    def data_received(self, data: bytes) -> None:
        self._wire.last_read = time.monotonic()
        if self._raw:
            super().data_received(data)
            return
        buf = self._rest + data if self._rest else data
        if buf[:4] == b"AMQP":
            self._raw, self._rest = True, b""
            super().data_received(buf)
            return
        pos = split_frames(buf, self._wire.taps, super().data_received)
        self._rest = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._wire.lost(exc)
        super().connection_lost(exc)


__all__ = [
    "Coalescing",
    "ConfirmTap",
    "ConsumerTap",
    "Tap",
    "TappedChannel",
    "Wire",
    "WireProtocol",
]
