"""Choosing a broker or backend class by URL scheme, importing it lazily so optional
dependencies stay optional."""

from __future__ import annotations

import importlib
from typing import Any

from celeriac.exceptions import ImproperlyConfigured

#: the pip extra that brings a module's dependencies
_EXTRAS = {"redis": "redis", "amqp": "amqp", "rpc": "amqp", "postgres": "postgres"}


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
        extra = _EXTRAS.get(module_name.rsplit(".", 1)[-1], scheme)
        raise ImproperlyConfigured(
            f"{setting} {url!r} needs an optional dependency: {exc} "
            f"(pip install 'celeriac[{extra}]')"
        ) from exc
    return getattr(module, cls_name)
