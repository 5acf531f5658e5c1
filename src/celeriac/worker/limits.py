"""Rate limits: the per-worker token bucket (``parse_rate`` lives in ``celeriac._rates``)."""

from __future__ import annotations

import os
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


__all__ = ["LocalBucket", "parse_rate", "resident_kib"]


def resident_kib() -> int:
    """This process's resident memory now, in KiB (Linux ``/proc``; else the peak)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[1])
        return pages * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        import resource  # noqa: PLC0415

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
