"""Sync fast paths on Redis: ``send_task`` publishes, and ``AsyncResult.get`` waits,
on a blocking socket of the calling thread (:mod:`celeriac._resp`) instead of running a
coroutine on the thread's event loop: a sync ``delay()`` costs one ``sendall`` and one
``recv``.

They apply only where they cannot change behaviour: a sync caller with no event loop
running in its thread, the Redis broker (backend) class itself, a URL :mod:`celeriac._resp`
fully handles (not sentinel), and for publishing a result backend that needs no reply
queue (not ``rpc://``). Otherwise :func:`publisher` and :func:`waiter` return None and
the caller takes the general path. Both put in Redis exactly what the async path puts
(the same Lua script and arguments, the same keys), and raise the same errors
(:class:`BrokerError`, :class:`BackendError`, worded as
:func:`celeriac._lua.translated_errors` words them).

Connections are per thread and per process: a forked child makes its own
(:class:`celeriac._resp.Connection` checks the pid), and ``app.close()`` closes the
calling thread's.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from celeriac._resp import (
    NEED_DATA,
    Connection,
    Endpoint,
    ReplyError,
    RespError,
    Script,
    encode_commands,
    parse_endpoint,
)
from celeriac.exceptions import BackendError, BrokerError
from celeriac.protocol import Message
from celeriac.utils.log import mask_url

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.redis import RedisBackend
    from celeriac.brokers.redis import RedisBroker

logger = logging.getLogger("celeriac.backends.redis")

_SCHEMES = ("redis://", "rediss://", "unix://", "redis+socket://")
_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # as the async wait's
_FOREVER = 3600.0  # a wait with no timeout blocks in slices of this


def _redis_url(url: str) -> bool:
    return url.lower().startswith(_SCHEMES)


class _Link:
    """One connection per thread (and per process) to an endpoint."""

    def __init__(self, endpoint: Endpoint, *, resp3: bool = False) -> None:
        self.endpoint = endpoint
        self.resp3 = resp3
        self._local = threading.local()

    def connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = Connection(self.endpoint, resp3=self.resp3)
        return conn

    def close(self) -> None:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()


class Publisher:
    """Publishes as :meth:`RedisBroker.publish` does, on this thread's connection."""

    def __init__(self, broker: RedisBroker, endpoint: Endpoint) -> None:
        from celeriac._lua import script  # noqa: PLC0415 - needs the redis extra

        self.broker = broker
        self.url = broker.sync_target()[0]
        lua = script("publish")
        self._script = Script(lua.text, lua.sha)
        self._link = _Link(endpoint)
        self._declared: set[str] = set()

    def publish(
        self, queue: str, message: Message, priority: int, not_before: float | None
    ) -> None:
        args = self.broker.publish_arguments(queue, message, priority, not_before)
        before = () if queue in self._declared else self.broker.declare_commands(queue)
        try:
            self._script.run(self._link.connection(), args, before)
        except RespError as exc:
            raise BrokerError(f"Redis broker {mask_url(self.url)}: {exc.kind}: {exc}") from exc
        self._declared.add(queue)

    def close(self) -> None:
        self._link.close()


class Waiter:
    """Waits for one task's result as :meth:`RedisBackend.wait` does: SUBSCRIBE to its
    channel and GET its key in one write (RESP3: a subscribed connection may run GET, and
    Redis runs the GET once the subscription is active, so a result stored just before
    is seen), then block on the socket for the message. The channel is unsubscribed in
    the next wait's write."""

    def __init__(self, backend: RedisBackend, endpoint: Endpoint) -> None:
        from celeriac.backends.redis import _ready_meta  # noqa: PLC0415

        self._ready_meta = _ready_meta
        self.url = backend.sync_target()[0]
        self.prefix = backend.prefix
        self._link = _Link(endpoint, resp3=True)
        self._lingering = threading.local()  # channels to unsubscribe next time

    def wait(self, task_id: str, timeout: float | None) -> dict[str, Any] | None:
        """The ready meta of ``task_id``, or None when ``timeout`` passed first."""
        key = (self.prefix + task_id).encode("utf-8")
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        failures = 0
        while True:
            try:
                return self._wait(key, deadline, subscribe=timeout is None or timeout > 0)
            except RespError as exc:
                failures += 1
                pause = _RETRY_DELAYS[min(failures, len(_RETRY_DELAYS)) - 1]
                if time.monotonic() + pause >= deadline:
                    raise BackendError(
                        f"Redis result backend {mask_url(self.url)}: {exc.kind}: {exc}"
                    ) from exc
                if failures == 1:
                    logger.warning("Waiting for results: %s: %s; retrying", exc.kind, exc)
                time.sleep(pause)

    def _wait(self, key: bytes, deadline: float, *, subscribe: bool) -> dict[str, Any] | None:
        conn = self._link.connection()
        if not subscribe:  # a zero timeout: one look
            try:
                conn.send(encode_commands([("GET", key)]))
                return self._read_until_get(conn, key)
            except BaseException:
                conn.close()
                raise
        old: list[bytes] = getattr(self._lingering, "channels", None) or []
        commands: list[tuple[Any, ...]] = [("UNSUBSCRIBE", *old)] if old else []
        commands += [("SUBSCRIBE", key), ("GET", key)]
        self._lingering.channels = []
        try:
            conn.send(encode_commands(commands))
            meta = self._read_until_get(conn, key)
            self._lingering.channels = [key]
            while meta is None:
                slice_end = min(deadline, time.monotonic() + _FOREVER)
                reply = conn.read(slice_end)
                if reply is NEED_DATA:
                    if slice_end >= deadline:
                        return None
                    continue
                meta = self._message(reply, key)
            return meta
        except BaseException:
            conn.close()  # unread replies, or a broken connection
            raise

    def _read_until_get(self, conn: Connection, key: bytes) -> dict[str, Any] | None:
        """Read up to the GET's reply (pushes are lists; a GET reply never is)."""
        found = None
        while True:
            reply = conn.read()
            if isinstance(reply, list):
                found = found or self._message(reply, key)
                continue
            return found or self._ready_meta(_value(reply))

    def _message(self, push: Any, key: bytes) -> dict[str, Any] | None:
        if isinstance(push, list) and len(push) == 3 and push[:2] == [b"message", key]:
            return self._ready_meta(push[2])
        return None

    def close(self) -> None:
        self._lingering.channels = []
        self._link.close()


def _value(reply: Any) -> Any:
    return None if isinstance(reply, ReplyError) else reply


class _AppState:
    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.publisher: Publisher | None = None
        self.waiter: Waiter | None = None
        self.lock = threading.Lock()
        self.ready: set[str] = set()


_states: weakref.WeakKeyDictionary[Celeriac, _AppState] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def _state(app: Celeriac) -> _AppState:
    conf = app.conf
    key = (  # settings changed since the last call: start again
        conf["broker_url"],
        conf["result_backend"],
        conf["broker_transport_options"],
        conf["result_backend_transport_options"],
    )
    state = _states.get(app)
    if state is None or state.key != key:
        with _states_lock:
            state = _states.get(app)
            if state is None or state.key != key:
                if state is not None:
                    _close_state(state)
                state = _states[app] = _AppState(copy.deepcopy(key))
    return state


def publisher(app: Celeriac) -> Publisher | None:
    """The sync publisher for ``app`` in this thread, or None: take the general path."""
    if asyncio._get_running_loop() is not None:
        return None
    state = _state(app)
    if "publisher" not in state.ready:
        with state.lock:
            if "publisher" not in state.ready:
                state.publisher = _make_publisher(app)
                state.ready.add("publisher")
    return state.publisher


def waiter(app: Celeriac) -> Waiter | None:
    """The sync result waiter for ``app`` in this thread, or None: the general path."""
    if asyncio._get_running_loop() is not None:
        return None
    state = _state(app)
    if "waiter" not in state.ready:
        with state.lock:
            if "waiter" not in state.ready:
                state.waiter = _make_waiter(app)
                state.ready.add("waiter")
    return state.waiter


def _make_publisher(app: Celeriac) -> Publisher | None:
    url = app.broker_url
    if not _redis_url(url):
        return None
    try:
        from celeriac.backends import backend_class  # noqa: PLC0415
        from celeriac.brokers import broker_class  # noqa: PLC0415
        from celeriac.brokers.redis import RedisBroker  # noqa: PLC0415

        if broker_class(url) is not RedisBroker or backend_class(app.backend_url).needs_reply_to:
            return None
        broker = RedisBroker(url, options=app.conf["broker_transport_options"])
        endpoint = parse_endpoint(*broker.sync_target())
    except Exception:  # a bad URL or a missing extra: the general path reports it
        return None
    return None if endpoint is None else Publisher(broker, endpoint)


def _make_waiter(app: Celeriac) -> Waiter | None:
    url = app.backend_url
    if not _redis_url(url):
        return None
    try:
        from celeriac.backends import backend_class  # noqa: PLC0415
        from celeriac.backends.redis import RedisBackend  # noqa: PLC0415

        if backend_class(url) is not RedisBackend:
            return None
        backend = RedisBackend(url, options=app.conf["result_backend_transport_options"])
        endpoint = parse_endpoint(*backend.sync_target())
    except Exception:
        return None
    return None if endpoint is None else Waiter(backend, endpoint)


def _close_state(state: _AppState) -> None:
    for part in (state.publisher, state.waiter):
        if part is not None:
            part.close()


def _after_fork() -> None:
    """A lock held by another thread at the fork stays held in the child: make new ones.
    (Connections need nothing here: each checks its pid before use.)"""
    global _states_lock
    _states_lock = threading.Lock()
    for state in list(_states.values()):
        state.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def close(app: Celeriac) -> None:
    """Close the calling thread's sync connections of ``app`` (they reopen on use)."""
    state = _states.get(app)
    if state is not None:
        _close_state(state)


__all__ = ["Publisher", "Waiter", "close", "publisher", "waiter"]
