"""The dashboard's HTTP API and auth, against a real worker and a real ``celeriac
dashboard`` process on SQLite: tokens, basic auth, cookies and the read-only role; the
buttons' actions (pool grow/shrink, retry now, purge, periodic entries, dead letters);
history read back from the result backend after a restart; start-up refusals; passwords
masked; the app mounted in FastAPI."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from celeriac import Celery, chord
from celeriac.dashboard import Auth, Dashboard, create_app
from support import DashboardProcess, WorkerProcess, wait_until, write_module

CELERIAC = shutil.which("celeriac", path=os.path.dirname(sys.executable)) or "celeriac"
HOST = "api1@localhost"
ADMIN = {"Authorization": "Bearer admin-token-1"}
VIEWER = {"Authorization": "Bearer viewer-token-1"}
CHANGE = {"X-Celeriac-Dashboard": "1"}
TASKS = """
import pathlib
from celeriac import Celery, chord
HERE = pathlib.Path(__file__).resolve().parent
app = Celery("apitasks", broker=f"sqlite:///{HERE / 'b.db'}")
app.conf.result_extended = True
app.conf.beat_schedule = {"every-hour": {"task": "api.add", "schedule": 3600.0, "args": (1, 1)}}

@app.task(name="api.add")
def add(x, y):
    return x + y

@app.task(name="api.total")
def total(values):
    return sum(values)

@app.task(name="api.flaky")
def flaky(path):
    marker = pathlib.Path(path)
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError("first time fails")
    return "second time works"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any, str]]:
    cwd = tmp_path_factory.mktemp("dashapi")
    write_module(cwd, "apitasks", TASKS)
    env = {"PYTHONPATH": str(cwd)}
    sys.path.insert(0, str(cwd))
    try:
        import apitasks  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(cwd))
    worker = WorkerProcess(cwd, "apitasks", "-c", "2", "-n", HOST, env=env)
    dashboard = DashboardProcess(
        cwd, "apitasks", "--poll-interval", "0.5", "--refresh", "0.2",
        env={**env, "CELERIAC_DASHBOARD_TOKEN": "admin-token-1",
             "CELERIAC_DASHBOARD_READONLY_TOKEN": "viewer-token-1"},
    )  # fmt: skip
    try:
        worker.start()
        dashboard.start()
        yield cwd, apitasks.app, dashboard.url
    finally:
        dashboard.stop()
        worker.stop()
        apitasks.app.close()


def test_auth_roles_and_the_change_header(site: tuple[Path, Any, str]) -> None:
    _, _, url = site
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("api/me").status_code == 401
        assert (
            http.get("api/me", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        )
        assert http.get("api/me", headers=ADMIN).json()["role"] == "admin"
        me = http.get("api/me", headers=VIEWER).json()
        assert me["role"] == "read-only" and me["can_change"] is False
        # ?token= once: the browser keeps it in an HttpOnly cookie
        first = http.get("", params={"token": "viewer-token-1"})
        assert first.status_code == 200 and "HttpOnly" in first.headers["set-cookie"]
        assert http.get("api/me").json()["role"] == "read-only"
        http.cookies.clear()
        # the read-only role changes nothing, whatever it sends
        refused = http.post("api/queues/celery/purge", headers={**VIEWER, **CHANGE})
        assert refused.status_code == 403 and "read-only" in refused.text
        # an admin's change needs the header a cross-site form cannot send
        assert http.post("api/queues/celery/purge", headers=ADMIN).status_code == 403
        done = http.post("api/queues/celery/purge", headers={**ADMIN, **CHANGE})
        assert done.status_code == 200 and done.json()["queue"] == "celery"


def test_the_live_stream_is_rate_bounded(site: tuple[Path, Any, str]) -> None:
    _, app, url = site
    updates, started = 0, time.monotonic()
    with (
        httpx.Client(base_url=url, timeout=10, headers=ADMIN) as http,
        http.stream("GET", "api/stream") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        for n, line in enumerate(stream.iter_lines()):
            if n % 5 == 0:
                app.send_task("api.add", (n, n))  # changes, so that updates keep coming
            updates += line == "event: update"
            if updates >= 6:
                break
    elapsed = time.monotonic() - started
    # --refresh 0.2: one update at once, then at most one per 0.2 s
    assert elapsed >= 5 * 0.2, f"{updates} updates in {elapsed:.2f} s"


def test_the_buttons_do_what_they_say(site: tuple[Path, Any, str]) -> None:
    cwd, app, url = site
    with httpx.Client(base_url=url, timeout=10, headers={**ADMIN, **CHANGE}) as http:

        def concurrency() -> Any:
            rows = {w["hostname"]: w for w in http.get("api/workers").json()}
            return rows.get(HOST, {}).get("pool", {}).get("max_concurrency")

        assert wait_until(lambda: concurrency() == 2, 15, "the worker's pool in the dashboard")
        grown = http.post(f"api/workers/{HOST}/pool_grow", json={"n": 1})
        assert grown.status_code == 200, grown.text
        wait_until(lambda: concurrency() == 3, 15, "pool_grow to show")
        assert http.post(f"api/workers/{HOST}/pool_shrink", json={"n": 1}).status_code == 200
        wait_until(lambda: concurrency() == 2, 15, "pool_shrink to show")
        unknown = http.post(f"api/workers/{HOST}/rm_rf", json={})
        assert unknown.status_code == 404

        # retry now: a failed task is sent again with its arguments, and succeeds
        failed = app.send_task("api.flaky", (str(cwd / "flaky-marker"),))
        with pytest.raises(RuntimeError):
            failed.get(timeout=20)
        page = http.get(f"api/tasks/{failed.id}").json()
        assert (
            page["task"]["state"] == "FAILURE" and "first time fails" in page["task"]["traceback"]
        )
        again = http.post(f"api/tasks/{failed.id}/retry")
        assert again.status_code == 200, again.text
        assert app.AsyncResult(again.json()["task_id"]).get(timeout=20) == "second time works"
        done = app.send_task("api.add", (1, 2))
        assert done.get(timeout=20) == 3
        assert http.post(f"api/tasks/{done.id}/retry").status_code == 409  # not failed

        # periodic entries: listed in words, switched off and on in beat's store, run now
        entries = http.get("api/periodic").json()["entries"]
        assert [(e["name"], e["schedule"], e["enabled"]) for e in entries] == [
            ("every-hour", "every 1 hour", True)
        ]
        assert http.post("api/periodic/every-hour/disable").json()["enabled"] is False
        assert http.get("api/periodic").json()["entries"][0]["enabled"] is False
        assert http.post("api/periodic/every-hour/enable").status_code == 200
        assert http.get("api/periodic").json()["entries"][0]["enabled"] is True
        ran = http.post("api/periodic/every-hour/run").json()
        assert app.AsyncResult(ran["task_id"]).get(timeout=20) == 2

        # dead letters: an unregistered task is set aside; requeue sends it back (and the
        # worker sets it aside again, later), delete removes it
        lost = app.send_task("api.nowhere", (1,))

        def letters() -> list[dict[str, Any]]:
            found = http.get("api/dead-letters").json()["letters"]
            return [d for d in found if d["task_id"] == lost.id]

        (first,) = wait_until(letters, 20, "the dead letter")
        assert "unknown task" in first["reason"] and first["task"] == "api.nowhere"
        key = {"queue": first["queue"], "failed_at": first["failed_at"]}
        assert http.post("api/dead-letters/requeue", json=key).json()["removed"] is True
        (second,) = wait_until(letters, 20, "the requeued message to come back")
        assert second["failed_at"] > first["failed_at"]
        assert http.post("api/dead-letters/requeue", json=key).status_code == 404
        key = {"queue": second["queue"], "failed_at": second["failed_at"]}
        assert http.post("api/dead-letters/delete", json=key).json()["removed"] is True
        assert letters() == []


def test_a_chord_queues_and_derived_rates(site: tuple[Path, Any, str]) -> None:
    """A chord's header shows as one group feeding its body (the header tasks each
    their own root); the Queue column is filled from the worker's task-received events;
    with no task-sent event (this client sends none), a queue's "in" is derived from its
    lengths and what went out."""
    _, app, url = site
    with httpx.Client(base_url=url, timeout=10, headers=ADMIN) as http:

        def events_on() -> bool:  # the dashboard asked the worker for task events
            app.send_task("api.add", (0, 0)).get(timeout=20)
            rows = http.get("api/tasks", params={"name": "api.add"}).json()["tasks"]
            return any(r["received"] for r in rows)

        wait_until(events_on, 20, "the worker's task events")
        header = [app.signature("api.add", (n, n)) for n in range(3)]
        body = chord(header)(app.signature("api.total"))
        assert body.get(timeout=20) == 6

        def graph() -> dict[str, Any]:
            data = http.get(f"api/tasks/{body.id}").json()["graph"]
            return data if any(n.get("kind") == "group" for n in data["nodes"]) else {}

        drawn = wait_until(graph, 20, "the chord's header in the body's graph")
        (group,) = [n for n in drawn["nodes"] if n.get("kind") == "group"]
        adds = {n["id"] for n in drawn["nodes"] if n.get("name") == "api.add"}
        assert len(adds) == 3
        assert group["name"] == "group of 3" and group["state"] == "SUCCESS"
        assert {tuple(e) for e in drawn["edges"]} == {(a, group["id"]) for a in adds} | {
            (group["id"], body.id)
        }
        rows = http.get("api/tasks").json()["tasks"]
        assert {r["queue"] for r in rows if r["uuid"] in {body.id, *adds}} == {"celery"}

        def came_in() -> dict[str, Any]:
            (row,) = [q for q in http.get("api/queues").json() if q["name"] == "celery"]
            return row if sum(b[1] for b in row["rates"]) > 0 else {}

        row = wait_until(came_in, 20, "tasks in, derived from the lengths")
        assert row["in_from"] == "lengths" and sum(b[2] for b in row["rates"]) >= 4


def test_history_comes_back_from_the_backend_after_a_restart(
    site: tuple[Path, Any, str],
) -> None:
    cwd, app, _ = site
    ok = app.send_task("api.add", (40, 2))
    assert ok.get(timeout=20) == 42
    env = {"PYTHONPATH": str(cwd), "CELERIAC_DASHBOARD_TOKEN": "admin-token-1"}
    fresh = DashboardProcess(cwd, "apitasks", "--no-enable-events", env=env)
    with fresh, httpx.Client(base_url=fresh.url, headers=ADMIN, timeout=10) as http:

        def listed() -> dict[str, Any]:
            tasks = http.get("api/tasks", params={"q": ok.id}).json()["tasks"]
            return tasks[0] if tasks else {}

        row = wait_until(listed, 15, "the backend's history in a new dashboard")
        assert row["state"] == "SUCCESS" and row["result"] == "42"
        assert row["name"] == "api.add" and row["source"] == "backend"
        page = http.get(f"api/tasks/{ok.id}").json()
        assert page["in_backend"] is True and page["task"]["args"] == "[40, 2]"
        missing = http.get("api/tasks/no-such-task")
        assert missing.status_code == 404 and "no task" in missing.json()["error"]


def test_a_public_address_needs_credentials(tmp_path: Path) -> None:
    write_module(tmp_path, "pubtasks", "from celeriac import Celery\napp = Celery('p')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for argv, message in (
        (["--host", "0.0.0.0"], "is not a loopback address: the dashboard then needs"),
        (["--token", "short"], "at least 8 characters"),
        (["--basic-auth", "nopassword"], "user:password"),
    ):
        done = subprocess.run(
            [CELERIAC, "-A", "pubtasks", "dashboard", "--port", "0", *argv],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 2 and message in done.stderr, done


def test_passwords_are_masked_and_the_app_mounts_in_fastapi() -> None:
    fastapi = pytest.importorskip("fastapi")
    app = Celery("masked", broker="redis://:s3cret-pw@127.0.0.1:1/0", backend="memory://")
    dash = Dashboard(app, poll_interval=30, enable_events=False)
    site = fastapi.FastAPI()
    site.mount("/tasks", dash.asgi)

    async def visit() -> tuple[dict[str, Any], str, int]:
        transport = httpx.ASGITransport(app=site, client=("127.0.0.1", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            me = (await http.get("/tasks/api/me")).json()
            page = (await http.get("/tasks/")).text
        remote = httpx.ASGITransport(app=site, client=("203.0.113.9", 4000))
        async with httpx.AsyncClient(transport=remote, base_url="http://test") as http:
            status = (await http.get("/tasks/api/me")).status_code
        await dash.stop()
        return me, page, status

    me, page, remote_status = asyncio.run(visit())
    assert me["broker"] == "redis://:**@127.0.0.1:1/0" and "s3cret" not in str(me)
    assert 'src="/tasks/static/app.js"' in page
    assert remote_status == 403  # no credentials: loopback clients only
    app.close()
    with_auth = create_app(Celery("x", broker="memory://"), auth=Auth.of(tokens=["t0ken-123"]))
    assert callable(with_auth)


def test_our_task_received_events_carry_the_queue_and_the_group() -> None:
    """celeriac's task-received event names the queue and the group (Celery's does
    not): the dashboard fills the Queue column and the groups from events alone."""
    from celeriac.testing import TestWorker

    app = Celery("evq", broker="memory://", backend="memory://")
    app.conf.worker_send_task_events = True  # the worker's -E

    @app.task(name="evq.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="evq.total")
    def total(values: list[int]) -> int:
        return sum(values)

    dash = Dashboard(app, poll_interval=30, enable_events=False)

    def received() -> list[Any]:
        tasks = [t for t in dash.state.tasks.values() if t.received and t.name == "evq.add"]
        return tasks if len(tasks) == 2 else []

    async def main() -> list[Any]:
        both = asyncio.Event()
        take = dash.state.event

        def event(event: dict[str, Any]) -> None:
            take(event)
            if received():
                both.set()

        dash.state.event = event  # type: ignore[method-assign]
        dash.collector.start()
        await asyncio.wait_for(dash.collector.listening.wait(), 10)
        body = chord([add.s(n, n) for n in range(2)])(total.s())
        assert await asyncio.to_thread(body.get, timeout=20) == 2
        await asyncio.wait_for(both.wait(), 10)
        await dash.stop()
        return received()

    app.conf.task_default_queue = "evq"
    with TestWorker(app):
        header = asyncio.run(main())
    app.close()
    assert [(t.queue, t.source) for t in header] == [("evq", "events")] * 2
    assert len({t.group_id for t in header}) == 1 and header[0].group_id
