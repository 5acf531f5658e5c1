"""Monitoring with the real ``celery`` package: Celery's event receiver sees a celeriac
worker's events (every type), Celery's ``inspect`` and ``control`` CLI get Celery's
answers from a celeriac worker (prefork: one answer for all its children), and
celeriac's receiver and ``app.control.inspect()`` read a real Celery worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery
import pytest
from celery.events import EventReceiver as CeleryReceiver
from kombu.connection import Connection

import celeriac
from celeriac.events import EventReceiver
from servers import event_listeners
from support import WorkerProcess, celery_worker, close_celery_app, wait_until, write_module

pytestmark = pytest.mark.slow

CELERIAC_TASKS = """
from celeriac import Celery

app = Celery("mon", broker="{url}", backend="{backend}")

@app.task(name="mon.add")
def add(x, y):
    return x + y

@app.task(name="mon.fail")
def fail(message):
    raise ValueError(message)

@app.task(name="mon.retry", bind=True, max_retries=1, default_retry_delay=0)
def retry(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "again"

@app.task(name="mon.hold")
def hold(path):
    import os, time
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return os.path.exists(path)
"""

CELERY_TASKS = """
from celery import Celery

app = Celery("cmon", broker="{url}", backend="{backend}")

@app.task(name="mon.add")
def add(x, y):
    return x + y
"""

TASK_TYPES = {
    "task-sent",
    "task-received",
    "task-started",
    "task-succeeded",
    "task-failed",
    "task-retried",
    "task-revoked",
}


INSPECT_COMMANDS = (
    "active",
    "ping",
    "reserved",
    "scheduled",
    "stats",
    "active_queues",
    "conf",
    "revoked",
    "registered",
    "report",
    "clock",
    "memsample",
    "memdump",
    "objgraph",
)


def test_the_inspect_commands_asked_are_all_of_celerys() -> None:
    from celery.worker.control import Panel

    theirs = {name for name, meta in Panel.meta.items() if meta.type == "inspect"}
    # query_task is asked with an id; hello is a starting worker's greeting (mingle)
    assert theirs == {*INSPECT_COMMANDS, "query_task", "hello"}


def _celery_cli(
    tmp_path: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "celery", "-A", "ctasks", *args]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _json_replies(out: str) -> dict[str, Any]:
    """``celery inspect --json``'s output: one JSON object of {worker: answer}."""
    decoder, merged, at = json.JSONDecoder(), {}, out.find("{")
    while at >= 0:
        value, end = decoder.raw_decode(out, at)
        merged.update(value)
        at = out.find("{", end)
    return merged


class Captured:
    """Celery's own EventReceiver in a thread, collecting every event."""

    def __init__(self, url: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.url = url
        self.ready = threading.Event()
        self.receiver: Any = None

    def run(self) -> None:
        capp = celery.Celery("listener", broker=self.url)
        try:
            with Connection(self.url) as conn:  # type: ignore[no-untyped-call]
                self.receiver = CeleryReceiver(conn, handlers={"*": self.on_event}, app=capp)
                self.ready.set()
                self.receiver.capture(limit=None, timeout=None, wakeup=False)
        except Exception:  # the connection went at the end (the vhost goes with the test)
            if not self.receiver.should_stop:
                raise
        finally:
            capp.close()

    def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def stop(self) -> None:
        self.receiver.should_stop = True

    def types(self) -> set[str]:
        return {e["type"] for e in self.events}


@pytest.fixture(params=["redis", "amqp"])
def urls(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_db")
        yield url, url
    else:
        url = request.getfixturevalue("rabbit")
        yield url, "rpc://"


def _capture(url: str) -> tuple[Captured, threading.Thread]:
    captured = Captured(url)
    thread = threading.Thread(target=captured.run, daemon=True)
    thread.start()
    assert captured.ready.wait(20)
    return captured, thread


def test_celerys_receiver_and_cli_see_a_celeriac_worker(
    tmp_path: Path, urls: tuple[str, str]
) -> None:
    url, backend = urls
    write_module(tmp_path, "mtasks", CELERIAC_TASKS.format(url=url, backend=backend))
    host = "mon1@localhost"
    write_module(tmp_path, "ctasks", CELERY_TASKS.format(url=url, backend=backend))
    capp = celery.Celery("ctasks", broker=url, backend=backend)

    def ask(kind: str, command: str, *args: str) -> Any:
        """One worker's answer, through Celery's CLI on Redis, through Celery's Python
        API (the same requests, without a process per command) on RabbitMQ."""
        if url.startswith("redis"):
            done = _celery_cli(tmp_path, kind, command, *args, "-d", host, "--json", "-t", "5")
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            return _json_replies(done.stdout)[host]
        if command == "query_task":
            return (capp.control.inspect([host], timeout=5).query_task(*args) or {})[host]
        if kind == "inspect":
            return (getattr(capp.control.inspect([host], timeout=5), command)() or {})[host]
        named = {
            "rate_limit": ["task_name", "rate_limit"],
            "time_limit": ["task_name", "soft", "hard"],
            "add_consumer": ["queue"],
            "cancel_consumer": ["queue"],
            "pool_grow": ["n"],
        }.get(command, [])
        arguments = dict(zip(named, args, strict=False))
        (reply,) = capp.control.broadcast(
            command, arguments=arguments, destination=[host], reply=True, timeout=5
        )
        return reply[host]

    before = event_listeners(url)  # (a listener another test left has nothing to do with it)
    captured, thread = _capture(url)
    wait_until(lambda: event_listeners(url) - before, 30, "Celery's event receiver subscribed")
    worker = WorkerProcess(tmp_path, "mtasks", "-c", "2", "-E", "-n", host, "-l", "INFO")
    worker.env["PYTHONPATH"] = str(tmp_path)
    try:
        worker.start()
        app = celeriac.Celery("client", broker=url, backend=backend, task_send_sent_event=True)
        try:
            first = app.send_task("mon.add", (2, 2))
            assert first.get(timeout=20) == 4
            failed = app.send_task("mon.fail", ("bad",))
            with pytest.raises(Exception, match="bad"):
                failed.get(timeout=20)
            assert app.send_task("mon.retry").get(timeout=20) == "again"
            doomed = app.send_task("mon.add", (1, 1), countdown=2)
            app.control.revoke(doomed.id)
            gate = tmp_path / "gate"  # the task holds its process until it exists
            running = app.send_task("mon.hold", (str(gate),))
            wait_until(
                lambda: any(
                    e["type"] == "task-started" and e["uuid"] == running.id for e in captured.events
                ),
                20,
                "the holding task started",
            )
            # Celery's CLI: every inspect command (but hello, a worker's greeting at start),
            # one answer from the worker, no error
            for cmd in INSPECT_COMMANDS:
                answer = ask("inspect", cmd)
                assert not (isinstance(answer, dict) and "error" in answer), (cmd, answer)
                if cmd == "active":
                    assert [t["id"] for t in answer] == [running.id]
                    found = ask("inspect", "query_task", running.id)
                    assert found[running.id][0] == "active", found
                if cmd == "scheduled":  # (what it holds with an ETA: test_monitoring)
                    assert answer == [], answer
                if cmd == "revoked":
                    assert doomed.id in answer, answer
                if cmd == "objgraph":
                    assert Path(answer["filename"]).exists(), answer
                    Path(answer["filename"]).unlink()
                if cmd == "stats":
                    assert answer["pool"]["max-concurrency"] == 2
                    assert len(answer["pool"]["processes"]) == 2
                    assert answer["broker"]["transport"] in ("redis", "amqp")
                    assert answer["total"]["mon.add"] >= 1
                    assert "utime" in answer["rusage"]
            for control in (
                ["rate_limit", "mon.add", "100/s"],
                ["time_limit", "mon.add", "30", "60"],
                ["add_consumer", "extra"],
                ["cancel_consumer", "extra"],
                ["disable_events"],
                ["enable_events"],
                ["pool_grow", "1"],
            ):
                answer = ask("control", *control)
                assert "ok" in answer, (control, answer)

            def processes() -> int:
                stats = app.control.inspect([host], timeout=3).stats() or {}
                return len(stats[host]["pool"]["processes"]) if host in stats else 0

            wait_until(lambda: processes() == 3, 20, "the pool grew to 3 processes")
            gate.touch()
            assert running.get(timeout=20) is True
            wait_until(lambda: captured.types() >= TASK_TYPES, 20, "every task event type")
        finally:
            app.close()
        heartbeats = [e for e in captured.events if e["type"] == "worker-heartbeat"]
        assert heartbeats and heartbeats[0]["freq"] == 2.0 and heartbeats[0]["hostname"] == host
        assert {"active", "processed", "loadavg", "sw_ident"} <= set(heartbeats[-1])
    finally:
        worker.stop()
        close_celery_app(capp)
        wait_until(lambda: "worker-offline" in captured.types(), 20, "worker-offline")
        captured.stop()
        thread.join(10)
    online = [e for e in captured.events if e["type"] == "worker-online"]
    assert online and online[0]["hostname"] == host
    succeeded = next(
        e for e in captured.events if e["type"] == "task-succeeded" and e["uuid"] == first.id
    )
    assert succeeded["result"] == "4" and succeeded["runtime"] >= 0
    failed_event = next(e for e in captured.events if e["type"] == "task-failed")
    assert (
        failed_event["exception"] == "ValueError('bad')"
        and "Traceback" in failed_event["traceback"]
    )
    sent = next(e for e in captured.events if e["type"] == "task-sent" and e["uuid"] == first.id)
    assert sent["name"] == "mon.add" and sent["args"] == "(2, 2)" and sent["queue"] == "celery"


def test_celeriacs_receiver_and_inspect_see_a_celery_worker(
    tmp_path: Path, urls: tuple[str, str]
) -> None:
    url, backend = urls
    write_module(tmp_path, "ctasks", CELERY_TASKS.format(url=url, backend=backend))
    app = celeriac.Celery("client", broker=url, backend=backend)
    got: list[dict[str, Any]] = []
    receiver = EventReceiver(app, {"*": got.append})
    listening, stop = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=app_loop_capture, args=(receiver, listening, stop), daemon=True
    )
    thread.start()
    assert listening.wait(20)
    host = "cel1@localhost"
    worker = celery_worker(tmp_path, "ctasks", "-E", "-n", host)
    worker.argv.remove("--without-heartbeat")
    worker.env["PYTHONPATH"] = str(tmp_path)
    try:
        worker.start()
        assert app.send_task("mon.add", (3, 4)).get(timeout=20) == 7
        assert app.control.inspect([host], timeout=5).ping() == {host: {"ok": "pong"}}
        stats = app.control.inspect([host], timeout=5).stats()
        assert stats is not None and stats[host]["total"]["mon.add"] == 1
        wait_until(
            lambda: (
                {"worker-online", "task-received", "task-succeeded", "worker-heartbeat"}
                <= {e["type"] for e in got}
            ),
            20,
            "a Celery worker's events",
        )
        # and celeriac's command line, against the Celery worker
        write_module(
            tmp_path, "ours", f"from celeriac import Celery\napp = Celery(broker={url!r})\n"
        )
        env = {**os.environ, "PYTHONPATH": str(tmp_path)}
        argv = [sys.executable, "-m", "celeriac", "-A", "ours"]

        def ours(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*argv, *args],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        done = ours("inspect", "ping", "-d", host, "-t", "5")
        assert done.returncode == 0 and f"{host}: OK" in done.stdout, done
        done = ours("inspect", "stats", "-d", host, "-t", "5", "--json")
        assert json.loads(done.stdout)[host]["total"]["mon.add"] == 1, done
        dump = subprocess.Popen(
            [*argv, "events", "--dump", "--timeout", "30"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        stream = dump.stdout
        assert stream is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")))
        reader.start()
        try:  # the Celery worker's heartbeats show the dump is listening
            wait_until(lambda: any("] worker-heartbeat: " in x for x in lines), 20, "a heartbeat")
            assert app.send_task("mon.add", (1, 1)).get(timeout=20) == 2
            wait_until(
                lambda: any("] task-succeeded: " in x and "result='2'" in x for x in lines),
                20,
                "the task-succeeded line",
            )
            assert all(x.startswith(f"{host} [") for x in lines), lines
        finally:
            dump.terminate()
            dump.wait(20)
            reader.join(10)
            stream.close()
    finally:
        stop.set()
        thread.join(20)
        worker.stop()
        app.close()


def app_loop_capture(
    receiver: EventReceiver, listening: threading.Event, stop: threading.Event
) -> None:
    """Capture on a loop of this thread's own until ``stop``; then close the app's
    connections of that loop (left open, they would be collected in a later test)."""
    import asyncio
    import contextlib

    async def main() -> None:
        capture = asyncio.ensure_future(receiver.acapture(listening=listening.set))
        await asyncio.to_thread(stop.wait, 60)
        capture.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await capture
        await receiver.app.close_clients()

    asyncio.run(main())
