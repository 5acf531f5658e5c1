"""The worker's heart, free of I/O: delivery -> decision, job -> outcome.

Every pool (solo, threads, asyncio, prefork child) wraps this same core. ``accept``
decides what to do with a delivery (run it, dead-letter it, defer it, drop it as
expired); ``execute``/``execute_async`` run one job and describe what must follow
(result to store, messages to publish, ack or requeue). The consumer performs the I/O.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import threading
import time
import traceback as tb
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac._outcome import Action, Outcome, revoked_meta
from celeriac.exceptions import (
    ContentDisallowed,
    Ignore,
    MessageError,
    NotRegistered,
    Reject,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from celeriac.middleware import Middleware, overriding
from celeriac.protocol import (
    TaskCall,
    decode_task,
    encode_exception,
    envelope_task_id,
    result_meta,
    safe_repr,
    serialize,
)
from celeriac.result import ResultBase
from celeriac.task import Context, Task, _current_request, custom_headers
from celeriac.transports.broker import Delivery, Revocation
from celeriac.worker.rejects import rejected

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger("celeriac.worker")

#: An ETA closer than this is run now instead of going back to the delayed store.
ETA_TOLERANCE = 0.05


@dataclass(eq=False)
class Job:
    delivery: Delivery
    call: TaskCall
    task: Task[Any, Any]
    request: Context
    acks_late: bool
    hard_limit: float | None = None
    soft_limit: float | None = None
    started: bool = False
    started_at: float = 0.0  # time.monotonic() when it started
    thread_id: int | None = None  # the pool thread running it
    async_task: asyncio.Task[Any] | None = None  # the asyncio task running it
    finished: bool = False
    soft_fired: bool = False
    interrupt: type[BaseException] | None = None  # what the watchdog injected
    abandoned: bool = False  # settled by the watchdog; a late outcome is dropped
    stop_outcome: Outcome | None = None  # the outcome the watchdog settled it with
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def running(self) -> bool:
        """Started, not finished, not stopped by the watchdog."""
        return self.started and not self.finished and not self.abandoned


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
        self.track_started: bool = conf["task_track_started"]
        self.ignore_result_default: bool = bool(conf["task_ignore_result"])
        self.time_limit: float | None = conf["task_time_limit"]
        self.soft_time_limit: float | None = conf["task_soft_time_limit"]
        self.reject_on_worker_lost: bool | None = conf["task_reject_on_worker_lost"]
        self.acks_on_failure: bool = conf["task_acks_on_failure_or_timeout"]
        self.use_middleware(app.middleware)
        #: set by the pool: hands a PROGRESS outcome (STARTED) to the consumer
        self.report: Any = None

    def use_middleware(self, middleware: list[Middleware]) -> None:
        """Call these middleware's per-task hooks (only the ones each overrides)."""
        self._on_received = overriding(middleware, "on_received")
        self._on_unknown = overriding(middleware, "on_unknown")
        self._on_revoked = overriding(middleware, "on_revoked")
        self._before_task = overriding(middleware, "before_task")
        self._after_task = overriding(middleware, "after_task")
        self._on_exception = overriding(middleware, "on_exception")
        self._on_rejected = overriding(middleware, "on_rejected")
        self._on_internal_error = overriding(middleware, "on_internal_error")

    # -- deciding -----------------------------------------------------------
    def accept_delivery(
        self, delivery: Delivery, revoked: Revocation | None = None
    ) -> Job | Outcome:
        """A job to run, or the outcome that settles the delivery without running it."""
        if delivery.message is None:
            reason = delivery.error or "unreadable message"
            logger.error("Dead-lettering unreadable message from %s: %s", delivery.queue, reason)
            error = MessageError(reason)
            for hook in self._on_rejected:
                hook(None, error)
            task_id = envelope_task_id(delivery.raw)  # a readable id gets its FAILURE
            meta = None if task_id is None else self._failure_meta(task_id, error, None)
            return Outcome(delivery, Action.DEAD_LETTER, reason=reason, meta=meta)
        message = delivery.message
        try:
            call = decode_task(message, self.accept)
        except MessageError as exc:
            kind = "refused" if isinstance(exc, ContentDisallowed) else "invalid"
            task_id = message.task_id
            logger.error(
                "Dead-lettering %s message %s from %s: %s",
                kind,
                task_id or "(no id)",
                delivery.queue,
                exc.reason,
            )
            meta = None
            if task_id:
                meta = self._failure_meta(task_id, exc, None)
            for hook in self._on_rejected:
                hook(message, exc)
            return Outcome(delivery, Action.DEAD_LETTER, reason=exc.reason, meta=meta)
        if delivery.delivery_count > 1 + self.max_redeliveries:
            reason = (
                f"delivered {delivery.delivery_count} times without finishing; the worker "
                f"running it was lost each time (task_max_redeliveries={self.max_redeliveries})"
            )
            logger.error("Task %s[%s] dead-lettered: %s", call.name, call.id, reason)
            lost = WorkerLostError(reason)
            return Outcome(
                delivery,
                Action.DEAD_LETTER,
                reason=reason,
                meta=self._failure_meta(call.id, lost, None, call),
            )
        task = self.app.tasks.get(call.name)
        settled = self._settle_early(delivery, call, task, revoked)
        if settled is not None:
            return settled
        assert task is not None
        now = time.time()
        if call.eta is not None and call.eta.timestamp() - now > ETA_TOLERANCE:
            logger.debug("Task %s[%s] deferred until %s", call.name, call.id, call.eta)
            return Outcome(delivery, Action.REQUEUE, not_before=call.eta.timestamp())
        request = self._request(call, delivery)
        acks_late = task.acks_late if task.acks_late is not None else self.default_acks_late
        hard, soft = call.timelimit
        hard = hard if hard is not None else task.time_limit or self.time_limit
        soft = soft if soft is not None else task.soft_time_limit or self.soft_time_limit
        job = Job(delivery, call, task, request, acks_late, hard, soft)
        for hook in self._on_received:
            hook(task, request)
        logger.info("Task %s[%s] received", call.name, call.id)
        return job

    def _settle_early(
        self,
        delivery: Delivery,
        call: TaskCall,
        task: Task[Any, Any] | None,
        revoked: Revocation | None,
    ) -> Outcome | None:
        """Unknown, revoked, expired or lost-worker tasks are settled without running."""
        message = delivery.message
        assert message is not None
        if task is None:
            reason = f"unknown task {call.name!r} (not registered in this worker)"
            logger.error(
                "Received unregistered task of type %r [%s]; dead-lettered", call.name, call.id
            )
            meta = self._failure_meta(call.id, NotRegistered(call.name), None, call)
            for hook in self._on_unknown:
                hook(call.name, call.id, message)
            return Outcome(delivery, Action.DEAD_LETTER, reason=reason, meta=meta)
        now = time.time()
        if revoked is not None:
            logger.info("Discarding revoked task %s[%s]", call.name, call.id)
            request = self._request(call, delivery) if self._on_revoked else None
            for hook in self._on_revoked:
                hook(task, request)
            meta = revoked_meta(call.id, "revoked")
            return Outcome(delivery, Action.ACK, meta=meta, state=states.REVOKED)
        if call.expires is not None and call.expires.timestamp() <= now:
            logger.info("Discarding expired task %s[%s]", call.name, call.id)
            request = self._request(call, delivery) if self._on_revoked else None
            for hook in self._on_revoked:
                hook(task, request, expired=True)
            meta = revoked_meta(call.id, "expired")
            return Outcome(delivery, Action.ACK, meta=meta, state=states.REVOKED)
        lost_policy = task.reject_on_worker_lost
        if lost_policy is None:
            lost_policy = self.reject_on_worker_lost
        if lost_policy is False and delivery.delivery_count > 1:
            reason = "the worker running it was lost (task_reject_on_worker_lost=False)"
            logger.error("Task %s[%s] failed: %s", call.name, call.id, reason)
            meta = self._failure_meta(call.id, WorkerLostError(reason), None, call)
            return Outcome(delivery, Action.ACK, meta=meta, state=states.FAILURE)
        return None

    def _request(self, call: TaskCall, delivery: Delivery) -> Context:
        message = delivery.message
        properties = message.properties if message else {}
        delivery_info = dict(properties.get("delivery_info") or {})
        delivery_info.setdefault("routing_key", delivery.queue)
        delivery_info["priority"] = call.priority
        # leased again (worker lost), or put back by Reject(requeue=True), which flags
        # the message as kombu does
        delivery_info["redelivered"] = delivery.delivery_count > 1 or bool(
            delivery_info.get("redelivered") or call.headers.get("redelivered")
        )
        embed = call.embed
        headers = call.headers
        return Context(
            id=call.id,
            args=call.args,
            kwargs=call.kwargs,
            retries=call.retries,
            eta=headers.get("eta"),
            expires=headers.get("expires"),
            hostname=self.hostname,
            delivery_info=delivery_info,
            parent_id=call.parent_id,
            root_id=call.root_id,
            group=call.group,
            group_index=call.group_index,
            reply_to=call.reply_to,
            correlation_id=call.correlation_id,
            headers=custom_headers(headers),
            message_headers=headers,
            stamped_headers=headers.get("stamped_headers"),
            stamps=headers.get("stamps"),
            timelimit=headers.get("timelimit"),
            properties=properties,
            is_eager=False,
            called_directly=False,
            callbacks=embed.get("callbacks"),
            errbacks=embed.get("errbacks"),
            chain=embed.get("chain"),
            chord=embed.get("chord"),
            ignore_result=call.ignore_result,
            delivery_count=delivery.delivery_count,
        )

    # -- executing ----------------------------------------------------------
    def execute(self, job: Job, loop: asyncio.AbstractEventLoop | None = None) -> Outcome:
        """Run a job in this thread (an ``async def`` task runs on ``loop``); an error of
        the worker itself around it (a middleware hook) is an internal error."""
        try:
            return self._execute(job, loop)
        except Exception as exc:
            if isinstance(exc, _INTERRUPTS):
                raise
            return self.internal_error(job, exc)

    async def execute_async(self, job: Job) -> Outcome:
        """Run an ``async def`` job on the running loop (the asyncio pool)."""
        try:
            return await self._execute_async(job)
        except Exception as exc:
            if isinstance(exc, _INTERRUPTS):
                raise
            return self.internal_error(job, exc)

    def _execute(self, job: Job, loop: asyncio.AbstractEventLoop | None) -> Outcome:
        expired = self._expired(job)
        if expired is not None:
            return expired
        job.thread_id = threading.get_ident()
        token = self._begin(job)
        start = time.perf_counter()
        try:
            job.task.before_start(job.call.id, job.call.args, job.call.kwargs)
            value = _body(job.task)(*job.call.args, **job.call.kwargs)
            if job.task.is_async and inspect.isawaitable(value):
                if loop is None:
                    value = asyncio.run(_await(value))
                else:
                    value = loop.run_until_complete(_await(value))
            with job.lock:
                job.finished = True
        except BaseException as exc:
            with job.lock:
                job.finished = True
            return self._raised(job, exc, time.perf_counter() - start, token)
        return self._succeeded(job, value, time.perf_counter() - start, token)

    async def _execute_async(self, job: Job) -> Outcome:
        expired = self._expired(job)
        if expired is not None:
            return expired
        token = self._begin(job)
        start = time.perf_counter()
        try:
            job.task.before_start(job.call.id, job.call.args, job.call.kwargs)
            value = _body(job.task)(*job.call.args, **job.call.kwargs)
            if inspect.isawaitable(value):
                value = await value
            job.finished = True
        except BaseException as exc:
            job.finished = True
            if isinstance(exc, asyncio.CancelledError):
                if job.interrupt is None:
                    raise
                exc = job.interrupt(_interrupt_text(job))  # the watchdog cancelled it
            return self._raised(job, exc, time.perf_counter() - start, token)
        return self._succeeded(job, value, time.perf_counter() - start, token)

    def _expired(self, job: Job) -> Outcome | None:
        """A job whose ``expires`` passed while it waited in this worker (prefetched,
        behind a rate limit) is settled as expired instead of run, as on arrival."""
        call = job.call
        if call.expires is None or call.expires.timestamp() > time.time():
            return None
        logger.info("Discarding expired task %s[%s]", call.name, call.id)
        for hook in self._on_revoked:
            hook(job.task, job.request, expired=True)
        meta = revoked_meta(call.id, "expired")
        return Outcome(job.delivery, Action.ACK, job=job, meta=meta, state=states.REVOKED)

    def _begin(self, job: Job) -> Any:
        job.started_at = time.monotonic()
        job.started = True
        track = job.task.track_started
        if (self.track_started if track is None else track) and self.report is not None:
            meta = result_meta(
                job.call.id, states.STARTED, {"pid": os.getpid(), "hostname": self.hostname}
            )
            self.report(Outcome(job.delivery, Action.PROGRESS, job=job, meta=meta))
        job.request.running_task = job.task
        token = _current_request.set(job.request)
        try:
            for hook in self._before_task:
                hook(job.task, job.request)
        except BaseException:
            _current_request.reset(token)
            raise
        return token

    def internal_error(self, job: Job, exc: BaseException) -> Outcome:
        """The worker failed around ``job`` (not its code): as Celery, the job is a
        FAILURE with ``exc`` and the ``on_internal_error`` hooks (``task_internal_error``)
        are told."""
        call = job.call
        with job.lock:
            job.finished = True
        trace = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
        logger.error("Task %s[%s] internal error: %r\n%s", call.name, call.id, exc, trace.rstrip())
        self.tell_internal_error(job, exc)
        meta = None
        if not self.ignores_result(job) or self._stores_errors(job):
            meta = self._failure_meta(call.id, exc, trace, call, self._extended(job))
        action, reason = self._failure_action(job, exc)
        return Outcome(
            job.delivery,
            action,
            job=job,
            state=states.FAILURE,
            exc=exc,
            traceback=trace,
            meta=meta,
            reason=reason,
        )

    def tell_internal_error(self, job: Job, exc: BaseException) -> None:
        """Call the ``on_internal_error`` hooks (one that raises is logged)."""
        for hook in self._on_internal_error:
            try:
                hook(job.task, job.request, exc)
            except Exception:
                logger.exception("on_internal_error hook %r raised", hook)

    def _succeeded(self, job: Job, value: Any, runtime: float, token: Any) -> Outcome:
        call, task = job.call, job.task
        returned = value
        if isinstance(value, ResultBase) and self.result_serializer != "pickle":
            value = value.as_tuple()  # as Celery: a returned result is stored as a reference
        try:
            serialize(value, self.result_serializer)
        except Exception as exc:
            error = TypeError(
                f"result of {call.name} cannot be stored with the {self.result_serializer} "
                f"serializer: {exc} (return a serializable value)"
            )
            return self._failed(job, error, runtime, token)
        try:
            task.on_success(returned, call.id, call.args, call.kwargs)
            task.after_return(states.SUCCESS, returned, call.id, call.args, call.kwargs, None)
        except Exception:
            logger.exception("Task %s[%s] success handler raised", call.name, call.id)
        meta = None
        if not self.ignores_result(job):
            meta = result_meta(
                call.id,
                states.SUCCESS,
                value,
                date_done=_utcnow(),
                extended=self._extended(job),
            )
        outcome = Outcome(
            job.delivery,
            Action.ACK,
            job=job,
            state=states.SUCCESS,
            value=value,
            runtime=runtime,
            meta=meta,
        )
        self._end(job, outcome, token)
        logger.info(
            "Task %s[%s] succeeded in %.4fs: %s", call.name, call.id, runtime, safe_repr(value, 256)
        )
        return outcome

    def _raised(self, job: Job, exc: BaseException, runtime: float, token: Any) -> Outcome:
        """The task raised ``exc``: the ``on_exception`` hooks may replace it or settle the
        job (retries); else the usual handling (Ignore, Reject, FAILURE)."""
        for hook in self._on_exception:
            got = hook(job, exc, runtime)
            if isinstance(got, Outcome):
                self._end(job, got, token)
                return got
            exc = got
        return self._failed(job, exc, runtime, token)

    def _failed(self, job: Job, exc: BaseException, runtime: float, token: Any) -> Outcome:
        call, task = job.call, job.task
        trace = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
        if isinstance(exc, Ignore):
            outcome = Outcome(job.delivery, Action.ACK, job=job, state=states.IGNORED)
            logger.info("Task %s[%s] ignored", call.name, call.id)
        elif isinstance(exc, Reject):
            outcome = rejected(self, job, exc)
        else:
            try:
                task.on_failure(exc, call.id, call.args, call.kwargs, trace)
            except Exception as error:  # as Celery: an internal error (the task failed)
                logger.exception("Task %s[%s] failure handler raised", call.name, call.id)
                self.tell_internal_error(job, error)
            try:
                task.after_return(states.FAILURE, exc, call.id, call.args, call.kwargs, trace)
            except Exception:
                logger.exception("Task %s[%s] failure handler raised", call.name, call.id)
            meta = None
            if not self.ignores_result(job) or self._stores_errors(job):
                meta = self._failure_meta(call.id, exc, trace, call, self._extended(job))
            action, reason = self._failure_action(job, exc)
            outcome = Outcome(
                job.delivery,
                action,
                job=job,
                state=states.FAILURE,
                exc=exc,
                traceback=trace,
                runtime=runtime,
                meta=meta,
                reason=reason,
            )
            logger.error(
                "Task %s[%s] raised unexpected: %r\n%s", call.name, call.id, exc, trace.rstrip()
            )
        self._end(job, outcome, token)
        return outcome

    def _failure_action(self, job: Job, exc: BaseException) -> tuple[Action, str | None]:
        """Ack a failed task's message, or (``acks_on_failure_or_timeout=False``) keep it
        in the dead-letter store."""
        policy = job.task.acks_on_failure_or_timeout
        if (self.acks_on_failure if policy is None else policy) or not job.acks_late:
            return Action.ACK, None
        return Action.DEAD_LETTER, f"task failed: {exc!r}"

    def stopped(self, job: Job, exc: BaseException) -> Outcome:
        """The outcome of a job the watchdog stopped (hard time limit, or terminated by a
        revoke); its late result, if any, is dropped."""
        call = job.call
        if isinstance(exc, TaskRevokedError):
            meta: dict[str, Any] | None = revoked_meta(call.id, "terminated")
            state, action, reason = states.REVOKED, Action.ACK, None
            signum = getattr(exc, "signum", signal.SIGTERM)
            for hook in self._on_revoked:
                hook(job.task, job.request, terminated=True, signum=signum)
        else:
            state = states.FAILURE
            meta = None
            if not self.ignores_result(job) or self._stores_errors(job):
                meta = self._failure_meta(call.id, exc, None, call, self._extended(job))
            action, reason = self._failure_action(job, exc)
            try:
                job.task.on_failure(exc, call.id, call.args, call.kwargs, None)
            except Exception:
                logger.exception("Task %s[%s] failure handler raised", call.name, call.id)
        outcome = Outcome(
            job.delivery, action, job=job, state=state, exc=exc, meta=meta, reason=reason
        )
        if state == states.FAILURE:
            for hook in self._after_task:
                hook(job.task, job.request, outcome)
        return outcome

    def _end(self, job: Job, outcome: Outcome, token: Any) -> None:
        try:
            for hook in self._after_task:
                hook(job.task, job.request, outcome)
        finally:
            _current_request.reset(token)

    def ignores_result(self, job: Job) -> bool:
        """True when the job's result is not stored (``ignore_result``)."""
        if job.call.ignore_result:
            return True
        task_setting = job.task.ignore_result
        if task_setting is not None:
            return task_setting
        return self.ignore_result_default

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
            name=call.name,
            args=call.args,
            kwargs=call.kwargs,
            worker=self.hostname,
            retries=call.retries,
            queue=job.delivery.queue,
        )
        stamps = job.request.stamps
        if stamps:  # as Celery: the stamp names, and each stamp as a field of its own
            names = job.request.stamped_headers or []
            out.update({"stamped_headers": names, **{k: stamps[k] for k in names if k in stamps}})
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
            task_id,
            states.FAILURE,
            encode_exception(exc),
            traceback=trace,
            date_done=_utcnow(),
            extended=extended,
        )

    def lost_meta(self, job: Job, reason: str) -> dict[str, Any]:
        """FAILURE meta for a task whose process died (used by the supervisor)."""
        return self._failure_meta(job.call.id, WorkerLostError(reason), None, job.call)


#: what the worker raises inside a running task (time limits, terminate): never internal
_INTERRUPTS = (SoftTimeLimitExceeded, TimeLimitExceeded, Terminated)


def _body(task: Task[Any, Any]) -> Any:
    """What the worker calls to run ``task``: its class's own ``__call__`` when it has
    one (Flask's ``FlaskTask`` pattern: a ``Task`` subclass whose ``__call__`` wraps
    ``self.run`` in a context), else ``run``, as Celery's worker does."""
    if type(task).__call__ is not Task.__call__:
        return task
    return task.run


async def _await(value: Any) -> Any:
    return await value


def _interrupt_text(job: Job) -> str:
    if job.interrupt is SoftTimeLimitExceeded:
        return f"soft time limit ({job.soft_limit}s) exceeded"
    return "stopped by the worker"


__all__ = ["Action", "Handler", "Job", "Outcome"]
