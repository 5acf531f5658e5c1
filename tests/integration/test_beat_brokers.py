"""A crontab entry and an interval entry on each broker (SQLite, Redis, RabbitMQ with
its claims in a Redis result backend) are sent at their scheduled times, with a clock
passed in; a real worker then runs them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery
from celeriac.beat import Beat
from celeriac.schedules import crontab
from celeriac.testing import TestWorker
from servers import leased_database

UTC = timezone.utc
START = datetime(2026, 6, 1, 8, 59, 50, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celery]:
    settings: dict[str, Any] = {"set_as_current": False, "task_ignore_result": True}
    if request.param == "sqlite":
        made = Celery("bb", broker=f"sqlite:///{tmp_path / 'b.db'}", **settings)
        yield made
        made.close()
        return
    with leased_database() as url:
        if request.param == "redis":
            made = Celery("bb", broker=url, **settings)
        else:
            rabbit = request.getfixturevalue("rabbit")
            made = Celery("bb", broker=rabbit, backend=url, **settings)
        yield made
        made.close()


def test_crontab_and_interval_entries_are_sent_at_their_times(app: Celery) -> None:
    ran: list[tuple[str, str | None]] = []

    @app.task(bind=True, name="bb.record")
    def record(self: Any, kind: str) -> None:
        ran.append((kind, self.request.scheduled_time))

    app.conf.timezone = "Europe/Paris"
    app.conf.beat_schedule = {
        "at-eleven": {
            "task": "bb.record",
            "schedule": crontab(minute=0, hour=11),
            "args": ["cron"],
        },
        "every-20s": {"task": "bb.record", "schedule": 20.0, "args": ["interval"]},
    }
    now = [START]

    async def run() -> None:
        beat = Beat(app, clock=lambda: now[0])
        for _ in range(9):  # 08:59:50 .. 09:01:10 UTC in 10 s steps
            await beat.tick()
            now[0] += timedelta(seconds=10)
        await app.close_clients()

    asyncio.run(run())
    with TestWorker(app) as worker:
        worker.join()
    assert sorted(ran) == [
        ("cron", "2026-06-01T09:00:00+00:00"),  # 11:00 in Paris (CEST)
        ("interval", "2026-06-01T09:00:10+00:00"),
        ("interval", "2026-06-01T09:00:30+00:00"),
        ("interval", "2026-06-01T09:00:50+00:00"),
        ("interval", "2026-06-01T09:01:10+00:00"),  # the last tick's
    ]


def test_a_disabled_entry_is_not_sent_until_enabled_again(app: Celery) -> None:
    """The dashboard's enable/disable: kept in beat's store, read on every tick; switched
    on again, the entry sends its latest missed slot once (as after downtime)."""
    ran: list[str | None] = []

    @app.task(bind=True, name="bb.off")
    def off(self: Any) -> None:
        ran.append(self.request.scheduled_time)

    app.conf.beat_schedule = {"every-20s": {"task": "bb.off", "schedule": 20.0}}
    now = [START]

    async def run() -> list[str]:
        beat = Beat(app, clock=lambda: now[0])
        await beat.tick()  # 08:59:50: the anchor
        await Beat(app).set_enabled("every-20s", False)  # another process: every beat
        disabled = await beat.disabled()
        for _ in range(6):  # 09:00:00 .. 09:00:50: nothing sent
            now[0] += timedelta(seconds=10)
            await beat.tick()
        await beat.set_enabled("every-20s", True)
        now[0] += timedelta(seconds=10)  # 09:01:00
        await beat.tick()
        entries = [e.name for e in await beat.entries()]  # the reserved entry is hidden
        await app.close_clients()
        return [*disabled, *entries]

    assert asyncio.run(run()) == ["every-20s", "every-20s"]
    with TestWorker(app) as worker:
        worker.join()
    assert ran == ["2026-06-01T09:00:50+00:00"]
