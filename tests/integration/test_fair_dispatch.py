"""Fair dispatch with real worker processes, on every broker that crosses processes: a
message waits in one pool slot's prefetch only while no other slot of the worker is free,
so N long tasks on N free slots run at once, whether they came in one burst or one by one.

The tasks record when they start; the assertion is on those timestamps (the tasks'
own sleeps are their work, not the test's waiting)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, group
from celeriac.testing import TestWorker
from servers import REDIS_URL, delete_queues, scratch_prefix
from support import WorkerProcess, wait_until, write_module

TASKS = """
import os, pathlib, time
from celeriac import Celery

DIR = pathlib.Path(__file__).resolve().parent
app = Celery("ftasks")

@app.task(bind=True)
def slow(self, seconds):
    (DIR / "starts" / self.request.id).write_text(f"{time.time()} {os.getpid()}")
    time.sleep(seconds)
    return os.getpid()
"""

#: how long each task runs: the N tasks together must take less than twice this
DURATION = 2.0


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    write_module(tmp_path, "ftasks", TASKS)
    (tmp_path / "starts").mkdir()
    queue = f"f-{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        yield {"url": f"sqlite:///{tmp_path / 'broker.db'}", "dir": str(tmp_path), "queue": queue}
    elif request.param == "redis":
        with scratch_prefix("fair") as prefix:
            url = f"{REDIS_URL}?global_keyprefix={prefix}"
            yield {"url": url, "dir": str(tmp_path), "queue": queue}
    else:
        url = request.getfixturevalue("rabbit")
        try:
            yield {"url": url, "dir": str(tmp_path), "queue": queue}
        finally:
            delete_queues(url, [queue])


def starts(env: dict[str, str]) -> dict[str, tuple[float, int]]:
    found = {}
    for path in (Path(env["dir"]) / "starts").iterdir():
        when, pid = path.read_text().split()
        found[path.name] = (float(when), int(pid))
    return found


@pytest.mark.parametrize(("slots", "burst"), [(2, True), (2, False), (4, True)])
def test_long_tasks_run_at_once_on_free_prefork_slots(
    env: dict[str, str], slots: int, burst: bool
) -> None:
    app = Celery("ftasks", broker=env["url"], task_default_queue=env["queue"], set_as_current=False)
    wenv = {"CELERIAC_BROKER_URL": env["url"], "CELERIAC_TASK_DEFAULT_QUEUE": env["queue"]}
    args = ("-P", "prefork", "-c", str(slots), "-l", "debug")
    try:
        with WorkerProcess(Path(env["dir"]), "ftasks", *args, env=wenv) as worker:
            if burst:  # one publish of all of them
                result = group(app.signature("ftasks.slow", (DURATION,)) for _ in range(slots))()
                pids = result.get(timeout=30)
            else:  # each sent once the one before it runs
                results = []
                for n in range(slots):
                    results.append(app.send_task("ftasks.slow", (DURATION,)))
                    wait_until(lambda n=n: len(starts(env)) > n, 20, f"task {n + 1} to start")
                pids = [r.get(timeout=30) for r in results]
    finally:
        app.close()
    began = starts(env)
    first, last = min(t for t, _ in began.values()), max(t for t, _ in began.values())
    # every task started before the first one ended: none waited behind another
    marks = ("back for a free", "] received", "succeeded")
    moves = [line for line in worker.lines if any(mark in line for mark in marks)]
    assert last - first < DURATION, f"start times spread over {last - first:.2f}s: {moves}"
    assert len(set(pids)) == slots, f"the tasks ran in {sorted(set(pids))} only"


@pytest.mark.parametrize("pool", ["threads", "asyncio"])
def test_long_tasks_run_at_once_on_free_threads(tmp_path: Path, pool: str) -> None:
    """The thread and asyncio pools hand a job to a free slot of the one consumer."""
    write_module(tmp_path, "ftasks", TASKS)
    (tmp_path / "starts").mkdir()
    env = {"url": f"sqlite:///{tmp_path / 'broker.db'}", "dir": str(tmp_path), "queue": "celery"}
    app = Celery("ftasks", broker=env["url"], set_as_current=False)
    try:
        wenv = {"CELERIAC_BROKER_URL": env["url"]}
        with WorkerProcess(tmp_path, "ftasks", "-P", pool, "-c", "3", env=wenv):
            group(app.signature("ftasks.slow", (DURATION,)) for _ in range(3))().get(timeout=30)
    finally:
        app.close()
    times = [t for t, _ in starts(env).values()]
    assert len(times) == 3 and max(times) - min(times) < DURATION


def test_long_tasks_run_at_once_on_the_memory_broker(tmp_path: Path) -> None:
    (tmp_path / "starts").mkdir()
    app = Celery("fmem", broker="memory://", set_as_current=False)

    @app.task(bind=True)
    def slow(self: Any, seconds: float) -> None:
        (tmp_path / "starts" / self.request.id).write_text(f"{time.time()} {os.getpid()}")
        time.sleep(seconds)

    try:
        with TestWorker(app, concurrency=2) as worker:
            results = [slow.delay(DURATION) for _ in range(2)]
            worker.join()
            for result in results:
                result.get(timeout=10)
    finally:
        app.close()
    times = [t for t, _ in starts({"dir": str(tmp_path)}).values()]
    assert len(times) == 2 and max(times) - min(times) < DURATION


def test_a_result_does_not_wait_for_the_long_task_after_it(tmp_path: Path) -> None:
    """A child holds outcomes while it has more jobs queued (to batch them); a short
    task's result still comes at once when the job after it runs long."""
    write_module(tmp_path, "ftasks", TASKS)
    (tmp_path / "starts").mkdir()
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    app = Celery("ftasks", broker=url, set_as_current=False)
    try:
        wenv = {"CELERIAC_BROKER_URL": url}
        with WorkerProcess(tmp_path, "ftasks", "-P", "prefork", "-c", "1", env=wenv):
            short, long = group(app.signature("ftasks.slow", (s,)) for s in (0, 5))().results
            short.get(timeout=2.5)  # long before the 5-second task after it ends
            assert not long.ready()
            long.get(timeout=20)
    finally:
        app.close()
