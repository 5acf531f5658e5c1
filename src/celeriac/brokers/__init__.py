"""Broker transports, one module each, chosen by URL scheme."""

from __future__ import annotations

from typing import Any

from celeriac._registry import load_class
from celeriac.brokers.base import Broker, DeadLetter, Delivery

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
    cls: type[Broker] = load_class("broker_url", url, BROKERS)
    return cls


def create_broker(url: str, options: dict[str, Any] | None = None) -> Broker:
    return broker_class(url)(url, options=options)


__all__ = ["BROKERS", "Broker", "DeadLetter", "Delivery", "broker_class", "create_broker"]
