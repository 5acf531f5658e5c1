"""Remote-control (pidbox) messages: requests to workers and their replies.

See ``docs/internals/protocol.md``.
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celeriac.exceptions import DecodeError, MessageError
from celeriac.protocol.message import Message
from celeriac.protocol.serialization import json_dumps, json_loads


def control_message(
    method: str,
    arguments: dict[str, Any],
    *,
    destination: Sequence[str] | None = None,
    reply: tuple[str, str] | None = None,
    timeout: float = 0.0,
    in_effect: bool = False,
) -> Message:
    """A Celery remote-control (pidbox) request, for the ``celery.pidbox`` fanout
    exchange: to ``destination`` (worker names; None: all); with ``reply`` (the routing
    key of the caller's reply queue, and the ticket answers carry) the workers answer,
    and ignore it after ``timeout`` seconds. ``in_effect``: its effect is in place
    already (a celeriac revoke), so celeriac workers skip it (a ``celeriac`` header)."""
    body: dict[str, Any] = {
        "method": method,
        "arguments": arguments,
        "destination": list(destination) if destination is not None else None,
        "pattern": None,
        "matcher": None,
    }
    headers: dict[str, Any] = {"clock": 1, "expires": 0}
    if reply is not None:
        reply_key, body["ticket"] = reply
        body["reply_to"] = {"exchange": "reply.celery.pidbox", "routing_key": reply_key}
        headers["expires"] = _time.time() + timeout if timeout else 0
    if in_effect:
        headers["celeriac"] = 1
    return Message(
        headers=headers,
        body=json_dumps(body).encode("utf-8"),
        properties={
            "delivery_mode": 2,
            "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""},
            "priority": 0,
        },
    )


@dataclass(slots=True)
class ControlRequest:
    """A Celery remote-control request as a worker reads it."""

    method: str
    arguments: dict[str, Any]
    destination: list[str] | None
    ticket: str | None
    reply_key: str | None  # routing key of the caller's reply queue, if it wants replies
    expires: float  # epoch seconds, 0 for never
    ours: bool  # sent by celeriac (its effect is in place already)


def parse_control(message: Message) -> ControlRequest:
    """Read a pidbox request; raises :class:`MessageError` for what is not one."""
    try:
        body = json_loads(message.body)
    except ValueError as exc:
        raise DecodeError(f"control request is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        raise MessageError("control request without a method")
    arguments = body.get("arguments") or {}
    destination = body.get("destination")
    reply_to = body.get("reply_to") if isinstance(body.get("reply_to"), dict) else {}
    key = reply_to.get("routing_key") if reply_to else None
    try:
        expires = float(message.headers.get("expires") or 0)
    except (TypeError, ValueError):
        expires = 0.0
    return ControlRequest(
        method=body["method"],
        arguments=arguments if isinstance(arguments, dict) else {},
        destination=[str(d) for d in destination] if isinstance(destination, list) else None,
        ticket=str(body["ticket"]) if body.get("ticket") else None,
        reply_key=str(key) if key else None,
        expires=expires,
        ours=bool(message.headers.get("celeriac")),
    )


def control_reply(hostname: str, request: ControlRequest, result: Any) -> Message:
    """A worker's answer to ``request``: ``{hostname: result}``, for the caller's reply
    queue (exchange ``reply.celery.pidbox``, routing key ``request.reply_key``)."""
    return Message(
        headers={"ticket": request.ticket, "clock": 1},
        body=json_dumps({hostname: result}).encode("utf-8"),
        properties={
            "delivery_mode": 1,
            "delivery_info": {"exchange": "reply.celery.pidbox", "routing_key": request.reply_key},
            "priority": 0,
        },
    )
