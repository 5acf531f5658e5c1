"""Monitoring on the embedded brokers: a prefork worker on SQLite answers remote control
(one answer for all its children; pool_grow/shrink and add/cancel_consumer really change
it) and sends events that ``celeriac events`` shows; the memory broker carries events
and remote control in-process; heartbeats fire ``heartbeat_sent``; ``disable_events``
stops task events."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, signals
from celeriac.events import EventReceiver
from celeriac.testing import TestWorker
from support import WorkerProcess, wait_until, write_module

CELERIAC = shutil.which("celeriac", path=os.path.dirname(sys.executable)) or "celeriac"

SQLITE = "f\"sqlite:///{pathlib.Path(__file__).resolve().parent / 'b.db'}\""
TASKS = f"""
import pathlib
from celeriac import Celery
app = Celery("montasks", broker={SQLITE})

@app.task(name="mon.add")
def add(x, y):
    return x + y
"""


def run(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [CELERIAC, "-A", "montasks", *args]
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_a_prefork_worker_on_sqlite_is_monitored(tmp_path: Path) -> None:
    write_module(tmp_path, "montasks", TASKS)
    sys.path.insert(0, str(tmp_path))
    try:
        import montasks  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    app: Celery = montasks.app
    host = "sq1@localhost"
    dump = subprocess.Popen(
        [CELERIAC, "-A", "montasks", "events", "--dump", "--timeout", "60"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert dump.stderr is not None  # events published before it listens are not kept
    for line in dump.stderr:  # (after "Created the SQLite database ...")
        if "-> celeriac events: listening on sqlite://" in line:
            break
    worker = WorkerProcess(tmp_path, "montasks", "-c", "2", "-E", "-n", host, "-l", "INFO")
    worker.env["PYTHONPATH"] = str(tmp_path)
    try:
        worker.start()
        assert app.control.ping(timeout=5) == [{host: {"ok": "pong"}}]
        assert app.send_task("mon.add", (1, 2)).get(timeout=20) == 3
        done = run(tmp_path, "inspect", "ping", "-d", host, "-t", "5")
        assert done.returncode == 0 and "1 node online." in done.stdout, done
        done = run(tmp_path, "inspect", "ping", "-d", "nobody@nowhere", "-t", "2")
        assert done.returncode == 69 and "no answer from nobody@nowhere" in done.stderr
        done = run(tmp_path, "control", "rate_limit", "no.such.task", "1/s", "-t", "5")
        assert done.returncode == 1 and "unknown task" in done.stdout

        def processes() -> int:
            stats = app.control.inspect([host], timeout=3).stats() or {}
            return len(stats[host]["pool"]["processes"]) if host in stats else 0

        assert processes() == 2
        assert app.control.broadcast("pool_grow", {"n": 1}, [host], reply=True, timeout=5) == [
            {host: {"ok": "pool will grow"}}
        ]
        wait_until(lambda: processes() == 3, 30, "three pool processes")
        app.control.broadcast("pool_shrink", {"n": 2}, [host], reply=True, timeout=5)
        wait_until(lambda: processes() == 1, 30, "one pool process")

        extra = app.send_task("mon.add", (5, 5), queue="extra")
        answer = app.control.broadcast(
            "add_consumer", {"queue": "extra"}, [host], reply=True, timeout=5
        )
        assert answer == [{host: {"ok": "add consumer extra"}}]
        assert extra.get(timeout=20) == 10
        queues = app.control.inspect([host], timeout=5).active_queues() or {}
        assert [q["name"] for q in queues[host]] == ["celery", "extra"]
        app.control.broadcast("cancel_consumer", {"queue": "extra"}, [host], reply=True, timeout=5)
        queues = app.control.inspect([host], timeout=5).active_queues() or {}
        assert [q["name"] for q in queues[host]] == ["celery"]
    finally:
        worker.stop()
        seen = []
        assert dump.stdout is not None
        for line in dump.stdout:  # until the worker's last event (the dump ends by --timeout)
            seen.append(line)
            if "] worker-offline: " in line:
                break
        dump.terminate()
        rest, _ = dump.communicate(timeout=20)
        out = "".join(seen) + rest
        dump.stderr.close()
    for kind in ("worker-online", "worker-heartbeat", "task-received", "task-started"):
        assert f"{host} [" in out and f"] {kind}: " in out, (kind, out)
    assert "task-succeeded: " in out and "result='3'" in out
    assert "] worker-offline: " in out


def test_the_memory_broker_carries_events_and_remote_control() -> None:
    app = Celery("memmon", broker="memory://monitoring", worker_send_task_events=True)

    @app.task(name="mem.double")
    def double(x: int) -> int:
        return 2 * x

    got: list[dict[str, Any]] = []
    listening = threading.Event()
    beats: list[Any] = []

    def on_beat(sender: Any = None, **_: Any) -> None:
        beats.append(sender)

    signals.heartbeat_sent.connect(on_beat)
    receiver = EventReceiver(app, {"*": got.append})

    async def capture() -> None:
        await receiver.acapture(timeout=30, listening=listening.set)

    import asyncio

    thread = threading.Thread(target=lambda: asyncio.run(capture()), daemon=True)
    thread.start()
    assert listening.wait(10)
    worker = TestWorker(app)
    worker.consumer.control = True
    worker.consumer.monitor.heartbeat_interval = 0.2
    try:
        with worker:
            assert double.delay(21).get(timeout=10) == 42
            assert app.control.ping(timeout=2) == [{"testworker@localhost": {"ok": "pong"}}]
            answer = app.control.broadcast("disable_events", reply=True, timeout=2)
            assert answer == [{"testworker@localhost": {"ok": "task events disabled"}}]
            silent = double.delay(1)
            assert silent.get(timeout=10) == 2
            wait_until(lambda: len(beats) >= 3, 10, "three heartbeats")
    finally:
        signals.heartbeat_sent.disconnect(on_beat)
    wait_until(lambda: any(e["type"] == "worker-offline" for e in got), 10, "worker-offline")
    types = [e["type"] for e in got]
    assert {"worker-online", "task-received", "task-started", "task-succeeded"} <= set(types)
    assert not [e for e in got if e.get("uuid") == silent.id]  # sent after disable_events
    assert beats[0] is worker.consumer.monitor


@pytest.mark.parametrize("command", ["active", "reserved", "scheduled", "stats", "conf", "clock"])
def test_inspect_answers_on_the_memory_broker(command: str) -> None:
    app2 = Celery("meminspect", broker=f"memory://inspect2-{command}")
    worker = TestWorker(app2)
    worker.consumer.control = True
    with worker:
        answer = app2.control.inspect(timeout=2)._request(command)
        assert answer is not None
        (reply,) = answer.values()
        assert not (isinstance(reply, dict) and "error" in reply), reply


def test_inspect_scheduled_and_revoked_answer_what_the_worker_holds_and_knows() -> None:
    app = Celery("memsched", broker="memory://scheduled-revoked")
    gate = threading.Event()

    @app.task(name="mem.block")
    def block() -> int:
        gate.wait(20)
        return 1

    @app.task(name="mem.later")
    def later(x: int) -> int:
        return x

    worker = TestWorker(app)  # one thread: what comes while mem.block runs waits
    worker.consumer.control = True
    host = "testworker@localhost"
    try:
        with worker:
            blocked = block.delay()
            inspect = app.control.inspect([host], timeout=2)
            wait_until(lambda: len((inspect.active() or {}).get(host, [])) == 1, 10, "blocking")
            assert inspect.scheduled() == {host: []}
            soon = later.apply_async((7,), countdown=0.3, priority=3)
            now = later.delay(8)  # no ETA: reserved, not scheduled
            # the broker keeps it for 0.3 s; then the worker holds it behind mem.block
            wait_until(lambda: (inspect.scheduled() or {}).get(host), 10, "it is scheduled")
            (entry,) = (inspect.scheduled() or {})[host]
            assert entry["priority"] == 6 and entry["eta"].startswith("20")
            assert entry["request"]["id"] == soon.id and entry["request"]["args"] == [7]
            assert {r["id"] for r in (inspect.reserved() or {})[host]} == {soon.id, now.id}
            assert inspect.revoked() == {host: []}
            app.control.revoke(["dead-1", "dead-2"])
            assert sorted((inspect.revoked() or {})[host]) == ["dead-1", "dead-2"]
            gate.set()
            assert (blocked.get(timeout=10), soon.get(timeout=10)) == (1, 7)
            assert inspect.scheduled() == {host: []}
    finally:
        gate.set()


SENDING = (
    TASKS.replace('"montasks",', '"montasks", task_send_sent_event=True,')
    + """

@app.task(name="mon.spawn")
def spawn():
    return add.delay(1, 2).id

@app.task(name="mon.again", bind=True, max_retries=1, default_retry_delay=0)
def again(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "again"
"""
)


def test_metrics_and_health_on_the_metrics_port(tmp_path: Path) -> None:
    """Every count, and celery_task_sent_total for what the worker itself sends (a task
    sent from a task body, a retry); the client's sends are the client's."""
    import socket
    import urllib.request

    write_module(tmp_path, "montasks", SENDING)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = WorkerProcess(
        tmp_path, "montasks", "-c", "2", "-n", "m1@localhost", "--metrics-port", str(port)
    )
    worker.env["PYTHONPATH"] = str(tmp_path)
    app = Celery("montasks", broker=f"sqlite:///{tmp_path / 'b.db'}")
    try:
        worker.start()
        assert app.send_task("mon.add", (2, 2)).get(timeout=20) == 4
        spawned = app.AsyncResult(app.send_task("mon.spawn").get(timeout=20))
        assert spawned.get(timeout=20) == 3
        assert app.send_task("mon.again").get(timeout=20) == "again"
        base = f"http://127.0.0.1:{port}"
        sent = 'celery_task_sent_total{hostname="m1@localhost",name="%s",queue="celery"} 1.0'

        def scraped() -> str:
            with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
                text = response.read().decode()
            done = (
                'celery_task_succeeded_total{hostname="m1@localhost",name="mon.add",'
                'queue="celery"} 2.0'
            )
            return text if done in text and sent % "mon.again" in text else ""

        text = wait_until(scraped, 20, "the tasks counted in /metrics")
        assert sent % "mon.add" in text, text  # sent from mon.spawn's body
        assert 'celery_task_sent_total{hostname="m1@localhost",name="mon.spawn"' not in text
        assert 'celery_task_runtime_seconds_count{hostname="m1@localhost",name="mon.add"' in text
        assert 'celery_worker_up{hostname="m1@localhost"} 1.0' in text
        assert 'celery_queue_length{queue_name="celery"} 0.0' in text
        with urllib.request.urlopen(base + "/healthz", timeout=10) as response:
            assert response.status == 200
    finally:
        worker.stop()
        app.close()


def test_rate_limit_and_time_limit_commands_change_the_running_worker() -> None:
    import time

    app = Celery("memrate", broker="memory://rate-limit-command")

    @app.task(name="mem.stamp")
    def stamp() -> float:
        return time.monotonic()

    worker = TestWorker(app)
    worker.consumer.control = True
    with worker:
        answer = app.control.rate_limit("mem.stamp", "2/s", reply=True, timeout=2)
        assert answer == [{"testworker@localhost": {"ok": "new rate limit set successfully"}}]
        times = sorted(r.get(timeout=20) for r in [stamp.delay() for _ in range(4)])
        assert times[-1] - times[0] >= 1.0  # 2 a second: four take 1.5 s
        answer = app.control.time_limit("mem.stamp", soft=5, hard=10, reply=True, timeout=2)
        assert answer == [{"testworker@localhost": {"ok": "time limits set successfully"}}]
        assert (app.tasks["mem.stamp"].soft_time_limit, app.tasks["mem.stamp"].time_limit) == (
            5.0,
            10.0,
        )
        unknown = app.control.rate_limit("no.such", "1/s", reply=True, timeout=2)
        assert unknown == [{"testworker@localhost": {"error": "unknown task"}}]


def test_autoscale_command_moves_the_range_and_the_pool(tmp_path: Path) -> None:
    write_module(tmp_path, "montasks", TASKS)
    host = "as1@localhost"
    worker = WorkerProcess(tmp_path, "montasks", "--autoscale", "3,1", "-n", host)
    worker.env["PYTHONPATH"] = str(tmp_path)
    app = Celery("montasks", broker=f"sqlite:///{tmp_path / 'b.db'}")

    def processes() -> int:
        stats = app.control.inspect([host], timeout=3).stats() or {}
        return len(stats[host]["pool"]["processes"]) if host in stats else 0

    try:
        worker.start()
        assert processes() == 1
        answer = app.control.autoscale(4, 2, destination=[host], reply=True, timeout=5)
        assert answer == [{host: {"ok": "autoscale now max=4 min=2"}}]
        wait_until(lambda: processes() == 2, 30, "the pool at the new minimum")
        grow = app.control.pool_grow(1, destination=[host], reply=True, timeout=5)
        assert grow is not None and "not supported with autoscale" in grow[0][host]["error"]
    finally:
        worker.stop()
        app.close()


@pytest.mark.parametrize("broker", ["sqlite", "redis"])
def test_a_monitor_started_after_the_worker_gets_its_task_events(
    tmp_path: Path, broker: str, request: pytest.FixtureRequest
) -> None:
    """While nobody listens, a worker on SQLite or Redis builds no task events (the
    broker would drop them: SQLite's listener table, the receiver count of Redis's
    PUBLISH tell); a monitor that starts later gets the events of the tasks that
    follow."""
    import asyncio
    import contextlib

    url = f"sqlite:///{tmp_path / 'b.db'}"
    if broker == "redis":
        url = request.getfixturevalue("redis_db")
    write_module(tmp_path, "montasks", TASKS.replace(SQLITE, repr(url)))
    host = "sq2@localhost"
    worker = WorkerProcess(tmp_path, "montasks", "-c", "1", "-E", "-n", host, "-l", "INFO")
    worker.env["PYTHONPATH"] = str(tmp_path)
    app = Celery("montasks", broker=url)
    got: list[dict[str, Any]] = []
    listening, stop = threading.Event(), threading.Event()

    async def monitor() -> None:
        receiver = EventReceiver(app, {"*": got.append})
        capture = asyncio.ensure_future(receiver.acapture(listening=listening.set))
        await asyncio.to_thread(stop.wait)
        capture.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await capture
        await app.close_clients()  # this loop's connections

    thread = threading.Thread(target=asyncio.run, args=(monitor(),), daemon=True)
    try:
        worker.start()
        unseen = app.send_task("mon.add", (1, 1))
        assert unseen.get(timeout=20) == 2
        # (on Redis the first batch is built, and PUBLISH finds no receiver)
        worker.wait_for(r"Task events: nobody listens", 20)
        thread.start()
        assert listening.wait(20)
        sent: list[str] = []

        def succeeded_seen() -> bool:
            if any(e["type"] == "task-succeeded" and e["uuid"] in sent for e in got):
                return True
            result = app.send_task("mon.add", (2, 3))
            sent.append(result.id)
            assert result.get(timeout=20) == 5
            return False

        wait_until(succeeded_seen, 30, "a task-succeeded event at the late monitor")
        assert not [e for e in got if e.get("uuid") == unseen.id]
        worker.wait_for(r"Task events: a monitor listens", 20)
    finally:
        stop.set()
        if thread.ident is not None:
            thread.join(20)
        worker.stop()
        app.close()
