"""Protocol v2 encoding and decoding, as Celery puts it on the wire."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celeriac.exceptions import ContentDisallowed, MessageError
from celeriac.protocol import (
    Message,
    build_task_message,
    decode_envelope,
    decode_exception,
    decode_task,
    encode_envelope,
    encode_exception,
    json_dumps,
    json_loads,
)

ACCEPT = frozenset({"json"})


def test_task_message_has_every_v2_header_in_celerys_order() -> None:
    msg = build_task_message("tasks.add", (4, 4), task_id="abc", origin="gen1@vm")
    assert list(msg.headers) == [
        "lang",
        "task",
        "id",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "timelimit",
        "root_id",
        "parent_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
        "replaced_task_nesting",
        "stamped_headers",
        "stamps",
    ]
    assert msg.headers["argsrepr"] == "(4, 4)" and msg.headers["root_id"] == "abc"
    assert json.loads(msg.body) == [
        [4, 4],
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]
    assert msg.properties["correlation_id"] == "abc"


def test_envelope_round_trip_matches_the_kombu_layout() -> None:
    msg = build_task_message("tasks.add", (1, 2), queue="q1")
    raw = encode_envelope(msg)
    envelope = json.loads(raw)
    assert set(envelope) == {"body", "content-encoding", "content-type", "headers", "properties"}
    assert envelope["properties"]["body_encoding"] == "base64"
    assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": "q1"}
    assert base64.b64decode(envelope["body"]) == msg.body
    back = decode_envelope(raw)
    assert back.headers == msg.headers and back.body == msg.body


def test_captured_celery_message_decodes() -> None:
    raw = (
        '{"body": "W1s0LCA0XSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIj'
        'ogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": '
        '"application/json", "headers": {"lang": "py", "task": "tasks.add", "id": '
        '"07d4707b-4c47-4237-961c-675ea9a8bdea", "eta": null, "expires": null, "retries": 0, '
        '"timelimit": [null, null], "root_id": "07d4707b-4c47-4237-961c-675ea9a8bdea"}, '
        '"properties": {"correlation_id": "07d4707b-4c47-4237-961c-675ea9a8bdea", "delivery_mode":'
        ' 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, '
        '"body_encoding": "base64", "delivery_tag": "ac32cc3e"}}'
    )
    call = decode_task(decode_envelope(raw), ACCEPT)
    assert (call.name, call.args, call.kwargs) == ("tasks.add", [4, 4], {})


def test_countdown_eta_and_expires_are_iso_utc() -> None:
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    now = datetime(2030, 1, 2, 3, 3, 5, tzinfo=timezone.utc)
    msg = build_task_message("t", eta=eta, expires=now + timedelta(seconds=60), now=now)
    assert msg.headers["eta"] == "2030-01-02T03:04:05+00:00"
    assert msg.properties["expiration"] == "60000"
    call = decode_task(msg, ACCEPT)
    assert call.eta == eta


@pytest.mark.parametrize(
    ("value", "tagged"),
    [
        (
            datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=timezone.utc),
            {"__type__": "datetime", "__value__": "2024-01-02T03:04:05.600000+00:00"},
        ),
        (
            datetime(2024, 1, 2, 3, 4, 5),
            {"__type__": "datetime", "__value__": "2024-01-02T03:04:05"},
        ),
        (date(2024, 1, 2), {"__type__": "date", "__value__": "2024-01-02"}),
        (time(1, 2, 3), {"__type__": "time", "__value__": "01:02:03"}),
        (
            uuid.UUID("12345678123456781234567812345678"),
            {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}},
        ),
        (Decimal("1.10"), {"__type__": "decimal", "__value__": "1.10"}),
        (b"hi", {"__type__": "bytes", "__value__": "hi"}),
        (b"\x00\xffhi", {"__type__": "base64", "__value__": "AP9oaQ=="}),
    ],
)
def test_tagged_values_encode_as_celery_does_and_round_trip(value: Any, tagged: Any) -> None:
    assert json.loads(json_dumps(value)) == tagged
    assert json_loads(json_dumps(value)) == value


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False)
    | st.datetimes(timezones=st.just(timezone.utc))
    | st.uuids()
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_any_supported_value_round_trips(value: Any) -> None:
    assert json_loads(json_dumps(value)) == value


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"[[5, 6], {}]", {"task": "t", "id": "x"}, "3-element array"),
        (b"[[], {}, {}]", {"task": "t"}, "header 'id' is missing"),
        (b"[[], {}, {}]", {"task": "t", "id": 42}, r"header 'id' must be a string, got 42 \(int\)"),
        (b"[[], {}, {}]", {"task": "t", "id": "x", "timelimit": [-1, -5]}, "seconds >= 0 or null"),
        (b"[[], {}, {}]", {"task": "t", "id": "x", "timelimit": [1, True]}, "must be numbers"),
        (b"[1, {}, {}]", {"task": "t", "id": "x"}, "task args must be an array"),
        (b"[[], [], {}]", {"task": "t", "id": "x"}, "task kwargs must be an object"),
        (b"[[], {}, {}]", {"task": "t", "id": "x", "eta": "tomorrow"}, "not an ISO-8601 time"),
        (b"[[], {}, {}]", {"task": "t", "id": "x", "retries": "1"}, "'retries' must be an int"),
        (b"[[], {}, {}]", {"task": 3, "id": "x"}, "'task' must be a non-empty string"),
        (b"{not json", {"task": "t", "id": "x"}, "not valid json"),
        (b'{"no": "task"}', {}, "not a protocol v1 body"),
    ],
)
def test_invalid_messages_get_a_precise_reason(body: bytes, headers: Any, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode_task(Message(headers, body), ACCEPT)


def test_a_zero_timelimit_is_no_limit_as_in_celery() -> None:
    headers = {"task": "t", "id": "x", "timelimit": [0, 2.5]}
    assert decode_task(Message(headers, b"[[], {}, {}]"), ACCEPT).timelimit == (None, 2.5)


def test_pickle_is_refused_unless_accepted() -> None:
    msg = build_task_message("t", (1,), serializer="pickle")
    with pytest.raises(ContentDisallowed, match="refusing to deserialize content of type pickle"):
        decode_task(msg, ACCEPT)
    assert decode_task(msg, frozenset({"json", "pickle"})).args == [1]


def test_msgpack_round_trip() -> None:
    msg = build_task_message("t", (1, "a"), {"k": [1]}, serializer="msgpack")
    call = decode_task(msg, frozenset({"msgpack"}))
    assert (call.args, call.kwargs) == ([1, "a"], {"k": [1]})


def test_protocol_v1_message_is_translated() -> None:
    body = json.dumps(
        {
            "task": "tasks.add",
            "id": "v1",
            "args": [7, 8],
            "kwargs": {},
            "retries": 0,
            "eta": None,
            "expires": None,
            "taskset": "g1",
            "callbacks": None,
        }
    ).encode()
    call = decode_task(Message({}, body), ACCEPT)
    assert (call.name, call.id, call.args, call.group) == ("tasks.add", "v1", [7, 8], "g1")


class CustomError(Exception):
    pass


def test_exceptions_encode_like_celery_and_come_back_as_their_type() -> None:
    assert encode_exception(ValueError("bad")) == {
        "exc_type": "ValueError",
        "exc_message": ["bad"],
        "exc_module": "builtins",
    }
    back = decode_exception(encode_exception(CustomError("x", 42)))
    assert type(back) is CustomError and back.args == ("x", 42)
    unknown = decode_exception({"exc_type": "Gone", "exc_message": ["m"], "exc_module": "nomod"})
    assert type(unknown).__name__ == "Gone" and unknown.args == ("m",)
    wire = {"exc_type": "NotRegistered", "exc_message": ["x"], "exc_module": "celery.exceptions"}
    from celeriac.exceptions import NotRegistered

    assert isinstance(decode_exception(wire), NotRegistered)
    assert encode_exception(NotRegistered("x"))["exc_module"] == "celery.exceptions"


@given(
    host=st.text(max_size=20),
    events=st.lists(
        st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=20), st.integers())),
        max_size=5,
    ),
)
def test_an_event_envelope_is_the_one_encode_envelope_writes(
    host: str, events: list[dict[str, Any]]
) -> None:
    from celeriac.protocol.events import event_envelope, event_message, read_events

    message = event_message(host, "task.multi", events)
    message.properties["delivery_tag"] = "tag"
    assert event_envelope(message) == encode_envelope(message)
    assert read_events(decode_envelope(event_envelope(message))) == [
        e for e in events if isinstance(e.get("type"), str)
    ]


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_runtime_text_is_a_json_float_close_to_the_runtime(seconds: float) -> None:
    from celeriac.protocol.events import runtime_text

    value = json.loads(runtime_text(seconds))
    assert type(value) is float
    assert value == pytest.approx(seconds, rel=1e-8, abs=0)


def test_timestamp_text_is_a_json_float_of_the_time_now() -> None:
    import time as clock

    from celeriac.protocol.events import json_text, timestamp_text

    before = clock.time()
    value = json.loads(timestamp_text())
    assert type(value) is float
    assert before - 1e-6 <= value <= clock.time()
    for text in ("x", 'a"b\\', "é", None):
        assert json_text(text) == json.dumps(text)
