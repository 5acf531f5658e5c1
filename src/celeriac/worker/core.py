"""The worker's heart, free of I/O: delivery -> decision, job -> outcome.

Every pool (solo, threads, asyncio, prefork child) wraps this same core. ``accept``
decides what to do with a delivery (run it, dead-letter it, defer it, drop it as
expired); ``execute``/``execute_async`` run one job and describe what must follow
(result to store, messages to publish, ack or requeue). The consumer performs the I/O.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
import traceback as tb
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.brokers.base import Delivery
from celeriac.exceptions import (
    ContentDisallowed,
    Ignore,
    MessageError,
    NotRegistered,
    Reject,
    WorkerLostError,
)
from celeriac.protocol import (
    Message,
    TaskCall,
    decode_task,
    encode_exception,
    result_meta,
    safe_repr,
    serialize,
)
from celeriac.task import Context, Task, _current_request

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger("celeriac.worker")

#: An ETA closer than this is run now instead of going back to the delayed store.
ETA_TOLERANCE = 0.05


class Action(enum.Enum):
    RUN = "run"
    ACK = "ack"  # done with it: result (if any) stored first
    REQUEUE = "requeue"  # back to the queue, optionally at a time
    DEAD_LETTER = "dead_letter"


@dataclass(eq=False)
class Job:
    delivery: Delivery
    call: TaskCall
    task: Task[Any, Any]
    request: Context
    acks_late: bool
    started: bool = False


@dataclass(eq=False)
class Outcome:
    """What the consumer must do for one delivery, in order: store, then ack/requeue."""

    delivery: Delivery
    action: Action
    job: Job | None = None
    state: str | None = None
    value: Any = None
    exc: BaseException | None = None
    traceback: str | None = None
    runtime: float = 0.0
    meta: dict[str, Any] | None = None
    not_before: float | None = None
    reason: str | None = None
    #: messages to publish before the delivery is acked: ``(queue, message, priority,
    #: not_before)``, as ``Broker.publish_many`` takes them (retries, callbacks, ...)
    follow_ups: list[tuple[str, Message, int, float | None]] = field(default_factory=list)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Handler:
    """Turns deliveries into jobs and jobs into outcomes, for one app and worker name."""

    def __init__(self, app: Celeriac, hostname: str) -> None:
        self.app = app
        self.hostname = hostname
        conf = app.conf
        accept = set(conf["accept_content"] or ["json"])
        self.accept = frozenset(accept)
        self.max_redeliveries: int = conf["task_max_redeliveries"]
        self.result_ttl: float | None = conf["result_expires"] or None
        self.result_serializer: str = conf["result_serializer"]
        self.extended: bool = conf["result_extended"]
        self.default_acks_late: bool = conf["task_acks_late"]
        self.store_errors_default: bool = conf["task_store_errors_even_if_ignored"]
        self.middleware = app.middleware

    # -- deciding -----------------------------------------------------------
    def accept_delivery(self, delivery: Delivery) -> Job | Outcome:
        """A job to run, or the outcome that settles the delivery without running it."""
        if delivery.message is None:
            reason = delivery.error or "unreadable message"
            logger.error("Dead-lettering unreadable message from %s: %s", delivery.queue, reason)
            return Outcome(delivery, Action.DEAD_LETTER, reason=reason)
        message = delivery.message
        try:
            call = decode_task(message, self.accept)
        except MessageError as exc:
            kind = "refused" if isinstance(exc, ContentDisallowed) else "invalid"
            task_id = message.task_id
            logger.error(
                "Dead-lettering %s message %s from %s: %s",
                kind, task_id or "(no id)", delivery.queue, exc.reason,
            )  # fmt: skip
            meta = None
            if task_id:
                meta = self._failure_meta(task_id, exc, None)
            return Outcome(delivery, Action.DEAD_LETTER, reason=exc.reason, meta=meta)
        if delivery.delivery_count > 1 + self.max_redeliveries:
            reason = (
                f"delivered {delivery.delivery_count} times without finishing; the worker "
                f"running it was lost each time (task_max_redeliveries={self.max_redeliveries})"
            )
            logger.error("Task %s[%s] dead-lettered: %s", call.name, call.id, reason)
            lost = WorkerLostError(reason)
            return Outcome(
                delivery, Action.DEAD_LETTER, reason=reason,
                meta=self._failure_meta(call.id, lost, None, call),
            )  # fmt: skip
        task = self.app.tasks.get(call.name)
        if task is None:
            reason = f"unknown task {call.name!r} (not registered in this worker)"
            logger.error(
                "Received unregistered task of type %r [%s]; dead-lettered", call.name, call.id
            )
            meta = self._failure_meta(call.id, NotRegistered(call.name), None, call)
            return Outcome(delivery, Action.DEAD_LETTER, reason=reason, meta=meta)
        now = time.time()
        if call.expires is not None and call.expires.timestamp() <= now:
            logger.info("Discarding expired task %s[%s]", call.name, call.id)
            meta = result_meta(
                call.id, states.REVOKED,
                {"exc_type": "TaskRevokedError", "exc_message": ["expired"],
                 "exc_module": "celery.exceptions"},
                children=None, date_done=_utcnow(),
            )  # fmt: skip
            return Outcome(delivery, Action.ACK, meta=meta, state=states.REVOKED)
        if call.eta is not None and call.eta.timestamp() - now > ETA_TOLERANCE:
            logger.debug("Task %s[%s] deferred until %s", call.name, call.id, call.eta)
            return Outcome(delivery, Action.REQUEUE, not_before=call.eta.timestamp())
        request = self._request(call, delivery)
        acks_late = task.acks_late if task.acks_late is not None else self.default_acks_late
        job = Job(delivery, call, task, request, acks_late)
        for mw in self.middleware:
            mw.on_received(task, request)
        logger.info("Task %s[%s] received", call.name, call.id)
        return job

    def _request(self, call: TaskCall, delivery: Delivery) -> Context:
        message = delivery.message
        delivery_info = dict(message.properties.get("delivery_info") or {}) if message else {}
        delivery_info.setdefault("routing_key", delivery.queue)
        delivery_info["priority"] = call.priority
        delivery_info["redelivered"] = delivery.delivery_count > 1
        embed = call.embed
        return Context(
            id=call.id, args=call.args, kwargs=call.kwargs, retries=call.retries,
            eta=call.eta, expires=call.expires, hostname=self.hostname,
            delivery_info=delivery_info, parent_id=call.parent_id, root_id=call.root_id,
            group=call.group, group_index=call.group_index, reply_to=call.reply_to,
            correlation_id=call.correlation_id, headers=call.headers,
            timelimit=call.timelimit, is_eager=False, called_directly=False,
            callbacks=embed.get("callbacks"), errbacks=embed.get("errbacks"),
            chain=embed.get("chain"), chord=embed.get("chord"),
            ignore_result=call.ignore_result, delivery_count=delivery.delivery_count,
        )  # fmt: skip

    # -- executing ----------------------------------------------------------
    def execute(self, job: Job, loop: asyncio.AbstractEventLoop | None = None) -> Outcome:
        """Run a job in this thread (an ``async def`` task runs on ``loop``)."""
        token = self._begin(job)
        start = time.perf_counter()
        try:
            value = job.task.run(*job.call.args, **job.call.kwargs)
            if inspect.isawaitable(value):
                if loop is None:
                    value = asyncio.run(_await(value))
                else:
                    value = loop.run_until_complete(_await(value))
        except BaseException as exc:
            return self._failed(job, exc, time.perf_counter() - start, token)
        return self._succeeded(job, value, time.perf_counter() - start, token)

    async def execute_async(self, job: Job) -> Outcome:
        """Run an ``async def`` job on the running loop (the asyncio pool)."""
        token = self._begin(job)
        start = time.perf_counter()
        try:
            value = job.task.run(*job.call.args, **job.call.kwargs)
            if inspect.isawaitable(value):
                value = await value
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and not job.started:
                raise
            return self._failed(job, exc, time.perf_counter() - start, token)
        return self._succeeded(job, value, time.perf_counter() - start, token)

    def _begin(self, job: Job) -> Any:
        job.started = True
        token = _current_request.set(job.request)
        for mw in self.middleware:
            mw.before_task(job.task, job.request)
        job.task.before_start(job.call.id, job.call.args, job.call.kwargs)
        return token

    def _succeeded(self, job: Job, value: Any, runtime: float, token: Any) -> Outcome:
        call, task = job.call, job.task
        try:
            serialize(value, self.result_serializer)
        except Exception as exc:
            error = TypeError(
                f"result of {call.name} cannot be stored with the {self.result_serializer} "
                f"serializer: {exc} (return a serializable value)"
            )
            return self._failed(job, error, runtime, token)
        try:
            task.on_success(value, call.id, call.args, call.kwargs)
            task.after_return(states.SUCCESS, value, call.id, call.args, call.kwargs, None)
        except Exception:
            logger.exception("Task %s[%s] success handler raised", call.name, call.id)
        meta = None
        if not self._ignores_result(job):
            meta = result_meta(
                call.id, states.SUCCESS, value, date_done=_utcnow(),
                extended=self._extended(job),
            )  # fmt: skip
        outcome = Outcome(
            job.delivery, Action.ACK, job=job, state=states.SUCCESS, value=value,
            runtime=runtime, meta=meta,
        )  # fmt: skip
        self._end(job, outcome, token)
        logger.info(
            "Task %s[%s] succeeded in %.4fs: %s", call.name, call.id, runtime, safe_repr(value, 256)
        )
        return outcome

    def _failed(self, job: Job, exc: BaseException, runtime: float, token: Any) -> Outcome:
        call, task = job.call, job.task
        trace = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
        if isinstance(exc, Ignore):
            outcome = Outcome(job.delivery, Action.ACK, job=job, state=states.IGNORED)
            logger.info("Task %s[%s] ignored", call.name, call.id)
        elif isinstance(exc, Reject):
            action = Action.REQUEUE if exc.requeue else Action.DEAD_LETTER
            outcome = Outcome(
                job.delivery, action, job=job, state=states.REJECTED, exc=exc,
                reason=f"rejected by the task: {exc.reason!r}",
            )  # fmt: skip
            logger.info("Task %s[%s] rejected: %r", call.name, call.id, exc.reason)
        else:
            try:
                task.on_failure(exc, call.id, call.args, call.kwargs, trace)
                task.after_return(states.FAILURE, exc, call.id, call.args, call.kwargs, trace)
            except Exception:
                logger.exception("Task %s[%s] failure handler raised", call.name, call.id)
            meta = None
            if not self._ignores_result(job) or self._stores_errors(job):
                meta = self._failure_meta(call.id, exc, trace, call, self._extended(job))
            outcome = Outcome(
                job.delivery, Action.ACK, job=job, state=states.FAILURE, exc=exc,
                traceback=trace, runtime=runtime, meta=meta,
            )  # fmt: skip
            logger.error(
                "Task %s[%s] raised unexpected: %r\n%s", call.name, call.id, exc, trace.rstrip()
            )
        self._end(job, outcome, token)
        return outcome

    def _end(self, job: Job, outcome: Outcome, token: Any) -> None:
        try:
            for mw in self.middleware:
                mw.after_task(job.task, job.request, outcome)
        finally:
            _current_request.reset(token)

    def _ignores_result(self, job: Job) -> bool:
        if job.call.ignore_result:
            return True
        task_setting = job.task.ignore_result
        if task_setting is not None:
            return task_setting
        return bool(self.app.conf["task_ignore_result"])

    def _stores_errors(self, job: Job) -> bool:
        value = job.task.store_errors_even_if_ignored
        return self.store_errors_default if value is None else value

    def _extended(self, job: Job) -> dict[str, Any] | None:
        if not self.extended:
            return None
        call = job.call
        out: dict[str, Any] = {}
        if call.group:
            out["group_id"] = call.group
        if call.parent_id:
            out["parent_id"] = call.parent_id
        out.update(
            name=call.name, args=call.args, kwargs=call.kwargs, worker=self.hostname,
            retries=call.retries, queue=job.delivery.queue,
        )  # fmt: skip
        return out

    def _failure_meta(
        self,
        task_id: str,
        exc: BaseException,
        trace: str | None,
        call: TaskCall | None = None,
        extended: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return result_meta(
            task_id, states.FAILURE, encode_exception(exc), traceback=trace,
            date_done=_utcnow(), extended=extended,
        )  # fmt: skip

    def lost_meta(self, job: Job, reason: str) -> dict[str, Any]:
        """FAILURE meta for a task whose process died (used by the supervisor)."""
        return self._failure_meta(job.call.id, WorkerLostError(reason), None, job.call)


async def _await(value: Any) -> Any:
    return await value


__all__ = ["Action", "Handler", "Job", "Outcome"]
