"""Redis result backend with Celery's keys (the default when the broker is Redis).

Same URL forms as the Redis broker. A result is the JSON meta in
``celery-task-meta-<id>``, written with ``SET ... PX ttl`` and ``PUBLISH`` on a channel
of the same name in one MULTI; ``store_many`` puts a whole batch in one MULTI, and
``get_many`` is one MGET. So a Celery client reads our results and we read a Celery
worker's. ``global_keyprefix`` in ``result_backend_transport_options`` prefixes the keys
and channels, as in Celery.

``wait`` is push-based: each backend instance keeps one pub/sub connection, read by one
dispatcher task, shared by every wait. A wait sends SUBSCRIBE for its ids' channels and
GET for their keys in one write on that connection (it speaks RESP3, where a subscribed
connection may run GET): Redis runs each GET after the subscription is active, so one
round trip closes the race with a result stored just before. Then the wait sleeps until
the dispatcher hands it a ready meta. If the pub/sub connection drops, waits subscribe
again on a new one and GET again, so no result is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

from celeriac.exceptions import BackendError, ImproperlyConfigured
from celeriac.protocol import json_dumps, json_loads, ready_meta
from celeriac.transports.backend import (
    CHORD_CLAIM_SECONDS,
    CHORD_DONE_SECONDS,
    ChordClaim,
    ChordPart,
    ResultBackend,
)
from celeriac.transports.capabilities import ScheduledSend, ScheduleStore
from celeriac.transports.redis import schedule as _schedule
from celeriac.transports.redis.layout import exec_error
from celeriac.transports.redis.resp import Endpoint, ReplyError, RespError, Sentinels
from celeriac.transports.redis.resp_async import AsyncConnection
from celeriac.transports.redis.scripts import (
    connection,
    key_prefix,
    script,
    split_url,
    target,
    translated_errors,
)
from celeriac.utils.log import mask_url

logger = logging.getLogger("celeriac.transports.redis.backend")

_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
_Ready = dict[str, dict[str, Any]]


class _Listener:
    """One pub/sub connection (RESP3: pushes go to ``_push``). A wait sends SUBSCRIBE for
    its channels and GET for their keys in one write on this connection, so each GET runs
    once the subscription is active; results published later wake the waits registered
    for their task id."""

    def __init__(self, where: Endpoint | Sentinels, prefix: bytes) -> None:
        self._where = where
        self._prefix = prefix
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self._refs: Counter[bytes] = Counter()
        self._subscribed: set[bytes] = set()  # on the current connection
        self._waiters: dict[str, set[asyncio.Future[_Ready | None]]] = {}

    def add(
        self, task_ids: Sequence[str], channels: Sequence[bytes]
    ) -> asyncio.Future[_Ready | None]:
        self._refs.update(channels)
        return self.rearm(task_ids, None)

    def rearm(
        self, task_ids: Sequence[str], old: asyncio.Future[_Ready | None] | None
    ) -> asyncio.Future[_Ready | None]:
        if old is not None:
            self.discard(task_ids, old)
        waiter: asyncio.Future[_Ready | None] = asyncio.get_running_loop().create_future()
        for task_id in task_ids:
            self._waiters.setdefault(task_id, set()).add(waiter)
        return waiter

    def discard(self, task_ids: Sequence[str], waiter: asyncio.Future[_Ready | None]) -> None:
        for task_id in task_ids:
            group = self._waiters.get(task_id)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._waiters[task_id]

    async def release(self, channels: Sequence[bytes]) -> None:
        async with self._lock:
            gone = []
            for channel in channels:
                self._refs[channel] -= 1
                if self._refs[channel] <= 0:
                    del self._refs[channel]
                    if channel in self._subscribed:
                        self._subscribed.discard(channel)
                        gone.append(channel)
            conn = self._conn
            if gone and conn is not None and conn.connected:
                with contextlib.suppress(RespError, OSError):
                    await conn.pipeline([("UNSUBSCRIBE", *gone)], replies=0)

    async def check(self, channels: Sequence[bytes]) -> list[Any] | None:
        """Subscribe to ``channels`` where needed and GET their keys behind that, in one
        round trip; None if the connection was lost meanwhile."""
        async with self._lock:
            conn = self._conn
            if conn is None:
                conn = self._conn = connection(self._where, push=self._push, on_lost=self._lost)
            ready = await conn.ready()  # connected (a new connection has no subscriptions)
            missing = [c for c in channels if c not in self._subscribed]
            commands: list[tuple[Any, ...]] = [("SUBSCRIBE", *missing)] if missing else []
            commands += [("GET", channel) for channel in channels]
            self._subscribed.update(missing)
            # calls write in the order they are started: the lock may go
            call = asyncio.ensure_future(conn.call(ready, commands, replies=len(channels)))
        # asyncio.wait, not a plain await: a cancelled wait leaves the call alone
        await asyncio.wait([call])
        if call.exception() is not None:
            return None  # lost: subscribe again on the next connection, GET again
        return [None if isinstance(v, ReplyError) else v for v in call.result()]

    def _push(self, push: list[Any]) -> None:
        if len(push) == 3 and push[0] == b"message":
            self._dispatch(push[1], push[2])

    def _dispatch(self, channel: bytes, data: Any) -> None:
        task_id = channel[len(self._prefix) :].decode("utf-8", "replace")
        waiters = self._waiters.get(task_id)
        if waiters:
            meta = ready_meta(data)
            if meta is not None:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result({task_id: meta})

    def _lost(self, exc: BaseException | None = None) -> None:
        if exc is not None:
            logger.warning("Result backend pub/sub connection lost: %s", exc)
        self._subscribed.clear()
        for group in self._waiters.values():
            for waiter in group:
                if not waiter.done():
                    waiter.set_result(None)  # resynchronise: subscribe again, GET again

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._lost()


class RedisBackend(ResultBackend, ScheduleStore):
    """Redis result backend; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "unix", "redis+socket", "sentinel")

    def __init__(
        self, url: str = "redis://localhost:6379/0", *, options: dict[str, Any] | None = None
    ) -> None:
        self._url, url_options = split_url(url)
        super().__init__(url, options={**url_options, **(options or {})})
        self.global_prefix = key_prefix(self.options)
        self.prefix = self.global_prefix + "celery-task-meta-"
        self.group_prefix = self.global_prefix + "celery-taskset-meta-"
        self._where: Endpoint | Sentinels = target(self._url, self.options)
        self._listener: _Listener | None = None
        self._fast = connection(self._where)  # connected on first use

    def key(self, task_id: str) -> str:
        return self.prefix + task_id

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return translated_errors("Redis result backend", self._url, BackendError)

    async def _command(self, *args: Any) -> Any:
        with self._errors():
            return await self._fast.execute(*args)

    async def _transaction(self, commands: Sequence[tuple[Any, ...]]) -> None:
        with self._errors():
            error = exec_error(await self._fast.pipeline([("MULTI",), *commands, ("EXEC",)]))
            if error is not None:
                raise error

    async def connect(self) -> None:
        await self._command("PING")

    async def close(self) -> None:
        self._fast.close()  # reconnects if used again
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()

    async def store(self, task_id: str, meta: dict[str, Any], ttl: float | None) -> None:
        await self.store_many([(task_id, meta, ttl)])

    async def store_many(self, items: Sequence[tuple[str, dict[str, Any], float | None]]) -> None:
        """One transaction in one write: SET and PUBLISH per result."""
        if not items:
            return
        commands: list[tuple[Any, ...]] = []
        for task_id, meta, ttl in items:
            key, text = self.key(task_id), json_dumps(meta)
            if ttl is None:
                commands.append(("SET", key, text))
            elif float(ttl).is_integer():
                commands.append(("SET", key, text, "EX", max(1, int(ttl))))
            else:
                commands.append(("SET", key, text, "PX", max(1, round(ttl * 1000))))
            commands.append(("PUBLISH", key, text))
        await self._transaction(commands)

    async def get(self, task_id: str) -> dict[str, Any] | None:
        raw = await self._command("GET", self.key(task_id))
        return None if raw is None else dict(json_loads(raw))

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not task_ids:
            return {}
        values = await self._command("MGET", *(self.key(t) for t in task_ids))
        return {
            t: dict(json_loads(v)) for t, v in zip(task_ids, values, strict=True) if v is not None
        }

    async def _ready(self, task_ids: Sequence[str]) -> _Ready:
        values = await self._command("MGET", *(self.key(t) for t in task_ids))
        ready = {t: ready_meta(v) for t, v in zip(task_ids, values, strict=True)}
        return {t: meta for t, meta in ready.items() if meta is not None}

    async def recent_results(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """SCAN the result keys (at most ``limit`` x 10 of them: a bounded look), newest
        ``date_done`` first."""
        keys: list[bytes] = []
        cursor = b"0"
        while len(keys) < limit * 10:
            cursor, batch = await self._command(
                "SCAN", cursor, "MATCH", self.prefix + "*", "COUNT", 1000
            )
            keys.extend(batch)
            if cursor in (b"0", "0", 0):
                break
        found: list[tuple[str, dict[str, Any]]] = []
        start = len(self.prefix)
        for at in range(0, len(keys), 500):
            chunk = keys[at : at + 500]
            values = await self._command("MGET", *chunk)
            for key, value in zip(chunk, values, strict=True):
                if value is not None:
                    name = key.decode() if isinstance(key, bytes) else str(key)
                    found.append((name[start:], dict(json_loads(value))))
        found.sort(key=lambda pair: str(pair[1].get("date_done") or ""), reverse=True)
        return found[:limit]

    async def forget(self, task_id: str) -> None:
        await self._command("DEL", self.key(task_id))

    async def wait(
        self, task_ids: Sequence[str], timeout: float | None, interval: float = 0.005
    ) -> dict[str, dict[str, Any]]:
        """Wait until one of ``task_ids`` is ready (pub/sub; see the module docstring)."""
        ids = list(dict.fromkeys(task_ids))
        if not ids or (timeout is not None and timeout <= 0):
            return await self._ready(ids) if ids else {}
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        if self._listener is None:
            self._listener = _Listener(self._where, self.prefix.encode())
        listener = self._listener
        channels = [self.key(t).encode() for t in ids]
        waiter = listener.add(ids, channels)
        failures = 0
        try:
            while True:
                try:
                    values = await self._until(listener.check(channels), deadline)
                    if values is not None:
                        ready = {t: ready_meta(v) for t, v in zip(ids, values, strict=True)}
                        if any(ready.values()):
                            return {t: meta for t, meta in ready.items() if meta is not None}
                        result = await self._until(asyncio.shield(waiter), deadline)
                        if result is not None:
                            return dict(result)
                        waiter = listener.rearm(ids, waiter)  # connection lost: resync
                    failures = 0
                except asyncio.TimeoutError:
                    return {}
                except (BackendError, RespError, OSError) as exc:
                    failures += 1
                    pause = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS)) - 1]
                    if time.monotonic() + pause >= deadline:
                        raise _as_backend_error(exc, self._url) from exc
                    if failures == 1:
                        logger.warning("Waiting for results: %s; retrying", exc)
                    await asyncio.sleep(pause)
        finally:
            listener.discard(ids, waiter)
            await listener.release(channels)

    # -- groups and chords (Celery's keys; see chord_join.lua) ---------------
    async def save_group(self, group_id: str, meta: dict[str, Any], ttl: float | None) -> None:
        key, text = self.group_prefix + group_id, json_dumps(meta)
        ex = _whole_seconds(ttl)
        await self._transaction(
            [("SET", key, text, *(() if ex is None else ("EX", ex))), ("PUBLISH", key, text)]
        )

    async def restore_group(self, group_id: str) -> dict[str, Any] | None:
        raw = await self._command("GET", self.group_prefix + group_id)
        return None if raw is None else dict(json_loads(raw))

    async def forget_group(self, group_id: str) -> None:
        await self._command("DEL", self.group_prefix + group_id)

    async def chord_start(self, group_id: str, size: int, ttl: float | None) -> None:
        # as Celery: a re-applied frozen chord reuses its group id but is a new run
        ex, key = _whole_seconds(ttl), f"{self.group_prefix}{group_id}"
        await self._transaction(
            [("DEL", f"{key}.c"), ("SET", f"{key}.s", size, *(() if ex is None else ("EX", ex)))]
        )

    async def chord_grow(self, group_id: str, count: int) -> None:
        await self._command("INCRBY", f"{self.group_prefix}{group_id}.t", count)

    async def chord_join(self, parts: Sequence[ChordPart], ttl: float | None) -> list[ChordClaim]:
        if not parts:
            return []
        args: list[Any] = []
        for part in parts:
            member = json_dumps([1, part.task_id, part.state, part.result])
            size = "" if part.size is None else part.size
            args += [part.group_id, part.task_id, part.index, size, member]
        with self._errors():
            replies = await script("chord_join")(
                self._fast,
                self.global_prefix,
                _whole_seconds(ttl) or 0,
                CHORD_CLAIM_SECONDS,
                *args,
            )
        claims = []
        for reply in replies:
            gid, token, *members = (_text(item) for item in reply)
            results = []
            for member in members:
                _, task_id, state, result = json_loads(member)
                results.append((str(task_id), str(state), result))
            claims.append(ChordClaim(gid, token, results))
        return claims

    async def chord_done(self, group_id: str, token: str) -> None:
        with self._errors():
            await script("chord_done")(
                self._fast, self.global_prefix, group_id, token, CHORD_DONE_SECONDS
            )

    # -- beat's claims, for a broker that cannot hold them (ScheduleStore) ---------
    async def schedule_runs(self, names: Sequence[str]) -> dict[str, int]:
        with self._errors():
            return await _schedule.runs(self._fast, self.global_prefix, names)

    async def schedule_claim(
        self, name: str, last: int | None, slot: int, send: ScheduledSend | None = None
    ) -> bool:
        if send is not None:
            raise NotImplementedError("a result backend claims; the broker publishes")
        with self._errors():
            return await _schedule.claim(self._fast, self.global_prefix, name, last, slot, [])

    async def schedule_entries(self) -> dict[str, bytes]:
        with self._errors():
            return await _schedule.entries(self._fast, self.global_prefix)

    async def schedule_set_entry(self, name: str, data: bytes | None) -> None:
        with self._errors():
            await _schedule.set_entry(self._fast, self.global_prefix, name, data)

    # -- raw key values ----------------------------------------------------------
    # As Celery's Redis backend, raw keys are the caller's: ``global_keyprefix`` is not
    # applied to them (so each reads what the other wrote).
    async def kv_get(self, key: str) -> bytes | None:
        raw = await self._command("GET", key)
        return None if raw is None else (raw if isinstance(raw, bytes) else str(raw).encode())

    async def kv_set(self, key: str, value: bytes, ttl: float | None) -> None:
        expiry = () if ttl is None else ("PX", max(1, round(ttl * 1000)))
        await self._command("SET", key, value, *expiry)

    async def kv_delete(self, key: str) -> None:
        await self._command("DEL", key)

    def client(self) -> Any:
        """A redis-py client of this server (``pip install redis``), as Celery's
        ``backend.client``; keys are not prefixed by ``global_keyprefix``."""
        try:
            import redis  # noqa: PLC0415 - optional: only for backend.client
        except ImportError:
            raise ImproperlyConfigured(
                "app.backend.client needs the redis package: pip install redis"
            ) from None
        if isinstance(self._where, Sentinels):
            raise ImproperlyConfigured("app.backend.client is not offered through Sentinel")
        return redis.Redis.from_url(self._url)

    @staticmethod
    async def _until(awaitable: Any, deadline: float) -> Any:
        """Await ``awaitable`` until ``deadline`` (monotonic); raises TimeoutError."""
        if deadline == math.inf:
            return await awaitable
        return await asyncio.wait_for(awaitable, max(deadline - time.monotonic(), 0))

    def sync_target(self) -> tuple[str, dict[str, Any]]:
        """The URL (celeriac's options taken out) and the options to connect with, for
        the sync result waiter (``celeriac.transports.redis.sync``)."""
        return self._url, self.options


def _whole_seconds(ttl: float | None) -> int | None:
    return None if ttl is None else max(1, math.ceil(ttl))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _as_backend_error(exc: BaseException, url: str) -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    kind = exc.kind if isinstance(exc, RespError) else type(exc).__name__
    return BackendError(f"Redis result backend {mask_url(url)}: {kind}: {exc}")


__all__ = ["RedisBackend"]
