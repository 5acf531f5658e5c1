"""The shared conformance suite on the Redis broker and result backend.

Every test gets its own key prefix (``global_keyprefix`` in the URL) on the test server
and deletes its keys afterwards. Without a server the tests are skipped, or fail when
``CI=true``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from celeriac.testing.conformance import (
    BackendConformance,
    BackendFactory,
    BrokerConformance,
    BrokerFactory,
    url_factory,
)
from celeriac.transports.redis.backend import RedisBackend
from celeriac.transports.redis.broker import RedisBroker

REDIS_URL = os.environ.get("CELERIAC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis(url: str = REDIS_URL) -> redis.Redis:
    """A client for the test server; skip (or fail under CI) when there is none."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        message = f"needs a Redis server at {url} ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return client


#: Databases the tests lease whole (interop tests: Celery's keys have no prefix of ours).
#: Database 0 is shared by key prefix; 10-15 belong to the benchmarks.
LEASED_DATABASES = range(1, 10)


@contextlib.contextmanager
def leased_database() -> Iterator[str]:
    """The URL of a test server database no other test process uses meanwhile (held by
    a file lock per database number), flushed before and after."""
    base = REDIS_URL.rsplit("/", 1)[0]
    locks = Path(tempfile.gettempdir())
    for attempt in (fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_EX):
        for db in LEASED_DATABASES:
            lock = (locks / f"celeriac-test-redis-db-{db}.lock").open("a")
            try:
                fcntl.flock(lock, attempt)
            except BlockingIOError:
                lock.close()
                continue
            try:
                url = f"{base}/{db}"
                client = require_redis(url)
                client.flushdb()
                try:
                    yield url
                finally:
                    client.flushdb()
                    client.close()
                return
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
                lock.close()
    raise AssertionError("unreachable: the blocking attempt always gets a lock")


@pytest.fixture
def redis_db() -> Iterator[str]:
    """A whole Redis database of the test's own; see :func:`leased_database`."""
    with leased_database() as url:
        yield url


@pytest.fixture
def prefixed_url() -> Iterator[str]:
    """The test server's URL with a fresh key prefix; the prefix's keys go afterwards."""
    with scratch_prefix("conformance") as prefix:
        yield f"{REDIS_URL}?global_keyprefix={prefix}"


@contextlib.contextmanager
def scratch_prefix(label: str) -> Iterator[str]:
    """A fresh key prefix (``<label>-<uuid>:``) on the test server; its keys are deleted
    afterwards. Skips (fails under CI) when there is no server."""
    client = require_redis()
    prefix = f"{label}-{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


class TestRedisBroker(BrokerConformance):
    @pytest.fixture
    def broker_factory(self, prefixed_url: str) -> BrokerFactory:
        return url_factory(RedisBroker, prefixed_url)


class TestRedisBackend(BackendConformance):
    @pytest.fixture
    def backend_factory(self, prefixed_url: str) -> BackendFactory:
        return url_factory(RedisBackend, prefixed_url)
