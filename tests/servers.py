"""The servers the tests talk to: the shared Redis and RabbitMQ (each test keeps to a key
prefix, a leased database or a private vhost of its own), and private ``redis-server`` /
``redis-sentinel`` processes a test starts and stops itself.

Plain helpers; the fixtures built on them are in ``conftest.py``. A missing server skips
the test with a reason naming it, except under ``CI=true``, where it fails.
Set ``TEST_REDIS_URL`` / ``TEST_AMQP_URL`` to use other servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import aiormq
import pytest
import redis
from yarl import URL

from celeriac.transports.amqp.connection import connection_url
from celeriac.transports.amqp.delay import LEVELS, delay_queue
from support import wait_until


def missing(message: str) -> NoReturn:
    """Skip the test for want of ``message``'s server or tool; fail instead under CI."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


# -- Redis -------------------------------------------------------------------------------

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis(url: str = REDIS_URL) -> redis.Redis:
    """A client for the test server; skip (or fail under CI) when there is none."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        missing(f"needs a Redis server at {url} ({exc})")
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


@contextlib.contextmanager
def deleted_afterwards(client: redis.Redis, prefix: str) -> Iterator[None]:
    try:
        yield
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


# -- RabbitMQ ----------------------------------------------------------------------------

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


LOCK_PATH = Path(os.environ.get("TMPDIR", "/tmp")) / "celeriac-test-rabbitmq.lock"


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
        missing(f"needs a RabbitMQ server at {URL(url).with_password('**')} ({exc!r})")


def rabbitmqctl(*args: str, check: bool = True) -> str:
    """Run ``rabbitmqctl``; a test that needs it is skipped (failed under CI) without it."""
    tool = shutil.which("rabbitmqctl")
    if tool is None:
        missing("needs rabbitmqctl (RabbitMQ's CLI, run as root) on this machine")
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=check)
    return str(done.stdout)


def event_listeners(url: str) -> set[str]:
    """Who listens to events: on Redis the clients of the test's own database with a
    (pattern) subscription, on RabbitMQ the ``celeryev.*`` queues with a consumer."""
    if url.startswith("redis"):
        client = redis.Redis.from_url(url)
        try:
            db = int(url.rsplit("/", 1)[1])
            return {
                str(c["id"])
                for c in client.client_list()
                if int(c["db"]) == db and (int(c["sub"]) + int(c["psub"])) > 0
            }
        finally:
            client.close()
    vhost = url.rsplit("/", 1)[1]
    rows = [
        r.split()
        for r in rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "consumers").splitlines()
    ]
    return {r[0] for r in rows if r and r[0].startswith("celeryev.") and r[-1] != "0"}


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


# -- private redis-server and redis-sentinel processes -----------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """``redis-server`` on a free port (and a unix socket), append-only, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.socket = directory / "redis.sock"
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
                "--unixsocket",
                str(self.socket),
                "--bind",
                "127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        wait_until(lambda: pings(client), 10, "the private redis-server")
        client.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def need_redis_server() -> None:
    if shutil.which("redis-server") is None:
        missing("needs the redis-server binary on PATH")


class PrivateSentinel:
    """``redis-server --sentinel`` on a free port, watching the master as ``name``."""

    def __init__(
        self,
        directory: Path,
        master_port: int,
        password: str | None = None,
        name: str = "mymaster",
    ) -> None:
        self.name = name
        self.port = free_port()
        self.password = password
        directory.mkdir(exist_ok=True)
        conf = directory / "sentinel.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {directory}",
            f"sentinel monitor {name} 127.0.0.1 {master_port} 1",
            f"sentinel down-after-milliseconds {name} 1000",
            f"sentinel failover-timeout {name} 5000",
        ]
        if password:
            lines.append(f"requirepass {password}")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL
        )
        self.client = redis.Redis(port=self.port, password=password)
        wait_until(lambda: pings(self.client), 10, "redis-sentinel")

    def master(self) -> tuple[str, int] | None:
        found = self.client.execute_command(  # type: ignore[no-untyped-call]
            "SENTINEL", "get-master-addr-by-name", self.name
        )
        return None if found is None else (found[0].decode(), int(found[1]))

    def replica_ready(self) -> bool:
        """The sentinel knows a replica it could promote (linked, answering pings)."""
        for entry in self.client.sentinel_slaves(self.name):
            if entry.get("flags") == "slave" and entry.get("master-link-status") == "ok":
                return True
        return False

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def unacked(url: str, queue: str) -> int:
    out = rabbitmqctl("list_queues", "-p", vhost_of(url), "name", "messages_unacknowledged", "-q")
    counts = dict(line.split("\t") for line in out.splitlines() if "\t" in line)
    return int(counts.get(queue, 0))


def vhost_of(url: str) -> str:
    return connection_url(url).rsplit("/", 1)[1].replace("%2F", "/") or "/"


# -- PostgreSQL ----------------------------------------------------------------------------

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def require_postgres(url: str = POSTGRES_URL) -> None:
    """Skip (or fail under CI) when no PostgreSQL answers at ``url``."""
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        missing(f"needs a PostgreSQL server at {url} ({exc})")


def drop_schema(schema: str, url: str = POSTGRES_URL) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextlib.contextmanager
def postgres_schema(label: str = "test", url: str = POSTGRES_URL) -> Iterator[str]:
    """A ``postgresql://`` URL on a fresh schema of its own (``?schema=``), dropped
    afterwards."""
    require_postgres(url)
    schema = f"{label}_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}schema={schema}"
    finally:
        drop_schema(schema, url)
