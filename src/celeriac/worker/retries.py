"""Retries: ``autoretry_for`` and the retried message of a task that raised ``Retry``.

The executing thread calls these (``Handler``); the retried message is an outcome's
follow-up, published by the consumer before the delivery is acked.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from celeriac import states
from celeriac._outcome import Action, Outcome
from celeriac.exceptions import Ignore, Reject, Retry
from celeriac.protocol import build_task_message, encode_exception, result_meta

if TYPE_CHECKING:
    from celeriac.worker.core import Job

logger = logging.getLogger("celeriac.worker")


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
#: (custom ones) are carried over
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
        "stamped_headers",
        "stamps",
        "redelivered",
    }
)
_SERIALIZERS = {
    "application/json": "json",
    "application/x-msgpack": "msgpack",
    "application/x-python-serialize": "pickle",
}


__all__ = ["autoretry", "retried"]
