"""Transports: one package per broker kind (``memory``, ``sqlite``, ``redis``, ``amqp``),
each holding its broker, its result backend and every internal it needs.

The scheme tables below are the one place that maps a URL to a transport. Classes are
imported lazily, so a transport's optional dependencies are needed only when it is used.
The contracts live beside this module: :mod:`celeriac.transports.broker` (the broker),
:mod:`celeriac.transports.backend` (the result backend).
"""

from __future__ import annotations

import importlib
from typing import Any

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.backend import ResultBackend
from celeriac.transports.broker import Broker, DeadLetter, Delivery

_PKG = "celeriac.transports"

#: scheme -> "module:Class" of its broker
BROKERS: dict[str, str] = {
    "memory": f"{_PKG}.memory.broker:MemoryBroker",
    "sqlite": f"{_PKG}.sqlite.broker:SQLiteBroker",
    "redis": f"{_PKG}.redis.broker:RedisBroker",
    "rediss": f"{_PKG}.redis.broker:RedisBroker",
    "redis+socket": f"{_PKG}.redis.broker:RedisBroker",
    "unix": f"{_PKG}.redis.broker:RedisBroker",
    "sentinel": f"{_PKG}.redis.broker:RedisBroker",
    "amqp": f"{_PKG}.amqp.broker:AMQPBroker",
    "amqps": f"{_PKG}.amqp.broker:AMQPBroker",
    "pyamqp": f"{_PKG}.amqp.broker:AMQPBroker",
}

#: scheme -> "module:Class" of its result backend
BACKENDS: dict[str, str] = {
    "memory": f"{_PKG}.memory.backend:MemoryBackend",
    "sqlite": f"{_PKG}.sqlite.backend:SQLiteBackend",
    "redis": f"{_PKG}.redis.backend:RedisBackend",
    "rediss": f"{_PKG}.redis.backend:RedisBackend",
    "redis+socket": f"{_PKG}.redis.backend:RedisBackend",
    "unix": f"{_PKG}.redis.backend:RedisBackend",
    "sentinel": f"{_PKG}.redis.backend:RedisBackend",
    "rpc": f"{_PKG}.amqp.rpc:RPCBackend",
}

#: the pip extra that brings a transport package's dependencies
_EXTRAS = {"redis": "redis", "amqp": "amqp", "postgres": "postgres"}


def load_class(setting: str, url: str, table: dict[str, str]) -> Any:
    """The class ``table`` names for ``url``'s scheme (``"module:Class"`` values);
    a clear :class:`ImproperlyConfigured` naming ``setting`` otherwise."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    target = table.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(table))
        raise ImproperlyConfigured(
            f"{setting} {url!r}: unknown scheme {scheme!r}; use one of {known}"
        )
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        transport = module_name.removeprefix(_PKG + ".").split(".", 1)[0]
        extra = _EXTRAS.get(transport, transport)
        raise ImproperlyConfigured(
            f"{setting} {url!r} needs an optional dependency: {exc} "
            f"(pip install 'celeriac[{extra}]')"
        ) from exc
    return getattr(module, cls_name)


def class_path(url: str, table: dict[str, str]) -> str | None:
    """``"module:Class"`` for ``url``'s scheme in ``table``, without importing it."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return table.get(scheme)


def broker_class(url: str) -> type[Broker]:
    cls: type[Broker] = load_class("broker_url", url, BROKERS)
    return cls


def backend_class(url: str) -> type[ResultBackend]:
    cls: type[ResultBackend] = load_class("result_backend", url, BACKENDS)
    return cls


def create_broker(url: str, options: dict[str, Any] | None = None) -> Broker:
    return broker_class(url)(url, options=options)


def create_backend(url: str, options: dict[str, Any] | None = None) -> ResultBackend:
    return backend_class(url)(url, options=options)


__all__ = [
    "BACKENDS",
    "BROKERS",
    "Broker",
    "DeadLetter",
    "Delivery",
    "ResultBackend",
    "backend_class",
    "broker_class",
    "class_path",
    "create_backend",
    "create_broker",
    "load_class",
]
