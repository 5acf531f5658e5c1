"""The shared conformance suite on the RabbitMQ broker, plus the RabbitMQ test plumbing
the other AMQP test modules import.

Each pytest process gets a private vhost (``rabbitmqctl add_vhost``), deleted at the end;
each test deletes the queues the suite uses before and after it runs. Without a server
the tests are skipped, or fail when ``CI=true``. A test that stops the RabbitMQ app takes
an exclusive file lock; every other AMQP test holds it shared, so parallel runs (``-n``)
never see the outage of another test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celeriac.testing.conformance import (
    QUEUE,
    BackendFactory,
    BrokerConformance,
    BrokerFactory,
    DeadLetterConformance,
    DeadLetterRemovalConformance,
    EventChannelConformance,
    QueueBindingsConformance,
    RateLimitConformance,
    RemoteControlConformance,
    ReplyConformance,
    RevocationConformance,
    RevocationListingConformance,
)
from celeriac.transports.amqp.broker import DEAD_LETTER_QUEUE, AMQPBroker
from celeriac.transports.amqp.rpc import RPCBackend
from celeriac.transports.backend import ResultBackend
from celeriac.transports.broker import Broker
from servers import delete_queues

SUITE_QUEUES = [QUEUE, *(f"{QUEUE}-{x}" for x in ("a", "b", "c", "other")), DEAD_LETTER_QUEUE]


class AMQPFactory:
    """Makes brokers on one URL; the test's options go over the fixed ones."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url, self.fixed = url, options

    def __call__(self, options: dict[str, Any] | None = None) -> Broker:
        return AMQPBroker(self.url, options={**self.fixed, **(options or {})})


class TestAMQPBroker(
    BrokerConformance,
    RevocationConformance,
    RevocationListingConformance,
    RateLimitConformance,
    RemoteControlConformance,
    DeadLetterConformance,
    DeadLetterRemovalConformance,
    EventChannelConformance,
    QueueBindingsConformance,
):
    """No LeaseRecovery: RabbitMQ has no leases (a delivery is held until its channel
    closes) and requeues a dead consumer's messages itself."""

    @pytest.fixture
    def broker_factory(self, rabbit: str) -> Iterator[BrokerFactory]:
        delete_queues(rabbit, SUITE_QUEUES)
        # the suite's priority test needs x-max-priority (RabbitMQ ignores priorities
        # on queues without it, as Celery's default queues are)
        yield AMQPFactory(rabbit, queue_max_priority=10)
        delete_queues(rabbit, SUITE_QUEUES)


class RPCFactory:
    """Makes ``rpc://`` backends on the test's vhost (``broker_url``)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, options: dict[str, Any] | None = None) -> ResultBackend:
        return RPCBackend("rpc://", options={"broker_url": self.url, **(options or {})})


class TestRPCBackend(ReplyConformance):
    """``rpc://`` stores nothing by id: results go to the caller's reply queue."""

    @pytest.fixture
    def backend_factory(self, rabbit: str) -> BackendFactory:
        return RPCFactory(rabbit)
