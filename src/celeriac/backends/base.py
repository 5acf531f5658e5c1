"""The result backend contract.

A backend stores Celery's result meta dicts (see :func:`celeriac.protocol.result_meta`)
under the task id, with an expiry. ``wait`` returns as soon as any of the given ids has a
ready state: push-based where the store allows it, polling otherwise. PENDING is never
stored: a missing entry means PENDING.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from celeriac import states


class ResultBackend(abc.ABC):
    """Async result backend interface. One instance per process and event loop."""

    schemes: ClassVar[tuple[str, ...]] = ()
    #: True for backends that deliver results to the caller's reply queue (``rpc://``)
    #: instead of storing them by id: the worker then calls ``store_replies``.
    needs_reply_to: ClassVar[bool] = False

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections; create the schema when needed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close connections."""

    @abc.abstractmethod
    async def store(self, task_id: str, meta: dict[str, Any], ttl: float | None) -> None:
        """Store ``meta`` for ``task_id``, expiring after ``ttl`` seconds (None: never)."""

    async def store_many(self, items: Sequence[tuple[str, dict[str, Any], float | None]]) -> None:
        """Store several results; backends override this to use one round trip."""
        for task_id, meta, ttl in items:
            await self.store(task_id, meta, ttl)

    async def store_replies(self, items: Sequence[tuple[str | None, str, dict[str, Any]]]) -> None:
        """Deliver ``(reply_to, task_id, meta)`` results to their callers (``rpc://``).
        Only backends with ``needs_reply_to`` are asked to."""
        raise NotImplementedError(f"{type(self).__name__} stores results by id")

    @abc.abstractmethod
    async def get(self, task_id: str) -> dict[str, Any] | None:
        """The stored meta, or None (PENDING)."""

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored metas of the ids that have one."""
        out: dict[str, dict[str, Any]] = {}
        for task_id in task_ids:
            meta = await self.get(task_id)
            if meta is not None:
                out[task_id] = meta
        return out

    @abc.abstractmethod
    async def forget(self, task_id: str) -> None:
        """Delete the stored result."""

    async def wait(
        self, task_ids: Sequence[str], timeout: float | None, interval: float = 0.005
    ) -> dict[str, dict[str, Any]]:
        """Wait until at least one id is ready (or ``timeout``); return the ready metas.

        The default polls with ``get_many`` every ``interval`` seconds, backing off to
        ten times that while nothing changes. Push-capable backends override it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = interval
        while True:
            found = await self.get_many(task_ids)
            ready = {k: v for k, v in found.items() if v.get("status") in states.READY_STATES}
            if ready:
                return ready
            if deadline is not None and time.monotonic() >= deadline:
                return {}
            pause = delay if deadline is None else min(delay, deadline - time.monotonic())
            await asyncio.sleep(max(pause, 0))
            delay = min(delay * 1.5, interval * 10)


__all__ = ["ResultBackend"]
