"""Celery's events (the ``celeryev`` exchange) on the wire: event dicts and the messages
that carry them. Pure: no I/O.

An event is a JSON object with ``type`` (``task-succeeded``, ``worker-heartbeat``, ...),
``hostname``, ``utcoffset`` (hours west of UTC, as Celery's), ``pid``, ``clock`` (Lamport)
and ``timestamp``. Its routing key is the type with ``-`` made ``.``; a batch of task events
travels as one message with routing key ``task.multi`` whose body is a JSON array.
"""

from __future__ import annotations

import binascii
import json
import math
import time
from collections.abc import Sequence
from typing import Any

from celeriac.exceptions import DecodeError
from celeriac.protocol.message import Message, new_id
from celeriac.protocol.serialization import json_loads

EXCHANGE = "celeryev"
#: what Celery 5.7's workers say they are (Flower and ``celery events`` show it)
SOFTWARE = {"sw_ident": "py-celery", "sw_ver": "5.7.0", "sw_sys": "Linux"}


def utcoffset() -> float:
    """The local offset to UTC in hours, west positive (Celery's ``utcoffset()``)."""
    if time.localtime().tm_isdst:
        return time.altzone / 3600
    return time.timezone / 3600


def routing_key(event_type: str) -> str:
    return event_type.replace("-", ".")


def group_of(event_type: str) -> str:
    """``task`` for ``task-sent``, ``worker`` for ``worker-online``."""
    return event_type.split("-", 1)[0]


_escape = json.encoder.encode_basestring_ascii


def json_value(value: Any) -> str:
    """``value`` as JSON text, as ``json.dumps`` writes it (quickly for the scalars)."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is str:
        return str(_escape(value))
    if kind is int:
        return str(value)
    if kind is float and math.isfinite(value):
        return repr(value)
    return json.dumps(value, default=repr)


def json_text(value: Any) -> str:
    """``value`` as JSON text, with no call of Python code for a string or ``None``
    (the fields of task events are mostly these)."""
    if type(value) is str:
        return str(_escape(value))
    return "null" if value is None else json_value(value)


def timestamp_text() -> str:
    """The time now as a JSON number, to the microsecond (``time.time()`` as Celery
    sends it, parsed back, differs by less than that); made from integers, about half
    the cost of a float's shortest ``repr``."""
    # one %-format of divmod's tuple: the cheapest of the forms measured (callgrind)
    return "%d.%06d" % divmod(time.time_ns() // 1000, 1_000_000)  # noqa: UP031


def runtime_text(seconds: float) -> str:
    """A runtime as a JSON float to 9 significant digits (cheaper than its ``repr``)."""
    if not math.isfinite(seconds):
        return json_value(seconds)
    text = f"{seconds:.9g}"
    return text if "." in text or "e" in text else text + ".0"


def event_message(
    hostname: str, key: str, body: dict[str, Any] | Sequence[dict[str, Any]] | bytes
) -> Message:
    """The message carrying one event (or a ``<group>.multi`` batch, a list; or their
    JSON text already made)."""
    if not isinstance(body, bytes):
        # plain JSON (the C encoder): an event holds strings, numbers, lists and None
        body = json.dumps(body if isinstance(body, dict) else list(body), default=repr).encode()
    return Message(
        headers={"hostname": hostname},
        body=body,
        properties={
            "delivery_mode": 1,
            "delivery_info": {"exchange": EXCHANGE, "routing_key": key},
            "priority": 0,
        },
    )


def event_envelope(message: Message) -> bytes:
    """The kombu envelope of an event message, as ``encode_envelope`` writes it, made
    without passing the (large, base64) body of a batch through the JSON encoder."""
    properties = {**message.properties, "body_encoding": "base64"}
    properties.setdefault("delivery_tag", new_id())
    rest = json.dumps(
        {
            "content-encoding": message.content_encoding,
            "content-type": message.content_type,
            "headers": message.headers,
            "properties": properties,
        },
        ensure_ascii=False,
        default=repr,
    )
    body = binascii.b2a_base64(message.body, newline=False)
    return b'{"body": "' + body + b'", ' + rest[1:].encode()


def read_events(message: Message) -> list[dict[str, Any]]:
    """The events a message carries (one, or a batch); raises :class:`DecodeError`."""
    try:
        body = json_loads(message.body)
    except ValueError as exc:
        raise DecodeError(f"event is not JSON: {exc}") from None
    items = body if isinstance(body, list) else [body]
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("type"), str)]


__all__ = [
    "EXCHANGE",
    "SOFTWARE",
    "event_envelope",
    "event_message",
    "group_of",
    "json_text",
    "json_value",
    "read_events",
    "routing_key",
    "runtime_text",
    "timestamp_text",
    "utcoffset",
]
