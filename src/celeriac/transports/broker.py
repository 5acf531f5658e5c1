"""The broker contract: a handful of async methods every transport implements.

Delivery semantics (all brokers): a fetched message is *leased* to one consumer until it
is acked, rejected, or its lease expires; an expired lease makes the message visible
again (at-least-once). ``delivery_count`` counts leases, so the worker can dead-letter a
message that keeps killing workers. Messages published with ``not_before`` wait in the
broker's delayed store and become visible at that time; no worker holds them meanwhile.

Priorities: a higher number is served first (0-9, as Celery documents for AMQP). The
Redis broker keeps Celery's list layout on the wire; see its module.

Nothing above this layer knows which broker it talks to.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
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
    #: True when results can live in the same store (``backend`` defaults to it).
    holds_results: ClassVar[bool] = True

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

    async def recover(self, consumer_id: str, keep: Sequence[Delivery] = ()) -> int:
        """Return every message leased by ``consumer_id`` to its queue, except ``keep``.

        For a dead process (``keep`` empty), and for a live one whose fetch lost its
        reply (``keep`` = what it holds): the leases it never heard of go back at once
        instead of when they expire. Brokers with native unacked tracking need not
        override this."""
        return 0

    # -- administration ---------------------------------------------------
    @abc.abstractmethod
    async def purge(self, queue: str) -> int:
        """Delete every waiting message of ``queue``; return how many."""

    @abc.abstractmethod
    async def size(self, queue: str) -> int:
        """How many messages wait in ``queue`` (ready and delayed, not leased)."""

    # -- control state (durable revocations, global rate limits) ------------
    #: True when ``revoke``/``revoked`` keep revocations in the broker's store.
    supports_revoke: ClassVar[bool] = False
    #: True when ``take_token`` keeps a token bucket in the broker's store.
    supports_global_rate_limit: ClassVar[bool] = False

    async def revoke(
        self, task_ids: Sequence[str], ttl: float, *, terminate: bool = False,
        signal: str | None = None,
    ) -> None:  # fmt: skip
        """Record ``task_ids`` as revoked for ``ttl`` seconds, for every worker."""
        raise NotImplementedError(f"{type(self).__name__} cannot store revocations")

    async def revoked(self, task_ids: Sequence[str]) -> dict[str, Revocation]:
        """The revocations among ``task_ids`` (id -> how it was revoked)."""
        return {}

    async def revoked_among(self, deliveries: Sequence[Delivery]) -> dict[str, Revocation]:
        """The revocations of the tasks of ``deliveries``, which this broker just fetched.
        A broker whose fetch already told it that no revocation exists answers without
        asking its store again."""
        ids = [d.message.task_id for d in deliveries if d.message is not None]
        return await self.revoked([task_id for task_id in ids if task_id])

    async def broadcast_control(self, message: Message) -> None:
        """Send a Celery remote-control request (:func:`celeriac.protocol.control_message`)
        to the Celery workers on this broker, the way Celery's clients do; brokers where
        Celery has no remote control (or that cannot reach it) do nothing."""
        return None

    #: True when ``listen_control``/``reply_control`` speak Celery's remote control.
    supports_control: ClassVar[bool] = False

    async def listen_control(
        self,
        hostname: str,
        handler: Callable[[Message], Awaitable[None]],
        listening: Callable[[], None] | None = None,
    ) -> None:
        """Receive the Celery remote-control requests broadcast on this broker (as a
        worker named ``hostname``) and pass each to ``handler``, until cancelled;
        reconnects by itself. ``listening`` is called each time requests can arrive."""
        raise NotImplementedError(f"{type(self).__name__} has no remote control")

    async def reply_control(self, routing_key: str, message: Message) -> None:
        """Send a control reply to the caller's reply queue (``routing_key``)."""
        raise NotImplementedError(f"{type(self).__name__} has no remote control")

    async def request_control(
        self, message: Message, reply_key: str, timeout: float, limit: int | None
    ) -> list[Message]:
        """Broadcast a control request that wants answers (``control_message`` with
        ``reply_key``) and collect the answers from a reply queue made for it, for
        ``timeout`` seconds or until ``limit`` came, as Celery's clients do."""
        raise NotImplementedError(f"{type(self).__name__} has no remote control")

    async def take_token(self, key: str, rate: float, capacity: float) -> float:
        """Take one token from the bucket ``key`` (refilled at ``rate`` per second, at
        most ``capacity``): 0.0 when taken, else the seconds until one is available."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep a global rate limit")

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead-lettered messages."""
        return []

    @property
    def lease_seconds(self) -> float:
        """How long a fetched message stays leased without extension."""
        value = self.options.get("visibility_timeout", 60.0)
        return float(value)


__all__ = ["Broker", "DeadLetter", "Delivery", "Revocation", "bucket_take"]
