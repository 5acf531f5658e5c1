"""Retries as middleware: ``autoretry_for``, and the RETRY outcome of a task that raised
``Retry``.

:class:`Retries` is the first of the worker's built-in middleware; its ``on_exception``
hook runs in the executing thread. The retried message is an outcome's follow-up, which
the consumer publishes before it acks the delivery.
"""

from __future__ import annotations

import logging
import time
import traceback as tb
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from celeriac import states
from celeriac._outcome import Action, Outcome
from celeriac.exceptions import Ignore, Reject, Retry
from celeriac.middleware import Middleware
from celeriac.protocol import build_task_message, encode_exception, result_meta

if TYPE_CHECKING:
    from celeriac.worker.core import Handler, Job

logger = logging.getLogger("celeriac.worker")


class Retries(Middleware):
    """``autoretry_for`` errors become :class:`Retry`; a ``Retry`` settles the job with a
    RETRY outcome whose follow-up is the retried message (at its ETA)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def on_exception(self, job: Job, exc: BaseException, runtime: float) -> BaseException | Outcome:
        exc = autoretry(job, exc)
        if not isinstance(exc, Retry):
            return exc
        trace = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
        return retried(job, exc, trace, runtime, self.handler.ignores_result(job))


def autoretry(job: Job, exc: BaseException) -> BaseException:
    """``autoretry_for``: turn a listed exception into a :class:`Retry`."""
    task = job.task
    if not task.autoretry_for or isinstance(exc, (Retry, Ignore, Reject)):
        return exc
    if not isinstance(exc, task.autoretry_for):
        return exc
    options = dict(task.retry_kwargs)
    options.setdefault("countdown", task.backoff_delay(job.call.retries))
    try:
        return task.retry(exc=exc, throw=False, **options)
    except BaseException as final:  # max retries reached: the original or MaxRetries...
        return final


def retried(job: Job, retry: Retry, trace: str, runtime: float, ignores_result: bool) -> Outcome:
    """The RETRY outcome of a job that raised ``retry``: the retried message to publish
    (a follow-up, at its ETA), the RETRY meta unless the result is ignored."""
    call, task = job.call, job.task
    reason = retry.exc if retry.exc is not None else retry
    when = retry.when
    now = time.time()
    not_before = when.timestamp() if isinstance(when, datetime) else now + float(when or 0)
    sig = retry.sig if isinstance(retry.sig, dict) else {}
    options = dict(sig.get("options") or {})
    queue = options.pop("queue", None) or job.delivery.queue
    headers = {k: v for k, v in call.headers.items() if k not in _OWN_HEADERS}
    message = build_task_message(
        call.name,
        sig.get("args", call.args),
        sig.get("kwargs", call.kwargs),
        task_id=call.id,
        eta=datetime.fromtimestamp(not_before, timezone.utc),
        expires=call.expires,
        retries=call.retries + 1,
        timelimit=call.timelimit,
        root_id=call.root_id,
        parent_id=call.id,
        group_id=call.group,
        group_index=call.group_index,
        shadow=call.headers.get("shadow"),
        ignore_result=call.ignore_result,
        callbacks=call.embed.get("callbacks"),
        errbacks=call.embed.get("errbacks"),
        chain=call.embed.get("chain"),
        chord=call.embed.get("chord"),
        extra_headers=headers,
        reply_to=call.reply_to,
        priority=options.get("priority", call.priority),
        serializer=_SERIALIZERS.get(call.content_type, "json"),
        queue=queue,
    )
    try:
        task.on_retry(reason, call.id, call.args, call.kwargs, trace)
    except Exception:
        logger.exception("Task %s[%s] retry handler raised", call.name, call.id)
    meta = None
    if not ignores_result:
        meta = result_meta(
            call.id,
            states.RETRY,
            encode_exception(reason),
            traceback=trace,
            children=[[[call.id, None], None]],
        )
    logger.info("Task %s[%s] retry: %s", call.name, call.id, retry)
    return Outcome(
        job.delivery,
        Action.ACK,
        job=job,
        state=states.RETRY,
        exc=reason,
        traceback=trace,
        runtime=runtime,
        meta=meta,
        follow_ups=[(queue, message, call.priority, not_before)],
    )


#: headers build_task_message writes itself; the rest of a retried message's headers
#: (custom ones, and the stamps, as Celery's retry keeps them) are carried over
_OWN_HEADERS = frozenset(
    {
        "lang",
        "task",
        "id",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "timelimit",
        "root_id",
        "parent_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
        "replaced_task_nesting",
        "redelivered",
        "celeriac_requeues",  # Reject(requeue=True)'s count: a retry starts afresh
    }
)
_SERIALIZERS = {
    "application/json": "json",
    "application/x-msgpack": "msgpack",
    "application/x-python-serialize": "pickle",
}


__all__ = ["Retries", "autoretry", "retried"]
