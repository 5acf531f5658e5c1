"""The conformance suite on every broker and result backend that needs no server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.testing.conformance import (
    BackendConformance,
    BackendFactory,
    BrokerConformance,
    BrokerFactory,
    url_factory,
)
from celeriac.transports.memory.backend import MemoryBackend
from celeriac.transports.memory.backend import clear_stores as clear_results
from celeriac.transports.memory.broker import MemoryBroker
from celeriac.transports.memory.broker import clear_stores as clear_queues
from celeriac.transports.sqlite.backend import SQLiteBackend
from celeriac.transports.sqlite.broker import SQLiteBroker


class TestMemoryBroker(BrokerConformance):
    @pytest.fixture
    def broker_factory(self) -> Iterator[BrokerFactory]:
        url = f"memory://conformance-{uuid.uuid4().hex}"
        yield url_factory(MemoryBroker, url)
        clear_queues(url)


class TestSQLiteBroker(BrokerConformance):
    @pytest.fixture
    def broker_factory(self, tmp_path: Path) -> BrokerFactory:
        return url_factory(SQLiteBroker, f"sqlite:///{tmp_path / 'broker.db'}")


class TestMemoryBackend(BackendConformance):
    @pytest.fixture
    def backend_factory(self) -> Iterator[BackendFactory]:
        url = f"memory://conformance-{uuid.uuid4().hex}"
        yield url_factory(MemoryBackend, url)
        clear_results(url)


class TestSQLiteBackend(BackendConformance):
    @pytest.fixture
    def backend_factory(self, tmp_path: Path) -> BackendFactory:
        return url_factory(SQLiteBackend, f"sqlite:///{tmp_path / 'results.db'}")
