"""``--autoscale=max,min``: the prefork supervisor grows and shrinks its children.

Each child reports through the supervisor's pipe when it starts a task (``B<pid>``) and
when it is idle again (``I<pid>``). When every child is busy, one more is started (up to
``max``); a child idle for ``keepalive`` seconds (``AUTOSCALE_KEEPALIVE``, 30 by
default, as Celery) is stopped warmly while there are more than ``min``. Autoscaled
children hold only the task they run (prefetch 1, no batching), so the waiting messages
stay in the broker for the children started next. ``min`` is at least 1: a celeriac
child is also what fetches the messages.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Protocol

logger = logging.getLogger("celeriac.worker")


class ScaledChild(Protocol):
    index: int
    pid: int
    ready: bool
    busy: bool
    idle_since: float
    retiring: bool


def keepalive() -> float:
    return float(os.environ.get("AUTOSCALE_KEEPALIVE", "30"))


class Autoscaler:
    def __init__(self, high: int, low: int) -> None:
        self.high = max(high, 1)
        self.low = min(max(low, 1), self.high)
        self.keepalive = keepalive()

    def decide(self, children: list[ScaledChild]) -> tuple[bool, ScaledChild | None]:
        """(start one more child?, the child to retire or None)."""
        active = [c for c in children if not c.retiring]
        if len(active) < self.high and active and all(c.ready and c.busy for c in active):
            return True, None
        if len(active) > self.low:
            now = time.monotonic()
            for child in reversed(active):  # the newest first; child 1 answers remote control
                if (
                    child.index != 1
                    and child.ready
                    and not child.busy
                    and now - child.idle_since >= self.keepalive
                ):
                    return False, child
        return False, None


__all__ = ["Autoscaler", "keepalive"]
