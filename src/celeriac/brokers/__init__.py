"""Broker transports, one module each, chosen by URL scheme."""

from __future__ import annotations

import importlib
from typing import Any

from celeriac.brokers.base import Broker, DeadLetter, Delivery
from celeriac.exceptions import ImproperlyConfigured

#: scheme -> "module:Class" (imported lazily so optional dependencies stay optional)
BROKERS: dict[str, str] = {
    "memory": "celeriac.brokers.memory:MemoryBroker",
    "sqlite": "celeriac.brokers.sqlite:SQLiteBroker",
    "redis": "celeriac.brokers.redis:RedisBroker",
    "rediss": "celeriac.brokers.redis:RedisBroker",
    "redis+socket": "celeriac.brokers.redis:RedisBroker",
    "unix": "celeriac.brokers.redis:RedisBroker",
    "sentinel": "celeriac.brokers.redis:RedisBroker",
    "amqp": "celeriac.brokers.amqp:AMQPBroker",
    "amqps": "celeriac.brokers.amqp:AMQPBroker",
    "pyamqp": "celeriac.brokers.amqp:AMQPBroker",
}


def broker_class(url: str) -> type[Broker]:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    target = BROKERS.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(BROKERS))
        raise ImproperlyConfigured(
            f"broker_url {url!r}: unknown scheme {scheme!r}; use one of {known}"
        )
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"broker_url {url!r} needs an optional dependency: {exc} (install celeriac[{scheme}])"
        ) from exc
    cls: type[Broker] = getattr(module, cls_name)
    return cls


def create_broker(url: str, options: dict[str, Any] | None = None) -> Broker:
    return broker_class(url)(url, options=options)


__all__ = ["BROKERS", "Broker", "DeadLetter", "Delivery", "broker_class", "create_broker"]
