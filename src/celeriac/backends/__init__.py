"""Result backends, one module each, chosen by URL scheme."""

from __future__ import annotations

import importlib
from typing import Any

from celeriac.backends.base import ResultBackend
from celeriac.exceptions import ImproperlyConfigured

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
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    target = BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
        raise ImproperlyConfigured(
            f"result_backend {url!r}: unknown scheme {scheme!r}; use one of {known}"
        )
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"result_backend {url!r} needs an optional dependency: {exc} "
            f"(install celeriac[{scheme}])"
        ) from exc
    cls: type[ResultBackend] = getattr(module, cls_name)
    return cls


def create_backend(url: str, options: dict[str, Any] | None = None) -> ResultBackend:
    return backend_class(url)(url, options=options)


__all__ = ["BACKENDS", "ResultBackend", "backend_class", "create_backend"]
