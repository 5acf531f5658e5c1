"""Task messages (protocol v2): headers, body ``[args, kwargs, embed]`` and properties;
building them (:func:`build_task_message`) and validating them (:func:`decode_task`).

See ``docs/internals/protocol.md``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from celeriac.exceptions import MessageError
from celeriac.protocol.serialization import JSON, deserialize, serialize

#: A message larger than this (serialized body) is refused by the worker.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class Message:
    """A task message as it travels: protocol v2 headers, serialized body, properties."""

    headers: dict[str, Any]
    body: bytes
    content_type: str = JSON
    content_encoding: str = "utf-8"
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str | None:
        value = self.headers.get("id")
        return value if isinstance(value, str) else None

    @property
    def task_name(self) -> str | None:
        value = self.headers.get("task")
        return value if isinstance(value, str) else None

    @property
    def priority(self) -> int:
        value = self.properties.get("priority")
        return value if isinstance(value, int) else 0


@dataclass(slots=True)
class TaskCall:
    """A decoded, validated task message: everything the worker needs to run it."""

    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any]
    headers: dict[str, Any]
    eta: datetime | None = None
    expires: datetime | None = None
    retries: int = 0
    timelimit: tuple[float | None, float | None] = (None, None)
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    ignore_result: bool = False
    reply_to: str | None = None
    correlation_id: str | None = None
    priority: int = 0
    content_type: str = JSON


def new_id() -> str:
    """A random (version 4) UUID as text, like ``str(uuid.uuid4())`` at half the cost."""
    h = os.urandom(16).hex()
    # version 4; variant 10xx: the 17th hex digit becomes one of 8, 9, a, b
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"


_VARIANT = "89ab" * 4

_origin: tuple[int, str] = (0, "")


def origin_name() -> str:
    """``gen<pid>@<host>``, Celery's producer node name (computed once per process)."""
    global _origin
    pid = os.getpid()
    if _origin[0] != pid:
        _origin = (pid, f"gen{pid}@{socket.gethostname()}")
    return _origin[1]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def safe_repr(value: Any, limit: int = 1024) -> str:
    try:
        text = repr(value)
    except Exception:  # a user's __repr__ may raise; the message must still go out
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_task_message(
    name: str,
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    task_id: str | None = None,
    eta: datetime | None = None,
    expires: datetime | None = None,
    retries: int = 0,
    timelimit: tuple[float | None, float | None] = (None, None),
    root_id: str | None = None,
    parent_id: str | None = None,
    group_id: str | None = None,
    group_index: int | None = None,
    shadow: str | None = None,
    ignore_result: bool = False,
    callbacks: list[Any] | None = None,
    errbacks: list[Any] | None = None,
    chain: list[Any] | None = None,
    chord: Any = None,
    extra_headers: dict[str, Any] | None = None,
    reply_to: str | None = None,
    priority: int | None = None,
    serializer: str = "json",
    queue: str = "celery",
    exchange: str = "",
    now: datetime | None = None,
    origin: str | None = None,
    replaced_task_nesting: int = 0,
) -> Message:
    """Build a protocol v2 task message, with every header Celery 5 sends."""
    task_id = task_id or new_id()
    kwargs = kwargs or {}
    args = list(args)
    headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": shadow,
        "eta": _iso(eta),
        "expires": _iso(expires),
        "group": group_id,
        "group_index": group_index,
        "retries": retries,
        "timelimit": [timelimit[0], timelimit[1]],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": safe_repr(tuple(args)),
        "kwargsrepr": safe_repr(kwargs),
        "origin": origin or origin_name(),
        "ignore_result": ignore_result,
        "replaced_task_nesting": replaced_task_nesting,
        "stamped_headers": None,
        "stamps": {},
    }
    if extra_headers:
        headers.update(extra_headers)
    embed = {"callbacks": callbacks, "errbacks": errbacks, "chain": chain, "chord": chord}
    try:
        body, content_type, encoding = serialize([args, kwargs, embed], serializer)
    except TypeError as exc:
        raise TypeError(f"cannot serialize arguments of {name} with {serializer}: {exc}") from exc
    properties: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": reply_to or "",
        "delivery_mode": 2,
        "delivery_info": {"exchange": exchange, "routing_key": queue},
        "priority": priority or 0,
    }
    if expires is not None:
        now = now or utcnow()
        expires_aware = expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)
        ms = max(0, int((expires_aware - now).total_seconds() * 1000))
        properties["expiration"] = str(ms)
    return Message(headers, body, content_type, encoding, properties)


def _parse_time(value: Any, header: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise MessageError(f"header {header!r} is not an ISO-8601 time: {value!r}") from None
    else:
        raise MessageError(f"header {header!r} must be an ISO-8601 string, got {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def _opt_str(headers: dict[str, Any], key: str) -> str | None:
    value = headers.get(key)
    if value is None or isinstance(value, str):
        return value
    raise MessageError(f"header {key!r} must be a string or null, got {value!r}")


def _timelimit(value: Any) -> tuple[float | None, float | None]:
    """``[hard, soft]`` seconds; 0 or null is no limit from the message (the task's own
    applies, as Celery's ``time_limit or task.time_limit``); a negative number, which
    Celery's pool would take as a limit already passed, is an invalid message."""
    if value is None:
        return (None, None)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise MessageError(f"header 'timelimit' must be [hard, soft], got {value!r}")
    out: list[float | None] = []
    for item in value:
        number = isinstance(item, (int, float)) and not isinstance(item, bool)
        if item is not None and not number:
            raise MessageError(f"header 'timelimit' values must be numbers, got {value!r}")
        if item is not None and not item >= 0:  # negative, or NaN
            raise MessageError(
                f"header 'timelimit' values must be seconds >= 0 or null, got {value!r}"
            )
        out.append(float(item) if item else None)
    return (out[0], out[1])


def _task_id(value: Any) -> str:
    if value is None or value == "":
        raise MessageError("header 'id' is missing: every task message needs a task id")
    if not isinstance(value, str):
        # Celery's worker cannot store a result under it either (its result keys are
        # the id's bytes): refused, saying what it is
        kind = type(value).__name__
        raise MessageError(f"header 'id' must be a string, got {value!r} ({kind})")
    return value


def decode_task(message: Message, accept: frozenset[str]) -> TaskCall:
    """Validate and decode a task message (protocol v2, or v1 translated)."""
    if len(message.body) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message body is {len(message.body)} bytes (limit {MAX_MESSAGE_BYTES})")
    payload = deserialize(message.body, message.content_type, accept)
    headers = message.headers
    if "task" in headers:
        if not isinstance(payload, (list, tuple)) or len(payload) != 3:
            raise MessageError("protocol v2 body must be a 3-element array [args, kwargs, embed]")
        args, kwargs, embed = payload
    else:
        headers, args, kwargs, embed = _from_v1(payload)
    name = headers.get("task")
    if not isinstance(name, str) or not name:
        raise MessageError("header 'task' must be a non-empty string")
    task_id = _task_id(headers.get("id"))
    if not isinstance(args, (list, tuple)):
        raise MessageError(f"task args must be an array, got {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise MessageError(f"task kwargs must be an object, got {type(kwargs).__name__}")
    if embed is None:
        embed = {}
    if not isinstance(embed, dict):
        raise MessageError(f"body embed must be an object, got {type(embed).__name__}")
    retries = headers.get("retries") or 0
    if not isinstance(retries, int):
        raise MessageError(f"header 'retries' must be an integer, got {retries!r}")
    group_index = headers.get("group_index")
    if group_index is not None and not isinstance(group_index, int):
        raise MessageError(f"header 'group_index' must be an integer, got {group_index!r}")
    props = message.properties
    return TaskCall(
        id=task_id,
        name=name,
        args=list(args),
        kwargs=kwargs,
        embed=embed,
        headers=headers,
        eta=_parse_time(headers.get("eta"), "eta"),
        expires=_parse_time(headers.get("expires"), "expires"),
        retries=retries,
        timelimit=_timelimit(headers.get("timelimit")),
        root_id=_opt_str(headers, "root_id") or task_id,
        parent_id=_opt_str(headers, "parent_id"),
        group=_opt_str(headers, "group"),
        group_index=group_index,
        ignore_result=bool(headers.get("ignore_result", False)),
        reply_to=props.get("reply_to") or None,
        correlation_id=props.get("correlation_id") or task_id,
        priority=message.priority,
        content_type=message.content_type,
    )


def _from_v1(payload: Any) -> tuple[dict[str, Any], Any, Any, dict[str, Any]]:
    if not isinstance(payload, dict) or "task" not in payload:
        raise MessageError("message has no 'task' header and is not a protocol v1 body")
    headers = {
        "task": payload.get("task"),
        "id": payload.get("id"),
        "eta": payload.get("eta"),
        "expires": payload.get("expires"),
        "group": payload.get("taskset") or payload.get("group"),
        "group_index": payload.get("group_index"),
        "retries": payload.get("retries", 0),
        "timelimit": payload.get("timelimit"),
    }
    embed = {
        "callbacks": payload.get("callbacks"),
        "errbacks": payload.get("errbacks"),
        "chain": None,
        "chord": payload.get("chord"),
    }
    return headers, payload.get("args", []), payload.get("kwargs", {}), embed


def countdown_to_eta(countdown: float, now: datetime | None = None) -> datetime:
    return (now or utcnow()) + timedelta(seconds=countdown)
