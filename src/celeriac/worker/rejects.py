"""The outcome of a task that raised :class:`~celeriac.exceptions.Reject`.

``Reject(requeue=False)``: as Celery's worker, a FAILURE result with the ``Reject``
itself (no traceback), so a caller is not left waiting on a task that will never run
again; errbacks and a chord's join see it as any failure. The message goes to the
dead-letter store (Celery drops it on Redis; on RabbitMQ it dead-letters).

``Reject(requeue=True)``: the message goes back to its queue flagged as redelivered
(``request.delivery_info['redelivered']``, as kombu flags a restored message), with no
result stored. Celery puts it back at once, so a task that always rejects runs again
and again as fast as the worker can fetch it; celeriac puts back the first requeue at
once and each further one of the same message after a growing pause
(:func:`requeue_delay`), counted in the message's ``celeriac_requeues`` header.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from celeriac import states
from celeriac._outcome import Action, Outcome
from celeriac.exceptions import Reject

if TYPE_CHECKING:
    from celeriac.worker.core import Handler, Job

logger = logging.getLogger("celeriac.worker")

#: the pause before the second requeue of one message; it doubles each time after
REQUEUE_DELAY = 0.1
#: the longest pause between two requeues of one message
REQUEUE_DELAY_MAX = 10.0
#: the header that counts the requeues of a message
REQUEUES_HEADER = "celeriac_requeues"


def requeue_delay(requeues: int) -> float:
    """The pause before a message's requeue number ``requeues`` (1 for the first)."""
    if requeues <= 1:
        return 0.0
    return min(REQUEUE_DELAY * 2.0 ** (requeues - 2), REQUEUE_DELAY_MAX)


def rejected(handler: Handler, job: Job, exc: Reject) -> Outcome:
    call, delivery = job.call, job.delivery
    logger.info("Task %s[%s] rejected: %r", call.name, call.id, exc.reason)
    if not exc.requeue:
        meta = None
        if not handler.ignores_result(job) or handler._stores_errors(job):
            meta = handler._failure_meta(call.id, exc, None, call, handler._extended(job))
        return Outcome(
            delivery,
            Action.DEAD_LETTER,
            job=job,
            state=states.FAILURE,
            exc=exc,
            meta=meta,
            reason=f"rejected by the task: {exc.reason!r}",
        )
    message = delivery.message
    if message is None:  # cannot happen for a job; requeue the bytes as they are
        return Outcome(delivery, Action.REQUEUE, job=job, state=states.REJECTED, exc=exc)
    count = message.headers.get(REQUEUES_HEADER)
    requeues = (count if isinstance(count, int) else 0) + 1
    headers = {**message.headers, "redelivered": True, REQUEUES_HEADER: requeues}
    properties = dict(message.properties)
    properties.pop("delivery_tag", None)  # a new copy gets a tag of its own
    properties["delivery_info"] = {**(properties.get("delivery_info") or {}), "redelivered": True}
    again = dataclasses.replace(message, headers=headers, properties=properties)
    delay = requeue_delay(requeues)
    not_before = time.time() + delay if delay else None
    return Outcome(
        delivery,
        Action.ACK,  # after the copy is published (a follow-up)
        job=job,
        state=states.REJECTED,
        exc=exc,
        reason=f"rejected by the task: {exc.reason!r}",
        follow_ups=[(delivery.queue, again, call.priority, not_before)],
    )


__all__ = ["REQUEUES_HEADER", "rejected", "requeue_delay"]
