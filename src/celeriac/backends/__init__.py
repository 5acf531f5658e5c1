"""Result backends, one module each, chosen by URL scheme."""

from __future__ import annotations

from typing import Any

from celeriac._registry import load_class
from celeriac.backends.base import ResultBackend

BACKENDS: dict[str, str] = {
    "memory": "celeriac.backends.memory:MemoryBackend",
    "sqlite": "celeriac.backends.sqlite:SQLiteBackend",
    "redis": "celeriac.backends.redis:RedisBackend",
    "rediss": "celeriac.backends.redis:RedisBackend",
    "redis+socket": "celeriac.backends.redis:RedisBackend",
    "unix": "celeriac.backends.redis:RedisBackend",
    "sentinel": "celeriac.backends.redis:RedisBackend",
    "rpc": "celeriac.backends.rpc:RPCBackend",
}


def backend_class(url: str) -> type[ResultBackend]:
    cls: type[ResultBackend] = load_class("result_backend", url, BACKENDS)
    return cls


def create_backend(url: str, options: dict[str, Any] | None = None) -> ResultBackend:
    return backend_class(url)(url, options=options)


__all__ = ["BACKENDS", "ResultBackend", "backend_class", "create_backend"]
