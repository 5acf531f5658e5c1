"""Interoperability with the real ``celery`` package over RabbitMQ, both directions, with
results through ``rpc://`` and through a Redis backend.

(a) A Celery client sends to a celeriac worker (subprocess) and reads its results.
(b) A celeriac client sends to a real Celery worker (subprocess) and reads its results.
Tasks, failures (same exception type and message), countdown, expires and priorities.
Each test has queues of its own in the per-process vhost, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import celery
import celery.exceptions
import pytest

import celeriac
import celeriac.exceptions
from celeriac._loop import run_sync
from celeriac.transports.amqp.delay import delay_queue
from servers import delete_queues, leased_database, queue_counts, unacked
from support import (
    WorkerProcess,
    celery_worker,
    close_celery_app,
    repeat_until_logged,
    wait_until,
    write_module,
)

pytestmark = pytest.mark.slow

CELERIAC_TASKS = """
import time
from celeriac import Celery

app = Celery("itasks", broker="{url}", backend={backend!r}, task_default_queue="{queue}",
             broker_transport_options={{"queue_max_priority": 10}})
app.conf.worker_prefetch_multiplier = 1

@app.task
def add(x, y):
    return x + y

@app.task
def fail(message):
    raise ValueError(message)

@app.task
def stamp(tag):
    return [tag, time.time()]
"""

CELERY_TASKS = """
import time
from celery import Celery

app = Celery("ctasks", broker="{url}", backend={backend!r})
app.conf.update(task_default_queue="{queue}", task_queue_max_priority=10,
                worker_prefetch_multiplier=1, worker_hijack_root_logger=False)

@app.task
def add(x, y):
    return x + y

@app.task
def fail(message):
    raise KeyError(message)

@app.task
def stamp(tag):
    return [tag, time.time()]
"""


@pytest.fixture(params=["rpc", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The result backend: ``rpc://`` (None: the default on AMQP) or a flushed Redis db."""
    if request.param == "rpc":
        yield None
        return
    with leased_database() as url:
        yield url


@pytest.fixture
def queue(rabbit: str) -> Iterator[str]:
    name = f"interop-{uuid.uuid4().hex[:8]}"
    yield name
    delete_queues(rabbit, [name])


def _add(x: int, y: int) -> int:
    return x + y


def _fail(message: str) -> None:
    raise ValueError(message)


def _stamp(tag: str) -> list[object]:
    return [tag, time.time()]


def test_celery_client_to_celeriac_worker(
    rabbit: str,
    queue: str,
    backend: str | None,
    tmp_path: Path,
) -> None:
    write_module(
        tmp_path, "itasks", CELERIAC_TASKS.format(url=rabbit, backend=backend, queue=queue)
    )
    client = celery.Celery("itasks", broker=rabbit, backend=backend or "rpc://")
    client.conf.update(task_default_queue=queue, task_queue_max_priority=10)
    add = client.task(name="itasks.add")(_add)
    fail = client.task(name="itasks.fail")(_fail)
    stamp = client.task(name="itasks.stamp")(_stamp)
    try:
        # sent before the worker runs (prefetch 1): it takes them by priority
        waiting = [stamp.apply_async((f"p{p}",), priority=p) for p in (0, 9, 3, 6)]
        with WorkerProcess(tmp_path, "itasks", "-P", "solo", "-l", "info"):
            order = sorted((r.get(timeout=10) for r in waiting), key=lambda x: x[1])
            assert [tag for tag, _ in order] == ["p9", "p6", "p3", "p0"]
            assert add.delay(2, 3).get(timeout=10) == 5
            with pytest.raises(ValueError, match=r"^boom$"):
                fail.delay("boom").get(timeout=10)
            if backend is not None:
                return  # the rest is the same on either backend

            due = time.time() + 1.5
            later = stamp.apply_async(("late",), countdown=1.5)
            # the worker moved Celery's ETA message into the delay cascade: not held
            levels = [delay_queue(queue, k) for k in range(32) if 1500 >> k & 1]
            wait_until(lambda: any(_ready(rabbit, q) for q in levels), 5, "the delay levels")
            assert queue_counts(rabbit, queue)[0] == 0 and unacked(rabbit, queue) == 0
            assert later.get(timeout=10)[1] >= due - 0.05

            expired = add.apply_async((1, 1), countdown=1, expires=0.5)
            with pytest.raises(celery.exceptions.TaskRevokedError):
                expired.get(timeout=10)
            assert expired.state == "REVOKED"
    finally:
        close_celery_app(client)


def test_celeriac_client_to_celery_worker(
    rabbit: str,
    queue: str,
    backend: str | None,
    tmp_path: Path,
) -> None:
    write_module(
        tmp_path,
        "ctasks",
        CELERY_TASKS.format(url=rabbit, backend=backend or "rpc://", queue=queue),
    )
    app = celeriac.Celery(
        "client",
        broker=rabbit,
        backend=backend,
        task_default_queue=queue,
        broker_transport_options={"queue_max_priority": 10},
    )
    try:
        waiting = [app.send_task("ctasks.stamp", (f"p{p}",), priority=p) for p in (0, 9, 3, 6)]
        with celery_worker(tmp_path, "ctasks", "-Q", queue):
            order = sorted((r.get(timeout=10) for r in waiting), key=lambda x: x[1])
            assert [tag for tag, _ in order] == ["p9", "p6", "p3", "p0"]
            assert app.send_task("ctasks.add", (2, 3)).get(timeout=10) == 5
            with pytest.raises(KeyError, match="'boom'"):
                app.send_task("ctasks.fail", ("boom",)).get(timeout=10)
            if backend is not None:
                return

            # the delay cascade hands the message over only when due: Celery runs it at once
            due = time.time() + 1
            assert app.send_task("ctasks.stamp", ("late",), countdown=1).get(timeout=10)[1] >= due

            expired = app.send_task("ctasks.add", (1, 1), countdown=1, expires=0.5)
            with pytest.raises(celeriac.exceptions.TaskRevokedError):
                expired.get(timeout=10)
            assert expired.state == "REVOKED"
    finally:
        run_sync(app.close_clients())


def _ready(url: str, queue: str) -> int:
    try:
        return queue_counts(url, queue)[0]
    except (Exception, asyncio.CancelledError):  # not declared yet (aiormq may cancel)
        return 0


REVOKE_TASKS = """
from celery import Celery

app = Celery("vtasks", broker="{url}", backend="rpc://")
app.conf.task_default_queue = "{queue}"

@app.task
def add(x, y):
    return x + y
"""


def test_celeriac_revoke_reaches_a_running_celery_worker(
    rabbit: str,
    queue: str,
    tmp_path: Path,
) -> None:
    write_module(tmp_path, "vtasks", REVOKE_TASKS.format(url=rabbit, queue=queue))
    app = celeriac.Celery("client", broker=rabbit, task_default_queue=queue)
    task_id = "c0ffee00-0000-4000-8000-000000000002"
    try:
        with celery_worker(tmp_path, "vtasks", "-Q", queue) as theirs:
            theirs.wait_for(r"ready\.")
            # Celery's pidbox broadcast, besides our stream
            revoke = partial(app.control.revoke, task_id)
            repeat_until_logged(revoke, theirs, f"Tasks flagged as revoked: {task_id}")
            app.send_task("vtasks.add", (1, 1), task_id=task_id)
            theirs.wait_for(rf"Discarding revoked task: vtasks\.add\[{task_id}\]")
    finally:
        run_sync(app.close_clients())


def test_celery_remote_control_reaches_a_celeriac_worker(
    rabbit: str,
    queue: str,
    tmp_path: Path,
) -> None:
    write_module(tmp_path, "itasks", CELERIAC_TASKS.format(url=rabbit, backend=None, queue=queue))
    client = celery.Celery("itasks", broker=rabbit, backend="rpc://")
    client.conf.update(task_default_queue=queue, task_queue_max_priority=10)
    add = client.task(name="itasks.add")(_add)
    try:
        with WorkerProcess(
            tmp_path, "itasks", "-P", "prefork", "-c", "2", "-n", "rc2@test", "-l", "info"
        ) as worker:
            # one answer per worker, not one per child process: asked without a
            # destination (with one, Celery's client stops at the first answer), and
            # other tests' workers may share the broker, so this worker's answers
            replies = client.control.ping(timeout=1.5)
            assert [r for r in replies if "rc2@test" in r] == [{"rc2@test": {"ok": "pong"}}]
            later = add.apply_async((1, 2), countdown=2)
            client.control.revoke(later.id)  # `celery control revoke <id>`
            worker.wait_for(r"Remote control: revoke")
            worker.wait_for(rf"Discarding revoked task itasks\.add\[{later.id}\]", timeout=20)
            assert add.delay(2, 2).get(timeout=10) == 4  # the worker carries on
            # and a celeriac client asks the same way
            ours = celeriac.Celery("itasks", broker=rabbit)
            try:
                replies = ours.control.ping(timeout=1)
                assert [r for r in replies if "rc2@test" in r] == [{"rc2@test": {"ok": "pong"}}]
                asked = ours.control.inspect(destination=["rc2@test"], timeout=1.5)
                assert asked.registered() == {
                    "rc2@test": ["itasks.add", "itasks.fail", "itasks.stamp"]
                }
            finally:
                run_sync(ours.close_clients())
    finally:
        close_celery_app(client)


def test_two_celeriac_workers_with_one_name_both_answer(
    rabbit: str,
    queue: str,
    tmp_path: Path,
) -> None:
    write_module(tmp_path, "itasks", CELERIAC_TASKS.format(url=rabbit, backend=None, queue=queue))
    client = celery.Celery("itasks", broker=rabbit, backend="rpc://")
    args = ("-P", "solo", "-n", "dup@test", "-l", "info")
    try:
        # the second starts once the first is ready (``with`` enters them in order)
        with (
            WorkerProcess(tmp_path, "itasks", *args) as first,
            WorkerProcess(tmp_path, "itasks", *args) as second,
        ):
            # the control queue's name is taken: the second binds one of its own
            second.wait_for(r"another worker is named dup@test")
            assert "another worker" not in first.log
            first.stop()
            # the second answers on its own queue
            replies = client.control.ping(destination=["dup@test"], timeout=1.5)
            assert replies == [{"dup@test": {"ok": "pong"}}]
    finally:
        close_celery_app(client)


def test_celeriac_client_inspects_a_celery_worker(
    rabbit: str,
    queue: str,
    tmp_path: Path,
) -> None:
    write_module(tmp_path, "vtasks", REVOKE_TASKS.format(url=rabbit, queue=queue))
    app = celeriac.Celery("client", broker=rabbit, task_default_queue=queue)
    try:
        with celery_worker(tmp_path, "vtasks", "-Q", queue, "-n", "theirs2@test"):

            def answered() -> list[dict[str, object]]:
                replies = app.control.ping(destination=["theirs2@test"], timeout=0.5)
                return replies or []

            assert wait_until(answered, 20, "an answer") == [{"theirs2@test": {"ok": "pong"}}]
            registered = app.control.inspect(destination=["theirs2@test"], timeout=1).registered()
            assert registered is not None and "vtasks.add" in registered["theirs2@test"]
    finally:
        run_sync(app.close_clients())
