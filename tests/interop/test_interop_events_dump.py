"""Celery's own ``celery -A <app> events --dump`` (the real command, a subprocess) shows
every event type a celeriac worker and a celeriac client send, on Redis and RabbitMQ."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import celeriac
from servers import event_listeners
from support import WorkerProcess, wait_until, write_module

pytestmark = pytest.mark.slow

TASKS = """
from celeriac import Celery

app = Celery("dump", broker="{url}", backend="{backend}")

@app.task(name="dump.add")
def add(x, y):
    return x + y

@app.task(name="dump.fail")
def fail(message):
    raise ValueError(message)

@app.task(name="dump.retry", bind=True, max_retries=1, default_retry_delay=0)
def retry(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "again"
"""

CELERY_APP = 'from celery import Celery\napp = Celery("cdump", broker="{url}")\n'

#: Celery's dumper names the worker events in words, the task events with spaces
LINES = {
    "worker-online": "started",
    "worker-heartbeat": "heartbeat",
    "task-sent": "task sent",
    "task-received": "task received",
    "task-started": "task started",
    "task-succeeded": "task succeeded",
    "task-failed": "task failed",
    "task-retried": "task retried",
    "task-revoked": "task revoked",
    "worker-offline": "shutdown",
}


@pytest.fixture(params=["redis", "amqp"])
def urls(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_db")
        yield url, url
    else:
        yield request.getfixturevalue("rabbit"), "rpc://"


def _seen(dump: WorkerProcess, host: str, words: str) -> bool:
    pattern = re.compile(rf"^{re.escape(host)} \[[^]]+\] {words}\b")
    return any(pattern.search(line) for line in dump.lines)


def test_celery_events_dump_shows_every_event_type(tmp_path: Path, urls: tuple[str, str]) -> None:
    url, backend = urls
    write_module(tmp_path, "dtasks", TASKS.format(url=url, backend=backend))
    write_module(tmp_path, "cdump", CELERY_APP.format(url=url))
    dump = WorkerProcess(tmp_path, "cdump")
    dump.argv = [sys.executable, "-m", "celery", "-A", "cdump", "events", "--dump"]
    dump.env["PYTHONPATH"] = str(tmp_path)
    host = "dump1@localhost"
    worker = WorkerProcess(tmp_path, "dtasks", "-c", "2", "-E", "-n", host, "-l", "INFO")
    worker.env["PYTHONPATH"] = str(tmp_path)
    app = celeriac.Celery("client", broker=url, backend=backend, task_send_sent_event=True)
    try:
        before = event_listeners(url)  # (a listener another test left has nothing to do with it)
        dump.start(wait_ready=False)
        dump.wait_for(r"-> evdump: starting capture", 60)
        wait_until(lambda: event_listeners(url) - before, 60, "celery events --dump subscribed")
        worker.start(timeout=60)
        first = app.send_task("dump.add", (2, 2))
        assert first.get(timeout=30) == 4
        with pytest.raises(Exception, match="bad"):
            app.send_task("dump.fail", ("bad",)).get(timeout=30)
        assert app.send_task("dump.retry").get(timeout=30) == "again"
        doomed = app.send_task("dump.add", (1, 1), countdown=3)
        app.control.revoke(doomed.id)  # refused when it comes due: task-revoked
        for kind in ("task-revoked", "worker-heartbeat"):
            dump.wait_for(rf"^{re.escape(host)} \[[^]]+\] {LINES[kind]}\b", 30)
        worker.stop()
        dump.wait_for(rf"^{re.escape(host)} \[[^]]+\] shutdown\b", 30)
    finally:
        app.close()
        worker.stop()
        dump.stop()
    missing = [
        kind
        for kind, words in LINES.items()
        if kind != "task-sent" and not _seen(dump, host, words)
    ]
    assert not missing, (missing, dump.log)
    # task-sent comes from the client, named by the client's host name
    sent = [line for line in dump.lines if re.search(r"\] task sent: dump\.add\(", line)]
    assert any(first.id in line and "args=(2, 2)" in line for line in sent), dump.log
    received = next(line for line in dump.lines if f"task received: dump.add({first.id})" in line)
    assert received.startswith(f"{host} [") and "args=(2, 2)" in received
    succeeded = next(line for line in dump.lines if "task succeeded:" in line and first.id in line)
    assert "result=4" in succeeded, succeeded
