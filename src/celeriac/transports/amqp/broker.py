"""RabbitMQ broker over AMQP 0-9-1 (aiormq), wire-compatible with Celery: ``amqp://``,
``amqps://``, ``pyamqp://`` (``amqp://user:pass@host:5672/vhost``; ``//`` is vhost ``/``).

Celery's topology and message format; publisher confirms; delays (``not_before``) wait
on the server in a cascade of TTL queues, never in a worker; RabbitMQ tracks unacked
messages itself (``extend`` is a no-op, nothing to recover); revocations and global rate
limits live in RabbitMQ too (a stream, and token queues refilled by an elected worker).
Options (``broker_transport_options``): ``queue_max_priority``, ``queue_type``,
``heartbeat``, ``connect_timeout``, ``confirm_publish``, ``dead_letter_queue``,
``revoke_retention``.

The broker is assembled from one module per concern, each building on :mod:`.core`
(session, channels, topology, publishes): :mod:`.revocations`, :mod:`.consume`,
:mod:`.ratelimit` and :mod:`.remote`. Below them, :mod:`.connection` is the one module
that imports aiormq, :mod:`.wire` the fast lane and :mod:`.codec` its pure frame codec.
The design, option by option, and why it beat the alternatives: docs/internals/amqp.md.
"""

from __future__ import annotations

from celeriac.transports.amqp.consume import Consuming
from celeriac.transports.amqp.core import DEAD_LETTER_QUEUE
from celeriac.transports.amqp.events import EventExchange
from celeriac.transports.amqp.ratelimit import TokenBuckets
from celeriac.transports.amqp.remote import Pidbox
from celeriac.transports.capabilities import (
    DeadLetterRemoval,
    DeadLetterStore,
    EventChannel,
    QueueBindings,
    RateLimitStore,
    RemoteControl,
    RevocationStore,
)


class AMQPBroker(
    Consuming,
    TokenBuckets,
    Pidbox,
    EventExchange,
    RevocationStore,
    RateLimitStore,
    RemoteControl,
    DeadLetterStore,
    DeadLetterRemoval,
    EventChannel,
    QueueBindings,
):
    """RabbitMQ broker; see the module docstring."""


__all__ = ["DEAD_LETTER_QUEUE", "AMQPBroker"]
