"""The kombu JSON envelope: how a :class:`Message` is stored as one JSON document by
Celery's Redis transport (and by our SQLite and memory brokers).

See ``docs/internals/protocol.md``.
"""

from __future__ import annotations

import base64
import binascii
import json

from celeriac.exceptions import DecodeError, MessageError
from celeriac.protocol.message import Message, new_id
from celeriac.protocol.serialization import JSON

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


def envelope_task_id(raw: bytes | str) -> str | None:
    """The task id in the headers of an envelope :func:`decode_envelope` refused (its
    body was not base64, ...), when the envelope is JSON with such a header: the worker
    stores the FAILURE that says why under it, as for any other dead letter."""
    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    task_id = headers.get("id") if isinstance(headers, dict) else None
    return task_id if isinstance(task_id, str) and task_id else None
