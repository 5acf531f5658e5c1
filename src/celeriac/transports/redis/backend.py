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
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any, ClassVar

import redis
import redis.asyncio
from redis.asyncio.connection import AbstractConnection

from celeriac.exceptions import BackendError
from celeriac.protocol import json_dumps, json_loads, ready_meta
from celeriac.transports.backend import (
    CHORD_CLAIM_SECONDS,
    CHORD_DONE_SECONDS,
    ChordClaim,
    ChordPart,
    ResultBackend,
)
from celeriac.transports.redis.layout import exec_error
from celeriac.transports.redis.scripts import (
    close_client,
    fast_connection,
    key_prefix,
    make_client,
    script,
    split_url,
    translated_errors,
)
from celeriac.utils.log import mask_url

logger = logging.getLogger("celeriac.transports.redis.backend")

_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
_Ready = dict[str, dict[str, Any]]


_LOST = object()  # a reply that will never come: the connection was lost


class _Listener:
    """One pub/sub connection (RESP3) and the task that reads it. A wait sends SUBSCRIBE
    for its channels and GET for their keys in one write on this connection, so each GET
    runs once the subscription is active; results published later wake the waits
    registered for their task id."""

    def __init__(self, client: redis.asyncio.Redis, prefix: bytes) -> None:
        self._client = client
        self._prefix = prefix
        self._conn: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._refs: Counter[bytes] = Counter()
        self._subscribed: set[bytes] = set()  # on the current connection
        self._replies: deque[asyncio.Future[Any]] = deque()  # one per GET sent, in order
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
            if gone and self._conn is not None:
                with contextlib.suppress(redis.RedisError, OSError):
                    await self._conn.send_command("UNSUBSCRIBE", *gone, check_health=False)

    async def check(self, channels: Sequence[bytes]) -> list[Any] | None:
        """Subscribe to ``channels`` where needed and GET their keys behind that, in one
        round trip; None if the connection was lost meanwhile."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            conn = await self._connection()
            missing = [c for c in channels if c not in self._subscribed]
            commands: list[tuple[Any, ...]] = [("SUBSCRIBE", *missing)] if missing else []
            commands += [("GET", channel) for channel in channels]
            replies = [loop.create_future() for _ in channels]
            self._subscribed.update(missing)
            self._replies.extend(replies)
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        # asyncio.wait, not gather: a cancelled wait must leave the reader's futures alone
        await asyncio.wait(replies)
        values = [f.result() for f in replies]
        return None if any(v is _LOST for v in values) else values

    async def _connection(self) -> AbstractConnection:
        if self._conn is None:
            pool = self._client.connection_pool
            # RESP3 whatever the URL asks for: it lets a subscribed connection run GET
            conn: AbstractConnection = pool.connection_class(
                **{**pool.connection_kwargs, "protocol": 3}
            )
            await conn.connect()  # type: ignore[no-untyped-call]
            self._conn = conn
            self._reader = asyncio.get_running_loop().create_task(self._read(conn))
        return self._conn

    async def _read(self, conn: AbstractConnection) -> None:
        try:
            while True:
                try:
                    reply = await conn.read_response(timeout=math.inf, push_request=True)
                except redis.ResponseError as exc:  # e.g. GET on a key of another type
                    reply = exc
                if isinstance(reply, list):  # a push: message, (un)subscribe confirmation
                    if len(reply) == 3 and reply[0] == b"message":
                        self._dispatch(reply[1], reply[2])
                elif self._replies:
                    future = self._replies.popleft()
                    if not future.done():
                        future.set_result(None if isinstance(reply, Exception) else reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._conn is conn:
                logger.warning("Result backend pub/sub connection lost: %s", exc)
                self._lost()
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    def _dispatch(self, channel: bytes, data: Any) -> None:
        task_id = channel[len(self._prefix) :].decode("utf-8", "replace")
        waiters = self._waiters.get(task_id)
        if waiters:
            meta = ready_meta(data)
            if meta is not None:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result({task_id: meta})

    def _lost(self) -> None:
        self._conn = None
        self._subscribed.clear()
        while self._replies:
            future = self._replies.popleft()
            if not future.done():
                future.set_result(_LOST)
        for group in self._waiters.values():
            for waiter in group:
                if not waiter.done():
                    waiter.set_result(None)  # resynchronise: subscribe again, GET again

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        conn = self._conn
        self._lost()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)


class RedisBackend(ResultBackend):
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
        self._client: redis.asyncio.Redis | None = None
        self._listener: _Listener | None = None
        self._fast = fast_connection(self._url, self.options)  # the worker's stores

    def key(self, task_id: str) -> str:
        return self.prefix + task_id

    def _redis(self) -> redis.asyncio.Redis:
        if self._client is None:
            self._client = make_client(self._url, self.options)
        return self._client

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return translated_errors("Redis result backend", self._url, BackendError, self._client)

    async def connect(self) -> None:
        with self._errors():
            await self._redis().ping()

    async def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        client, self._client = self._client, None
        if client is not None:
            await close_client(client)

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
        with self._errors():
            if self._fast is None:  # redis-py (sentinel)
                async with self._redis().pipeline(transaction=True) as pipe:
                    for command in commands:
                        pipe.execute_command(*command)
                    await pipe.execute()
                return
            error = exec_error(await self._fast.pipeline([("MULTI",), *commands, ("EXEC",)]))
            if error is not None:
                raise error

    async def get(self, task_id: str) -> dict[str, Any] | None:
        with self._errors():
            raw = await self._redis().get(self.key(task_id))
        return None if raw is None else dict(json_loads(raw))

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not task_ids:
            return {}
        with self._errors():
            values = await self._redis().mget([self.key(t) for t in task_ids])
        return {
            t: dict(json_loads(v)) for t, v in zip(task_ids, values, strict=True) if v is not None
        }

    async def _ready(self, task_ids: Sequence[str]) -> _Ready:
        with self._errors():
            values = await self._redis().mget([self.key(t) for t in task_ids])
        ready = {t: ready_meta(v) for t, v in zip(task_ids, values, strict=True)}
        return {t: meta for t, meta in ready.items() if meta is not None}

    async def forget(self, task_id: str) -> None:
        with self._errors():
            await self._redis().delete(self.key(task_id))

    async def wait(
        self, task_ids: Sequence[str], timeout: float | None, interval: float = 0.005
    ) -> dict[str, dict[str, Any]]:
        """Wait until one of ``task_ids`` is ready (pub/sub; see the module docstring)."""
        ids = list(dict.fromkeys(task_ids))
        if not ids or (timeout is not None and timeout <= 0):
            return await self._ready(ids) if ids else {}
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        if self._listener is None:
            self._listener = _Listener(self._redis(), self.prefix.encode())
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
                except (BackendError, redis.RedisError, OSError) as exc:
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
        with self._errors():
            async with self._redis().pipeline(transaction=True) as pipe:
                pipe.set(key, text, ex=_whole_seconds(ttl))
                pipe.publish(key, text)
                await pipe.execute()

    async def restore_group(self, group_id: str) -> dict[str, Any] | None:
        with self._errors():
            raw = await self._redis().get(self.group_prefix + group_id)
        return None if raw is None else dict(json_loads(raw))

    async def forget_group(self, group_id: str) -> None:
        with self._errors():
            await self._redis().delete(self.group_prefix + group_id)

    async def chord_start(self, group_id: str, size: int, ttl: float | None) -> None:
        with self._errors():
            await self._redis().set(
                f"{self.group_prefix}{group_id}.s", size, ex=_whole_seconds(ttl)
            )

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
                self._redis(), self.global_prefix, _whole_seconds(ttl) or 0,
                CHORD_CLAIM_SECONDS, *args,
            )  # fmt: skip
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
                self._redis(), self.global_prefix, group_id, token, CHORD_DONE_SECONDS
            )

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
    return BackendError(f"Redis result backend {mask_url(url)}: {type(exc).__name__}: {exc}")


__all__ = ["RedisBackend"]
