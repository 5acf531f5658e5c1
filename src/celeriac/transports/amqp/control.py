"""Control state on RabbitMQ, with RabbitMQ as the only store: the names, record formats
and bookkeeping (no I/O) of durable revocations, a stream every broker instance reads
and follows (:mod:`.revocations`), and of global token buckets, a bounded token queue
per key refilled by one worker elected through a single-active-consumer queue
(:mod:`.ratelimit`). The design and why: docs/internals/amqp.md, "Revocations" and
"Global rate limits"."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from celeriac.transports.broker import Revocation

REVOKED_STREAM = "celeriac.revoked"
#: records the stream consumer may hold unacked
STREAM_PREFETCH = 1000
#: stream retention (seconds) unless ``revoke_retention`` says otherwise
DEFAULT_RETENTION = 86400.0
SEGMENT_BYTES = 1_000_000
#: a leader that took no token itself for this long hands leadership on
RESIGN_AFTER = 30.0
#: rate-limit queues go when unused for this long (ms)
RATE_QUEUE_EXPIRES = 3_600_000


def stream_arguments(retention: float) -> dict[str, Any]:
    return {
        "x-queue-type": "stream",
        "x-max-age": f"{max(1, math.ceil(retention))}s",
        "x-stream-max-segment-size-bytes": SEGMENT_BYTES,
    }


def revocation_record(
    task_ids: Sequence[str], expires: float, terminate: bool, signal: str | None
) -> bytes:
    record = {"ids": list(task_ids), "expires": expires, "terminate": terminate, "signal": signal}
    return json.dumps(record).encode()


def marker_record(marker: str) -> bytes:
    return json.dumps({"marker": marker}).encode()


class RevocationLog:
    """What this process has read of the revocation stream (the newest record of an id
    wins, as a Redis SET would)."""

    PRUNE_EVERY = 60.0

    def __init__(self) -> None:
        self.known: dict[str, tuple[float, Revocation]] = {}
        #: the offset to read from after a reconnect (None: the start)
        self.next_offset: int | None = None
        self._pruned = time.monotonic()

    def read(self, body: bytes) -> str | None:
        """Take in one record; return the marker it carries, if it is one."""
        try:
            record = json.loads(body)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        if "marker" in record:
            return str(record["marker"])
        ids, expires = record.get("ids"), record.get("expires")
        if not isinstance(ids, list) or not isinstance(expires, (int, float)):
            return None
        signal = record.get("signal")
        how = Revocation(bool(record.get("terminate")), signal if isinstance(signal, str) else None)
        if expires > time.time():
            for task_id in ids:
                self.known[str(task_id)] = (float(expires), how)
        return None

    def lookup(self, task_ids: Sequence[str]) -> dict[str, Revocation]:
        now = time.time()
        if time.monotonic() - self._pruned > self.PRUNE_EVERY:
            self._pruned = time.monotonic()
            self.known = {k: v for k, v in self.known.items() if v[0] > now}
        found: dict[str, Revocation] = {}
        for task_id in task_ids:
            entry = self.known.get(task_id)
            if entry is not None and entry[0] > now:
                found[task_id] = entry[1]
        return found

    def live(self, limit: int) -> list[str]:
        """Up to ``limit`` ids whose revocation has not expired, the newest first."""
        now = time.time()
        live = sorted(((e[0], t) for t, e in self.known.items() if e[0] > now), reverse=True)
        return [t for _, t in live[:limit]]


# -- global token buckets ---------------------------------------------------------


def tokens_queue(key: str) -> str:
    return f"{key}.tokens"


def leader_queue(key: str) -> str:
    return f"{key}.leader"


def tokens_arguments(capacity: float) -> dict[str, Any]:
    return {
        "x-max-length": max(1, int(capacity)),
        "x-overflow": "drop-head",
        "x-expires": RATE_QUEUE_EXPIRES,
    }


def leader_arguments() -> dict[str, Any]:
    return {"x-single-active-consumer": True, "x-expires": RATE_QUEUE_EXPIRES}


def token_wait(rate: float, now: float) -> float:
    """Seconds a taker that found no token should wait: just past the next grid point,
    or a short while when the leader's token for the last one may still be on its way."""
    period = 1.0 / rate
    since = (now * rate - math.floor(now * rate)) * period
    if since < min(period / 2, 0.05):
        return min(0.01, period / 4)
    return period - since + min(0.005, period / 4)


@dataclass(eq=False)
class Bucket:
    """One bucket key as this connection knows it: a candidate (consumer of the leader
    queue) and, while it holds a baton, the leader refilling the token queue."""

    key: str
    rate: float
    capacity: float
    tag: str = ""  # consumer tag on the leader queue
    baton: int | None = None  # delivery tag of the baton held (leader)
    refill: asyncio.Task[None] | None = None
    used: float = field(default_factory=time.monotonic)


__all__ = [
    "DEFAULT_RETENTION",
    "RESIGN_AFTER",
    "REVOKED_STREAM",
    "STREAM_PREFETCH",
    "Bucket",
    "RevocationLog",
    "leader_arguments",
    "leader_queue",
    "marker_record",
    "revocation_record",
    "stream_arguments",
    "token_wait",
    "tokens_arguments",
    "tokens_queue",
]
