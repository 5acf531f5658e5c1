"""Celery message protocol v2: task calls <-> messages <-> bytes. Pure: no I/O.

Everything that crosses a process boundary goes through this module: task messages,
the kombu-style JSON envelope that Redis (and our SQLite and memory brokers) store,
result metadata and exception encoding. Interoperability with Celery lives here.
See ``shared/protocol/celery-protocol-v2.md`` for the facts this implements.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import os
import pickle
import socket
import sys
import time as _time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, cast

from celeriac import states
from celeriac.exceptions import ContentDisallowed, DecodeError, MessageError

JSON = "application/json"
MSGPACK = "application/x-msgpack"
PICKLE = "application/x-python-serialize"

CONTENT_TYPES = {"json": JSON, "msgpack": MSGPACK, "pickle": PICKLE}
SERIALIZER_NAMES = {v: k for k, v in CONTENT_TYPES.items()}

#: A message larger than this (serialized body) is refused by the worker.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_EMPTY_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


# --------------------------------------------------------------------------- JSON values


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return {"__type__": "datetime", "__value__": obj.isoformat()}
    if isinstance(obj, date):
        return {"__type__": "date", "__value__": obj.isoformat()}
    if isinstance(obj, time):
        return {"__type__": "time", "__value__": obj.isoformat()}
    if isinstance(obj, uuid.UUID):
        return {"__type__": "uuid", "__value__": {"hex": obj.hex}}
    if isinstance(obj, Decimal):
        return {"__type__": "decimal", "__value__": str(obj)}
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return {"__type__": "bytes", "__value__": raw.decode("utf-8")}
        except UnicodeDecodeError:
            return {"__type__": "base64", "__value__": base64.b64encode(raw).decode("ascii")}
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _json_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and "__type__" in obj and "__value__" in obj:
        kind, value = obj["__type__"], obj["__value__"]
        try:
            if kind == "datetime":
                return datetime.fromisoformat(value)
            if kind == "date":
                return date.fromisoformat(value)
            if kind == "time":
                return time.fromisoformat(value)
            if kind == "uuid":
                return uuid.UUID(hex=value["hex"] if isinstance(value, dict) else value)
            if kind == "decimal":
                return Decimal(value)
            if kind == "bytes":
                return value.encode("utf-8")
            if kind == "base64":
                return base64.b64decode(value)
        except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
            return obj
    return obj


_encoder = json.JSONEncoder(default=_json_default, separators=(", ", ": "), ensure_ascii=False)
_decoder = json.JSONDecoder(object_hook=_json_hook)


def json_dumps(obj: Any) -> str:
    """Serialize to JSON text, tagging the Python types Celery tags."""
    return _encoder.encode(obj)


def json_loads(text: str | bytes) -> Any:
    """Parse JSON text, turning Celery's tagged values back into Python objects."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    return _decoder.decode(text)


# --------------------------------------------------------------------------- serializers


def serialize(obj: Any, serializer: str = "json") -> tuple[bytes, str, str]:
    """Return ``(payload, content_type, content_encoding)``."""
    if serializer == "json":
        return json_dumps(obj).encode("utf-8"), JSON, "utf-8"
    if serializer == "msgpack":
        msgpack = _msgpack()
        return cast(bytes, msgpack.packb(obj, use_bin_type=True)), MSGPACK, "binary"
    if serializer == "pickle":
        return pickle.dumps(obj, protocol=4), PICKLE, "binary"
    raise ValueError(f"unknown serializer {serializer!r} (use json, msgpack or pickle)")


def deserialize(payload: bytes, content_type: str, accept: frozenset[str]) -> Any:
    """Decode ``payload``; refuse content types whose serializer is not in ``accept``."""
    name = SERIALIZER_NAMES.get(content_type)
    if name is None:
        raise ContentDisallowed(f"unknown content type {content_type!r}")
    if name not in accept and content_type not in accept:
        raise ContentDisallowed(
            f"refusing to deserialize content of type {name} ({content_type}); "
            f"accept_content is {sorted(accept)}"
        )
    try:
        if name == "json":
            return json_loads(payload)
        if name == "msgpack":
            return _msgpack().unpackb(payload, raw=False)
        return pickle.loads(payload)
    except Exception as exc:
        raise DecodeError(f"body is not valid {name}: {exc}") from None


def _msgpack() -> Any:
    try:
        import msgpack  # noqa: PLC0415
    except ImportError:  # pragma: no cover - depends on the environment
        raise ContentDisallowed("msgpack content needs the msgpack package") from None
    return msgpack


# --------------------------------------------------------------------------- messages


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
        "replaced_task_nesting": 0,
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


# --------------------------------------------------------------------------- envelope


_envelope_encoder = json.JSONEncoder(separators=(", ", ": "), ensure_ascii=False)


def encode_envelope(message: Message, *, queue: str | None = None) -> bytes:
    """The kombu JSON envelope Celery's Redis transport stores (and our SQLite/memory)."""
    properties = dict(message.properties)
    if "delivery_info" not in properties:
        properties["delivery_info"] = {"exchange": "", "routing_key": queue or "celery"}
    properties["body_encoding"] = "base64"
    if "delivery_tag" not in properties:
        properties["delivery_tag"] = new_id()
    envelope = {
        "body": binascii.b2a_base64(message.body, newline=False).decode("ascii"),
        "content-encoding": message.content_encoding,
        "content-type": message.content_type,
        "headers": message.headers,
        "properties": properties,
    }
    return _envelope_encoder.encode(envelope).encode("utf-8")


def ready_meta(raw: bytes | str | None) -> dict[str, Any] | None:
    """A stored result meta (JSON) if it is a finished task's, else None: not there yet,
    still PENDING/STARTED/RETRY, or not a result meta at all (another program's key)."""
    if raw is None:
        return None
    try:
        meta = json_loads(raw)
    except ValueError:
        return None
    if isinstance(meta, dict) and meta.get("status") in states.READY_STATES:
        return meta
    return None


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


def decode_envelope(raw: bytes | str) -> Message:
    """Parse a kombu JSON envelope. Raises :class:`MessageError` with a precise reason."""
    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"envelope is not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise MessageError(f"envelope must be a JSON object, got {type(envelope).__name__}")
    body = envelope.get("body")
    properties = envelope.get("properties") or {}
    headers = envelope.get("headers")
    if headers is None:
        headers = {}
    if not isinstance(properties, dict):
        raise MessageError("envelope 'properties' must be an object")
    if not isinstance(headers, dict):
        raise MessageError("envelope 'headers' must be an object")
    content_type = envelope.get("content-type") or JSON
    encoding = envelope.get("content-encoding") or "utf-8"
    if isinstance(body, str):
        if properties.get("body_encoding") == "base64":
            try:
                payload = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                raise DecodeError("envelope body is not valid base64") from None
        else:
            payload = body.encode("utf-8")
    elif isinstance(body, (list, dict)):
        payload = json.dumps(body).encode("utf-8")
    else:
        raise MessageError("envelope has no 'body' string")
    return Message(headers, payload, str(content_type), str(encoding), properties)


# --------------------------------------------------------------------------- decoding


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
    if value is None:
        return (None, None)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise MessageError(f"header 'timelimit' must be [hard, soft], got {value!r}")
    out: list[float | None] = []
    for item in value:
        if item is not None and not isinstance(item, (int, float)):
            raise MessageError(f"header 'timelimit' values must be numbers, got {value!r}")
        out.append(None if item is None else float(item))
    return (out[0], out[1])


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
    name, task_id = headers.get("task"), headers.get("id")
    if not isinstance(name, str) or not name:
        raise MessageError("header 'task' must be a non-empty string")
    if not isinstance(task_id, str) or not task_id:
        raise MessageError("header 'id' is missing: every task message needs a task id")
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


# --------------------------------------------------------------------------- results

_MODULE_TO_WIRE = {"celeriac.exceptions": "celery.exceptions"}
_MODULE_FROM_WIRE = {"celery.exceptions": "celeriac.exceptions"}


def encode_exception(exc: BaseException) -> dict[str, Any]:
    """Celery's JSON form of an exception: type name, constructor args, module."""
    cls = type(exc)
    args: list[Any] = list(exc.args)
    try:
        json_dumps(args)
    except (TypeError, ValueError):
        args = [safe_repr(a) for a in args]
    module = cls.__module__
    return {
        "exc_type": cls.__qualname__,
        "exc_message": args,
        "exc_module": _MODULE_TO_WIRE.get(module, module),
    }


def decode_exception(meta: Any) -> BaseException:
    """Rebuild an exception from Celery's dict form, as its own type when importable."""
    if isinstance(meta, BaseException):
        return meta
    if not isinstance(meta, dict) or "exc_type" not in meta:
        return Exception(meta)
    name = str(meta.get("exc_type"))
    module = str(meta.get("exc_module") or "builtins")
    module = _MODULE_FROM_WIRE.get(module, module)
    message = meta.get("exc_message", [])
    args = tuple(message) if isinstance(message, (list, tuple)) else (message,)
    cls = _find_exception_class(module, name)
    try:
        return cls(*args)
    except Exception:
        exc = cls.__new__(cls)
        exc.args = args
        return exc


def _find_exception_class(module_name: str, qualname: str) -> type[BaseException]:
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except Exception:
            module = None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return obj
    return _synthetic_exception(module_name, qualname)


_SYNTHETIC: dict[tuple[str, str], type[Exception]] = {}


def _synthetic_exception(module: str, name: str) -> type[Exception]:
    key = (module, name)
    cls = _SYNTHETIC.get(key)
    if cls is None:
        cls = type(name.rsplit(".", 1)[-1], (Exception,), {"__module__": module})
        _SYNTHETIC[key] = cls
    return cls


def result_meta(
    task_id: str,
    status: str,
    result: Any,
    *,
    traceback: str | None = None,
    children: list[Any] | None = None,
    date_done: datetime | None = None,
    extended: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The dict Celery's result backends store for a task (``task_id`` last)."""
    meta: dict[str, Any] = {
        "status": status,
        "result": result,
        "traceback": traceback,
        "children": children if children is not None else [],
        "date_done": _iso(date_done) if date_done else None,
    }
    if extended:
        meta.update(extended)
    meta["task_id"] = task_id
    return meta


def countdown_to_eta(countdown: float, now: datetime | None = None) -> datetime:
    return (now or utcnow()) + timedelta(seconds=countdown)


__all__ = [
    "JSON",
    "MSGPACK",
    "PICKLE",
    "ControlRequest",
    "Message",
    "TaskCall",
    "build_task_message",
    "control_reply",
    "countdown_to_eta",
    "decode_envelope",
    "decode_exception",
    "decode_task",
    "deserialize",
    "encode_envelope",
    "encode_exception",
    "json_dumps",
    "json_loads",
    "parse_control",
    "result_meta",
    "serialize",
]
