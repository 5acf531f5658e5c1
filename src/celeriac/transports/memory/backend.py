"""In-process result backend for tests: ``memory://``, ``memory://name``, or Celery's
``cache+memory://``.

Results live in a process-global store per URL, shared by every event loop and thread of
the process. Metas are kept as JSON text (``protocol.json_dumps``), so tests go through
serialisation. ``wait`` is woken by ``store`` through ``loop.call_soon_threadsafe``; it
never polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from celeriac import states
from celeriac.protocol import json_dumps, json_loads
from celeriac.transports.backend import (
    CHORD_CLAIM_SECONDS,
    CHORD_DONE_SECONDS,
    ChordClaim,
    ChordPart,
    ResultBackend,
)

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]", frozenset[str]]


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass
class _Chord:
    """One chord's join state: parts by ``(task_id, index)`` as JSON text."""

    size: int | None = None
    extra: int = 0  # members added by Task.add_to_chord
    parts: dict[tuple[str, int], str] = field(default_factory=dict)
    claim: str | None = None  # a claimer's token, or "done"
    claim_expires: float = 0.0
    expires: float | None = None


class _Store:
    """One URL's results: task id -> (JSON text, status, expiry or None); saved groups
    and chord joins beside them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: dict[str, tuple[str, str, float | None]] = {}
        self.groups: dict[str, tuple[str, float | None]] = {}
        self.chords: dict[str, _Chord] = {}
        self.values: dict[str, tuple[bytes, float | None]] = {}  # app.backend.set
        self.waiters: set[_Waiter] = set()

    def chord(self, group_id: str, now: float) -> _Chord:
        chord = self.chords.get(group_id)
        if chord is None or (chord.expires is not None and chord.expires <= now):
            chord = self.chords[group_id] = _Chord()
        return chord

    def join(self, part: ChordPart, ttl: float | None, now: float) -> ChordClaim | None:
        chord = self.chord(part.group_id, now)
        if chord.claim == "done":
            return None
        chord.parts.setdefault((part.task_id, part.index), _part_text(part))
        chord.expires = None if ttl is None else now + ttl
        if chord.size is None:
            chord.size = part.size
        if chord.size is None or len(chord.parts) < chord.size + chord.extra:
            return None
        if chord.claim not in (None, part.task_id) and chord.claim_expires > now:
            return None
        chord.claim, chord.claim_expires = part.task_id, now + CHORD_CLAIM_SECONDS
        ordered = sorted(chord.parts.items(), key=lambda item: item[0][1])
        results = [_part_value(text) for _, text in ordered]
        return ChordClaim(part.group_id, part.task_id, results)

    def get(self, task_id: str, now: float) -> tuple[str, str] | None:
        item = self.results.get(task_id)
        if item is None:
            return None
        text, status, expires = item
        if expires is not None and expires <= now:
            del self.results[task_id]
            return None
        return text, status

    def ready_texts(self, task_ids: frozenset[str], now: float) -> dict[str, str]:
        out: dict[str, str] = {}
        for task_id in task_ids:
            found = self.get(task_id, now)
            if found is not None and found[1] in states.READY_STATES:
                out[task_id] = found[0]
        return out

    def wake(self, task_ids: set[str]) -> None:
        woken = {w for w in self.waiters if not w[2].isdisjoint(task_ids)}
        for loop, fut, _ in woken:
            with contextlib.suppress(RuntimeError):  # a closed loop waits for nothing
                loop.call_soon_threadsafe(_wake, fut)
        self.waiters -= woken


def _part_text(part: ChordPart) -> str:
    return json_dumps([1, part.task_id, part.state, part.result])


def _part_value(text: str) -> tuple[str, str, Any]:
    _, task_id, state, result = json_loads(text)
    return str(task_id), str(state), result


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


def _key(url: str) -> str:
    return url.partition("?")[0].rstrip("/")


def clear_stores(url: str | None = None) -> None:
    """Forget the results of ``url`` (or of every memory backend URL)."""
    with _STORES_LOCK:
        if url is None:
            _STORES.clear()
        else:
            _STORES.pop(_key(url), None)


class MemoryBackend(ResultBackend):
    """In-process result backend; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("memory", "cache+memory")

    def __init__(self, url: str = "memory://", *, options: dict[str, Any] | None = None):
        super().__init__(url, options=options)
        self._store_ref: _Store | None = None

    def _store(self) -> _Store:
        if self._store_ref is None:
            with _STORES_LOCK:
                self._store_ref = _STORES.setdefault(_key(self.url), _Store())
        return self._store_ref

    async def connect(self) -> None:
        self._store()

    async def close(self) -> None:
        self._store_ref = None

    async def store(self, task_id: str, meta: dict[str, Any], ttl: float | None) -> None:
        await self.store_many([(task_id, meta, ttl)])

    async def store_many(self, items: Sequence[tuple[str, dict[str, Any], float | None]]) -> None:
        now = time.time()
        encoded = [
            (task_id, json_dumps(meta), str(meta.get("status")), None if ttl is None else now + ttl)
            for task_id, meta, ttl in items
        ]
        store = self._store()
        with store.lock:
            for task_id, text, status, expires in encoded:
                store.results[task_id] = (text, status, expires)
            store.wake({item[0] for item in encoded})

    async def get(self, task_id: str) -> dict[str, Any] | None:
        store = self._store()
        with store.lock:
            found = store.get(task_id, time.time())
        return None if found is None else dict(json_loads(found[0]))

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        store = self._store()
        now = time.time()
        with store.lock:
            found = {tid: store.get(tid, now) for tid in task_ids}
        return {tid: dict(json_loads(item[0])) for tid, item in found.items() if item is not None}

    async def recent_results(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        store = self._store()
        now = time.time()
        with store.lock:
            texts = [(t, store.get(t, now)) for t in list(store.results)]
        found = [(t, dict(json_loads(item[0]))) for t, item in texts if item is not None]
        found.sort(key=lambda pair: str(pair[1].get("date_done") or ""), reverse=True)
        return found[:limit]

    async def forget(self, task_id: str) -> None:
        store = self._store()
        with store.lock:
            store.results.pop(task_id, None)

    # -- raw key values ----------------------------------------------------------
    async def kv_get(self, key: str) -> bytes | None:
        store = self._store()
        with store.lock:
            item = store.values.get(key)
            if item is not None and item[1] is not None and item[1] <= time.time():
                del store.values[key]
                item = None
        return None if item is None else item[0]

    async def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        store = self._store()
        with store.lock:
            store.values[key] = (bytes(value), None if ttl is None else time.time() + ttl)

    async def kv_delete(self, key: str) -> None:
        store = self._store()
        with store.lock:
            store.values.pop(key, None)

    # -- groups and chords ---------------------------------------------------
    async def save_group(self, group_id: str, meta: dict[str, Any], ttl: float | None) -> None:
        text = json_dumps(meta)
        store = self._store()
        with store.lock:
            store.groups[group_id] = (text, None if ttl is None else time.time() + ttl)

    async def restore_group(self, group_id: str) -> dict[str, Any] | None:
        store = self._store()
        with store.lock:
            item = store.groups.get(group_id)
        if item is None or (item[1] is not None and item[1] <= time.time()):
            return None
        return dict(json_loads(item[0]))

    async def forget_group(self, group_id: str) -> None:
        store = self._store()
        with store.lock:
            store.groups.pop(group_id, None)

    async def chord_start(self, group_id: str, size: int, ttl: float | None) -> None:
        store = self._store()
        now = time.time()
        with store.lock:
            chord = store.chord(group_id, now)
            chord.size = size
            chord.expires = None if ttl is None else now + ttl
            if chord.claim == "done":  # a re-applied frozen chord: a new run
                chord.claim = None

    async def chord_grow(self, group_id: str, count: int) -> None:
        store = self._store()
        with store.lock:
            store.chord(group_id, time.time()).extra += count

    async def chord_join(self, parts: Sequence[ChordPart], ttl: float | None) -> list[ChordClaim]:
        store = self._store()
        now = time.time()
        claims: list[ChordClaim] = []
        with store.lock:
            for part in parts:
                claim = store.join(part, ttl, now)
                if claim is not None:
                    claims.append(claim)
        return claims

    async def chord_done(self, group_id: str, token: str) -> None:
        store = self._store()
        now = time.time()
        with store.lock:
            chord = store.chords.get(group_id)
            if chord is not None and chord.claim == token:
                chord.claim, chord.parts, chord.extra = "done", {}, 0
                chord.expires = now + CHORD_DONE_SECONDS

    async def wait(
        self, task_ids: Sequence[str], timeout: float | None, interval: float = 0.005
    ) -> dict[str, dict[str, Any]]:
        """Wait until one of ``task_ids`` is ready (woken by ``store``, no polling)."""
        store = self._store()
        ids = frozenset(task_ids)
        deadline = None if timeout is None else time.time() + timeout
        loop = asyncio.get_running_loop()
        while True:
            with store.lock:
                texts = store.ready_texts(ids, time.time())
                if not texts:
                    remaining = None if deadline is None else deadline - time.time()
                    if remaining is not None and remaining <= 0:
                        return {}
                    waiter: _Waiter = (loop, loop.create_future(), ids)
                    store.waiters.add(waiter)
            if texts:
                return {task_id: dict(json_loads(text)) for task_id, text in texts.items()}
            handle = None if remaining is None else loop.call_later(remaining, _wake, waiter[1])
            try:
                await waiter[1]
            finally:
                if handle is not None:
                    handle.cancel()
                with store.lock:
                    store.waiters.discard(waiter)


__all__ = ["MemoryBackend", "clear_stores"]
