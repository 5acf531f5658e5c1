"""Control state on RabbitMQ, with RabbitMQ as the only store: durable revocations and
global (all-worker) token buckets. :class:`celeriac.transports.amqp.broker.AMQPBroker` wires these
into its connection; this module holds the names, the formats and the bookkeeping.

**Revocations: one stream** (``celeriac.revoked``, ``x-queue-type: stream``). ``revoke``
appends one JSON record (ids, absolute expiry, terminate, signal) with a publisher
confirm. Every broker instance that asks ``revoked`` reads the stream from its first
record and then keeps following it (``basic.consume`` with ``x-stream-offset``, a
prefetch and acks, as RabbitMQ requires for streams); ``revoked(ids)`` answers from
memory, so the worker's per-batch check and the watchdog's once-a-second check cost no
round trip. Records expire by their own expiry time (``worker_revoke_expires`` of the
revoker); the stream's retention (``x-max-age``, transport option ``revoke_retention``,
default one day, with 1 MB segments so old records really go) only bounds its size, and
a revocation whose ttl exceeds it lasts as long as the retention.

*Why a stream*: it is the one RabbitMQ structure that many readers can read without
consuming it, from the start (so a worker started after a revoke sees it) and then
live (so a running worker learns of a revoke as it is pushed, with no polling). A durable
queue per task id with a TTL would need one passive declare per id per fetched batch
(and RabbitMQ closes the channel on each miss, the common case): a round trip per
message on the hot path. A last-value exchange needs a plugin.

*Seen before the task runs*: a reader's first ``revoked`` call appends a marker record
and waits until it has read its own marker: everything confirmed before that is in
memory before the first batch is checked (a worker started just after a revoke discards
the task). After that, the stream consumer lives on the channel that also consumes the
task queues: the RabbitMQ channel process handles the stream's "new records" notice,
sent when the record is committed (before the revoker's confirm), before the delivery
of any task message published after that confirm, and aiormq runs consumer callbacks in
frame order. So a task published after ``revoke`` returned is checked against it on a
single node; on a cluster whose stream replica lags, the watchdog check stops it. A
reconnect reads on from the last offset seen and waits for a new marker.

**Global rate limit: a token queue refilled by one elected worker.** Per bucket key:
``celeriac.rate.<key>.tokens`` (``x-max-length`` = capacity, ``drop-head``: a full
bucket drops new tokens' predecessors, so it never holds more than capacity) and
``celeriac.rate.<key>.leader`` (``x-single-active-consumer``). A worker taking a token
``basic.get``\\s one (``no_ack``): 0.0 when it got one. Each worker that ever takes from
the bucket also consumes the leader queue and publishes one "baton" message there; the
single active consumer receives the batons, keeps one unacked (acking duplicates) and
is the leader: it publishes one token at each point of a grid of ``1/rate`` seconds
(wall clock, so every worker knows when the next token comes and polls right after it).
When the leader's connection dies, RabbitMQ requeues its baton to the next consumer,
which takes over. A leader that has not taken a token itself for ``RESIGN_AFTER``
seconds hands the baton on (cancel, requeue), so idle workers stop refilling; the next
worker to take rejoins. Bound: tokens taken in any window of ``w`` seconds <= capacity +
``rate * w``, plus one when the leader's timer fires a grid point late (one token per
grid point, never a backlog). Costs: one ``basic.get`` per take; while tokens run short,
waiting jobs poll at the grid (a few times per period just after a grid point, in case
the leader is late). *Why*: RabbitMQ has no atomic read-modify-write a leaderless bucket
could use (a state message taken and put back serializes every take behind one holder
and duplicates on a crash); a rate is a clock, so one clock (the leader) refilling a
bounded queue is the natural shape, and single-active-consumer gives leader election
with fail-over pushed by the server, no polling and no extra server.
"""

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
