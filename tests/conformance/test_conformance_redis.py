"""The shared conformance suite on the Redis broker and result backend, directly and
through Sentinel.

Every test gets its own key prefix (``global_keyprefix`` in the URL) on the test server
and deletes its keys afterwards. Without a server the tests are skipped, or fail when
``CI=true``. The Sentinel classes run the same mixins on a private ``redis-server`` and
a ``redis-server --sentinel`` monitoring it, started once per module on free loopback
ports and stopped (by PID) afterwards; without the ``redis-server`` binary they are
skipped, or fail when ``CI=true``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celeriac.testing.conformance import (
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
    QueueBindingsConformance,
    RateLimitConformance,
    RemoteControlConformance,
    ReplyConformance,
    RevocationConformance,
    RevocationListingConformance,
    ScheduleStoreConformance,
    url_factory,
)
from celeriac.transports.backend import ResultBackend
from celeriac.transports.redis.backend import RedisBackend
from celeriac.transports.redis.broker import RedisBroker
from celeriac.transports.redis.rpc import RedisRPCBackend
from servers import PrivateRedis, PrivateSentinel, deleted_afterwards, need_redis_server
from support import wait_until

#: Databases the tests lease whole (interop tests: Celery's keys have no prefix of ours).
#: Database 0 is shared by key prefix; 10-15 belong to the benchmarks.


class RedisBrokerSuite(
    BrokerConformance,
    LeaseRecoveryConformance,
    RevocationConformance,
    RevocationListingConformance,
    RateLimitConformance,
    RemoteControlConformance,
    DeadLetterConformance,
    DeadLetterRemovalConformance,
    EventChannelConformance,
    ScheduleStoreConformance,
    QueueBindingsConformance,
):
    """Everything the Redis broker offers."""


class RedisBackendSuite(
    BackendConformance,
    GroupConformance,
    ChordCounterConformance,
    KeyValueConformance,
    HistoryConformance,
    BackendScheduleStoreConformance,
):
    """Everything the Redis result backend offers."""


class TestRedisBroker(RedisBrokerSuite):
    @pytest.fixture
    def broker_factory(self, prefixed_url: str) -> BrokerFactory:
        return url_factory(RedisBroker, prefixed_url)


class TestRedisBackend(RedisBackendSuite):
    @pytest.fixture
    def backend_factory(self, prefixed_url: str) -> BackendFactory:
        return url_factory(RedisBackend, prefixed_url)


class TestRedisRPCBackend(ReplyConformance):
    """``rpc://`` on a Redis broker: replies in lists named by each caller's reply_to."""

    @pytest.fixture
    def backend_factory(self, prefixed_url: str) -> BackendFactory:
        def make(options: dict[str, Any] | None = None) -> ResultBackend:
            options = {"broker_url": prefixed_url, **(options or {})}
            return RedisRPCBackend("rpc://", options=options)

        return make


# -- through Sentinel -------------------------------------------------------------------

MASTER_NAME = "conformance"


@pytest.fixture(scope="module")
def sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``sentinel://`` URL (master name in it) of a private master and sentinel."""
    need_redis_server()
    directory = tmp_path_factory.mktemp("sentinel")
    (directory / "master").mkdir()
    master = PrivateRedis(directory / "master").start()
    try:
        sentinel = PrivateSentinel(directory / "sentinel", master.port, name=MASTER_NAME)
        try:
            address = ("127.0.0.1", master.port)
            wait_until(lambda: sentinel.master() == address, 10, "the sentinel to know it")
            yield f"sentinel://127.0.0.1:{sentinel.port}/0?master_name={MASTER_NAME}"
        finally:
            sentinel.stop()
    finally:
        master.kill()


@pytest.fixture
def sentinel_prefixed_url(sentinel_url: str) -> Iterator[str]:
    """The Sentinel URL with a fresh key prefix; the prefix's keys go afterwards."""
    port = int(sentinel_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    with redis.Redis(port=port, socket_timeout=2) as sentinel:
        _host, master_port = sentinel.execute_command(
            "SENTINEL", "get-master-addr-by-name", MASTER_NAME
        )
    prefix = f"conformance-{uuid.uuid4().hex}:"
    with (
        redis.Redis(port=int(master_port), socket_timeout=5) as client,
        deleted_afterwards(client, prefix),
    ):
        yield f"{sentinel_url}&global_keyprefix={prefix}"


class TestSentinelRedisBroker(RedisBrokerSuite):
    @pytest.fixture
    def broker_factory(self, sentinel_prefixed_url: str) -> BrokerFactory:
        return url_factory(RedisBroker, sentinel_prefixed_url)


class TestSentinelRedisBackend(RedisBackendSuite):
    @pytest.fixture
    def backend_factory(self, sentinel_prefixed_url: str) -> BackendFactory:
        return url_factory(RedisBackend, sentinel_prefixed_url)
