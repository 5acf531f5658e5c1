"""The thin sync facade over the async core.

A sync caller (``delay()``, ``get()`` from a script, a Django view, a task on a pool
thread) runs the coroutine to completion on an event loop private to its own thread:
no thread hop, so a call costs microseconds more than the I/O it does (measured: ~9 us
against ~110 us for a hop to a shared loop thread). A sync call made from inside a running
event loop cannot block that loop's thread on itself, so it goes to a shared loop in a
daemon thread instead. After a fork the child starts with no loops; it makes new ones
(and so new connections) on first use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celeriac-loop", daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a blocking celeriac call was made from the celeriac loop thread; "
                "use the async API (await) there"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)


_lock = threading.Lock()
_current: LoopThread | None = None


def loop_thread() -> LoopThread:
    """This process's loop thread, created on first use (and anew after a fork)."""
    global _current
    current = _current
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = LoopThread()
        return _current


class _LoopCloser:
    """Held only by a thread's local state: when the thread ends, its loop is closed
    (else it is garbage with its self-pipe open: a ResourceWarning)."""

    __slots__ = ("loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop

    def __del__(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed() and not loop.is_running():
            loop.close()


class _ThreadLoop(threading.local):
    loop: asyncio.AbstractEventLoop | None = None
    pid: int = 0
    closer: _LoopCloser | None = None


_thread_loop = _ThreadLoop()


def thread_loop() -> asyncio.AbstractEventLoop:
    """The calling thread's private event loop (created on first use, anew after fork)."""
    state = _thread_loop
    if state.loop is None or state.pid != os.getpid() or state.loop.is_closed():
        if state.closer is not None and state.pid != os.getpid():
            state.closer.loop = None  # inherited across fork: leave it alone
        state.loop = asyncio.new_event_loop()
        state.pid = os.getpid()
        state.closer = _LoopCloser(state.loop)
    return state.loop


#: loops run by a greenlet, under gevent (the gevent pool's worker loop) -> that greenlet
_greenlet_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
    weakref.WeakKeyDictionary()
)


def run_by_greenlet(loop: asyncio.AbstractEventLoop, owner: Any) -> None:
    """Record that greenlet ``owner`` runs ``loop``: the other greenlets of its thread see
    it as their running loop (asyncio keeps one per thread), so their blocking calls are
    handed to it (see :func:`run_sync`)."""
    _greenlet_loops[loop] = owner


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` to completion for a sync caller and return its result."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        loop = thread_loop()
        if timeout is None:
            return loop.run_until_complete(coro)
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    owner = _greenlet_loops.get(running) if _greenlet_loops else None
    if owner is not None:
        return _run_on_greenlet_loop(running, owner, coro, timeout)
    return loop_thread().run(coro, timeout)


def _run_on_greenlet_loop(
    loop: asyncio.AbstractEventLoop, owner: Any, coro: Coroutine[Any, Any, T], timeout: float | None
) -> T:
    """From a greenlet (a gevent pool task): run ``coro`` on the loop another greenlet of
    this thread runs, waiting cooperatively (the wait yields to the other greenlets). A
    second loop cannot run in this thread while that one does, so this is the one way."""
    if sys.modules["greenlet"].getcurrent() is owner:
        coro.close()
        raise RuntimeError(
            "a blocking celeriac call (delay(), get(), ...) in an async def task on the "
            "gevent pool would stop the worker's event loop; await the async API there "
            "(await task.adelay(), await task.aapply_async(), await result.aget())"
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise


def _after_fork() -> None:
    global _current, _lock
    _current = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
