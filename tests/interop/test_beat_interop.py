"""Periodic tasks across the two packages on one Redis server: a celeriac beat's
messages run on a real Celery worker (which sees the ``scheduled_time`` header in its
request), and a real ``celery beat`` drives a celeriac worker."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from servers import leased_database
from support import WorkerProcess, celery_worker, wait_until, write_module

pytestmark = pytest.mark.slow

CELERIAC_APP = """
from celeriac import Celery

app = Celery("beatapp", broker="{url}")
app.conf.beat_schedule = {{"every-second": {{"task": "beatapp.record", "schedule": 1.0,
                                            "args": ["celeriac-beat"]}}}}
app.conf.beat_max_loop_interval = 1
app.conf.task_ignore_result = True


@app.task(bind=True)
def record(self, kind):
    with open("{record}", "a") as fh:
        fh.write(f"{{kind}} {{self.request.scheduled_time}}\\n")
"""

CELERY_APP = """
from celery import Celery

app = Celery("beatapp", broker="{url}")
app.conf.beat_schedule = {{"every-second": {{"task": "beatapp.record", "schedule": 1.0,
                                            "args": ["celery-beat"]}}}}
app.conf.task_ignore_result = True


@app.task(bind=True, name="beatapp.record")
def record(self, kind):
    with open("{record}", "a") as fh:
        fh.write(f"{{kind}} {{getattr(self.request, 'scheduled_time', None)}}\\n")
"""


@pytest.fixture
def db_url() -> Iterator[str]:
    with leased_database() as url:
        yield url


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _process(tmp_path: Path, *argv: str) -> WorkerProcess:
    proc = WorkerProcess(tmp_path, "unused")
    proc.argv = [sys.executable, "-m", *argv]
    return proc


def test_celeriac_beat_to_a_celery_worker(db_url: str, tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    write_module(tmp_path, "beatapp", CELERIAC_APP.format(url=db_url, record=record))
    write_module(tmp_path, "celeryside", CELERY_APP.format(url=db_url, record=record))
    beat = _process(tmp_path, "celeriac", "-A", "beatapp", "beat", "-l", "info")
    with celery_worker(tmp_path, "celeryside"):
        beat.start(wait_ready=False)
        try:
            wait_until(lambda: len(_lines(record)) >= 4, 60, "Celery to run four beats")
        finally:
            beat.stop()
    rows = [line.split() for line in _lines(record)]
    assert {kind for kind, _ in rows} == {"celeriac-beat"}
    slots = sorted(datetime.fromisoformat(when) for _, when in rows)  # the header, in Celery
    assert {b - a for a, b in itertools.pairwise(slots)} == {timedelta(seconds=1)}


def test_celery_beat_to_a_celeriac_worker(db_url: str, tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    write_module(tmp_path, "beatapp", CELERIAC_APP.format(url=db_url, record=record))
    write_module(tmp_path, "celeryside", CELERY_APP.format(url=db_url, record=record))
    schedule = str(tmp_path / "celerybeat-schedule")
    beat = _process(tmp_path, "celery", "-A", "celeryside", "beat", "-l", "info", "-s", schedule)
    with WorkerProcess(tmp_path, "beatapp", "-P", "solo"):
        beat.start(wait_ready=False)
        try:
            wait_until(lambda: len(_lines(record)) >= 3, 60, "celeriac to run three beats")
        finally:
            beat.stop()
    assert {line for line in _lines(record)} == {"celery-beat None"}
