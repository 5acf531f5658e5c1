"""What only some transports can do, as small runtime-checkable Protocols.

A broker offers a capability by having its methods (most also subclass the Protocol to
say so and to inherit its defaults); the layers above ask with ``isinstance`` once, when
they start, never per message. :mod:`celeriac.testing.conformance` has one test mixin per
capability, run against every transport that claims it.

| capability | methods | memory | sqlite | redis | amqp |
|---|---|---|---|---|---|
| :class:`LeaseRecovery` | ``recover`` | yes | yes | yes | no: unacked messages return natively |
| :class:`RevocationStore` | ``revoke``, ``revoked``, ``revoked_among`` | yes | yes | yes | yes |
| :class:`RevocationListing` | ``revoked_ids`` | yes | yes | yes | yes |
| :class:`RateLimitStore` | ``take_token`` | yes | yes | yes | yes |
| :class:`RemoteControl` | ``listen_control``, ``reply_control``, |  |  |  |  |
|  | ``request_control``, ``broadcast_control`` | yes | yes | yes | yes |
| :class:`DeadLetterStore` | ``dead_letters`` | yes | yes | yes | yes |
| :class:`DeadLetterRemoval` | ``remove_dead_letter`` | yes | yes | yes | yes |
| :class:`EventChannel` | ``publish_events``, ``listen_events`` | yes | yes | yes | yes |
| :class:`ScheduleStore` | ``schedule_runs``, ``schedule_claim``, |  |  |  |  |
|  | ``schedule_entries``, ``schedule_set_entry`` | yes | yes | yes | no: the |
|  |  |  |  |  | result backend's (Redis, SQLite) |
| :class:`QueueBindings` | ``bind`` | no | no | yes | yes |

``broadcast_control`` (send a Celery remote-control request, wanting no answer) is part
of :class:`Broadcast`; a broker without it reaches no Celery worker, so callers skip it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from celeriac.protocol import Message
from celeriac.protocol.stamps import message_keys
from celeriac.transports.broker import DeadLetter, Delivery, Revocation


@runtime_checkable
class LeaseRecovery(Protocol):
    """Leases that a supervisor can hand back when their consumer dies."""

    async def recover(self, consumer_id: str, keep: Sequence[Delivery] = ()) -> int:
        """Return every message leased by ``consumer_id`` to its queue, except ``keep``.

        For a dead process (``keep`` empty), and for a live one whose fetch lost its
        reply (``keep`` = what it holds): the leases it never heard of go back at once
        instead of when they expire."""
        ...


@runtime_checkable
class RevocationStore(Protocol):
    """Durable revocations, seen by every worker (and by workers started later)."""

    async def revoke(
        self,
        task_ids: Sequence[str],
        ttl: float,
        *,
        terminate: bool = False,
        signal: str | None = None,
    ) -> None:
        """Record ``task_ids`` as revoked for ``ttl`` seconds, for every worker."""
        ...

    async def revoked(self, task_ids: Sequence[str]) -> dict[str, Revocation]:
        """The revocations among ``task_ids`` (id -> how it was revoked)."""
        ...

    async def revoked_among(self, deliveries: Sequence[Delivery]) -> dict[str, Revocation]:
        """The revocations of the tasks of ``deliveries``, which this broker just fetched
        (by id, or by stamp: :func:`revocations_of`). A broker whose fetch already told
        it that no revocation exists answers without asking its store again."""
        return await revocations_of(self, [d.message for d in deliveries if d.message])


@runtime_checkable
class RevocationListing(Protocol):
    """Every live revocation of the store, by id (``inspect revoked``)."""

    async def revoked_ids(self, limit: int) -> list[str]:
        """Up to ``limit`` ids revoked and not yet expired, the newest first."""
        ...


async def revocations_of(
    store: RevocationStore, messages: Sequence[Message]
) -> dict[str, Revocation]:
    """task id -> its revocation, for the ``messages`` revoked by id or by one of their
    stamps (``revoke_by_stamped_headers``), in one look-up of ``store``."""
    ids = [m.task_id for m in messages]
    stamped = [(m.task_id, message_keys(m.headers)) for m in messages if m.headers.get("stamps")]
    keys = [key for _, task_keys in stamped for key in task_keys]
    found = await store.revoked([*(i for i in ids if i), *keys])
    if not keys:
        return found
    for task_id, task_keys in stamped:
        if task_id and task_id not in found:
            how = next((found[k] for k in task_keys if k in found), None)
            if how is not None:
                found[task_id] = how
    return {i: found[i] for i in ids if i and i in found}


@runtime_checkable
class RateLimitStore(Protocol):
    """Token buckets shared by all workers (``rate_limit_scope="global"``)."""

    async def take_token(self, key: str, rate: float, capacity: float) -> float:
        """Take one token from the bucket ``key`` (refilled at ``rate`` per second, at
        most ``capacity``): 0.0 when taken, else the seconds until one is available."""
        ...


@runtime_checkable
class Broadcast(Protocol):
    """Sending Celery's remote-control requests that want no answer."""

    async def broadcast_control(self, message: Message) -> None:
        """Send a request (:func:`celeriac.protocol.control_message`) to every worker,
        Celery's and celeriac's, the way Celery's clients do."""
        ...


@runtime_checkable
class RemoteControl(Broadcast, Protocol):
    """Celery's remote control, both sides: workers listen and reply, clients ask."""

    async def listen_control(
        self,
        hostname: str,
        handler: Callable[[Message], Awaitable[None]],
        listening: Callable[[], None] | None = None,
    ) -> None:
        """Receive the requests broadcast on this broker (as a worker named
        ``hostname``) and pass each to ``handler``, until cancelled; reconnects by
        itself. ``listening`` is called each time requests can arrive."""
        ...

    async def reply_control(self, routing_key: str, message: Message) -> None:
        """Send a control reply to the caller's reply queue (``routing_key``)."""
        ...

    async def request_control(
        self, message: Message, reply_key: str, timeout: float, limit: int | None
    ) -> list[Message]:
        """Broadcast a request that wants answers (``control_message`` with
        ``reply_key``) and collect them from a reply queue made for it, for ``timeout``
        seconds or until ``limit`` came, as Celery's clients do."""
        ...


@runtime_checkable
class EventChannel(Protocol):
    """Celery's events (the ``celeryev`` topic exchange): every listener sees every
    event published after it listens; none are kept for later listeners."""

    async def publish_events(self, items: Sequence[tuple[str, Message]]) -> None:
        """Publish each ``(routing_key, message)`` (made by
        :func:`celeriac.protocol.events.event_message`)."""
        ...

    async def listen_events(
        self,
        patterns: Sequence[str],
        handler: Callable[[Message], Awaitable[None]],
        listening: Callable[[], None] | None = None,
    ) -> None:
        """Pass each event message whose routing key matches one of ``patterns`` (AMQP
        binding keys: ``#``, ``worker.#``) to ``handler``, until cancelled; reconnects by
        itself. ``listening`` is called each time events can arrive."""
        ...


@runtime_checkable
class DeadLetterStore(Protocol):
    """Reading back what the broker set aside."""

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead-lettered messages."""
        ...


@runtime_checkable
class DeadLetterRemoval(Protocol):
    """Taking a message out of the dead letters (the dashboard's requeue and delete)."""

    async def remove_dead_letter(self, letter: DeadLetter) -> bool:
        """Remove one dead letter equal to ``letter`` (as :meth:`DeadLetterStore.
        dead_letters` gave it); False when there is none (removed already)."""
        ...


#: one message a claim publishes: (queue, message, priority, not_before)
ScheduledSend = tuple[str, Message, int, float | None]


@runtime_checkable
class ScheduleStore(Protocol):
    """Beat's store: the last run of each periodic entry, claimed atomically, and the
    entries added at runtime. Times are whole milliseconds since the epoch (UTC), so a
    claim compares exact integers whatever the process that computed them.

    On a broker, a claim publishes its message in the same atomic step (one SQLite
    transaction, one Redis script): a slot is sent exactly once by any number of beats.
    A result backend offers the same calls without ``send`` (for brokers that cannot,
    such as RabbitMQ: the beat then claims in the backend and publishes after)."""

    async def schedule_runs(self, names: Sequence[str]) -> dict[str, int]:
        """The stored last run of each entry of ``names`` that has one."""
        ...

    async def schedule_claim(
        self, name: str, last: int | None, slot: int, send: ScheduledSend | None = None
    ) -> bool:
        """If the stored last run of ``name`` is ``last`` (None: none is stored), store
        ``slot`` and publish ``send``, atomically: True. False (nothing done) when it is
        anything else: another beat claimed first."""
        ...

    async def schedule_entries(self) -> dict[str, bytes]:
        """The entries stored at runtime (name -> the beat's encoding of it)."""
        ...

    async def schedule_set_entry(self, name: str, data: bytes | None) -> None:
        """Store (or with None, delete) a runtime entry; deleting also forgets its runs."""
        ...


@runtime_checkable
class QueueBindings(Protocol):
    """Queues reachable by another exchange and routing key than their name (kombu's
    ``Queue(name, Exchange(x), routing_key=k)`` in ``task_queues``), so that a Celery
    client publishing to that exchange alone reaches the celeriac worker's queue."""

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Bind the declared ``queue`` to the direct ``exchange`` with ``routing_key``."""
        ...


__all__ = [
    "Broadcast",
    "DeadLetterRemoval",
    "DeadLetterStore",
    "EventChannel",
    "LeaseRecovery",
    "QueueBindings",
    "RateLimitStore",
    "RemoteControl",
    "RevocationStore",
    "ScheduleStore",
    "ScheduledSend",
    "revocations_of",
]
