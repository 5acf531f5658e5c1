"""``-P gevent``: a worker process monkey patched before anything imports sockets, N
blocking tasks at once with ``-c N`` (their runs overlap), tasks that send tasks, soft
time limits that reach a sleeping greenlet, ``async def`` tasks, a late patch when the
command line did not ask for it, and ``-P eventlet`` refused with the alternatives."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from celeriac import Celery
from celeriac._loop import run_sync
from celeriac.exceptions import ImproperlyConfigured
from servers import missing
from support import WorkerProcess, write_module

try:
    import gevent  # noqa: F401 - the pool's dependency (the gevent extra, in dev)
except ImportError:  # skipped where the extra is not installed, a failure under CI
    missing("gevent is not installed: pip install 'celeriac[gevent]'")

TASKS = """
import asyncio
import socket
import time

from celeriac import Celery
from celeriac.exceptions import SoftTimeLimitExceeded

app = Celery("gtasks", broker="{url}")

@app.task
def nap(seconds):
    start = time.time()
    time.sleep(seconds)
    return [start, time.time()]

@app.task
def patched():
    import gevent.monkey
    return [gevent.monkey.is_module_patched("socket"), socket.socket.__module__]

@app.task
def fan_out(n):
    return [nap.delay(0).id for _ in range(n)]

@app.task(soft_time_limit=0.5)
def limited():
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        return "interrupted"
    return "slept"

@app.task
async def anap(seconds):
    start = time.time()
    await asyncio.sleep(seconds)
    return [start, time.time()]
"""


@pytest.fixture
def app(tmp_path: Path) -> Celery:
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    write_module(tmp_path, "gtasks", TASKS.format(url=url))
    return Celery("client", broker=url)


def _overlap(runs: list[list[float]]) -> bool:
    """Every run started before any run ended: they all ran at once."""
    return max(start for start, _ in runs) < min(end for _, end in runs)


def test_n_sleeping_tasks_run_at_once_in_one_process(app: Celery, tmp_path: Path) -> None:
    n = 20
    try:
        with WorkerProcess(tmp_path, "gtasks", "-P", "gevent", "-c", str(n), "-l", "info") as w:
            assert "(gevent)" in w.log
            patched = app.send_task("gtasks.patched").get(timeout=20)
            assert patched == [True, "gevent._socket3"]  # before the app's modules imported

            results = [app.send_task("gtasks.nap", (1.0,)) for _ in range(n)]
            runs = [r.get(timeout=30) for r in results]
            assert _overlap(runs)
            assert max(end for _, end in runs) - min(start for start, _ in runs) < 1.0 * n / 2

            async_runs = [app.send_task("gtasks.anap", (0.5,)) for _ in range(n)]
            assert _overlap([r.get(timeout=30) for r in async_runs])

            ids = app.send_task("gtasks.fan_out", (5,)).get(timeout=20)  # delay() in a greenlet
            assert [len(app.AsyncResult(i).get(timeout=20)) for i in ids] == [2] * 5

            start = time.monotonic()
            assert app.send_task("gtasks.limited").get(timeout=20) == "interrupted"
            assert time.monotonic() - start < 10
    finally:
        run_sync(app.close_clients())


def test_gevent_on_redis_with_rpc_results(tmp_path: Path, redis_db: str) -> None:
    """The usual deployment: Redis broker, gevent pool; here with ``rpc://`` results."""
    source = TASKS.format(url=redis_db).replace('broker="', 'backend="rpc://", broker="')
    write_module(tmp_path, "gtasks", source)
    app = Celery("client", broker=redis_db, backend="rpc://")
    n = 10
    try:
        with WorkerProcess(tmp_path, "gtasks", "-P", "gevent", "-c", str(n), "-l", "info"):
            runs = [
                r.get(timeout=30) for r in [app.send_task("gtasks.nap", (1.0,)) for _ in range(n)]
            ]
            assert _overlap(runs)
            # replies of the subtasks go to the worker's own reply list: none to wait for
            assert len(app.send_task("gtasks.fan_out", (3,)).get(timeout=20)) == 3
    finally:
        run_sync(app.close_clients())


def test_concurrency_bounds_the_greenlets(app: Celery, tmp_path: Path) -> None:
    try:
        with WorkerProcess(tmp_path, "gtasks", "-P", "gevent", "-c", "2", "-l", "info"):
            runs = [
                r.get(timeout=30) for r in [app.send_task("gtasks.nap", (0.5,)) for _ in range(4)]
            ]
            runs.sort()
            # two at a time: the third starts once one of the first two ended
            assert _overlap(runs[:2]) and runs[2][0] >= min(runs[0][1], runs[1][1]) - 0.05
    finally:
        run_sync(app.close_clients())


def test_a_worker_started_from_code_patches_at_start(app: Celery, tmp_path: Path) -> None:
    (tmp_path / "start.py").write_text(
        "from gtasks import app\napp.worker_main(['worker', '-P', 'gevent', '-l', 'info'])\n"
    )
    worker = WorkerProcess(tmp_path, "gtasks")
    worker.argv = [sys.executable, "start.py"]
    try:
        with worker:
            worker.wait_for(r"-P gevent: monkey patched at worker start")
            assert app.send_task("gtasks.patched").get(timeout=20)[0] is True
    finally:
        run_sync(app.close_clients())


def test_eventlet_is_refused_with_the_alternatives(app: Celery, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "gtasks", "worker", "-P", "eventlet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    message = done.stderr
    assert "no eventlet pool" in message
    assert all(f"-P {name}" in message for name in ("gevent", "threads", "asyncio"))
    with pytest.raises(ImproperlyConfigured, match=r"worker_pool='eventlet'.*-P gevent"):
        Celery("x", worker_pool="eventlet")


def test_the_gevent_pool_refuses_an_unpatched_process() -> None:
    from celeriac.worker.pools import make_pool

    with pytest.raises(ImproperlyConfigured, match="monkey patched first"):
        make_pool("gevent", 2)
