"""The result backend contract.

A backend stores Celery's result meta dicts (see :func:`celeriac.protocol.result_meta`)
under the task id, with an expiry. ``wait`` returns as soon as any of the given ids has a
ready state: push-based where the store allows it, polling otherwise. PENDING is never
stored: a missing entry means PENDING.

Canvas needs two more things from a backend (both optional: the defaults raise
``NotImplementedError`` with the backend's name):

* saved group results (``GroupResult.save``/``restore``): Celery's
  ``{"result": [[group_id, null], [member tuples]]}`` under the group id;
* chord joins: ``chord_start`` records the header size (the producer calls it before
  publishing the header; for the same chord sent again it begins a new run;
  ``chord_grow`` counts members a header task added), ``chord_join`` atomically
  records finished header tasks (a member counted twice, by a re-run after a lost
  worker, counts once) and hands the ordered results of a complete header to exactly
  one caller with a *claim*; that caller
  publishes the body and then calls ``chord_done``, which marks the chord fired. A claim
  that is not followed by ``chord_done`` expires after ``CHORD_CLAIM_SECONDS``; the
  member that completed the header may re-claim it at once (its re-run after a crash).

Celery's key-value calls on ``app.backend`` (``get``/``set``/``delete``) need a third,
optional part: ``kv_get``/``kv_set``/``kv_delete`` keep raw bytes under a key of the
caller's (with an expiry; on Redis, as in Celery, ``global_keyprefix`` does not apply);
and ``client()`` may give the store's own client library, as Celery's ``backend.client``.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from celeriac import states

#: How long a chord claim holds before another header task may fire the body.
CHORD_CLAIM_SECONDS = 30
#: How long a fired chord is remembered, so late duplicates of header tasks do nothing.
CHORD_DONE_SECONDS = 300


@dataclass(frozen=True, slots=True)
class ChordPart:
    """A finished chord header task, for :meth:`ResultBackend.chord_join`.

    ``result`` is the return value (SUCCESS) or Celery's exception dict (FAILURE,
    REVOKED); ``size`` is the header size the message carried, used only when the
    backend has none recorded for the group.
    """

    group_id: str
    task_id: str
    index: int
    state: str
    result: Any
    size: int | None = None


@dataclass(frozen=True, slots=True)
class ChordClaim:
    """A complete chord header, claimed by one caller: ``results`` are
    ``(task_id, state, result)`` in header order."""

    group_id: str
    token: str
    results: list[tuple[str, str, Any]]


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

    # -- groups and chords (canvas) -------------------------------------------
    def _unsupported(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"the {type(self).__name__} result backend cannot {what}")

    async def save_group(self, group_id: str, meta: dict[str, Any], ttl: float | None) -> None:
        """Store a group's meta (``{"result": <group result tuple>}``) under its id."""
        raise self._unsupported("save group results")

    async def restore_group(self, group_id: str) -> dict[str, Any] | None:
        """The saved meta of a group, or None."""
        raise self._unsupported("restore group results")

    async def forget_group(self, group_id: str) -> None:
        """Delete a group's saved meta."""
        raise self._unsupported("delete group results")

    async def chord_start(self, group_id: str, size: int, ttl: float | None) -> None:
        """Record the header size of chord ``group_id`` (before its header is sent)."""
        raise self._unsupported("join chords")

    async def chord_grow(self, group_id: str, count: int) -> None:
        """Count ``count`` more header members for chord ``group_id``
        (``Task.add_to_chord``)."""
        raise self._unsupported("add tasks to a chord")

    async def chord_join(self, parts: Sequence[ChordPart], ttl: float | None) -> list[ChordClaim]:
        """Atomically record finished header tasks (each ``(task_id, index)`` once) and
        return a claim for every chord these parts completed that nobody else holds."""
        raise self._unsupported("join chords")

    async def chord_done(self, group_id: str, token: str) -> None:
        """The body of a claimed chord was sent: drop its parts and remember it fired."""
        raise self._unsupported("join chords")

    # -- history (the dashboard's task list after a restart) ---------------------
    async def recent_results(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``limit`` stored results, ``(task id, meta)``, the most recently
        finished (``date_done``) first. Redis keeps no order: it gives the newest of
        the keys a bounded SCAN met (at most ``limit`` x 10)."""
        raise self._unsupported("list its results")

    # -- raw key values (``app.backend.get``/``set``/``delete``) ---------------
    async def kv_get(self, key: str) -> bytes | None:
        """The bytes stored under ``key`` by :meth:`kv_set`, or None."""
        raise self._unsupported("store key values")

    async def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` seconds (None: never)."""
        raise self._unsupported("store key values")

    async def kv_delete(self, key: str) -> None:
        """Delete ``key`` (nothing happens when it is missing)."""
        raise self._unsupported("store key values")

    def client(self) -> Any:
        """A new client of the store's own library, for ``app.backend.client``."""
        raise self._unsupported("give a client of its store")


__all__ = [
    "CHORD_CLAIM_SECONDS",
    "CHORD_DONE_SECONDS",
    "ChordClaim",
    "ChordPart",
    "ResultBackend",
]
