"""Bodies as bytes: Celery's tagged JSON values and the json/msgpack/pickle serializers.

See ``docs/internals/protocol.md``.
"""

from __future__ import annotations

import base64
import binascii
import json
import pickle
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, cast

from celeriac.exceptions import ContentDisallowed, DecodeError

JSON = "application/json"
MSGPACK = "application/x-msgpack"
PICKLE = "application/x-python-serialize"

CONTENT_TYPES = {"json": JSON, "msgpack": MSGPACK, "pickle": PICKLE}
SERIALIZER_NAMES = {v: k for k, v in CONTENT_TYPES.items()}


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
