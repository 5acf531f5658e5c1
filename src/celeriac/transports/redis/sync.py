"""Sync fast paths on Redis: ``send_task`` publishes, and ``AsyncResult.get`` waits,
on a blocking socket of the calling thread (:mod:`.resp_blocking`) instead of running a
coroutine on the thread's event loop: a sync ``delay()`` costs one ``sendall`` and one
``recv``.

They apply only where they cannot change behaviour: a sync caller with no event loop
running in its thread, the Redis broker (backend) class itself, a URL naming one server
(not sentinel), and for publishing a result backend that needs no reply
queue (not ``rpc://``). Otherwise :func:`publisher` and :func:`waiter` return None and
the caller takes the general path. Both put in Redis exactly what the async path puts
(the same Lua script and arguments, the same keys), and raise the same errors
(:class:`BrokerError`, :class:`BackendError`, worded as
:func:`celeriac.transports.redis.scripts.translated_errors` words them).

Connections are per thread and per process: a forked child makes its own
(:class:`celeriac.transports.redis.resp_blocking.Connection` checks the pid), and
``app.close()`` closes the calling thread's.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import math
import os
import select
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import BackendError, BrokerError
from celeriac.protocol import Message, ready_meta
from celeriac.transports import BACKENDS, BROKERS, class_path
from celeriac.transports.redis.layout import (
    declare_commands,
    eta_in_queue,
    exec_error,
    immediate_commands,
    key_prefix,
    publish_group,
    script_source,
    split_url,
)
from celeriac.transports.redis.resp import (
    NEED_DATA,
    Endpoint,
    ReplyError,
    RespError,
    encode_commands,
    parse_endpoint,
)
from celeriac.transports.redis.resp_blocking import Connection, Script
from celeriac.utils.log import mask_url

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger("celeriac.transports.redis.backend")

_SCHEMES = ("redis://", "rediss://", "unix://", "redis+socket://")
_RETRY_DELAYS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # the first at once: a killed
# connection (CLIENT KILL, a restarted server found idle) is usually back at once
_FOREVER = 3600.0  # a wait with no timeout blocks in slices of this


def _redis_url(url: str) -> bool:
    return url.lower().startswith(_SCHEMES)


#: Where the schemes' classes live (``celeriac.transports.BROKERS``/``BACKENDS``):
#: the fast paths apply to these classes only, and are set up without importing them
#: (a short script that only sends tasks never needs the asyncio client).
_BROKER_CLASS = "celeriac.transports.redis.broker:RedisBroker"
_BACKEND_CLASS = "celeriac.transports.redis.backend:RedisBackend"
_NUMBERS = (
    "visibility_timeout",
    "polling_interval",
    "foreign_visibility_timeout",
    "socket_timeout",
    "socket_connect_timeout",
)


def _class_path(url: str, kind: str) -> str | None:
    return class_path(url, BROKERS if kind == "broker" else BACKENDS)


@dataclass(frozen=True)
class _Target:
    url: str  # celeriac's own options taken out, as the async clients' URL
    options: dict[str, Any]
    endpoint: Endpoint
    prefix: str


def _target(url: str, transport_options: dict[str, Any] | None) -> _Target | None:
    """Where a URL with its transport options leads, read as the Redis broker and backend
    read them; None where the fast path does not apply or the general path would fail
    (it then reports the problem)."""
    stripped, own = split_url(url)
    options = {**own, **(transport_options or {})}
    if options.get("priority_order", "higher_first") not in ("higher_first", "lower_first"):
        return None
    try:
        for key in _NUMBERS:
            if options.get(key) is not None:
                float(options[key])
        endpoint = parse_endpoint(stripped, options)
    except (TypeError, ValueError):
        return None
    if endpoint is None:
        return None
    return _Target(stripped, options, endpoint, key_prefix(options))


def _script(name: str) -> Script:
    """``lua/<name>.lua`` with ``common.lua`` prepended, as the async scripts run it."""
    text = script_source(name)
    return Script(text, hashlib.sha1(text.encode("utf-8")).hexdigest())


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
    """Publishes as :meth:`RedisBroker.publish` does, on this thread's connection: a
    message due now as :func:`immediate_commands` (packed once per queue and bucket), a
    delayed one with ``publish.lua``, and Celery's binding on first use of a queue (as
    :meth:`RedisBroker.declare`)."""

    def __init__(self, target: _Target) -> None:
        self.url = target.url
        self.prefix = target.prefix
        self._eta_in_queue = eta_in_queue(target.options)
        self._script = _script("publish")
        self._link = _Link(target.endpoint)
        self._declared: set[str] = set()
        self._frames: dict[tuple[str, str], tuple[bytes, bytes, int]] = {}

    def arguments(
        self, queue: str, message: Message, priority: int = 0, not_before: float | None = None
    ) -> list[Any]:
        """The script's arguments, as :meth:`RedisBroker.publish_many` passes them."""
        group = publish_group(queue, message, priority, not_before, eta_visible=self._eta_in_queue)
        return [self.prefix, *group]

    def publish(
        self, queue: str, message: Message, priority: int, not_before: float | None
    ) -> None:
        args = self.arguments(queue, message, priority, not_before)
        before = () if queue in self._declared else declare_commands(self.prefix, queue)
        try:
            if args[3] != "":  # delayed: the script compares with the server's clock
                self._script.run(self._link.connection(), args, before)
            else:
                head, tail, count = self._frame(queue, args[2])
                raw = args[4]
                data = b"".join((head, b"$%d\r\n" % len(raw), raw, b"\r\n", tail))
                if before:
                    data, count = encode_commands(before) + data, count + len(before)
                error = exec_error(self._link.connection().pipeline_packed(data, count))
                if error is not None:
                    raise error
        except RespError as exc:
            raise BrokerError(f"Redis broker {mask_url(self.url)}: {exc.kind}: {exc}") from exc
        self._declared.add(queue)

    def _frame(self, queue: str, digit: str) -> tuple[bytes, bytes, int]:
        """:func:`immediate_commands` for one message to ``queue``'s bucket ``digit``,
        packed once: the bytes before and after the envelope, and the command count."""
        frame = self._frames.get((queue, digit))
        if frame is None:
            commands = immediate_commands(self.prefix, [queue, digit, "", _HOLE])
            assert commands is not None
            head, _, tail = encode_commands(commands).partition(_HOLE_PACKED)
            frame = self._frames[(queue, digit)] = (head, tail, len(commands))
        return frame

    def close(self) -> None:
        self._link.close()


_HOLE = b"\x00celeriac: the envelope goes here\x00"
_HOLE_PACKED = b"$%d\r\n%s\r\n" % (len(_HOLE), _HOLE)


class Waiter:
    """Waits for one task's result as :meth:`RedisBackend.wait` does: SUBSCRIBE to its
    channel and GET its key in one write (RESP3: a subscribed connection may run GET, and
    Redis runs the GET once the subscription is active, so a result stored just before
    is seen), then block on the socket for the message. The channel is unsubscribed in
    the next wait's write."""

    def __init__(self, target: _Target) -> None:
        self.url = target.url
        self.prefix = target.prefix + "celery-task-meta-"
        self._ready_meta = ready_meta
        self._link = _Link(target.endpoint, resp3=True)
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
        self.version: int | None = None  # ``app.conf.version`` when ``key`` was checked
        self.publisher: Publisher | None = None
        self.waiter: Waiter | None = None
        self.lock = threading.Lock()
        self.ready: set[str] = set()


_states: weakref.WeakKeyDictionary[Celeriac, _AppState] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


#: The settings the fast paths depend on: when one is assigned a different value, they
#: are set up again (as in Celery, a change made inside a dict setting is not seen).
_KEY_SETTINGS = (
    "broker_url",
    "result_backend",
    "broker_transport_options",
    "result_backend_transport_options",
    "broker_use_ssl",
    "redis_backend_use_ssl",
)


def _state(app: Celeriac) -> _AppState:
    state = _states.get(app)
    version = app.conf.version
    if state is not None and state.version == version:
        return state  # no setting assigned since the key was checked
    key = tuple(_setting(app, name) for name in _KEY_SETTINGS)
    if state is None or state.key != key:
        with _states_lock:
            state = _states.get(app)
            if state is None or state.key != key:
                if state is not None:
                    _close_state(state)
                state = _states[app] = _AppState(copy.deepcopy(key))
    state.version = version
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


def _plain_sockets() -> bool:
    """False under gevent's or eventlet's monkey patching: their sockets and poll behave
    otherwise (a kernel receive timeout is ignored, ``select.poll`` may be gone), so the
    general path serves there."""
    return hasattr(select, "poll") and socket.socket.__module__ == "socket"


def _make_publisher(app: Celeriac) -> Publisher | None:
    if not _plain_sockets():
        return None
    try:
        url = app.broker_url
        if _class_path(url, "broker") != _BROKER_CLASS:
            return None
        options = _options(app, "broker")
        if _setting(app, "result_backend"):
            results = _class_path(app.backend_url, "backend")
        else:  # a Redis broker holds the results: the Redis backend, on its server
            results = _BACKEND_CLASS
        if results is None:  # an unknown scheme: the general path reports it
            return None
        if results != _BACKEND_CLASS:
            from celeriac.transports import backend_class  # noqa: PLC0415

            if backend_class(app.backend_url).needs_reply_to:  # rpc://
                return None
    except Exception:  # a bad setting or a missing extra: the general path reports it
        return None
    target = _target(url, options)
    return None if target is None else Publisher(target)


def _make_waiter(app: Celeriac) -> Waiter | None:
    if not _plain_sockets():
        return None
    try:
        url = app.backend_url
        if _class_path(url, "backend") != _BACKEND_CLASS:
            return None
        options = _options(app, "backend")
    except Exception:
        return None
    target = _target(url, options)
    return None if target is None else Waiter(target)


def _options(app: Celeriac, part: str) -> dict[str, Any]:
    """The transport options the app gives its broker (backend): with those of its TLS
    setting where the app has them."""
    method = getattr(app, f"{part}_options", None)
    if method is not None:
        return dict(method())
    name = "broker_transport_options" if part == "broker" else "result_backend_transport_options"
    return dict(app.conf[name] or {})


def _setting(app: Celeriac, name: str) -> Any:
    try:
        return app.conf[name]
    except Exception:  # a setting this version does not have
        return None


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
