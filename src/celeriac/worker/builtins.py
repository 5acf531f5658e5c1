"""The worker's own features, as middleware (see ``celeriac.middleware``).

Each consumer makes its own instances (their state, such as token buckets, is the
consumer's) and runs them before the app's middleware, in the order of :func:`builtins`:

* :class:`~celeriac.worker.retries.Retries` handles ``autoretry_for`` and ``Retry`` (in
  the executing thread);
* :class:`ResultStore` stores each settled batch's results in one round trip (or replies
  to each caller's reply queue on ``rpc://``); canvas's chord joins, which read them,
  come after it;
* :class:`RateLimits` holds a job until its task's token bucket (``rate_limit``) gives it
  a token: in this process, or in the broker's store for ``rate_limit_scope='global'``;
* :class:`TimeLimits` raises ``SoftTimeLimitExceeded`` in a job past its soft limit and
  stops one past its hard limit (FAILURE with ``TimeLimitExceeded``);
* :class:`TerminateRevoked` stops running jobs revoked with ``terminate=True``, by id or
  by stamp (checked in the broker's revocation store once a second).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

from celeriac._outcome import Action, Outcome
from celeriac._rates import parse_rate
from celeriac.exceptions import (
    BrokerError,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    Terminated,
    TimeLimitExceeded,
)
from celeriac.middleware import Middleware
from celeriac.transports.capabilities import revocations_of
from celeriac.worker.limits import LocalBucket
from celeriac.worker.retries import Retries

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.transports.backend import ResultBackend
    from celeriac.transports.broker import Broker
    from celeriac.worker.consumer import Consumer
    from celeriac.worker.core import Job

logger = logging.getLogger("celeriac.worker")

#: How often running jobs are checked against the revocation store (seconds).
REVOKE_CHECK_INTERVAL = 1.0


class ResultStore(Middleware):
    """Stores the results of a settled batch (the first settle hook)."""

    def __init__(self, ttl: float | None) -> None:
        self.ttl = ttl

    async def settle(
        self, app: Celeriac, outcomes: list[Outcome], broker: Broker, backend: ResultBackend
    ) -> None:
        # a STARTED report that a state the task stored itself (update_state) overtook
        # is left out: it must not replace that state
        batch = [o for o in outcomes if not (o.action is Action.PROGRESS and _overtaken(o))]
        if backend.needs_reply_to:  # rpc: results go to each caller's reply queue
            replies = [(_reply_to(o), o.meta["task_id"], o.meta) for o in batch if o.meta]
            if replies:
                await backend.store_replies(replies)
            return
        ttl = self.ttl
        results = [(o.meta["task_id"], o.meta, ttl) for o in batch if o.meta]
        if results:
            await backend.store_many(results)


class RateLimits(Middleware):
    """Token buckets per task name (``rate_limit``, ``task_default_rate_limit``)."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.default = consumer.app.conf["task_default_rate_limit"]
        self.buckets: dict[str, LocalBucket] = {}

    def gate(self, job: Job) -> Callable[[], Awaitable[None]] | None:
        rate = parse_rate(job.task.rate_limit or self.default)
        return None if rate is None else partial(self._wait, job, rate)

    async def _wait(self, job: Job, rate: float) -> None:
        store = self.consumer.rate_store
        name = job.task.name
        scope = getattr(job.task, "rate_limit_scope", "worker")
        while True:
            if scope == "global" and store is not None:
                try:
                    wait = await store.take_token(f"celeriac.rate.{name}", rate, 1.0)
                except (OSError, BrokerError) as exc:
                    logger.warning("Could not take a rate-limit token: %s", exc)
                    wait = 1.0 / rate
            else:
                bucket = self.buckets.get(name)
                if bucket is None or bucket.rate != rate:
                    bucket = self.buckets[name] = LocalBucket(rate)
                wait = bucket.take()
            if wait <= 0:
                return
            await asyncio.sleep(wait)


class TimeLimits(Middleware):
    """Soft and hard time limits of running jobs."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    async def tick(self, running: list[Job]) -> None:
        now = time.monotonic()
        for job in running:
            elapsed = now - job.started_at
            if job.soft_limit and elapsed >= job.soft_limit and not job.soft_fired:
                job.soft_fired = True
                logger.warning(
                    "Soft time limit (%ss) exceeded for %s[%s]",
                    job.soft_limit,
                    job.call.name,
                    job.call.id,
                )
                self.consumer.pool.interrupt(job, SoftTimeLimitExceeded)
            if job.hard_limit and elapsed >= job.hard_limit:
                text = f"Time limit ({job.hard_limit}s) exceeded for {job.call.name}"
                logger.error(
                    "Hard time limit (%ss) exceeded for %s[%s]",
                    job.hard_limit,
                    job.call.name,
                    job.call.id,
                )
                self.consumer.stop_job(job, TimeLimitExceeded(text), TimeLimitExceeded)


class TerminateRevoked(Middleware):
    """Stops running jobs revoked with ``terminate=True``."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.last_check = 0.0

    async def tick(self, running: list[Job]) -> None:
        consumer = self.consumer
        store = consumer.revocation_store
        now = time.monotonic()
        if store is None or now - self.last_check < REVOKE_CHECK_INTERVAL:
            return
        self.last_check = now
        messages = [j.delivery.message for j in running if j.delivery.message is not None]
        revoked = await consumer.revocations(lambda s: revocations_of(s, messages))
        for job in running:
            how = revoked.get(job.call.id)
            if how is not None and how.terminate and job.running:
                logger.warning("Terminating revoked task %s[%s]", job.call.name, job.call.id)
                error = TaskRevokedError("terminated")
                error.signum = _signum(how.signal)  # type: ignore[attr-defined]
                consumer.stop_job(job, error, Terminated)


def builtins(consumer: Consumer) -> list[Middleware]:
    """The worker's middleware for ``consumer``, in the order they run."""
    limits = [] if consumer.app.conf["worker_disable_rate_limits"] else [RateLimits(consumer)]
    return [
        Retries(consumer.handler),
        ResultStore(consumer.handler.result_ttl),
        *limits,
        TimeLimits(consumer),
        TerminateRevoked(consumer),
    ]


def _signum(name: str | int | None) -> signal.Signals:
    """The signal a revoke named (``task_revoked``'s ``signum``); SIGTERM by default."""
    if isinstance(name, int):
        return signal.Signals(name)
    text = (name or "SIGTERM").upper()
    try:
        return signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except KeyError:
        return signal.SIGTERM


def _overtaken(outcome: Outcome) -> bool:
    return outcome.job is not None and outcome.job.request.state_updated


def _reply_to(outcome: Outcome) -> str | None:
    message = outcome.delivery.message
    value = message.properties.get("reply_to") if message is not None else None
    return value if isinstance(value, str) and value else None


__all__ = ["RateLimits", "ResultStore", "TerminateRevoked", "TimeLimits", "builtins"]
