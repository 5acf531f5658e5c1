"""Rate limits: Celery's ``"10/s"`` strings and the per-worker token bucket."""

from __future__ import annotations

import time

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.broker import bucket_take

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: str | float | int | None) -> float | None:
    """``"10/s"``, ``"100/m"``, ``"1000/h"`` or a number (per second) -> tasks per second;
    None or 0 means no limit."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value) or None
    count, _, unit = str(value).strip().partition("/")
    try:
        number = float(count)
    except ValueError:
        raise ImproperlyConfigured(
            f"rate_limit {value!r} is invalid: use '<n>/s', '<n>/m' or '<n>/h'"
        ) from None
    per = _UNITS.get(unit.strip()[:1] or "s")
    if per is None or number < 0:
        raise ImproperlyConfigured(
            f"rate_limit {value!r} is invalid: use '<n>/s', '<n>/m' or '<n>/h'"
        )
    return number / per or None


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
