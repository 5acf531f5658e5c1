"""Utilities under the paths Celery users import from (``celery.utils``).

``uuid()`` makes task ids as Celery's does (a random UUID as text); ``nodename`` and
``nodesplit`` build and split worker node names (``name@host``).
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID, uuid4


def uuid(_uuid: Callable[[], UUID] = uuid4) -> str:
    """A new unique id, as text: ``'5f1c7b2e-...'`` (Celery's ``celery.uuid``)."""
    return str(_uuid())


#: Celery's old name for :func:`uuid`.
gen_unique_id = uuid


def nodename(name: str, hostname: str) -> str:
    """A worker node name from its parts: ``nodename('w1', 'host') == 'w1@host'``."""
    return f"{name}@{hostname}"


def nodesplit(name: str) -> tuple[None, str] | list[str]:
    """``'w1@host'`` -> ``['w1', 'host']``; a name without ``@`` -> ``(None, name)``,
    as Celery's."""
    parts = name.split("@", 1)
    if len(parts) == 1:
        return None, parts[0]
    return parts


def noop(*args: object, **kwargs: object) -> None:
    """Take any arguments, do nothing."""


__all__ = ["gen_unique_id", "nodename", "nodesplit", "noop", "uuid"]
