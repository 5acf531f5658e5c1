"""Interoperability with the real ``celery`` package on one Redis server.

(a) A Celery client sends to a celeriac worker (subprocess) and reads its results.
(b) A celeriac client sends to a real Celery worker (subprocess) and reads its results;
    the Celery worker also restores a message a celeriac worker left leased.
Each direction has its own Redis database, flushed before and after.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import celery
import celery.exceptions
import pytest
import redis

import celeriac
import celeriac.exceptions
from celeriac._loop import run_sync
from celeriac.protocol import build_task_message
from celeriac.testing.conformance import opened
from celeriac.transports.redis.broker import RedisBroker
from servers import leased_database
from support import WorkerProcess, celery_worker, close_celery_app, wait_until, write_module

pytestmark = pytest.mark.slow


CELERIAC_TASKS = """
from celeriac import Celery

app = Celery("itasks", broker="{url}")

@app.task
def add(x, y):
    return x + y

@app.task
def fail(message):
    raise ValueError(message)
"""

CELERY_TASKS = """
from celery import Celery

app = Celery("ctasks", broker="{url}", backend="{url}")
app.conf.broker_transport_options = {{"visibility_timeout": 5}}

@app.task
def add(x, y):
    return x + y

@app.task
def fail(message):
    raise KeyError(message)
"""


@pytest.fixture
def db_url() -> Iterator[str]:
    """A Redis database of the test's own (they may run in parallel), flushed around."""
    with leased_database() as url:
        yield url


def _add(x: int, y: int) -> int:
    return x + y


def _fail(message: str) -> None:
    raise ValueError(message)


def test_celery_client_to_celeriac_worker(db_url: str, tmp_path: Path) -> None:
    write_module(tmp_path, "itasks", CELERIAC_TASKS.format(url=db_url))
    client = celery.Celery("itasks", broker=db_url, backend=db_url)
    add = client.task(name="itasks.add")(_add)
    fail = client.task(name="itasks.fail")(_fail)
    r = redis.Redis.from_url(db_url)
    try:
        with WorkerProcess(tmp_path, "itasks", "-P", "threads", "-c", "2", "-l", "info"):
            assert add.delay(2, 3).get(timeout=10) == 5
            with pytest.raises(ValueError, match=r"^boom$"):
                fail.delay("boom").get(timeout=10)

            later = add.apply_async((4, 5), countdown=1.5)
            # the celeriac worker moved Celery's ETA message to the delayed store
            wait_until(lambda: r.zcard("celeriac.delayed.celery") == 1, 5, "the delayed zset")
            assert r.llen("celery") == 0 and r.hlen("unacked") == 0
            assert later.get(timeout=10) == 9

            expired = add.apply_async((1, 1), countdown=1, expires=0.5)
            with pytest.raises(celery.exceptions.TaskRevokedError):
                expired.get(timeout=10)
            assert expired.state == "REVOKED"
    finally:
        r.close()
        close_celery_app(client)


def test_celeriac_client_to_celery_worker(db_url: str, tmp_path: Path) -> None:
    write_module(tmp_path, "ctasks", CELERY_TASKS.format(url=db_url))
    app = celeriac.Celery("client", broker=db_url)
    # a celeriac worker died holding this message: the Celery worker restores it
    asyncio.run(_lease_and_abandon(db_url))
    try:
        with celery_worker(tmp_path, "ctasks"):
            assert app.send_task("ctasks.add", (2, 3)).get(timeout=10) == 5
            with pytest.raises(KeyError, match="'boom'"):
                app.send_task("ctasks.fail", ("boom",)).get(timeout=10)

            start = time.monotonic()
            assert app.send_task("ctasks.add", (4, 5), countdown=1).get(timeout=10) == 9
            assert time.monotonic() - start >= 0.9

            expired = app.send_task("ctasks.add", (1, 1), countdown=1, expires=0.5)
            with pytest.raises(celeriac.exceptions.TaskRevokedError):
                expired.get(timeout=10)
            assert expired.state == "REVOKED"

            assert app.AsyncResult("abandoned").get(timeout=10) == 100
    finally:
        run_sync(app.close_clients())


async def _lease_and_abandon(url: str) -> None:
    message = build_task_message("ctasks.add", (40, 60), task_id="abandoned")
    async with opened(RedisBroker(url)) as broker:
        await broker.publish("celery", message)
        (got,) = await broker.fetch(["celery"], 1, 1.0)
    r = redis.Redis.from_url(url)
    entry = json.loads(r.hget("unacked", got.tag) or b"null")
    assert entry[1:] == ["", "celery"]
    r.zadd("unacked_index", {got.tag: time.time() - 60})  # older than Celery's timeout
    r.close()


def test_iso_eta_from_celeriac_client_reaches_celery_worker_as_eta(db_url: str) -> None:
    """The message a Celery worker receives for a countdown carries Celery's eta header."""
    app = celeriac.Celery("client", broker=db_url)
    app.send_task("ctasks.add", (1, 2), countdown=30)
    run_sync(app.close_clients())
    r = redis.Redis.from_url(db_url)
    (raw,) = r.lrange("celery", 0, -1)
    r.close()
    eta = datetime.fromisoformat(json.loads(raw)["headers"]["eta"])
    assert timedelta(seconds=25) < eta - datetime.now(timezone.utc) <= timedelta(seconds=30)


@pytest.mark.parametrize("prefix", ["", "pfx:"])
def test_celery_remote_control_reaches_a_celeriac_worker(
    db_url: str, tmp_path: Path, prefix: str
) -> None:
    url = f"{db_url}?global_keyprefix={prefix}" if prefix else db_url
    write_module(tmp_path, "itasks", CELERIAC_TASKS.format(url=url))
    client = celery.Celery("itasks", broker=db_url, backend=db_url)
    options = {"global_keyprefix": prefix} if prefix else {}
    client.conf.broker_transport_options = client.conf.result_backend_transport_options = options
    add = client.task(name="itasks.add")(_add)
    try:
        with WorkerProcess(
            tmp_path, "itasks", "-P", "prefork", "-c", "2", "-n", "rc1@test", "-l", "info"
        ) as worker:
            # one answer per worker, not one per child process: asked without a
            # destination (with one, Celery's client stops at the first answer), and
            # other tests' workers may share the broker, so this worker's answers
            replies = client.control.ping(timeout=1.5)
            assert [r for r in replies if "rc1@test" in r] == [{"rc1@test": {"ok": "pong"}}]
            assert client.control.ping(destination=["other@test"], timeout=0.5) == []
            with redis.Redis.from_url(db_url) as r:  # garbage on the channel: one line
                db = r.connection_pool.connection_kwargs.get("db", 0)
                r.publish(f"{prefix}/{db}.celery.pidbox", b"not an envelope")
            worker.wait_for(r"Remote control: ignored an unreadable request")
            later = add.apply_async((1, 2), countdown=2)
            client.control.revoke(later.id)  # `celery control revoke <id>`
            worker.wait_for(r"Remote control: revoke")
            with pytest.raises(celery.exceptions.TaskRevokedError):
                later.get(timeout=15)
            assert later.state == "REVOKED"
            assert add.delay(2, 2).get(timeout=10) == 4  # the worker carries on
            inspect = client.control.inspect(destination=["rc1@test"], timeout=1.5)
            assert inspect.registered() == {"rc1@test": ["itasks.add", "itasks.fail"]}
            # and a celeriac client asks the same way
            ours = celeriac.Celery("itasks", broker=url)
            try:
                assert ours.control.ping(timeout=1) == [{"rc1@test": {"ok": "pong"}}]
                asked = ours.control.inspect(destination=["rc1@test"], timeout=1.5)
                assert asked.registered() == {"rc1@test": ["itasks.add", "itasks.fail"]}
                assert asked.active() == {"rc1@test": []}
                # an unknown command: Celery's worker's answer
                unknown = asked._request("no_such_command")
                assert unknown == {"rc1@test": {"error": "KeyError('no_such_command')"}}
            finally:
                ours.close()
            client.control.shutdown(destination=["rc1@test"])  # a warm shutdown
            assert worker.wait(timeout=20) == 0
            assert "Warm shutdown (SIGTERM)" in worker.log
    finally:
        close_celery_app(client)


def test_celeriac_client_inspects_a_celery_worker(db_url: str, tmp_path: Path) -> None:
    write_module(tmp_path, "ctasks", CELERY_TASKS.format(url=db_url))
    app = celeriac.Celery("client", broker=db_url)
    try:
        with celery_worker(tmp_path, "ctasks", "-n", "theirs@test"):
            # Celery's worker subscribes to its pidbox just after "ready": ask until heard
            pinged = wait_until(lambda: app.control.ping(timeout=0.5), 20, "an answer")
            assert pinged == [{"theirs@test": {"ok": "pong"}}]
            registered = app.control.inspect(timeout=1).registered()
            assert registered is not None
            assert {"ctasks.add", "ctasks.fail"} <= set(registered["theirs@test"])
            assert app.control.inspect(destination=["nobody@test"], timeout=0.3).ping() is None
    finally:
        app.close()
