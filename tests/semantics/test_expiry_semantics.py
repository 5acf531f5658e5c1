"""``expires`` of a task that expires while prefetched (Celery runs it; celeriac checks
again just before it runs), and ``get()`` of an
``ignore_result`` task, the same on a Celery worker and a celeriac worker."""

from __future__ import annotations

import time

import pytest
import redis

from semantic_cluster import Cluster
from support import wait_until

TASKS = """
import time


@app.task(name="sem.hold")
def hold(gate):
    deadline = time.monotonic() + 20
    while not (DIR / gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    note(gate + ".held", "done")


@app.task(name="sem.mark")
def mark(name):
    note(name, "ran")


@app.task(name="sem.quiet", ignore_result=True)
def quiet(name):
    note(name, "ran")
    return 42
"""


def test_a_task_that_expires_while_prefetched_is_revoked_not_run(cluster: Cluster) -> None:
    t, gate, name = cluster.tasks, cluster.token(), cluster.token()
    holds = [t.hold.delay(gate) for _ in range(4)]  # every pool slot busy
    expiring = t.mark.apply_async((name,), expires=3.0)
    sent = time.monotonic()
    queue = redis.Redis.from_url(cluster.url)
    try:
        # the worker has taken it from the queue (prefetched) before it expired
        wait_until(lambda: queue.llen("celery") == 0, 5, "the worker to prefetch the task")
        assert time.monotonic() - sent < 3.0, "prefetched only after it expired: inconclusive"
    finally:
        queue.close()
    wait_until(lambda: time.monotonic() - sent > 3.5, 5, "the task to expire")
    (cluster.directory / gate).touch()
    for held in holds:
        held.get(timeout=20)
    if cluster.worker == "celery":
        # measured: Celery checks expires when the message arrives, and hands it to the
        # pool at once, so a task that expires while it waits for a slot still runs
        assert expiring.get(timeout=10) is None
        assert cluster.wait_lines(name, 1) == ["ran"]
        return
    # celeriac checks again just before it runs (docs/coming-from-celery.md)
    with pytest.raises(cluster.exceptions.TaskRevokedError):
        expiring.get(timeout=10)
    assert expiring.state == "REVOKED"
    assert cluster.lines(name) == []  # it never ran


def test_get_of_an_ignored_result_returns_none_without_waiting(cluster: Cluster) -> None:
    name = cluster.token()
    result = cluster.tasks.quiet.delay(name)
    assert result.get(timeout=5) is None  # the task's own 42 is never stored
    assert cluster.wait_lines(name, 1) == ["ran"]
    assert result.state == "PENDING"
