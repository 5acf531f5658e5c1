"""Rate limits: the per-worker token bucket (``parse_rate`` lives in ``celeriac._rates``)."""

from __future__ import annotations

import time

from celeriac._rates import parse_rate
from celeriac.transports.broker import bucket_take


class LocalBucket:
    """A token bucket in this worker process (capacity 1, as Celery's)."""

    def __init__(self, rate: float, capacity: float = 1.0) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens: float | None = None
        self.updated = time.time()

    def take(self) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        now = time.time()
        self.tokens, wait = bucket_take(self.tokens, self.updated, now, self.rate, self.capacity)
        self.updated = now
        return wait


__all__ = ["LocalBucket", "parse_rate"]
