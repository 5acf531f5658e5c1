"""``rpc://`` results over a Redis broker with the real ``celery`` package, both ways.

(a) A Celery client (``backend="rpc://"``) sends to a celeriac prefork worker and reads
    its results from its reply list; with and without ``global_keyprefix``.
(b) A celeriac client (``rpc://``) sends to a real Celery worker and reads its replies.
Both: results, a failure's exception, PENDING before the task ran, a chain (the last
step, sent by the worker, answers the client that froze it), ``get(timeout)``.
Each test has a Redis database of its own, flushed before and after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import celery
import celery.exceptions
import pytest
import redis

import celeriac
import celeriac.exceptions
from celeriac._loop import run_sync
from servers import leased_database
from support import WorkerProcess, celery_worker, close_celery_app, write_module

pytestmark = pytest.mark.slow

CELERIAC_TASKS = """
from celeriac import Celery

app = Celery("rtasks", broker="{url}", backend="rpc://")

@app.task
def add(x, y):
    return x + y

@app.task
def fail(message):
    raise ValueError(message)
"""

CELERY_TASKS = """
from celery import Celery

app = Celery("ctasks", broker="{url}", backend="rpc://")

@app.task
def add(x, y):
    return x + y

@app.task
def fail(message):
    raise KeyError(message)
"""


@pytest.fixture
def db_url() -> Iterator[str]:
    with leased_database() as url:
        yield url


def _add(x: int, y: int) -> int:
    return x + y


def _fail(message: str) -> None:
    raise ValueError(message)


@pytest.mark.parametrize("prefix", ["", "pfx:"])
def test_celery_rpc_client_to_celeriac_worker(db_url: str, tmp_path: Path, prefix: str) -> None:
    url = f"{db_url}?global_keyprefix={prefix}" if prefix else db_url
    write_module(tmp_path, "rtasks", CELERIAC_TASKS.format(url=url))
    client = celery.Celery("rtasks", broker=db_url, backend="rpc://")
    if prefix:
        client.conf.broker_transport_options = {"global_keyprefix": prefix}
    add = client.task(name="rtasks.add")(_add)
    fail = client.task(name="rtasks.fail")(_fail)
    r = redis.Redis.from_url(db_url)
    try:
        first = add.delay(1, 1)
        assert first.state == "PENDING"  # no worker yet
        # prefork (the default pool): its children must serve rpc:// (they crash-looped)
        with WorkerProcess(tmp_path, "rtasks", "-c", "2", "-l", "info") as worker:
            assert first.get(timeout=20) == 2
            assert add.delay(2, 3).get(timeout=10) == 5
            with pytest.raises(ValueError, match=r"^boom$"):
                fail.delay("boom").get(timeout=10)
            assert (add.s(1, 2) | add.s(3) | add.s(4)).delay().get(timeout=10) == 10
            results = [add.delay(i, i) for i in range(10)]
            assert [x.get(timeout=10) for x in results] == [2 * i for i in range(10)]
            # the reply list is Celery's queue name (the client's oid), prefix first
            assert r.exists(f"{prefix}{client.thread_oid}") == 0  # all taken
            assert " exited with " not in worker.log  # no child died
    finally:
        r.close()
        close_celery_app(client)


def test_celeriac_rpc_client_to_celery_worker(db_url: str, tmp_path: Path) -> None:
    write_module(tmp_path, "ctasks", CELERY_TASKS.format(url=db_url))
    app = celeriac.Celery("client", broker=db_url, backend="rpc://")
    try:
        first = app.send_task("ctasks.add", (1, 1))
        assert first.state == "PENDING"
        with celery_worker(tmp_path, "ctasks"):
            assert first.get(timeout=20) == 2
            assert app.send_task("ctasks.add", (2, 3)).get(timeout=10) == 5
            with pytest.raises(KeyError, match="'boom'"):
                app.send_task("ctasks.fail", ("boom",)).get(timeout=10)
            add = celeriac.signature("ctasks.add", app=app)
            chained = (add.clone((1, 2)) | add.clone((3,)) | add.clone((4,))).delay()
            assert chained.get(timeout=10) == 10
            results = [app.send_task("ctasks.add", (i, i)) for i in range(10)]
            assert [x.get(timeout=10) for x in results] == [2 * i for i in range(10)]

            nobody = app.send_task("ctasks.add", (1, 1), queue="nobody-consumes-this")
            start = time.monotonic()
            with pytest.raises(celeriac.exceptions.TimeoutError):
                nobody.get(timeout=0.5)
            assert 0.45 <= time.monotonic() - start < 3
            assert nobody.state == "PENDING"
    finally:
        run_sync(app.close_clients())
