"""celeriac: a distributed task queue with Celery's API and wire protocol.

Migrating from Celery is one search-and-replace of ``celery`` with ``celeriac``::

    from celeriac import Celery
    app = Celery("tasks")           # embedded SQLite broker, no server needed

    @app.task
    def add(x: int, y: int) -> int:
        return x + y
"""

from __future__ import annotations

__version__ = "0.1.0"

# ``celeriac ... worker -P gevent``: monkey patch before anything imports sockets, as Celery
from celeriac._concurrency import maybe_patch_concurrency as _maybe_patch_concurrency

_maybe_patch_concurrency()

from celeriac import states
from celeriac._queues import Queue
from celeriac.app import Celeriac, Celery, _CurrentAppProxy, shared_task
from celeriac.canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
    subtask,
    xmap,
    xstarmap,
)
from celeriac.middleware import Middleware
from celeriac.result import AsyncResult
from celeriac.task import Task, current_task
from celeriac.utils import uuid

#: The current app (the most recently created one), as ``celery.current_app``.
current_app = _CurrentAppProxy()

__all__ = [
    "AsyncResult",
    "Celeriac",
    "Celery",
    "Middleware",
    "Queue",
    "Signature",
    "Task",
    "__version__",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "current_task",
    "group",
    "maybe_signature",
    "shared_task",
    "signature",
    "states",
    "subtask",
    "uuid",
    "xmap",
    "xstarmap",
]
