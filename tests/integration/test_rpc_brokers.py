"""``rpc://`` results over the SQLite and memory brokers, celeriac client to celeriac
worker: a prefork worker process on a SQLite file, an in-process worker on memory://.
Results, failures, PENDING before the task ran, progress states, chains, many results,
``get(timeout)``, and each client reading only its own replies. A broker/URL pair that
cannot carry replies fails at start-up with a message saying what to write instead.
(Redis: tests/interop/test_interop_celery_rpc.py, with Celery on the other side.)"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import celeriac
import celeriac.exceptions
from celeriac import Celery, chain
from celeriac._loop import run_sync
from celeriac.exceptions import ImproperlyConfigured
from celeriac.testing.worker import TestWorker
from celeriac.transports import backend_class, create_backend
from celeriac.transports.memory.broker import clear_stores
from celeriac.transports.memory.rpc import MemoryRPCBackend
from celeriac.transports.redis.rpc import RedisRPCBackend
from celeriac.transports.sqlite.rpc import SQLiteRPCBackend
from support import WorkerProcess, write_module

TASKS = """
import time
from celeriac import Celery

app = Celery("rpctasks", broker="{url}", backend="rpc://")

@app.task
def add(x, y):
    return x + y

@app.task
def fail(message):
    raise ValueError(message)

@app.task(bind=True)
def progress(self, steps):
    for n in range(steps):
        self.update_state(state="PROGRESS", meta={{"step": n}})
        time.sleep(0.2)
    return steps
"""


def _exercise(app: Celery) -> None:
    """What every broker's rpc:// must do, with a worker running ``TASKS``."""
    add = celeriac.signature("rpctasks.add", app=app)
    assert app.send_task("rpctasks.add", (2, 3)).get(timeout=20) == 5
    with pytest.raises(ValueError, match=r"^boom"):
        app.send_task("rpctasks.fail", ("boom",)).get(timeout=10)
    assert chain(add.clone((1, 2)), add.clone((3,)), add.clone((4,))).delay().get(timeout=10) == 10
    results = [app.send_task("rpctasks.add", (i, i)) for i in range(20)]
    assert [r.get(timeout=10) for r in results] == [2 * i for i in range(20)]

    running = app.send_task("rpctasks.progress", (5,))
    seen = set()
    deadline = time.monotonic() + 10
    while not running.ready() and time.monotonic() < deadline:
        seen.add(running.state)
        time.sleep(0.02)
    assert running.get(timeout=10) == 5
    assert "PROGRESS" in seen

    nobody = app.send_task("rpctasks.add", (1, 1), queue=f"nobody-{uuid.uuid4().hex[:6]}")
    start = time.monotonic()
    with pytest.raises(celeriac.exceptions.TimeoutError):
        nobody.get(timeout=0.5)
    assert 0.45 <= time.monotonic() - start < 3
    assert nobody.state == "PENDING"


def test_rpc_on_sqlite_with_a_prefork_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    write_module(tmp_path, "rpctasks", TASKS.format(url=url))
    app = Celery("client", broker=url, backend="rpc://")
    other = Celery("other", broker=url, backend="rpc://")
    try:
        first = app.send_task("rpctasks.add", (1, 1))
        assert first.state == "PENDING"
        with WorkerProcess(tmp_path, "rpctasks", "-c", "2", "-l", "info") as worker:
            assert first.get(timeout=20) == 2
            _exercise(app)
            # a reply goes to the client that sent the task, never to another one
            theirs = other.send_task("rpctasks.add", (5, 5))
            assert theirs.get(timeout=10) == 10
            assert app.AsyncResult(theirs.id).state == "PENDING"
            assert " exited with " not in worker.log
    finally:
        run_sync(app.close_clients())
        run_sync(other.close_clients())


@pytest.fixture
def memory_url() -> Iterator[str]:
    url = f"memory://rpc-{uuid.uuid4().hex}"
    yield url
    clear_stores(url)


def test_rpc_on_memory_with_an_in_process_worker(memory_url: str, tmp_path: Path) -> None:
    write_module(tmp_path, "rpctasks", TASKS.format(url=memory_url))
    sys.path.insert(0, str(tmp_path))
    try:
        import rpctasks  # type: ignore[import-not-found]

        app = rpctasks.app
        first = app.send_task("rpctasks.add", (1, 1))
        assert first.state == "PENDING"
        with TestWorker(app, concurrency=2):
            assert first.get(timeout=10) == 2
            _exercise(app)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("rpctasks", None)


def test_the_rpc_backend_follows_the_broker() -> None:
    pairs = {
        "memory://": MemoryRPCBackend,
        "sqlite:///x.db": SQLiteRPCBackend,
        "redis://localhost/1": RedisRPCBackend,
        "rediss://localhost/1": RedisRPCBackend,
    }
    for broker_url, cls in pairs.items():
        assert backend_class("rpc://", broker_url) is cls
        assert type(create_backend("rpc://", {"broker_url": broker_url})) is cls
    with pytest.raises(ImproperlyConfigured, match=r"rpc://.*no reply channel.*result_backend"):
        backend_class("rpc://", "nothing://here")


def test_rpc_with_a_host_on_a_non_amqp_broker_fails_at_start_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    write_module(
        tmp_path,
        "rpcbad",
        f"from celeriac import Celery\napp = Celery('b', broker='{url}', backend='rpc://elsewhere')\n",
    )
    app = Celery("client", broker=url, backend="rpc://elsewhere")
    with pytest.raises(ImproperlyConfigured, match="takes no host; write rpc://"):
        app.check_configuration()
    done = subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "rpcbad", "worker", "-c", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "takes no host; write rpc://" in done.stdout + done.stderr
    assert "ready." not in done.stdout + done.stderr
