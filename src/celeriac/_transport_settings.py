"""Celery settings that celeriac carries out as transport options.

Each is a row of :data:`BROKER` / :data:`BACKEND`: the setting, the
transports it means something to, and the transport option it becomes. An option given
in ``broker_transport_options`` / ``result_backend_transport_options`` wins over the
setting. A setting that is set for a transport it means nothing to is said once per
process (``broker_heartbeat`` with a Redis broker: Redis has no heartbeats).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac._config import Settings

logger = logging.getLogger("celeriac.settings")

_AMQP = ("amqp", "amqps", "pyamqp")
_REDIS = ("redis", "rediss", "unix", "redis+socket", "sentinel")

#: (setting, schemes it applies to, option, what it means elsewhere); None: unset
BROKER: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("broker_heartbeat", _AMQP, "heartbeat", "only RabbitMQ connections have heartbeats"),
    (
        "broker_connection_timeout",
        (*_AMQP, *_REDIS),
        "connect_timeout",
        "this broker connects without a network timeout",
    ),
    (
        "task_default_queue_type",
        _AMQP,
        "queue_type",
        "only RabbitMQ has queue types",
    ),
    (
        "task_queue_max_priority",
        _AMQP,
        "queue_max_priority",
        "this broker orders by priority without a queue maximum",
    ),
)
BACKEND: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("redis_socket_timeout", _REDIS, "socket_timeout", "the result backend is not Redis"),
    (
        "redis_socket_connect_timeout",
        _REDIS,
        "socket_connect_timeout",
        "the result backend is not Redis",
    ),
    ("redis_socket_keepalive", _REDIS, "socket_keepalive", "the result backend is not Redis"),
)

#: the value that, set for a transport it means nothing to, needs no warning
_SILENT = {
    "task_default_queue_type": "classic",
    "broker_connection_timeout": 4.0,
    "broker_heartbeat": 0.0,  # off: what a transport without heartbeats does anyway
}
#: the Redis option name of a setting whose AMQP option is named otherwise
_REDIS_NAMES = {"connect_timeout": "socket_connect_timeout"}
_warned: set[str] = set()


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def options_for(
    conf: Settings, url: str, rows: tuple[tuple[str, tuple[str, ...], str, str], ...]
) -> dict[str, Any]:
    """The transport options the settings of ``rows`` give a transport at ``url``."""
    scheme = _scheme(url)
    out: dict[str, Any] = {}
    for setting, schemes, option, elsewhere in rows:
        value = conf[setting]
        if value is None or not conf.is_set(setting):
            continue  # unset: the transport's own default
        if scheme not in schemes:
            if value != _SILENT.get(setting) and setting not in _warned:
                _warned.add(setting)
                logger.warning(
                    "Setting %s=%r has no effect with a %s:// transport: %s",
                    setting,
                    value,
                    scheme,
                    elsewhere,
                )
            continue
        name = _REDIS_NAMES.get(option, option) if scheme in _REDIS else option
        out[name] = value
    return out


def merged(conf: Settings, side: str, url: str, tls: dict[str, Any]) -> dict[str, Any]:
    """The transport options of the ``side`` ("broker" or "backend") at ``url``: those
    of its settings, then of its TLS setting, then its ``*_transport_options``."""
    if side == "broker":
        return {**options_for(conf, url, BROKER), **tls, **conf["broker_transport_options"]}
    given = conf["result_backend_transport_options"]
    return {**options_for(conf, url, BACKEND), **tls, **given}


__all__ = ["BACKEND", "BROKER", "merged", "options_for"]
