"""The shared conformance suite on the PostgreSQL broker and result backend.

Every test gets a schema of its own (``?schema=`` in the URL) on the test server,
created by the transport on first use and dropped afterwards. Without a server the
tests are skipped, or fail when ``CI=true``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celeriac.testing.conformance import (
    BackendConformance,
    BackendFactory,
    BackendScheduleStoreConformance,
    BrokerConformance,
    BrokerFactory,
    ChordCounterConformance,
    DeadLetterConformance,
    EventChannelConformance,
    GroupConformance,
    KeyValueConformance,
    LeaseRecoveryConformance,
    RateLimitConformance,
    RemoteControlConformance,
    RevocationConformance,
    ScheduleStoreConformance,
    url_factory,
)
from celeriac.transports.postgres.backend import PostgresBackend
from celeriac.transports.postgres.broker import PostgresBroker
from servers import postgres_schema


@pytest.fixture
def schema_url() -> Iterator[str]:
    with postgres_schema("conformance") as url:
        yield url


class TestPostgresBroker(
    BrokerConformance,
    LeaseRecoveryConformance,
    RevocationConformance,
    RateLimitConformance,
    DeadLetterConformance,
    RemoteControlConformance,
    EventChannelConformance,
    ScheduleStoreConformance,
):
    @pytest.fixture
    def broker_factory(self, schema_url: str) -> BrokerFactory:
        return url_factory(PostgresBroker, schema_url)


class TestPostgresBackend(
    BackendConformance,
    GroupConformance,
    ChordCounterConformance,
    KeyValueConformance,
    BackendScheduleStoreConformance,
):
    @pytest.fixture
    def backend_factory(self, schema_url: str) -> BackendFactory:
        return url_factory(PostgresBackend, schema_url)
