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

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celeriac.testing.conformance import (
    BackendConformance,
    BackendFactory,
    BrokerConformance,
    BrokerFactory,
    ChordCounterConformance,
    DeadLetterConformance,
    GroupConformance,
    LeaseRecoveryConformance,
    RateLimitConformance,
    RemoteControlConformance,
    RevocationConformance,
    url_factory,
)
from celeriac.transports.redis.backend import RedisBackend
from celeriac.transports.redis.broker import RedisBroker
from servers import deleted_afterwards, free_port, missing

#: Databases the tests lease whole (interop tests: Celery's keys have no prefix of ours).
#: Database 0 is shared by key prefix; 10-15 belong to the benchmarks.


class RedisBrokerSuite(
    BrokerConformance,
    LeaseRecoveryConformance,
    RevocationConformance,
    RateLimitConformance,
    RemoteControlConformance,
    DeadLetterConformance,
):
    """Everything the Redis broker offers."""


class RedisBackendSuite(BackendConformance, GroupConformance, ChordCounterConformance):
    """Everything the Redis result backend offers."""


class TestRedisBroker(RedisBrokerSuite):
    @pytest.fixture
    def broker_factory(self, prefixed_url: str) -> BrokerFactory:
        return url_factory(RedisBroker, prefixed_url)


class TestRedisBackend(RedisBackendSuite):
    @pytest.fixture
    def backend_factory(self, prefixed_url: str) -> BackendFactory:
        return url_factory(RedisBackend, prefixed_url)


# -- through Sentinel -------------------------------------------------------------------

MASTER_NAME = "conformance"


def _wait_for(check: Any, what: str, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Poll ``check`` (a server coming up: no event to await), bounded."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{what} did not come up in {timeout}s"
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``sentinel://`` URL (master name in it) of a private master and sentinel."""
    if shutil.which("redis-server") is None:
        missing("needs the redis-server binary on PATH (for a private master and sentinel)")
    directory = tmp_path_factory.mktemp("sentinel")
    master_port, sentinel_port = free_port(), free_port()
    started: list[subprocess.Popen[bytes]] = []
    try:
        options = {"port": master_port, "bind": "127.0.0.1", "save": "", "dir": directory}
        args = [x for key, value in options.items() for x in (f"--{key}", str(value))]
        master = subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL)
        started.append(master)
        with redis.Redis(port=master_port, socket_timeout=2) as client:
            _wait_for(client.ping, "the private redis-server", master)
        conf = directory / "sentinel.conf"  # the sentinel rewrites it: a file of its own
        conf.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n"
        )
        sentinel = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL
        )
        started.append(sentinel)
        with redis.Redis(port=sentinel_port, socket_timeout=2) as client:
            address = ["127.0.0.1", str(master_port)]

            def knows_master() -> bool:
                found = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
                return [x.decode() if isinstance(x, bytes) else x for x in found] == address

            _wait_for(knows_master, "redis-sentinel", sentinel)
        yield f"sentinel://127.0.0.1:{sentinel_port}/0?master_name={MASTER_NAME}"
    finally:
        for proc in reversed(started):
            _stop(proc)


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
