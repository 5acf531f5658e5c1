"""What the worker decided for one delivery: :class:`Action` and :class:`Outcome`.

The middleware layer, the app, canvas and the worker all speak of outcomes, so they live
here, below all of them (this module imports nothing from ``celeriac.worker``), with
:func:`revoked_meta`, the result a revoked task records (used by ``app.control`` and
the worker).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.protocol import Message, result_meta

if TYPE_CHECKING:
    from celeriac.transports.broker import Delivery
    from celeriac.worker.core import Job


class Action(enum.Enum):
    RUN = "run"
    ACK = "ack"  # done with it: result (if any) stored first
    REQUEUE = "requeue"  # back to the queue, optionally at a time
    DEAD_LETTER = "dead_letter"
    PROGRESS = "progress"  # store the meta only (STARTED); the delivery stays held


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


def revoked_meta(task_id: str, why: str) -> dict[str, Any]:
    """Celery's REVOKED meta (``why``: revoked, expired, terminated)."""
    error = {
        "exc_type": "TaskRevokedError",
        "exc_message": [why],
        "exc_module": "celery.exceptions",
    }
    return result_meta(
        task_id, states.REVOKED, error, children=None, date_done=datetime.now(timezone.utc)
    )


__all__ = ["Action", "Outcome", "revoked_meta"]
