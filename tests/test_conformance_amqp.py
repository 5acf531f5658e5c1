"""The shared conformance suite on the RabbitMQ broker, plus the RabbitMQ test plumbing
the other AMQP test modules import.

Each pytest process gets a private vhost (``rabbitmqctl add_vhost``), deleted at the end;
each test deletes the queues the suite uses before and after it runs. Without a server
the tests are skipped, or fail when ``CI=true``. A test that stops the RabbitMQ app takes
an exclusive file lock; every other AMQP test holds it shared, so parallel runs (``-n``)
never see the outage of another test.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiormq
import pytest
from yarl import URL

from celeriac.testing.conformance import (
    QUEUE,
    BackendFactory,
    BrokerConformance,
    BrokerFactory,
    DeadLetterConformance,
    RateLimitConformance,
    RemoteControlConformance,
    ReplyConformance,
    RevocationConformance,
)
from celeriac.transports.amqp.broker import DEAD_LETTER_QUEUE, AMQPBroker
from celeriac.transports.amqp.connection import LEVELS, delay_queue
from celeriac.transports.amqp.rpc import RPCBackend
from celeriac.transports.backend import ResultBackend
from celeriac.transports.broker import Broker

AMQP_URL = os.environ.get("CELERIAC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
LOCK_PATH = Path(os.environ.get("TMPDIR", "/tmp")) / "celeriac-test-rabbitmq.lock"
SUITE_QUEUES = [QUEUE, *(f"{QUEUE}-{x}" for x in ("a", "b", "c", "other")), DEAD_LETTER_QUEUE]


def with_vhost(url: str, vhost: str) -> str:
    return str(URL(url).with_path("/" + vhost.replace("/", "%2F"), encoded=True))


def require_rabbitmq(url: str = AMQP_URL) -> None:
    """Skip (or fail under CI) when no RabbitMQ answers at ``url``."""

    async def ping() -> None:
        conn = aiormq.Connection(url)
        await asyncio.wait_for(conn.connect(), 5)
        await conn.close()

    try:
        asyncio.run(ping())
    except Exception as exc:
        message = f"needs a RabbitMQ server at {URL(url).with_password('**')} ({exc!r})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def rabbitmqctl(*args: str, check: bool = True) -> str:
    """Run ``rabbitmqctl``; a test that needs it is skipped (failed under CI) without it."""
    tool = shutil.which("rabbitmqctl")
    if tool is None:
        message = "needs rabbitmqctl (RabbitMQ's CLI, run as root) on this machine"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=check)
    return done.stdout


def delete_queues(url: str, queues: list[str]) -> None:
    """Delete ``queues`` and their delay levels (queues that do not exist are fine)."""

    async def main() -> None:
        conn = aiormq.Connection(url)
        await conn.connect()
        try:
            ch = await conn.channel()
            for queue in queues:
                for name in [queue, *(delay_queue(queue, k) for k in range(LEVELS))]:
                    await ch.queue_delete(name, nowait=True)
            await ch.queue_delete("celeriac-test-sync")
        finally:
            await conn.close()

    asyncio.run(main())


async def aqueue_counts(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of an existing queue, by a passive declare."""
    conn = aiormq.Connection(url)
    await conn.connect()
    try:
        ch = await conn.channel()
        ok = await ch.queue_declare(queue, passive=True)
        return ok.message_count or 0, ok.consumer_count or 0
    finally:
        await conn.close()


def queue_counts(url: str, queue: str) -> tuple[int, int]:
    return asyncio.run(aqueue_counts(url, queue))


@contextlib.contextmanager
def server_lock(mode: int) -> Iterator[None]:
    """Hold the lock on the server: shared while using it, exclusive to stop it."""
    with LOCK_PATH.open("a") as lock:
        fcntl.flock(lock, mode)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def amqp_vhost() -> Iterator[str]:
    """The URL of a vhost private to this pytest process (``/`` if rabbitmqctl is
    missing); deleted at the end. Made and deleted under the shared lock, so never while
    another process's test has stopped the server."""
    with server_lock(fcntl.LOCK_SH):
        require_rabbitmq()
        vhost = f"celeriac-test-{int(time.time())}-{uuid.uuid4().hex[:8]}"
        try:
            stale = time.time() - 6 * 3600
            for old in rabbitmqctl("list_vhosts", "-q").split():  # left by killed runs
                match = re.fullmatch(r"celeriac-test-(\d+)-[0-9a-f]{8}", old)
                if match and int(match[1]) < stale:
                    rabbitmqctl("delete_vhost", old, check=False)
            rabbitmqctl("add_vhost", vhost)
            user = URL(AMQP_URL).user or "guest"
            rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        except (OSError, subprocess.SubprocessError, pytest.skip.Exception):
            vhost = ""
    if not vhost:
        yield AMQP_URL  # no rabbitmqctl: the default vhost, with the tests' own queue names
        return
    try:
        yield with_vhost(AMQP_URL, vhost)
    finally:
        with server_lock(fcntl.LOCK_SH):
            rabbitmqctl("delete_vhost", vhost, check=False)


@pytest.fixture
def rabbit(amqp_vhost: str) -> Iterator[str]:
    """The private vhost's URL, while no other test has stopped the server."""
    with server_lock(fcntl.LOCK_SH):
        yield amqp_vhost


@pytest.fixture
def rabbit_exclusive(amqp_vhost: str) -> Iterator[str]:
    """Like ``rabbit``, but alone: for a test that stops the RabbitMQ app."""
    with server_lock(fcntl.LOCK_EX):
        yield amqp_vhost


class AMQPFactory:
    """Makes brokers on one URL; the test's options go over the fixed ones."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url, self.fixed = url, options

    def __call__(self, options: dict[str, Any] | None = None) -> Broker:
        return AMQPBroker(self.url, options={**self.fixed, **(options or {})})


class TestAMQPBroker(
    BrokerConformance,
    RevocationConformance,
    RateLimitConformance,
    RemoteControlConformance,
    DeadLetterConformance,
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
