"""The fixtures every test module may use: the shared servers (a Redis key prefix or
database of the test's own, a private RabbitMQ vhost per pytest process) and private
``redis-server`` processes. The helpers behind them are in ``servers.py``; the worker
subprocess helpers in ``support.py``."""

from __future__ import annotations

import contextlib
import fcntl
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from yarl import URL

from semantic_cluster import COMBINATIONS, HEADER, Cluster, load
from servers import (
    AMQP_URL,
    REDIS_URL,
    PrivateRedis,
    leased_database,
    need_redis_server,
    rabbitmqctl,
    require_rabbitmq,
    scratch_prefix,
    server_lock,
    with_vhost,
)
from support import close_celery_app, own_celery_tasks, write_module


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


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A ``redis-server`` of the test's own (port, unix socket, append-only), killed after."""
    need_redis_server()
    server = PrivateRedis(tmp_path).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module", params=COMBINATIONS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    client, worker = request.param.split("->")
    body = getattr(request.module, "TASKS", "")
    extra = getattr(request.module, "APP_OPTIONS", "")
    extra = f", {extra}" if extra else ""
    broker = getattr(request.module, "BROKER", "redis")  # or "amqp": RabbitMQ, rpc://
    if broker not in ("redis", "amqp"):
        raise ValueError(f"{request.module.__name__}: BROKER is 'redis' or 'amqp', not {broker!r}")
    root = tmp_path_factory.mktemp("semantics")
    (root / "worker").mkdir()
    (root / "client").mkdir()
    with leased_database() if broker == "redis" else _cluster_vhost() as url:
        backend = url if broker == "redis" else "rpc://"
        for side, package in (("worker", worker), ("client", client)):
            notes = str(root / "worker")
            source = HEADER.format(
                package=package, url=url, backend=backend, notes=notes, extra=extra
            )
            source += body
            write_module(root / side, "semtasks", source)
        module_name = f"semtasks_{client}_{uuid.uuid4().hex[:8]}"
        with own_celery_tasks():  # other tests' shared Celery tasks stay out of this app
            tasks = load(root / "client" / "semtasks.py", module_name)
            if client == "celery":
                tasks.app.finalize(auto=True)
        found = Cluster(client, worker, url, root / "worker", tasks)
        try:
            found.start_worker("-c", "4", name="semantics")
            yield found
        finally:
            for process in found.workers:
                process.stop()
            if client == "celery":
                close_celery_app(tasks.app)
            else:
                tasks.app.close()
            sys.modules.pop(module_name, None)


@contextlib.contextmanager
def _cluster_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of one semantics module's own (its workers' remote control
    reaches no one else's), deleted afterwards; the server stays up meanwhile."""
    with server_lock(fcntl.LOCK_SH):
        require_rabbitmq()
        vhost = f"celeriac-test-{int(time.time())}-{uuid.uuid4().hex[:8]}"
        rabbitmqctl("add_vhost", vhost)
        try:
            user = URL(AMQP_URL).user or "guest"
            rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
            yield with_vhost(AMQP_URL, vhost)
        finally:
            rabbitmqctl("delete_vhost", vhost, check=False)
