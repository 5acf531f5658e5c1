"""The conformance suite on every broker and result backend that needs no server, and
the check that every capability has its conformance mixin."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac.testing.conformance import (
    BACKEND_MIXINS,
    BACKEND_PARTS,
    BROKER_MIXINS,
    BackendConformance,
    BackendFactory,
    BackendScheduleStoreConformance,
    BrokerConformance,
    BrokerFactory,
    ChordCounterConformance,
    DeadLetterConformance,
    DeadLetterRemovalConformance,
    EventChannelConformance,
    GroupConformance,
    HistoryConformance,
    KeyValueConformance,
    LeaseRecoveryConformance,
    RateLimitConformance,
    RemoteControlConformance,
    ReplyConformance,
    RevocationConformance,
    RevocationListingConformance,
    ScheduleStoreConformance,
    url_factory,
)
from celeriac.transports import capabilities
from celeriac.transports.backend import ResultBackend
from celeriac.transports.memory.backend import MemoryBackend
from celeriac.transports.memory.backend import clear_stores as clear_results
from celeriac.transports.memory.broker import MemoryBroker
from celeriac.transports.memory.broker import clear_stores as clear_queues
from celeriac.transports.memory.rpc import MemoryRPCBackend
from celeriac.transports.sqlite.backend import SQLiteBackend
from celeriac.transports.sqlite.broker import SQLiteBroker
from celeriac.transports.sqlite.rpc import SQLiteRPCBackend


class LocalBrokerSuite(
    BrokerConformance,
    LeaseRecoveryConformance,
    RevocationConformance,
    RevocationListingConformance,
    RateLimitConformance,
    DeadLetterConformance,
    DeadLetterRemovalConformance,
    RemoteControlConformance,
    EventChannelConformance,
    ScheduleStoreConformance,
):
    """What the memory and SQLite brokers offer (everything)."""


class LocalBackendSuite(
    BackendConformance,
    GroupConformance,
    ChordCounterConformance,
    KeyValueConformance,
    HistoryConformance,
):
    pass


class TestMemoryBroker(LocalBrokerSuite):
    @pytest.fixture
    def broker_factory(self) -> Iterator[BrokerFactory]:
        url = f"memory://conformance-{uuid.uuid4().hex}"
        yield url_factory(MemoryBroker, url)
        clear_queues(url)


class TestSQLiteBroker(LocalBrokerSuite):
    @pytest.fixture
    def broker_factory(self, tmp_path: Path) -> BrokerFactory:
        return url_factory(SQLiteBroker, f"sqlite:///{tmp_path / 'broker.db'}")


class TestMemoryBackend(LocalBackendSuite):
    @pytest.fixture
    def backend_factory(self) -> Iterator[BackendFactory]:
        url = f"memory://conformance-{uuid.uuid4().hex}"
        yield url_factory(MemoryBackend, url)
        clear_results(url)


class TestSQLiteBackend(LocalBackendSuite, BackendScheduleStoreConformance):
    @pytest.fixture
    def backend_factory(self, tmp_path: Path) -> BackendFactory:
        return url_factory(SQLiteBackend, f"sqlite:///{tmp_path / 'results.db'}")


def rpc_factory(cls: type[ResultBackend], broker_url: str) -> BackendFactory:
    """``rpc://`` backends replying over ``broker_url``'s broker."""

    def make(options: dict[str, Any] | None = None) -> ResultBackend:
        return cls("rpc://", options={"broker_url": broker_url, **(options or {})})

    return make


class TestMemoryRPCBackend(ReplyConformance):
    @pytest.fixture
    def backend_factory(self) -> Iterator[BackendFactory]:
        url = f"memory://conformance-{uuid.uuid4().hex}"
        yield rpc_factory(MemoryRPCBackend, url)
        clear_queues(url)


class TestSQLiteRPCBackend(ReplyConformance):
    @pytest.fixture
    def backend_factory(self, tmp_path: Path) -> BackendFactory:
        return rpc_factory(SQLiteRPCBackend, f"sqlite:///{tmp_path / 'broker.db'}")


def test_every_capability_protocol_has_a_conformance_mixin() -> None:
    """A capability added to ``capabilities`` fails here until it has a mixin (and the
    core mixins then make every transport that offers it compose that mixin)."""
    protocols = {
        obj
        for _, obj in inspect.getmembers(capabilities, inspect.isclass)
        if obj.__module__ == capabilities.__name__
        and getattr(obj, "_is_protocol", False)
        and getattr(obj, "_is_runtime_protocol", False)
    }
    assert protocols == set(BROKER_MIXINS)
    assert set(BACKEND_MIXINS) == set(BACKEND_PARTS)


def test_a_capability_mixin_fails_for_a_broker_without_the_capability() -> None:
    """Claiming a capability a broker lacks fails (the first check), it does not skip."""

    from celeriac.transports.amqp.broker import AMQPBroker

    class NoLeases(DeadLetterConformance):
        pass

    suite = NoLeases()
    suite.test_dead_letter_store_is_implemented(url_factory(AMQPBroker, "amqp://x"))
    with pytest.raises(AssertionError):  # RabbitMQ keeps no leases
        LeaseRecoveryConformance().test_lease_recovery_is_implemented(
            url_factory(AMQPBroker, "amqp://x")
        )


def test_the_composition_check_catches_a_missing_mixin() -> None:
    class Incomplete(BrokerConformance, LeaseRecoveryConformance):  # no DeadLetter, ...
        pass

    with pytest.raises(AssertionError, match="DeadLetterStore"):
        Incomplete().test_claimed_capabilities_match_the_broker(
            url_factory(MemoryBroker, "memory://x")
        )

    class NoChords(BackendConformance, GroupConformance):
        pass

    with pytest.raises(AssertionError, match="chord counters"):
        NoChords().test_claimed_capabilities_match_the_backend(
            url_factory(MemoryBackend, "memory://x")
        )
