"""Transports: one package per broker kind (``memory``, ``sqlite``, ``redis``, ``amqp``,
``postgres``),
each holding its broker, its result backend and every internal it needs.

The scheme tables below are the one place that maps a URL to a transport. Classes are
imported lazily, so a transport's optional dependencies are needed only when it is used.
The contracts live beside this module: :mod:`celeriac.transports.broker` (the broker),
:mod:`celeriac.transports.backend` (the result backend).

**Sync fast path** (a capability): a transport package may have a ``sync`` module with
``publisher(app)``, ``waiter(app)`` and ``close(app)``, which serve a sync ``delay()``
and ``AsyncResult.get()`` without an event loop (None where they do not apply).
:func:`sync_publisher`, :func:`sync_waiter` and :func:`close_sync` find it from the
broker's (backend's) URL scheme, importing only that module; the layers above name no
transport. Module functions rather than classmethods on the contracts: the choice
depends on the broker *and* the backend settings, and needs no import of the broker's
asyncio client.
"""

from __future__ import annotations

import importlib
import weakref
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.backend import ResultBackend
from celeriac.transports.broker import Broker, DeadLetter, Delivery

if TYPE_CHECKING:
    from celeriac.protocol import Message

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
    "postgresql": f"{_PKG}.postgres.broker:PostgresBroker",
    "postgres": f"{_PKG}.postgres.broker:PostgresBroker",
}

#: scheme -> "module:Class" of its result backend
BACKENDS: dict[str, str] = {
    "memory": f"{_PKG}.memory.backend:MemoryBackend",
    # Celery's in-process result backend, as its tests (and its pytest plugin) name it
    "cache+memory": f"{_PKG}.memory.backend:MemoryBackend",
    "sqlite": f"{_PKG}.sqlite.backend:SQLiteBackend",
    "redis": f"{_PKG}.redis.backend:RedisBackend",
    "rediss": f"{_PKG}.redis.backend:RedisBackend",
    "redis+socket": f"{_PKG}.redis.backend:RedisBackend",
    "unix": f"{_PKG}.redis.backend:RedisBackend",
    "sentinel": f"{_PKG}.redis.backend:RedisBackend",
    "rpc": f"{_PKG}.amqp.rpc:RPCBackend",
    "postgresql": f"{_PKG}.postgres.backend:PostgresBackend",
    "postgres": f"{_PKG}.postgres.backend:PostgresBackend",
}

#: broker scheme -> "module:Class" of the ``rpc://`` backend whose replies travel on that
#: broker (AMQP reply queues, Redis lists, a SQLite table, the memory store)
RPC_BACKENDS: dict[str, str] = {
    "memory": f"{_PKG}.memory.rpc:MemoryRPCBackend",
    "sqlite": f"{_PKG}.sqlite.rpc:SQLiteRPCBackend",
    **{s: f"{_PKG}.redis.rpc:RedisRPCBackend" for s in ("redis", "rediss", "redis+socket")},
    **{s: f"{_PKG}.redis.rpc:RedisRPCBackend" for s in ("unix", "sentinel")},
    **{s: f"{_PKG}.amqp.rpc:RPCBackend" for s in ("amqp", "amqps", "pyamqp")},
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
        note = ""
        if scheme.startswith("db+") or url.startswith("django-"):  # Celery's, not ours
            note = " (celeriac has no SQLAlchemy 'db+' or django-celery-results backend)"
        raise ImproperlyConfigured(
            f"{setting} {url!r}: unknown scheme {scheme!r}; use one of {known}{note}"
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


def backend_class(url: str, broker_url: str | None = None) -> type[ResultBackend]:
    """The result backend class for ``url``; for ``rpc://``, the one that replies over
    ``broker_url``'s broker (without it: AMQP's, the class-level answers being the same)."""
    if broker_url is not None and _scheme(url) == "rpc":
        return _rpc_class(url, broker_url)
    cls: type[ResultBackend] = load_class("result_backend", url, BACKENDS)
    return cls


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _rpc_class(url: str, broker_url: str) -> type[ResultBackend]:
    scheme = _scheme(broker_url)
    if scheme not in RPC_BACKENDS:
        raise ImproperlyConfigured(
            f"result_backend {url!r}: rpc:// replies travel on the broker, and the "
            f"{scheme}:// broker has no reply channel; set result_backend to a store "
            f"(redis://, sqlite://) instead"
        )
    amqp = RPC_BACKENDS[scheme].startswith(f"{_PKG}.amqp.")
    if not amqp and url.partition("://")[2].strip("/"):
        raise ImproperlyConfigured(
            f"result_backend {url!r}: on a {scheme}:// broker rpc:// replies travel on the "
            f"broker itself, so the URL takes no host; write rpc://"
        )
    cls: type[ResultBackend] = load_class("result_backend", f"{scheme}://", RPC_BACKENDS)
    return cls


def create_broker(url: str, options: dict[str, Any] | None = None) -> Broker:
    return broker_class(url)(url, options=options)


def create_backend(url: str, options: dict[str, Any] | None = None) -> ResultBackend:
    """A result backend; an ``rpc://`` one replies over ``options["broker_url"]``."""
    broker_url = (options or {}).get("broker_url")
    return backend_class(url, str(broker_url) if broker_url else None)(url, options=options)


class SyncPublisher(Protocol):
    """What a transport's ``sync.publisher(app)`` returns."""

    def publish(
        self, queue: str, message: Message, priority: int, not_before: float | None
    ) -> None: ...


class SyncWaiter(Protocol):
    """What a transport's ``sync.waiter(app)`` returns: the ready meta, or None when
    ``timeout`` passed first."""

    def wait(self, task_id: str, timeout: float | None) -> dict[str, Any] | None: ...


_sync_modules: dict[str, ModuleType | None] = {}  # transport package -> its sync module
_sync_apps: weakref.WeakKeyDictionary[Any, tuple[Any, Any, Any]] = weakref.WeakKeyDictionary()


def _sync_module(url: str, table: dict[str, str]) -> Any:
    path = class_path(url, table)
    if path is None:
        return None
    package = path.partition(":")[0].rpartition(".")[0]
    if package not in _sync_modules:
        try:
            _sync_modules[package] = importlib.import_module(package + ".sync")
        except ImportError:  # no fast path (or a missing extra: the general path says)
            _sync_modules[package] = None
    return _sync_modules[package]


def _sync_for(app: Any) -> tuple[Any, Any, Any]:
    """(settings version, the broker's sync module, the backend's), per app; looked up
    again after a setting is assigned."""
    entry = _sync_apps.get(app)
    version = app.conf.version
    if entry is None or entry[0] != version:
        modules = []
        for attr, table in (("broker_url", BROKERS), ("backend_url", BACKENDS)):
            try:
                modules.append(_sync_module(getattr(app, attr), table))
            except Exception:  # a bad setting: the general path reports it
                modules.append(None)
        entry = _sync_apps[app] = (version, *modules)
    return entry


def sync_publisher(app: Any) -> SyncPublisher | None:
    """The broker transport's sync publisher for ``app`` in this thread, or None."""
    module = _sync_for(app)[1]
    return None if module is None else module.publisher(app)


def sync_waiter(app: Any) -> SyncWaiter | None:
    """The result backend transport's sync waiter for ``app`` in this thread, or None."""
    module = _sync_for(app)[2]
    return None if module is None else module.waiter(app)


def close_sync(app: Any) -> None:
    """Close the calling thread's sync connections of ``app``, in every transport."""
    for module in list(_sync_modules.values()):
        if module is not None:
            module.close(app)


__all__ = [
    "BACKENDS",
    "BROKERS",
    "RPC_BACKENDS",
    "Broker",
    "DeadLetter",
    "Delivery",
    "ResultBackend",
    "backend_class",
    "broker_class",
    "class_path",
    "close_sync",
    "create_backend",
    "create_broker",
    "load_class",
    "sync_publisher",
    "sync_waiter",
]
