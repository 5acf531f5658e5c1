"""The options of ``AsyncResult.get`` / ``ResultSet.get`` beyond the timeout, as Celery
5.7's (measured against its worker on Redis):

* ``disable_sync_subtasks`` (default True): waiting for a result inside a running task
  raises ``RuntimeError`` (Celery's words), since a worker whose tasks wait for other
  tasks can deadlock; ``allow_join_result()`` lifts it for a block. A task run eagerly
  outside a worker may wait, as in Celery (whose check is per worker process).
* ``follow_parents`` (default True, with ``propagate``): a failed parent (``result.parent``,
  ``.parent.parent`` ..., the oldest first) raises its exception, before waiting and
  after every ``interval`` of it.
* ``callback(task_id, value)``: called once with the value when the result is ready and
  not raised; not called for a result already known when ``get`` was called with
  ``propagate=False`` (Celery's cache path).
* ``on_message(meta)``: called with each state of the task seen while waiting (STARTED,
  PROGRESS ..., the final one). Celery's Redis backend pushes every state; celeriac
  polls, every ``interval`` at most 0.1 s, so a state replaced within one poll is not
  seen (docs/coming-from-celery.md).
* ``on_interval()``: called every ``interval`` seconds while the result is not ready.
* ``EXCEPTION_STATES`` / ``PROPAGATE_STATES``: the states whose result is an exception,
  and those re-raised with ``propagate`` (Celery accepts them and uses its defaults).
* ``no_ack``: celeriac never consumes a result to read it; ``no_ack=False`` warns once.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from typing import Any

from celeriac.exceptions import TimeoutError

#: Celery's words, so code matching on them keeps working
E_WOULDBLOCK = (
    "Never call result.get() within a task!\n"
    "See https://docs.celeryq.dev/en/latest/userguide/tasks.html"
    "#avoid-launching-synchronous-subtasks\n"
)

#: None: waiting blocks inside a worker's task; True: allowed; False: denied everywhere
_join_allowed: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "celeriac_join_allowed", default=None
)
_no_ack_warned = False


def task_join_will_block() -> bool:
    """True inside a task a worker runs (outside ``allow_join_result``), and inside
    ``denied_join_result``."""
    from celeriac._parentage import running_request  # noqa: PLC0415

    allowed = _join_allowed.get()
    if allowed is not None:
        return not allowed
    request = running_request()
    return request is not None and not request.is_eager


def assert_will_not_block() -> None:
    if task_join_will_block():
        raise RuntimeError(E_WOULDBLOCK)


@contextlib.contextmanager
def allow_join_result() -> Iterator[None]:
    """Let a task wait for results in this block (Celery's ``allow_join_result``)."""
    token = _join_allowed.set(True)
    try:
        yield
    finally:
        _join_allowed.reset(token)


@contextlib.contextmanager
def denied_join_result() -> Iterator[None]:
    """The opposite: waiting raises even outside a task (Celery's name)."""
    token = _join_allowed.set(False)
    try:
        yield
    finally:
        _join_allowed.reset(token)


def check_no_ack(no_ack: bool) -> None:
    global _no_ack_warned
    if not no_ack and not _no_ack_warned:
        _no_ack_warned = True
        warnings.warn(
            "get(no_ack=False) has no effect on celeriac: results are read, never "
            "consumed, so there is no result message to leave unacknowledged",
            RuntimeWarning,
            stacklevel=3,
        )


class Watch:
    """One wait with ``on_message`` / ``on_interval`` / parents to check: the wait is
    cut into slices, and between slices the callbacks run (in the waiting thread)."""

    def __init__(
        self,
        task_id: str,
        timeout: float | None,
        interval: float,
        on_message: Callable[[dict[str, Any]], Any] | None,
        on_interval: Callable[[], Any] | None,
        check_parents: Callable[[], None] | None,
    ) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.interval = max(float(interval), 0.01)
        self.on_message = on_message
        self.on_interval = on_interval
        self.check_parents = check_parents
        self.last_seen: Any = None
        self.next_tick = time.monotonic() + self.interval

    def slice(self) -> float:
        """How long the next wait may last (0: the deadline has passed)."""
        step = min(self.interval, 0.1) if self.on_message is not None else self.interval
        now = time.monotonic()
        if self.on_interval is not None or self.check_parents is not None:
            step = min(step, max(self.next_tick - now, 0.0))
        if self.deadline is not None:
            step = min(step, self.deadline - now)
        return max(step, 0.0)

    def seen(self, meta: dict[str, Any] | None, ready_states: Collection[str]) -> bool:
        """Report ``meta`` (the task's stored state now) to ``on_message`` if it changed;
        True when it is ready."""
        if meta is None:
            return False
        shown = (meta.get("status"), meta.get("result"), meta.get("date_done"))
        if self.on_message is not None and shown != self.last_seen:
            self.last_seen = shown
            self.on_message(meta)
        return meta.get("status") in ready_states

    def after_slice(self) -> None:
        """Between slices: the interval callbacks when one is due; TimeoutError once the
        deadline has passed."""
        now = time.monotonic()
        if now >= self.next_tick:
            self.next_tick = now + self.interval
            if self.check_parents is not None:
                self.check_parents()
            if self.on_interval is not None:
                self.on_interval()
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TimeoutError(f"task {self.task_id} did not finish within {self.timeout}s")


__all__ = [
    "E_WOULDBLOCK",
    "Watch",
    "allow_join_result",
    "assert_will_not_block",
    "check_no_ack",
    "denied_join_result",
    "task_join_will_block",
]
