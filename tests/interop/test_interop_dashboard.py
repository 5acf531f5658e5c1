"""The dashboard against a real Celery worker on Redis: the worker (started without
``-E``) is listed with its pool, the dashboard's ``enable_events`` turns its task events
on, and its tasks show with their results and tracebacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

import celeriac
from support import DashboardProcess, celery_worker, wait_until, write_module

pytestmark = pytest.mark.slow

CELERY_TASKS = """
from celery import Celery

app = Celery("cdash", broker="{url}", backend="{url}")

@app.task(name="cdash.add")
def add(x, y):
    return x + y

@app.task(name="cdash.total")
def total(values):
    return sum(values)

@app.task(name="cdash.fail")
def fail(message):
    raise KeyError(message)
"""


def test_the_dashboard_shows_a_celery_worker_and_its_tasks(tmp_path: Path, redis_db: str) -> None:
    write_module(tmp_path, "ctasks", CELERY_TASKS.format(url=redis_db))
    write_module(
        tmp_path, "ours", f"from celeriac import Celery\napp = Celery(broker={redis_db!r})\n"
    )
    host = "celdash@localhost"
    worker = celery_worker(tmp_path, "ctasks", "-n", host)  # no -E
    worker.argv.remove("--without-heartbeat")
    worker.env["PYTHONPATH"] = str(tmp_path)
    dashboard = DashboardProcess(
        tmp_path, "ours", "--poll-interval", "0.5", env={"PYTHONPATH": str(tmp_path)}
    )
    client = celeriac.Celery("client", broker=redis_db, backend=redis_db)
    try:
        dashboard.start()
        worker.start()
        with httpx.Client(base_url=dashboard.url, timeout=10) as http:

            def listed() -> dict[str, Any]:
                rows = {w["hostname"]: w for w in http.get("api/workers").json()}
                row = rows.get(host, {})
                return row if row.get("online") and row.get("pool") else {}

            row = wait_until(listed, 20, "the Celery worker in the dashboard")
            assert "solo" in row["pool"]["implementation"].lower(), row
            assert row["software"].startswith("py-celery"), row
            assert "celery" in row["queues"]

            def task(task_id: str) -> dict[str, Any]:
                answer = http.get(f"api/tasks/{task_id}")
                return answer.json()["task"] if answer.status_code == 200 else {}

            # the dashboard asked the worker to send task events: wait until it does
            def events_on() -> bool:
                probe = client.send_task("cdash.add", (0, 0))
                probe.get(timeout=20)
                return task(probe.id).get("worker") == host

            wait_until(events_on, 20, "the Celery worker's task events")
            done = client.send_task("cdash.add", (3, 4))
            assert done.get(timeout=20) == 7
            seen = wait_until(lambda: task(done.id).get("runtime") and task(done.id), 20, "task")
            assert (seen["state"], seen["result"], seen["name"]) == ("SUCCESS", "7", "cdash.add")
            assert seen["queue"] == "celery"  # the only queue the worker consumes
            # a chord: Celery's events carry no group id, the backend's metas do
            header = [client.signature("cdash.add", (n, n)) for n in range(3)]
            body = celeriac.chord(header)(client.signature("cdash.total"))
            assert body.get(timeout=20) == 6

            def graph() -> dict[str, Any]:
                data = http.get(f"api/tasks/{body.id}").json()["graph"]
                return data if any(n.get("kind") == "group" for n in data["nodes"]) else {}

            drawn = wait_until(graph, 20, "the chord's header as a group")
            (group,) = [n for n in drawn["nodes"] if n.get("kind") == "group"]
            adds = {n["id"] for n in drawn["nodes"] if n.get("name") == "cdash.add"}
            assert group["name"] == "group of 3" and len(adds) == 3, drawn
            assert {tuple(e) for e in drawn["edges"]} == {(a, group["id"]) for a in adds} | {
                (group["id"], body.id)
            }
            failed = client.send_task("cdash.fail", ("nope",))
            with pytest.raises(Exception, match="nope"):
                failed.get(timeout=20)
            shown = wait_until(
                lambda: task(failed.id).get("traceback") and task(failed.id), 20, "traceback"
            )
            assert shown["state"] == "FAILURE" and "KeyError" in shown["traceback"]
    finally:
        worker.stop()
        dashboard.stop()
        client.close()
