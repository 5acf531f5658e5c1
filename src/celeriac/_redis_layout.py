"""How celeriac reads a Redis URL and lays out a published message, shared by the Redis
broker (``celeriac.brokers.redis``) and the sync publisher (``celeriac._redis_sync``).

This module imports no redis-py (a quarter of a second of a short script's life), so the
sync path can use it; the two paths put the same bytes in Redis because both build them
here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from celeriac.protocol import Message, encode_envelope

#: Options celeriac reads itself; taken out of a URL's query string, the rest of which
#: goes to the client (``?ssl_cert_reqs=none``, ``?socket_timeout=5``, ...).
OWN_OPTIONS = frozenset(
    {
        "global_keyprefix",
        "visibility_timeout",
        "polling_interval",
        "priority_order",
        "foreign_visibility_timeout",
        "eta_in_queue",
        "master_name",
    }
)
_FALSE = frozenset({"0", "false", "no", "off"})


def _number(value: str) -> Any:
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        return value


def split_url(url: str) -> tuple[str, dict[str, Any]]:
    """Take celeriac's own options out of ``url``'s query string."""
    base, _, query = url.partition("?")
    own: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in OWN_OPTIONS:
            own[key] = _number(value)
        else:
            rest.append((key, value))
    return (f"{base}?{urlencode(rest)}" if rest else base), own


def key_prefix(options: dict[str, Any]) -> str:
    return str(options.get("global_keyprefix") or "")


def eta_in_queue(options: dict[str, Any]) -> bool:
    """Whether an ETA message goes to its queue (where a Celery worker sees it) rather
    than to the delayed store (``eta_in_queue``, default true)."""
    return str(options.get("eta_in_queue", True)).lower() not in _FALSE


def bucket(priority: int) -> str:
    """Celery's priority bucket: the priority rounded down to 0, 3, 6 or 9."""
    return "9" if priority >= 9 else "6" if priority >= 6 else "3" if priority >= 3 else "0"


def when(not_before: float | None) -> str:
    """A due time as the scripts take it ('' for now)."""
    return "" if not_before is None else repr(float(not_before))


def publish_group(
    queue: str, message: Message, priority: int, not_before: float | None, *, eta_visible: bool
) -> list[Any]:
    """One message's four arguments of ``publish.lua``: queue, bucket, due time, envelope.
    A Celery worker must see an ETA task message (``eta_visible``); a celeriac one delays
    it itself."""
    raw = encode_envelope(message, queue=queue)
    visible = eta_visible and message.headers.get("eta")
    return [queue, bucket(priority), "" if visible else when(not_before), raw]


def declare_commands(prefix: str, queue: str) -> list[tuple[str, str, str]]:
    """Celery's binding of ``queue`` (kombu's binding sets), as commands."""
    member = f"{queue}\x06\x16\x06\x16{queue}"
    return [
        ("SADD", f"{prefix}_kombu.binding.{queue}", member),
        ("SADD", f"{prefix}_kombu.binding_permanent.{queue}", member),
    ]


__all__ = [
    "OWN_OPTIONS",
    "bucket",
    "declare_commands",
    "eta_in_queue",
    "key_prefix",
    "publish_group",
    "split_url",
    "when",
]
