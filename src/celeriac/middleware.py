"""Middleware: the extension point of the producer and the worker.

A middleware is an object with no-op hooks; override the ones you need and register it
with ``app.add_middleware(obj)``. Hooks run in registration order. Worker hooks run in the
process that executes the task (the prefork child, the thread or the event loop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.protocol import Message
    from celeriac.task import Context, Task
    from celeriac.worker.core import Outcome


class Middleware:
    """Base class; every hook does nothing."""

    # producer side
    def before_publish(self, app: Celeriac, message: Message, queue: str) -> None:
        """Called before a task message is published (may edit its headers)."""

    def after_publish(self, app: Celeriac, message: Message, queue: str) -> None:
        """Called after the broker accepted the message."""

    # worker side
    def worker_start(self, app: Celeriac, hostname: str) -> None:
        """Called when a consumer (a prefork child, or the single consumer) starts."""

    def worker_ready(self, app: Celeriac, hostname: str) -> None:
        """Called when the worker is ready to take tasks."""

    def worker_shutdown(self, app: Celeriac, hostname: str) -> None:
        """Called when a consumer stops."""

    def on_received(self, task: Task[Any, Any], request: Context) -> None:
        """Called when a valid task message is accepted for execution."""

    def before_task(self, task: Task[Any, Any], request: Context) -> None:
        """Called just before the task runs, in the executing thread or loop."""

    def after_task(self, task: Task[Any, Any], request: Context, outcome: Outcome) -> None:
        """Called after the task ran, with its outcome (state, value, exception)."""


__all__ = ["Middleware"]
