"""Celery message protocol v2: task calls <-> messages <-> bytes. Pure: no I/O.

Everything that crosses a process boundary goes through this package, so
interoperability with Celery lives here:

* :mod:`~celeriac.protocol.serialization`: tagged JSON values, json/msgpack/pickle;
* :mod:`~celeriac.protocol.message`: task messages (headers, body, properties), built
  and validated;
* :mod:`~celeriac.protocol.envelope`: the kombu JSON envelope the Redis, SQLite and
  memory brokers store;
* :mod:`~celeriac.protocol.results`: result metas and exceptions on the wire;
* :mod:`~celeriac.protocol.control`: remote-control (pidbox) requests and replies.

Import from ``celeriac.protocol``; the submodules are its layout, not its API. Design
notes: ``docs/internals/protocol.md``; the facts this implements:
``shared/protocol/celery-protocol-v2.md``.
"""

from __future__ import annotations

from celeriac.protocol.control import ControlRequest, control_message, control_reply, parse_control
from celeriac.protocol.envelope import decode_envelope, encode_envelope, envelope_task_id
from celeriac.protocol.message import (
    MAX_MESSAGE_BYTES,
    Message,
    TaskCall,
    build_task_message,
    countdown_to_eta,
    decode_task,
    new_id,
    origin_name,
    safe_repr,
    utcnow,
)
from celeriac.protocol.results import decode_exception, encode_exception, ready_meta, result_meta
from celeriac.protocol.serialization import (
    CONTENT_TYPES,
    JSON,
    MSGPACK,
    PICKLE,
    SERIALIZER_NAMES,
    deserialize,
    json_dumps,
    json_loads,
    serialize,
)

__all__ = [
    "CONTENT_TYPES",
    "JSON",
    "MAX_MESSAGE_BYTES",
    "MSGPACK",
    "PICKLE",
    "SERIALIZER_NAMES",
    "ControlRequest",
    "Message",
    "TaskCall",
    "build_task_message",
    "control_message",
    "control_reply",
    "countdown_to_eta",
    "decode_envelope",
    "decode_exception",
    "decode_task",
    "deserialize",
    "encode_envelope",
    "encode_exception",
    "envelope_task_id",
    "json_dumps",
    "json_loads",
    "new_id",
    "origin_name",
    "parse_control",
    "ready_meta",
    "result_meta",
    "safe_repr",
    "serialize",
    "utcnow",
]
