"""AMQP messages as celeriac sees them: a task message's basic properties as Celery sets
them, the headers RabbitMQ or celeriac add (hidden from the task), and a delivered
message as a :class:`~celeriac.transports.broker.Delivery` with its delivery count
(design: docs/internals/amqp.md, "Delivery count")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac.protocol import JSON, Message
from celeriac.transports.amqp.codec import Properties
from celeriac.transports.broker import Delivery

if TYPE_CHECKING:
    from celeriac.transports.amqp.connection import Incoming

H_COUNT = "x-celeriac-delivery-count"
H_NOT_BEFORE = "x-celeriac-not-before"
H_REASON, H_QUEUE, H_FAILED_AT = "x-celeriac-reason", "x-celeriac-queue", "x-celeriac-failed-at"
#: headers RabbitMQ or celeriac add; hidden from ``Delivery.message.headers``
OWN_HEADERS = ("x-celeriac-", "x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


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


def delivery_tag(message: Incoming) -> int:
    return int(getattr(message.delivery, "delivery_tag", 0) or 0)


__all__ = [
    "H_COUNT",
    "H_FAILED_AT",
    "H_NOT_BEFORE",
    "H_QUEUE",
    "H_REASON",
    "OWN_HEADERS",
    "clean_headers",
    "delivery_tag",
    "header_number",
    "message_properties",
    "needs_recount",
    "to_delivery",
]
