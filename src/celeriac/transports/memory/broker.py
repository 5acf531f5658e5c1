"""In-process broker (``memory://`` or ``memory://name``) for a user's own tests.

State lives in a process-global store per URL, so a producer and an in-process worker
share queues even when they run on different event loops or threads. The store is
guarded by a lock; a waiting ``fetch`` or ``join`` is woken by the writer through
``loop.call_soon_threadsafe`` (no polling), and also when the earliest delayed message or
lease comes due. Messages are kept as envelope bytes, so tests go through serialisation.

Semantics match every other broker: leases with a visibility timeout (at-least-once),
delayed messages, priorities (higher first, FIFO within one), dead letters.
:meth:`MemoryBroker.join` is the drain primitive: it waits until a queue is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from celeriac.exceptions import TimeoutError
from celeriac.protocol import Message, decode_envelope, encode_envelope
from celeriac.transports.broker import Broker, DeadLetter, Delivery, Revocation, bucket_take
from celeriac.transports.capabilities import (
    DeadLetterRemoval,
    DeadLetterStore,
    EventChannel,
    LeaseRecovery,
    RateLimitStore,
    RemoteControl,
    RevocationStore,
    ScheduledSend,
    ScheduleStore,
)
from celeriac.transports.memory.fanout import MemoryFanout

_READY, _DELAYED, _LEASED = 0, 1, 2
_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


@dataclass(eq=False, slots=True)
class _Entry:
    seq: int
    queue: str
    priority: int
    raw: bytes
    state: int = _READY
    gen: int = 0  # bumped on every heap push; older heap items are stale
    lease_expires: float = 0.0
    owner: str | None = None
    token: int = 0
    delivery_count: int = 0


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Store:
    """One URL's queues. Every method is called with ``lock`` held."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[int, _Entry] = {}
        self.ready: dict[str, list[tuple[int, int, int, _Entry]]] = {}
        self.delayed: list[tuple[float, int, int, _Entry]] = []
        self.leases: list[tuple[float, int, int, _Entry]] = []
        self.dead: list[DeadLetter] = []
        self.revoked: dict[str, tuple[float, Revocation]] = {}
        self.buckets: dict[str, tuple[float | None, float]] = {}
        self.schedule_runs: dict[str, int] = {}
        self.schedule_entries: dict[str, bytes] = {}
        self.waiters: set[_Waiter] = set()
        self._seq = itertools.count(1)
        # rpc:// replies (celeriac.transports.memory.rpc): reply queue -> JSON metas
        self.replies: dict[str, deque[str]] = {}
        self.reply_waiters: set[_Waiter] = set()

    def add(self, queue: str, raw: bytes, priority: int, not_before: float | None) -> None:
        entry = _Entry(next(self._seq), queue, priority, raw)
        self.entries[entry.seq] = entry
        self.place(entry, not_before, time.time())

    def place(self, entry: _Entry, not_before: float | None, now: float) -> None:
        """Make ``entry`` ready, or delayed until ``not_before``."""
        entry.gen += 1
        entry.owner = None
        if not_before is not None and not_before > now:
            entry.state = _DELAYED
            heapq.heappush(self.delayed, (not_before, entry.seq, entry.gen, entry))
        else:
            entry.state = _READY
            heap = self.ready.setdefault(entry.queue, [])
            heapq.heappush(heap, (-entry.priority, entry.seq, entry.gen, entry))

    def promote(self, now: float) -> None:
        """Due delayed messages and expired leases become ready."""
        while self.delayed and self.delayed[0][0] <= now:
            _, _, gen, entry = heapq.heappop(self.delayed)
            if entry.gen == gen and entry.state == _DELAYED and entry.seq in self.entries:
                self.place(entry, None, now)
        while self.leases and self.leases[0][0] <= now:
            _, _, token, entry = heapq.heappop(self.leases)
            if (
                entry.state == _LEASED
                and entry.token == token
                and entry.lease_expires <= now
                and entry.seq in self.entries
            ):
                self.place(entry, None, now)

    def lease(self, queue: str, limit: int, expires: float, owner: str | None) -> list[_Entry]:
        heap = self.ready.get(queue)
        out: list[_Entry] = []
        while heap and len(out) < limit:
            _, _, gen, entry = heapq.heappop(heap)
            if entry.gen != gen or entry.state != _READY or entry.seq not in self.entries:
                continue
            entry.state = _LEASED
            entry.lease_expires = expires
            entry.owner = owner
            entry.token += 1
            entry.delivery_count += 1
            heapq.heappush(self.leases, (expires, entry.seq, entry.token, entry))
            out.append(entry)
        return out

    def next_due(self) -> float | None:
        times = [heap[0][0] for heap in (self.delayed, self.leases) if heap]
        return min(times) if times else None

    def find(self, tag: str) -> _Entry | None:
        seq, _, token = tag.partition(":")
        entry = self.entries.get(int(seq))
        return entry if entry is not None and entry.token == int(token) else None

    def remove(self, entry: _Entry) -> None:
        self.entries.pop(entry.seq, None)

    def waiting(self, queue: str) -> list[_Entry]:
        return [e for e in self.entries.values() if e.queue == queue and e.state != _LEASED]

    def add_waiter(self) -> _Waiter:
        loop = asyncio.get_running_loop()
        waiter: _Waiter = (loop, loop.create_future())
        self.waiters.add(waiter)
        return waiter

    def wake(self) -> None:
        for loop, fut in self.waiters:
            with contextlib.suppress(RuntimeError):  # a closed loop waits for nothing
                loop.call_soon_threadsafe(_wake, fut)
        self.waiters.clear()


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


def _key(url: str) -> str:
    return url.partition("?")[0].rstrip("/")


def _store_for(url: str) -> _Store:
    with _STORES_LOCK:
        store = _STORES.get(_key(url))
        if store is None:
            store = _STORES[_key(url)] = _Store()
        return store


def clear_stores(url: str | None = None) -> None:
    """Forget the messages of ``url`` (or of every memory broker URL)."""
    with _STORES_LOCK:
        if url is None:
            _STORES.clear()
        else:
            _STORES.pop(_key(url), None)


async def _sleep_on(waiter: _Waiter, store: _Store, seconds: float) -> None:
    loop, fut = waiter
    handle = loop.call_later(max(seconds, 0.0), _wake, fut)
    try:
        await fut
    finally:
        handle.cancel()
        with store.lock:
            store.waiters.discard(waiter)


def _delivery(queue: str, tag: str, raw: bytes, count: int) -> Delivery:
    try:
        return Delivery(queue, tag, raw, decode_envelope(raw), count)
    except Exception as exc:  # bad bytes must reach the worker as a dead-letter case
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return Delivery(queue, tag, raw, None, count, error=str(reason))


class MemoryBroker(
    MemoryFanout,
    Broker,
    LeaseRecovery,
    RevocationStore,
    RateLimitStore,
    DeadLetterRemoval,
    DeadLetterStore,
    RemoteControl,
    EventChannel,
    ScheduleStore,
):
    """In-process broker; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("memory",)

    def __init__(self, url: str = "memory://", *, options: dict[str, Any] | None = None):
        super().__init__(url, options=options)
        self._store_ref: _Store | None = None
        self._turn = 0

    def _store(self) -> _Store:
        if self._store_ref is None:
            self._store_ref = _store_for(self.url)
        return self._store_ref

    async def connect(self) -> None:
        self._store()

    async def close(self) -> None:
        self._store_ref = None

    # -- producing --------------------------------------------------------
    async def publish(
        self, queue: str, message: Message, *, priority: int = 0, not_before: float | None = None
    ) -> None:
        self.publish_raw(queue, encode_envelope(message, queue=queue), priority, not_before)

    async def publish_many(self, items: Sequence[tuple[str, Message, int, float | None]]) -> None:
        encoded = [(q, encode_envelope(m, queue=q), p, nb) for q, m, p, nb in items]
        store = self._store()
        with store.lock:
            for queue, raw, priority, not_before in encoded:
                store.add(queue, raw, priority, not_before)
            store.wake()

    def publish_raw(
        self, queue: str, raw: bytes, priority: int = 0, not_before: float | None = None
    ) -> None:
        """Store ``raw`` bytes as they are (tests use it to inject undecodable messages)."""
        store = self._store()
        with store.lock:
            store.add(queue, bytes(raw), priority, not_before)
            store.wake()

    # -- beat's store (ScheduleStore) ------------------------------------------
    async def schedule_runs(self, names: Sequence[str]) -> dict[str, int]:
        store = self._store()
        with store.lock:
            return {n: store.schedule_runs[n] for n in names if n in store.schedule_runs}

    async def schedule_claim(
        self, name: str, last: int | None, slot: int, send: ScheduledSend | None = None
    ) -> bool:
        raw = None if send is None else encode_envelope(send[1], queue=send[0])
        store = self._store()
        with store.lock:
            if store.schedule_runs.get(name) != last or (last is not None and slot <= last):
                return False
            store.schedule_runs[name] = slot
            if send is not None and raw is not None:
                store.add(send[0], raw, send[2], send[3])
                store.wake()
        return True

    async def schedule_entries(self) -> dict[str, bytes]:
        store = self._store()
        with store.lock:
            return dict(store.schedule_entries)

    async def schedule_set_entry(self, name: str, data: bytes | None) -> None:
        store = self._store()
        with store.lock:
            if data is None:
                store.schedule_entries.pop(name, None)
                store.schedule_runs.pop(name, None)
            else:
                store.schedule_entries[name] = data

    # -- consuming --------------------------------------------------------
    async def fetch(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        if max_count <= 0 or not queues:
            return []
        store = self._store()
        deadline = time.time() + timeout
        owner = self.consumer_id or None
        while True:
            with store.lock:
                now = time.time()
                store.promote(now)
                leased: list[_Entry] = []
                for queue in self._rotation(queues):
                    if len(leased) >= max_count:
                        break
                    expires = now + self.lease_seconds
                    leased += store.lease(queue, max_count - len(leased), expires, owner)
                found = [(e.queue, f"{e.seq}:{e.token}", e.raw, e.delivery_count) for e in leased]
                if not found:
                    if now >= deadline:
                        return []
                    due = store.next_due()
                    pause = deadline - now if due is None else min(deadline, due) - now
                    waiter = store.add_waiter()
            if found:
                return [_delivery(*item) for item in found]
            await _sleep_on(waiter, store, pause)

    def _rotation(self, queues: Sequence[str]) -> list[str]:
        """Queues in turn order, so no queue starves the others."""
        self._turn += 1
        k = self._turn % len(queues)
        return [*queues[k:], *queues[:k]]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        store = self._store()
        with store.lock:
            for delivery in deliveries:
                entry = store.find(delivery.tag)
                if entry is not None:
                    store.remove(entry)
            store.wake()

    async def requeue(
        self,
        deliveries: Sequence[Delivery],
        *,
        not_before: float | None = None,
        count_delivery: bool = False,
    ) -> None:
        store = self._store()
        with store.lock:
            now = time.time()
            for delivery in deliveries:
                entry = store.find(delivery.tag)
                if entry is None:
                    continue
                if not count_delivery:
                    entry.delivery_count = max(entry.delivery_count - 1, 0)
                store.place(entry, not_before, now)
            store.wake()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        store = self._store()
        with store.lock:
            entry = store.find(delivery.tag)
            if entry is not None:
                store.remove(entry)
                store.dead.append(DeadLetter(entry.queue, entry.raw, reason, time.time()))
            store.wake()

    async def extend(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        store = self._store()
        with store.lock:
            expires = time.time() + seconds
            for delivery in deliveries:
                entry = store.find(delivery.tag)
                if entry is not None and entry.state == _LEASED:
                    entry.lease_expires = expires
                    heapq.heappush(store.leases, (expires, entry.seq, entry.token, entry))

    async def recover(self, consumer_id: str, keep: Sequence[Delivery] = ()) -> int:
        if not consumer_id:
            return 0
        kept = {int(d.tag.partition(":")[0]) for d in keep}
        store = self._store()
        with store.lock:
            now = time.time()
            mine = [
                e
                for e in store.entries.values()
                if e.state == _LEASED and e.owner == consumer_id and e.seq not in kept
            ]
            for entry in mine:
                store.place(entry, None, now)
            store.wake()
        return len(mine)

    # -- control state ----------------------------------------------------

    async def revoke(
        self,
        task_ids: Sequence[str],
        ttl: float,
        *,
        terminate: bool = False,
        signal: str | None = None,
    ) -> None:
        store = self._store()
        expires = time.time() + ttl
        with store.lock:
            for task_id in task_ids:
                store.revoked[task_id] = (expires, Revocation(terminate, signal))

    async def revoked(self, task_ids: Sequence[str]) -> dict[str, Revocation]:
        store = self._store()
        now = time.time()
        with store.lock:
            found = {t: store.revoked.get(t) for t in task_ids}
        return {t: entry[1] for t, entry in found.items() if entry and entry[0] > now}

    async def revoked_ids(self, limit: int) -> list[str]:
        store = self._store()
        now = time.time()
        with store.lock:
            live = [(e[0], t) for t, e in store.revoked.items() if e[0] > now]
        return [t for _, t in sorted(live, reverse=True)[:limit]]

    async def take_token(self, key: str, rate: float, capacity: float) -> float:
        store = self._store()
        now = time.time()
        with store.lock:
            tokens, updated = store.buckets.get(key, (None, now))
            left, wait = bucket_take(tokens, updated, now, rate, capacity)
            store.buckets[key] = (left, now)
        return wait

    # -- administration ---------------------------------------------------
    async def purge(self, queue: str) -> int:
        store = self._store()
        with store.lock:
            store.promote(time.time())
            doomed = store.waiting(queue)
            for entry in doomed:
                store.remove(entry)
            store.ready.pop(queue, None)
            store.wake()
        return len(doomed)

    async def size(self, queue: str) -> int:
        store = self._store()
        with store.lock:
            store.promote(time.time())
            return len(store.waiting(queue))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        store = self._store()
        with store.lock:
            return list(reversed(store.dead[-limit:])) if limit > 0 else []

    async def remove_dead_letter(self, letter: DeadLetter) -> bool:
        store = self._store()
        with store.lock:
            if letter in store.dead:
                store.dead.remove(letter)
                return True
        return False

    async def join(self, queue: str, timeout: float | None = None) -> None:
        """Wait until ``queue`` has no ready, delayed or leased message (the drain
        primitive for tests). Raises :class:`celeriac.exceptions.TimeoutError`."""
        store = self._store()
        deadline = None if timeout is None else time.time() + timeout
        while True:
            with store.lock:
                left = sum(1 for e in store.entries.values() if e.queue == queue)
                if not left:
                    return
                now = time.time()
                if deadline is not None and now >= deadline:
                    raise TimeoutError(
                        f"queue {queue!r} still holds {left} message(s) after {timeout}s"
                    )
                waiter = store.add_waiter()
            pause = 3600.0 if deadline is None else deadline - now
            await _sleep_on(waiter, store, pause)


__all__ = ["MemoryBroker", "clear_stores"]
