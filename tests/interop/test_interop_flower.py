"""Flower (the real package) against a celeriac worker, through Flower's HTTP API: the
worker is listed online with its stats, active queues and processed count; tasks sent by
a celeriac client and by a Celery client are seen with their final states; Flower's
pool-grow and rate-limit actions work."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery
import pytest

import celeriac
from support import WorkerProcess, close_celery_app, wait_until, write_module

pytestmark = pytest.mark.slow

CELERIAC_TASKS = """
from celeriac import Celery

app = Celery("ftasks", broker="{url}", backend="{backend}")

@app.task(name="fl.add")
def add(x, y):
    return x + y
"""

CELERY_TASKS = """
from celery import Celery

app = Celery("fctasks", broker="{url}", backend="{backend}")

@app.task(name="fl.add")  # Flower acts only on the tasks its app knows
def add(x, y):
    return x + y
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Flower:
    def __init__(self, cwd: Path, port: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(cwd), "FLOWER_UNAUTHENTICATED_API": "true"}
        argv = [sys.executable, "-m", "celery", "-A", "fctasks", "flower"]
        argv += [f"--port={port}", "--address=127.0.0.1", "--logging=warning"]
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=20) as response:
            return json.loads(response.read())

    def post(self, path: str, data: dict[str, str] | None = None) -> tuple[int, str]:
        body = urllib.parse.urlencode(data or {}).encode()
        request = urllib.request.Request(self.base + path, data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def up(self) -> bool:
        try:
            self.get("/api/workers")
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(params=["redis", "amqp"])
def urls(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_db")
        yield url, url
    else:
        yield request.getfixturevalue("rabbit"), "rpc://"


def test_flower_sees_and_drives_a_celeriac_worker(tmp_path: Path, urls: tuple[str, str]) -> None:
    url, backend = urls
    write_module(tmp_path, "ftasks", CELERIAC_TASKS.format(url=url, backend=backend))
    write_module(tmp_path, "fctasks", CELERY_TASKS.format(url=url, backend=backend))
    host = "fl1@localhost"
    flower = Flower(tmp_path, _free_port())
    worker = WorkerProcess(tmp_path, "ftasks", "-c", "2", "-n", host, "-l", "INFO")
    worker.env["PYTHONPATH"] = str(tmp_path)
    app = celeriac.Celery("client", broker=url, backend=backend)
    capp = celery.Celery("cclient", broker=url, backend=backend)
    try:
        wait_until(flower.up, 60, "Flower's API")
        worker.start()  # no -E: Flower turns task events on (enable_events)

        def listed() -> dict[str, Any]:
            workers = flower.get("/api/workers?refresh=1")
            info = workers.get(host) or {}
            return info if info.get("stats") and info.get("active_queues") else {}

        info = wait_until(listed, 60, "the worker in Flower's list")
        assert info["stats"]["pool"]["max-concurrency"] == 2
        assert info["stats"]["broker"]["transport"] in ("redis", "amqp")
        assert [q["name"] for q in info["active_queues"]] == ["celery"]
        assert "fl.add" in info["registered"]
        wait_until(
            lambda: flower.get("/api/workers?status=1").get(host) is True, 30, "worker online"
        )

        # task events reach Flower once it has enabled them on the worker
        def events_on() -> bool:
            probe = app.send_task("fl.add", (0, 0))
            probe.get(timeout=20)
            return probe.id in flower.get("/api/tasks")

        wait_until(events_on, 60, "Flower seeing task events")
        ours = app.send_task("fl.add", (2, 3))
        theirs = capp.send_task("fl.add", (4, 5))
        assert ours.get(timeout=20) == 5 and theirs.get(timeout=20) == 9

        def final_states() -> bool:
            tasks = flower.get("/api/tasks")
            return all(tasks.get(t.id, {}).get("state") == "SUCCESS" for t in (ours, theirs))

        wait_until(final_states, 30, "both tasks SUCCESS in Flower")
        task = flower.get(f"/api/task/info/{theirs.id}")
        assert task["name"] == "fl.add" and task["result"] == "9" and task["worker"] == host

        status, text = flower.post(f"/api/worker/pool/grow/{host}?n=1")
        assert status == 200, text

        def processes() -> int:
            stats = (flower.get("/api/workers?refresh=1").get(host) or {}).get("stats") or {}
            return len(stats.get("pool", {}).get("processes", []))

        wait_until(lambda: processes() == 3, 30, "the pool grown to 3")
        status, text = flower.post(
            "/api/task/rate-limit/fl.add", {"workername": host, "ratelimit": "10/s"}
        )
        assert status == 200 and "new rate limit set successfully" in text, text
        processed = flower.get("/api/workers?refresh=1")[host]["stats"]["total"]["fl.add"]
        assert processed >= 3
    finally:
        app.close()
        close_celery_app(capp)
        worker.stop()
        flower.stop()
