"""Stamps on the wire and their revocation keys (``celeriac.protocol.stamps``); what
Celery does with them is measured in ``tests/semantics/test_stamping_semantics.py``."""

from __future__ import annotations

from typing import Any

import pytest

from celeriac import Celery, signature
from celeriac.protocol.stamps import (
    message_keys,
    parse_revoke_headers,
    revocation_key,
    revocation_keys,
    stamp_headers,
)


def test_a_stamped_call_gets_both_headers_and_keeps_its_own() -> None:
    options = {"headers": {"custom": 1}, "stamped_headers": ["a"], "a": [1, 2]}
    assert stamp_headers(options) == {
        "custom": 1,
        "stamped_headers": ["a"],
        "stamps": {"a": [1, 2]},
    }
    assert stamp_headers({"headers": {"custom": 1}}) == {"custom": 1}
    assert stamp_headers({}) is None


def test_a_stamp_without_a_value_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'b'"):
        stamp_headers({"stamped_headers": ["a", "b"], "a": 1})
    with pytest.raises(TypeError, match="stamped_headers"):
        stamp_headers({"stamped_headers": 3})


def test_revocation_keys_match_message_keys_item_by_item() -> None:
    headers = {"stamped_headers": ["a", "b", "c"], "stamps": {"a": "x", "b": [1, 2], "c": None}}
    assert message_keys(headers) == [
        revocation_key("a", "x"),
        revocation_key("b", 1),
        revocation_key("b", 2),
    ]
    assert revocation_keys({"b": [2, 3]}) == [revocation_key("b", 2), revocation_key("b", 3)]
    assert revocation_key("d", {"y": 1, "x": 2}) == revocation_key("d", {"x": 2, "y": 1})
    assert revocation_key("a", "1") != revocation_key("a", 1)
    assert message_keys({"stamped_headers": None, "stamps": {}}) == []
    assert message_keys({"stamped_headers": ["a"], "stamps": "junk"}) == []


def test_revoke_headers_come_as_a_dict_or_as_name_value_text() -> None:
    assert parse_revoke_headers({"a": [1]}) == {"a": [1]}
    assert parse_revoke_headers(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ValueError, match="name=value"):
        parse_revoke_headers(["nothing"])
    with pytest.raises(ValueError, match="dict"):
        parse_revoke_headers(3)


def test_stamping_a_callback_given_as_a_dict_keeps_the_stamp() -> None:
    sig = signature("t.a", (1,))
    sig.options["link"] = [dict(signature("t.b"))]
    sig.stamp(k="K")
    (link,) = sig.options["link"]
    assert (link.options["stamped_headers"], link.options["k"]) == (["k"], "K")


def test_an_eager_call_sees_its_stamps_as_lists_as_celery() -> None:
    app = Celery("stamps", broker="memory://")
    try:

        @app.task(bind=True)
        def seen(self: Any) -> Any:
            return (self.request.stamped_headers, self.request.stamps)

        sig = seen.s()
        sig.stamp(k="K", lst=[1, 2])
        assert sig.apply().get() == (["k", "lst"], {"k": ["K"], "lst": [1, 2]})
        assert seen.s().apply().get() == (None, None)
        assert seen.apply(stamped_headers=["z"], z="zz").get() == (["z"], {"z": ["zz"]})
    finally:
        app.close()
