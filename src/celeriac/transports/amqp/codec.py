"""A pure AMQP 0-9-1 codec for the fast lane (no I/O, no aiormq): splitting a byte stream
into frames, reading ``basic.deliver`` and confirm methods, decoding and encoding basic
properties and field tables (as Celery's py-amqp writes them), and the frames of a
``basic.publish``. pamqp (the codec aiormq uses) serves the rare field types (decimal,
timestamp) and is the base of :class:`Properties`, which aiormq's own publishes encode.
How the fast lane uses this: docs/internals/amqp.md, "The fast lane"."""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeAlias

from pamqp import decode, encode
from pamqp.commands import Basic

FRAME_HEAD = struct.Struct(">BHI")
METHOD = struct.Struct(">HH")
U8, U16, U32, U64 = (struct.Struct(f) for f in (">B", ">H", ">I", ">Q"))
I8, I16, I32, I64 = (struct.Struct(f) for f in (">b", ">h", ">i", ">q"))
F32, F64 = struct.Struct(">f"), struct.Struct(">d")
CONTENT_HEAD = struct.Struct(">HHQH")
FRAME_END = 0xCE
#: frame types
METHOD_FRAME, HEADER_FRAME, BODY_FRAME = 1, 2, 3
#: (class id, method id) of the methods the fast lane reads
DELIVER, ACK, NACK = (60, 60), (60, 80), (60, 120)

#: methods aiormq hands back as pamqp decoded them: the answers to ``basic.get`` and the
#: server's consumer-cancel notice
GetEmpty: TypeAlias = Basic.GetEmpty
GetOk: TypeAlias = Basic.GetOk
Cancel: TypeAlias = Basic.Cancel

#: Basic properties in wire order with their flag bits (AMQP 0-9-1, pamqp's names)
PROPERTY_FLAGS = (
    ("content_type", 0x8000),
    ("content_encoding", 0x4000),
    ("headers", 0x2000),
    ("delivery_mode", 0x1000),
    ("priority", 0x0800),
    ("correlation_id", 0x0400),
    ("reply_to", 0x0200),
    ("expiration", 0x0100),
    ("message_id", 0x0080),
    ("timestamp", 0x0040),
    ("message_type", 0x0020),
    ("user_id", 0x0010),
    ("app_id", 0x0008),
    ("cluster_id", 0x0004),
)
_OCTETS = frozenset({"delivery_mode", "priority"})


class FrameTaker(Protocol):
    """What :func:`split_frames` offers each frame of a channel to (a fast-lane tap)."""

    def take(self, kind: int, buf: bytes, start: int, end: int) -> bool: ...


def split_frames(
    buf: bytes, takers: Mapping[int, FrameTaker], forward: Callable[[bytes], None]
) -> int:
    """Offer each complete frame of ``buf`` to the taker of its channel (never channel
    0); pass the frames not taken to ``forward`` unchanged and in order, in as few runs
    as possible. Return how many bytes were used: the rest is an incomplete frame."""
    size, pos, sent = len(buf), 0, 0
    while size - pos >= 7:
        kind, channel, length = FRAME_HEAD.unpack_from(buf, pos)
        end = pos + length + 8
        if end > size:
            break
        taker = takers.get(channel) if channel else None
        if (
            taker is not None
            and buf[end - 1] == FRAME_END
            and taker.take(kind, buf, pos + 7, end - 1)
        ):
            if pos > sent:
                forward(buf[sent:pos])
            sent = end
        pos = end
    if pos > sent:
        forward(buf[sent:pos])
    return pos


# -- what the fast lane reads -------------------------------------------------


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


# -- field tables and basic properties ----------------------------------------


def read_short(buf: bytes, pos: int) -> tuple[str, int]:
    n = buf[pos]
    end = pos + 1 + n
    return buf[pos + 1 : end].decode("utf-8"), end


def decode_table(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
    (size,) = U32.unpack_from(buf, pos)
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
            (n,) = U32.unpack_from(buf, pos + 1)
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
        (n,) = U32.unpack_from(buf, pos)
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
        return decode_table(buf, pos)
    if kind == 0x41:  # A: array
        (size,) = U32.unpack_from(buf, pos)
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
        (n,) = U32.unpack_from(buf, pos)
        return bytearray(buf[pos + 4 : pos + 4 + n]), pos + 4 + n
    rare = decode.TABLE_MAPPING.get(bytes((kind,)))  # decimal, timestamp: as pamqp does
    if rare is None:
        raise ValueError(f"unknown field type {chr(kind)!r}")
    used, value = rare(buf[pos:])
    return value, pos + used


#: field types of a fixed size, by type octet (b B s u I i l L f d)
_FIXED = {
    0x62: I8,
    0x42: U8,
    0x73: I16,
    0x75: U16,
    0x49: I32,
    0x69: U32,
    0x6C: I64,
    0x4C: I64,
    0x66: F32,
    0x64: F64,
}


#: (name, flag bit, how it is encoded: 0 short string, 1 table, 2 octet, 3 timestamp)
_CODES = {"headers": 1, "delivery_mode": 2, "priority": 2, "timestamp": 3}
_PROPERTY_CODES = tuple((name, bit, _CODES.get(name, 0)) for name, bit in PROPERTY_FLAGS)


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
            found[name], pos = decode_table(buf, pos)
        elif code == 2:
            found[name] = buf[pos]
            pos += 1
        else:
            used, found[name] = decode.timestamp(buf[pos : pos + 8])
            pos += used
    return props


def encode_short(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"AMQP short string over 255 bytes: {value[:40]!r}...")
    return bytes((len(raw),)) + raw


def encode_properties(**fields: Any) -> tuple[int, bytes]:
    """Flags and bytes of basic properties (those of :class:`Props`; None means absent;
    header tables as Celery's py-amqp writes them)."""
    flags, parts = 0, []
    for name, bit in PROPERTY_FLAGS:
        value = fields.pop(name, None)
        if value is None:
            continue
        flags |= bit
        if name == "headers":
            parts.append(encode_table(value))
        elif name in _OCTETS:
            parts.append(U8.pack(value))
        elif name == "timestamp":
            parts.append(U64.pack(int(value)))
        else:
            parts.append(encode_short(str(value)))
    if fields:
        raise TypeError(f"unknown basic properties: {sorted(fields)}")
    return flags, b"".join(parts)


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    flags: int,
    props: bytes,
    body: bytes,
    frame_max: int,
    mandatory: bool = False,
) -> bytes:
    """The frames of one ``basic.publish`` with its content, as one bytes object."""
    method = (
        b"\x00\x3c\x00\x28\x00\x00"
        + encode_short(exchange)
        + encode_short(routing_key)
        + (b"\x01" if mandatory else b"\x00")
    )
    head = CONTENT_HEAD.pack(60, 0, len(body), flags) + props
    out = [FRAME_HEAD.pack(1, channel, len(method)), method, b"\xce"]
    out += [FRAME_HEAD.pack(2, channel, len(head)), head, b"\xce"]
    step = max(1, frame_max - 8) if frame_max else len(body) or 1
    for start in range(0, len(body), step):
        chunk = body[start : start + step]
        out += [FRAME_HEAD.pack(3, channel, len(chunk)), chunk, b"\xce"]
    return b"".join(out)


# -- properties for aiormq's own publishes ------------------------------------

#: basic properties as aiormq (pamqp) or the fast lane decoded them
AnyProperties = Basic.Properties | Props


class Properties(Basic.Properties):
    """Basic properties whose header table carries floats as doubles and tuples as
    arrays, as Celery's py-amqp does (pamqp would send 32-bit floats: an epoch time
    would lose a minute)."""

    def encode_property(self, name: str, value: Any) -> bytes:
        if name == "headers" and isinstance(value, dict):
            return encode_table(value)
        return super().encode_property(name, value)


def encode_table(table: dict[str, Any]) -> bytes:
    data = b"".join(encode.short_string(k) + _field(v) for k, v in table.items())
    return struct.pack(">I", len(data)) + data


def _field(value: Any) -> bytes:
    if isinstance(value, float):
        return b"d" + struct.pack(">d", value)
    if isinstance(value, dict):
        return b"F" + encode_table(value)
    if isinstance(value, (list, tuple)):
        data = b"".join(_field(v) for v in value)
        return b"A" + struct.pack(">I", len(data)) + data
    if isinstance(value, (bytes, bytearray)):
        return b"x" + struct.pack(">I", len(value)) + bytes(value)
    return encode.encode_table_value(value)


#: the properties a copy keeps (all but the deprecated ``cluster_id``)
_FIELDS = tuple(name for name, _ in PROPERTY_FLAGS if name != "cluster_id")


def copy_properties(props: AnyProperties, **changes: Any) -> Properties:
    fields = {name: getattr(props, name) for name in _FIELDS}
    fields.update(changes)
    return Properties(**fields)


__all__ = [
    "ACK",
    "BODY_FRAME",
    "CONTENT_HEAD",
    "DELIVER",
    "FRAME_END",
    "FRAME_HEAD",
    "HEADER_FRAME",
    "METHOD",
    "METHOD_FRAME",
    "NACK",
    "PROPERTY_FLAGS",
    "U64",
    "AnyProperties",
    "DeliverFrame",
    "FrameTaker",
    "Header",
    "Properties",
    "Props",
    "Received",
    "copy_properties",
    "decode_properties",
    "decode_table",
    "encode_properties",
    "encode_short",
    "encode_table",
    "publish_frames",
    "read_short",
    "split_frames",
]
