"""Celery's signals, with Celery's names and argument names.

Receivers connect with ``@task_success.connect`` (or ``.connect(fn, sender=...)``) and are
called with keyword arguments; ``sender`` filters by the sending object or, for task
signals, by task name. The worker fires them through one middleware
(:class:`celeriac.middleware.SignalsMiddleware`), not from scattered call sites; the
worker's own life-cycle signals (``celeryd_init`` ... ``worker_shutdown``) and the logging
ones are sent by the worker's start-up and shutdown code (``celeriac.worker``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("celeriac.signals")

Receiver = Callable[..., Any]


class Signal:
    """A named hook receivers connect to."""

    def __init__(self, name: str, providing_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.providing_args = providing_args
        self._lock = threading.Lock()
        self._receivers: list[tuple[Any, Any, bool]] = []  # (ref, sender, weak)

    def connect(
        self, receiver: Receiver | None = None, *, sender: Any = None, weak: bool = False
    ) -> Any:
        """Connect ``receiver`` (also usable as ``@signal.connect`` or
        ``@signal.connect(sender=...)``)."""
        if receiver is None:

            def decorate(fn: Receiver) -> Receiver:
                self.connect(fn, sender=sender, weak=weak)
                return fn

            return decorate
        ref: Any = (
            weakref.WeakMethod(receiver)
            if weak and hasattr(receiver, "__self__")
            else (weakref.ref(receiver) if weak else receiver)
        )
        with self._lock:
            self._receivers.append((ref, sender, weak))
        return receiver

    def disconnect(self, receiver: Receiver, sender: Any = None) -> bool:
        with self._lock:
            before = len(self._receivers)
            self._receivers = [
                entry
                for entry in self._receivers
                if not (self._resolve(entry) is receiver and entry[1] == sender)
            ]
            return len(self._receivers) != before

    @staticmethod
    def _resolve(entry: tuple[Any, Any, bool]) -> Receiver | None:
        ref, _, weak = entry
        return ref() if weak else ref  # type: ignore[no-any-return]

    @property
    def receivers(self) -> list[Receiver]:
        if not self._receivers:
            return []
        return [r for r in (self._resolve(e) for e in self._receivers) if r is not None]

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every matching receiver; an exception in one is logged, not raised."""
        if not self._receivers:
            return []
        replies: list[tuple[Receiver, Any]] = []
        for entry in list(self._receivers):
            receiver = self._resolve(entry)
            wanted = entry[1]
            if receiver is None or (wanted is not None and not _matches(wanted, sender)):
                continue
            try:
                replies.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as exc:
                logger.exception("Signal handler %r for %s raised: %r", receiver, self.name, exc)
                replies.append((receiver, exc))
        return replies

    send_robust = send

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


def _matches(wanted: Any, sender: Any) -> bool:
    if wanted is sender or wanted == sender:
        return True
    name = getattr(sender, "name", None)
    return isinstance(wanted, str) and wanted == name


# task signals
before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
task_internal_error = Signal("task_internal_error")
# worker signals, in the order a worker sends them at start-up (``import_modules`` first)
celeryd_init = Signal("celeryd_init")
celeryd_after_setup = Signal("celeryd_after_setup")
worker_init = Signal("worker_init")
worker_before_create_process = Signal("worker_before_create_process")
worker_ready = Signal("worker_ready")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
worker_shutting_down = Signal("worker_shutting_down")
worker_shutdown = Signal("worker_shutdown")
heartbeat_sent = Signal("heartbeat_sent")
# app signals
import_modules = Signal("import_modules")
setup_logging = Signal("setup_logging")
after_setup_logger = Signal("after_setup_logger")
after_setup_task_logger = Signal("after_setup_task_logger")
# beat signals
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")
# Celery's eventlet pool's: exported so that code connecting to them imports, never sent
# (celeriac has no eventlet pool; ``-P eventlet`` is refused)
eventlet_pool_started = Signal("eventlet_pool_started")
eventlet_pool_preshutdown = Signal("eventlet_pool_preshutdown")
eventlet_pool_postshutdown = Signal("eventlet_pool_postshutdown")
eventlet_pool_apply = Signal("eventlet_pool_apply")


class ExceptionInfo:
    """The ``einfo`` of ``task_failure``, ``task_retry`` and ``task_internal_error``, as
    Celery's (billiard's): ``type``, ``exception``, ``tb`` and the formatted ``traceback``;
    ``str()`` is the formatted traceback."""

    def __init__(self, exc: BaseException, traceback: str | None = None) -> None:
        self.type = type(exc)
        self.exception = exc
        self.tb = exc.__traceback__
        if traceback is None:
            import traceback as tb_module  # noqa: PLC0415

            traceback = "".join(tb_module.format_exception(self.type, exc, self.tb))
        self.traceback = traceback
        self.internal = False

    @property
    def exc_info(self) -> tuple[type[BaseException], BaseException, Any]:
        return self.type, self.exception, self.tb

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"


def send_raising(signal: Signal, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
    """``signal.send``, then raise the first exception a receiver raised (as Celery does
    for ``import_modules`` and ``setup_logging``: a broken hook there must stop the start)."""
    replies = signal.send(sender=sender, **named)
    for _, reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


__all__ = [
    "ExceptionInfo",
    "Signal",
    "after_setup_logger",
    "after_setup_task_logger",
    "after_task_publish",
    "beat_embedded_init",
    "beat_init",
    "before_task_publish",
    "celeryd_after_setup",
    "celeryd_init",
    "eventlet_pool_apply",
    "eventlet_pool_postshutdown",
    "eventlet_pool_preshutdown",
    "eventlet_pool_started",
    "heartbeat_sent",
    "import_modules",
    "setup_logging",
    "task_failure",
    "task_internal_error",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
    "worker_before_create_process",
    "worker_init",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
    "worker_shutting_down",
]
