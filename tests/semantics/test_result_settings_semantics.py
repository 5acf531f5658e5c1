"""Result settings, measured on Celery: ``result_extended`` (the stored meta carries the
task's name and arguments), ``task_track_started`` (STARTED while it runs) and
``result_expires`` (the TTL of the stored result)."""

from __future__ import annotations

import json

import redis

from semantic_cluster import Cluster
from support import wait_until

APP_OPTIONS = "result_extended=True, task_track_started=True, result_expires=120"

TASKS = """
import time


@app.task(name="sem.echo")
def echo(x, y=0):
    return x + y


@app.task(name="sem.wait_for")
def wait_for(path):
    deadline = time.monotonic() + 20
    while not pathlib.Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"
"""


def _meta(cluster: Cluster, task_id: str) -> tuple[dict[str, object], int]:
    client = redis.Redis.from_url(cluster.url)
    try:
        key = f"celery-task-meta-{task_id}"
        raw = client.get(key)
        assert raw is not None, key
        return json.loads(raw), int(client.ttl(key))
    finally:
        client.close()


def test_result_extended_stores_name_and_arguments_and_result_expires_its_ttl(
    cluster: Cluster,
) -> None:
    result = cluster.tasks.echo.apply_async((2,), {"y": 3})
    assert result.get(timeout=10) == 5
    meta, ttl = _meta(cluster, result.id)
    assert meta["status"] == "SUCCESS" and meta["result"] == 5
    assert meta["name"] == "sem.echo"
    assert meta["args"] == [2] and meta["kwargs"] == {"y": 3}
    assert 100 < ttl <= 120


def test_task_track_started_reports_started_while_running(cluster: Cluster) -> None:
    release = cluster.directory / f"release-{cluster.token()}"
    result = cluster.tasks.wait_for.delay(str(release))
    wait_until(lambda: result.state == "STARTED", 10, "the STARTED state")
    release.touch()
    assert result.get(timeout=10) == "released" and result.state == "SUCCESS"
