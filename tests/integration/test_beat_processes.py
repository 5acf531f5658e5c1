"""Beats as real processes: two ``celeriac beat`` and two ``worker -B`` at once, on
SQLite, Redis and RabbitMQ (claims in a Redis result backend), with an entry every
second; one beat is killed with SIGKILL midway. Every slot must run exactly once: no
slot twice, none missing, the slots exactly a second apart from the first to the last."""

from __future__ import annotations

import itertools
import os
import signal
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from celeriac import Celery
from celeriac._loop import run_sync
from servers import leased_database
from support import WorkerProcess, wait_until, write_module

pytestmark = pytest.mark.slow

APP = """
import os
from celeriac import Celery
from celeriac.schedules import crontab

app = Celery("beatapp", broker=os.environ["BEAT_BROKER"],
             backend=os.environ.get("BEAT_BACKEND") or None)
app.conf.beat_max_loop_interval = 1
app.conf.task_ignore_result = True


@app.on_after_configure.connect
def setup(sender, **kwargs):
    sender.add_periodic_task(float(os.environ.get("BEAT_EVERY", "1")), record.s("tick"),
                             name="every-second")
    if os.environ.get("BEAT_CRON"):
        sender.add_periodic_task(crontab(), record.s("minute"), name="every-minute")


@app.task(bind=True)
def record(self, kind):
    line = f"{kind} {self.request.scheduled_time} {self.request.id}\\n"
    fd = os.open(os.environ["BEAT_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
"""

#: slots to see after the kill (and before it): the test runs about this many seconds
#: (CELERIAC_BEAT_SOAK=60 for the minute-long run of issue 13)
AFTER_KILL = int(os.environ.get("CELERIAC_BEAT_SOAK", "12"))
BEFORE_KILL = max(6, AFTER_KILL // 2)


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of the app module: its broker (and, with RabbitMQ, the Redis
    result backend where the beats claim their runs)."""
    if request.param == "sqlite":
        yield {"BEAT_BROKER": f"sqlite:///{tmp_path / 'beat.db'}"}
        return
    with leased_database() as url:
        if request.param == "redis":
            yield {"BEAT_BROKER": url}
        else:
            yield {"BEAT_BROKER": request.getfixturevalue("rabbit"), "BEAT_BACKEND": url}


def _beat(tmp_path: Path, env: dict[str, str], *args: str) -> WorkerProcess:
    proc = WorkerProcess(tmp_path, "beatapp", env=env)
    proc.argv = [sys.executable, "-m", "celeriac", "-A", "beatapp", "beat", "-l", "info", *args]
    return proc


def _lines(path: Path, kind: str = "tick") -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line.startswith(kind + " ")]


def _drain(tmp_path: Path, env: dict[str, str]) -> None:
    """Run what the stopped workers left in the queue, with a worker without beat."""
    client = Celery("drain", broker=env["BEAT_BROKER"], set_as_current=False)

    async def waiting() -> int:
        broker = await client.get_broker()
        return await broker.size("celery")

    with WorkerProcess(tmp_path, "beatapp", "-P", "solo", env=env):
        wait_until(lambda: run_sync(waiting()) == 0, 60, "the queue to drain")
    client.close()


def test_two_beats_and_two_embedded_beats_send_every_slot_once(
    urls: dict[str, str], tmp_path: Path
) -> None:
    write_module(tmp_path, "beatapp", APP)
    record = tmp_path / "record.txt"
    env = {**urls, "BEAT_RECORD": str(record)}
    beats = [_beat(tmp_path, env) for _ in range(2)]
    workers = [
        WorkerProcess(tmp_path, "beatapp", "-B", "-P", "threads", "-c", "2", "-l", "info", env=env)
        for _ in range(2)
    ]
    try:
        for beat in beats:
            beat.start(wait_ready=False)
        for worker in workers:
            worker.start(timeout=60)
        for proc in (*beats, *workers):
            proc.wait_for("beat: started", 60)
        wait_until(lambda: len(_lines(record)) >= BEFORE_KILL, 60, "the first runs")
        assert beats[0].proc is not None
        beats[0].proc.send_signal(signal.SIGKILL)
        killed_at = len(_lines(record))
        wait_until(lambda: len(_lines(record)) >= killed_at + AFTER_KILL, 90, "runs after the kill")
    finally:
        for proc in (*beats, *workers):
            proc.stop()
    _drain(tmp_path, env)
    slots = [datetime.fromisoformat(line.split()[1]) for line in _lines(record)]
    assert len(slots) == len(set(slots)), "a slot ran twice"
    slots.sort()
    gaps = {b - a for a, b in itertools.pairwise(slots)}
    assert gaps == {timedelta(seconds=1)}, f"slots missing: {sorted(gaps)}"
    sends = sum(
        len([line for line in p.lines if "Scheduler: Sending due task" in line])
        for p in (*beats, *workers)
    )
    # each slot sent by one of the four beats (the killed one may have died between a
    # send and its log line)
    assert len(slots) - 1 <= sends <= len(slots)
    where = "result backend" if "BEAT_BACKEND" in urls else "broker"
    assert f"claims in the {where}" in beats[1].log


def test_beat_list_shows_entries_with_last_and_next_run(tmp_path: Path) -> None:
    write_module(tmp_path, "beatapp", APP)
    record = tmp_path / "record.txt"
    broker = f"sqlite:///{tmp_path / 'beat.db'}"
    env = {"BEAT_BROKER": broker, "BEAT_RECORD": str(record), "BEAT_CRON": "1"}
    listing = _beat(tmp_path, env, "--list")
    listing.start(wait_ready=False)
    try:
        listing.wait_for("every-minute", 60)
        assert listing.wait(60) == 0
    finally:
        listing.stop()
    text = listing.log
    assert "every-second: beatapp.record" in text and "schedule: every 1 second" in text
    assert "minute *, hour *, day of week *" in text
    assert "last run: never; next run: " in text
