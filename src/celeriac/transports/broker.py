"""The broker contract: a handful of async methods every transport implements.

Delivery semantics (all brokers): a fetched message is *leased* to one consumer until it
is acked, rejected, or its lease expires; an expired lease makes the message visible
again (at-least-once). ``delivery_count`` counts leases, so the worker can dead-letter a
message that keeps killing workers. Messages published with ``not_before`` wait in the
broker's delayed store and become visible at that time; no worker holds them meanwhile.

Priorities: a higher number is served first (0-9, as Celery documents for AMQP). The
Redis broker keeps Celery's list layout on the wire; see its module.

This is the core every transport implements; what only some can do (lease recovery,
revocations, rate limits, remote control, dead letters) is a capability, in
:mod:`celeriac.transports.capabilities`. Nothing above this layer knows which broker it
talks to.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from celeriac.protocol import Message


@dataclass(eq=False, slots=True)
class Delivery:
    """One leased message. ``message`` is None when the stored bytes could not be parsed;
    ``error`` then says why, and the worker dead-letters it."""

    queue: str
    tag: str
    raw: bytes
    message: Message | None
    delivery_count: int = 1
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the broker set aside, with the reason."""

    queue: str
    raw: bytes
    reason: str
    failed_at: float
    #: the message decoded, where ``raw`` alone is not a whole envelope (AMQP keeps
    #: headers and properties beside the body): what a requeue publishes
    message: Message | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Revocation:
    """How a task was revoked: ``terminate`` asks to stop it if it is running."""

    terminate: bool = False
    signal: str | None = None


def bucket_take(
    tokens: float | None, updated: float, now: float, rate: float, capacity: float
) -> tuple[float, float]:
    """Token bucket step, shared by the brokers: ``(tokens left, seconds to wait)``.
    A bucket seen for the first time starts full."""
    level = capacity if tokens is None else min(capacity, tokens + max(0.0, now - updated) * rate)
    if level >= 1.0:
        return level - 1.0, 0.0
    return level, (1.0 - level) / rate


class Broker(abc.ABC):
    """Async broker interface. One instance per process and event loop."""

    #: URL schemes this class serves (``sqlite``, ``redis``, ...).
    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})
        #: Identifies this consumer's leases, so a supervisor can recover them.
        self.consumer_id = ""

    # -- lifecycle --------------------------------------------------------
    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections; create the schema or topology when needed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close connections. Leased messages stay leased until returned or expired."""

    async def declare(self, queue: str) -> None:  # noqa: B027 - optional hook
        """Make sure ``queue`` exists. Brokers that need no declaration do nothing."""

    # -- producing --------------------------------------------------------
    @abc.abstractmethod
    async def publish(
        self,
        queue: str,
        message: Message,
        *,
        priority: int = 0,
        not_before: float | None = None,
    ) -> None:
        """Store ``message`` in ``queue``; hold it until ``not_before`` (epoch s) if given."""

    async def publish_many(self, items: Sequence[tuple[str, Message, int, float | None]]) -> None:
        """Publish several messages; brokers override this to use one round trip."""
        for queue, message, priority, not_before in items:
            await self.publish(queue, message, priority=priority, not_before=not_before)

    # -- consuming --------------------------------------------------------
    @abc.abstractmethod
    async def fetch(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        """Lease up to ``max_count`` visible messages, waiting up to ``timeout`` seconds
        for the first one. Returns an empty list on timeout."""

    @abc.abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Remove the messages for good."""

    async def ack_and_fetch(
        self, acks: Sequence[Delivery], queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """``ack(acks)`` then ``fetch(...)``; brokers override it to do both in one round
        trip (the worker's steady state under load)."""
        if acks:
            await self.ack(acks)
        return await self.fetch(queues, max_count, timeout)

    @abc.abstractmethod
    async def requeue(
        self,
        deliveries: Sequence[Delivery],
        *,
        not_before: float | None = None,
        count_delivery: bool = False,
    ) -> None:
        """Return the messages to their queue (at ``not_before`` if given). Unless
        ``count_delivery``, the lease does not count towards the delivery limit."""

    @abc.abstractmethod
    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the message to the dead-letter store, keeping its bytes and ``reason``."""

    @abc.abstractmethod
    async def extend(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Extend the leases of messages still being worked on."""

    # -- administration ---------------------------------------------------
    @abc.abstractmethod
    async def purge(self, queue: str) -> int:
        """Delete every waiting message of ``queue``; return how many."""

    @abc.abstractmethod
    async def size(self, queue: str) -> int:
        """How many messages wait in ``queue`` (ready and delayed, not leased)."""

    @property
    def lease_seconds(self) -> float:
        """How long a fetched message stays leased without extension."""
        value = self.options.get("visibility_timeout", 60.0)
        return float(value)


__all__ = ["Broker", "DeadLetter", "Delivery", "Revocation", "bucket_take"]
