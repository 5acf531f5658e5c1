"""Middleware: the extension point of the producer and the worker.

A middleware is an object with no-op hooks; override the ones you need and register it
with ``app.add_middleware(obj)``. Hooks run in registration order. Worker hooks run in the
process that executes the task (the prefork child, the thread or the event loop).

The worker's own features are middleware too, installed by each consumer before the app's
(in this order: retries, result storage, rate limits, time limits, terminate-on-revoke; see
``celeriac.worker.builtins``), then ``app.middleware``: Celery's signals, canvas, and the
user's, in registration order. The worker calls only the hooks a middleware overrides, so
a hook left alone costs nothing per task.

Three worker hooks act on the consumer's loop rather than on one task:

* :meth:`Middleware.gate` may hold a job before it is handed to the pool (rate limits);
* :meth:`Middleware.settle` is awaited for each batch of outcomes, after the batch is
  final and before its follow-up messages are published and its deliveries acked (result
  storage, chord joins);
* :meth:`Middleware.tick` is awaited every few milliseconds with the jobs running then
  (time limits, terminating revoked tasks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from celeriac import signals, states
from celeriac.exceptions import NotRegistered, Reject
from celeriac.protocol import Message

if TYPE_CHECKING:
    from celeriac._outcome import Outcome
    from celeriac.app import Celeriac
    from celeriac.task import Context, Task
    from celeriac.transports.backend import ResultBackend
    from celeriac.transports.broker import Broker
    from celeriac.worker.core import Job


#: the consumer whose loop is running (set by ``Consumer.run``): the ``sender`` of the
#: signals Celery sends from its consumer (``task_received``, ``task_unknown`` ...)
consumer_sender: ContextVar[Any] = ContextVar("consumer_sender")


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

    def on_revoked(
        self,
        task: Task[Any, Any] | None,
        request: Context | None,
        *,
        terminated: bool = False,
        signum: int | None = None,
        expired: bool = False,
    ) -> None:
        """Called when a task is not run (or is stopped) because it was revoked or expired."""

    def on_unknown(self, name: str, task_id: str, message: Message) -> None:
        """Called when a message names a task that is not registered."""

    def on_rejected(self, message: Message | None, exc: BaseException | None) -> None:
        """Called when a message is dead-lettered unread: undecodable, of a refused
        content type, or not a task message (``message`` None when unreadable)."""

    def on_internal_error(self, task: Task[Any, Any], request: Context, exc: BaseException) -> None:
        """Called when the worker itself failed around a task (a middleware hook, the
        task's ``on_failure``, the result store raised ``exc``); the task is recorded as
        FAILURE with ``exc``."""

    def on_exception(self, job: Job, exc: BaseException, runtime: float) -> BaseException | Outcome:
        """Called in the executing thread when the task raised ``exc`` (``runtime``
        seconds after it started). Return ``exc`` to go on, another exception to go on
        with instead, or an :class:`Outcome` that settles the job (the retry middleware
        turns ``autoretry_for`` errors into ``Retry``, and ``Retry`` into a RETRY
        outcome); the ``after_task`` hooks see the final outcome either way."""
        return exc

    # worker side, on the consumer's event loop
    def gate(self, job: Job) -> Callable[[], Awaitable[None]] | None:
        """Called before an accepted job is handed to the pool. Return None to let it
        pass, or an async function of no arguments: the consumer awaits it (the job
        waits, the loop does not) before asking the next gate and running the job. A job
        still waiting at shutdown goes back to the broker."""
        return None

    async def settle(
        self, app: Celeriac, outcomes: list[Outcome], broker: Broker, backend: ResultBackend
    ) -> None:
        """Awaited for each batch of outcomes the consumer settles (final ones, and
        STARTED reports with action PROGRESS), in middleware order, so after the built-in
        result store, and before the batch's follow-up messages are published and its
        deliveries acked. It runs again after a connection error: make it idempotent."""

    async def tick(self, running: list[Job]) -> None:
        """Awaited about every 50 ms while jobs run, with the jobs running now."""


def overriding(middleware: Iterable[Middleware], hook: str) -> list[Callable[..., Any]]:
    """The bound ``hook`` methods of the middleware that override it, in order (the
    others are no-ops, not worth a call per task)."""
    base = getattr(Middleware, hook)
    return [getattr(mw, hook) for mw in middleware if getattr(type(mw), hook, base) is not base]


class SignalsMiddleware(Middleware):
    """Fires Celery's task and publish signals (``celeriac.signals``) with Celery's
    argument names; the worker's life-cycle signals are sent by the worker itself."""

    def before_publish(self, app: Celeriac, message: Message, queue: str) -> None:
        if signals.before_task_publish.receivers:
            signals.before_task_publish.send(
                sender=message.task_name,
                body=_body(message),
                exchange="",
                routing_key=queue,
                headers=message.headers,
                properties=message.properties,
                declare=[],
                retry_policy=None,
            )

    def after_publish(self, app: Celeriac, message: Message, queue: str) -> None:
        if signals.after_task_publish.receivers:
            signals.after_task_publish.send(
                sender=message.task_name,
                body=_body(message),
                exchange="",
                routing_key=queue,
                headers=message.headers,
                properties=message.properties,  # celeriac's own: Celery passes none
            )

    def on_received(self, task: Task[Any, Any], request: Context) -> None:
        if signals.task_received.receivers:
            signals.task_received.send(sender=consumer_sender.get(None), request=request)

    def before_task(self, task: Task[Any, Any], request: Context) -> None:
        if signals.task_prerun.receivers:
            signals.task_prerun.send(
                sender=task,
                task_id=request.id,
                task=task,
                args=request.args,
                kwargs=request.kwargs,
            )

    def after_task(self, task: Task[Any, Any], request: Context, outcome: Outcome) -> None:
        if not _AFTER_TASK_SIGNALS.has_receivers():
            return  # the common case: nobody listens, build nothing
        state = outcome.state
        job = outcome.job
        if job is not None and job.abandoned and outcome is not job.stop_outcome:
            # the late outcome of a job the worker stopped is dropped: after a hard time
            # limit the stop outcome sent the signals; after a terminate, only
            # ``task_postrun`` (then ``task_revoked``), as Celery's child sends
            stop = job.stop_outcome
            if stop is None or stop.state != states.REVOKED:
                return
            outcome = stop
            state = None
        if state == states.SUCCESS:
            signals.task_success.send(sender=task, result=outcome.value, runtime=outcome.runtime)
        elif state == states.RETRY:
            signals.task_retry.send(
                sender=task, request=request, reason=outcome.exc, einfo=_einfo(outcome)
            )
        elif state == states.FAILURE:
            signals.task_failure.send(
                sender=task,
                task_id=request.id,
                exception=outcome.exc,
                args=request.args,
                kwargs=request.kwargs,
                traceback=outcome.exc.__traceback__ if outcome.exc is not None else None,
                einfo=_einfo(outcome),
            )
        if isinstance(outcome.exc, Reject):
            state = states.REJECTED  # stored as FAILURE (requeue=False), as Celery
        retval = outcome.value if state == states.SUCCESS else outcome.exc
        signals.task_postrun.send(
            sender=task,
            task_id=request.id,
            task=task,
            args=request.args,
            kwargs=request.kwargs,
            retval=retval,
            state=state,
        )

    def on_revoked(
        self,
        task: Task[Any, Any] | None,
        request: Context | None,
        *,
        terminated: bool = False,
        signum: int | None = None,
        expired: bool = False,
    ) -> None:
        signals.task_revoked.send(
            sender=task, request=request, terminated=terminated, signum=signum, expired=expired
        )

    def on_unknown(self, name: str, task_id: str, message: Message) -> None:
        signals.task_unknown.send(
            sender=consumer_sender.get(None),
            name=name,
            id=task_id,
            message=message,
            exc=NotRegistered(name),
        )

    def on_rejected(self, message: Message | None, exc: BaseException | None) -> None:
        signals.task_rejected.send(sender=consumer_sender.get(None), message=message, exc=exc)

    def on_internal_error(self, task: Task[Any, Any], request: Context, exc: BaseException) -> None:
        signals.task_internal_error.send(
            sender=task,
            task_id=request.id,
            args=request.args,
            kwargs=request.kwargs,
            request=request,
            exception=exc,
            traceback=exc.__traceback__,
            einfo=signals.ExceptionInfo(exc),
        )


def _einfo(outcome: Outcome) -> signals.ExceptionInfo | None:
    exc = outcome.exc
    return None if exc is None else signals.ExceptionInfo(exc, outcome.traceback)


class _SignalGroup:
    def __init__(self, *group: signals.Signal) -> None:
        self.group = group

    def has_receivers(self) -> bool:
        return any(signal.receivers for signal in self.group)


_AFTER_TASK_SIGNALS = _SignalGroup(
    signals.task_success,
    signals.task_retry,
    signals.task_failure,
    signals.task_postrun,
)


def _body(message: Message) -> Any:
    from celeriac.protocol import deserialize  # noqa: PLC0415

    try:
        return deserialize(message.body, message.content_type, frozenset({message.content_type}))
    except Exception:
        return message.body


__all__ = ["Middleware", "SignalsMiddleware", "overriding"]
