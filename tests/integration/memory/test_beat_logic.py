"""The beat's decisions on the memory broker, with a clock passed in: exactly-once
claims between beats, missed slots after downtime, the starting deadline, runtime
entries and Celery's ``add_periodic_task`` / ``on_after_configure`` pattern."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from celeriac import Celery
from celeriac.beat import Beat
from celeriac.protocol.message import decode_task
from celeriac.schedules import crontab
from celeriac.transports.memory.broker import clear_stores

UTC = timezone.utc
START = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
_names = itertools.count()


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _app(**settings: Any) -> Celery:
    url = f"memory://beat-{next(_names)}"
    clear_stores(url)
    return Celery("beatlogic", broker=url, set_as_current=False, **settings)


async def _sent(app: Celery) -> list[dict[str, Any]]:
    """The headers of every message waiting in the default queue, in slot order."""
    broker = await app.get_broker()
    deliveries = await broker.fetch(["celery"], 10_000, 0)
    await broker.ack(deliveries)
    return sorted(
        (d.message.headers for d in deliveries if d.message is not None),
        key=lambda h: str(h["scheduled_time"]),
    )


def test_beats_racing_send_each_slot_exactly_once() -> None:
    app = _app(beat_schedule={"tick": {"task": "t.tick", "schedule": 1.0, "args": [1]}})
    clock = Clock()
    beats = [Beat(app, clock=clock) for _ in range(3)]

    async def run() -> list[dict[str, Any]]:
        await beats[0].tick()  # first sight: the anchor, nothing sent
        for _ in range(60):
            clock.advance(1.0)
            await asyncio.gather(*(b.tick() for b in beats))  # all at once
        return await _sent(app)

    headers = asyncio.run(run())
    slots = [datetime.fromisoformat(h["scheduled_time"]) for h in headers]
    assert len(slots) == 60 and len(set(slots)) == 60
    assert slots == [START + timedelta(seconds=i + 1) for i in range(60)]
    assert sum(b.sent for b in beats) == 60
    assert len({h["id"] for h in headers}) == 60


def test_a_restart_after_a_five_minute_gap_fires_the_missed_slot_once() -> None:
    app = _app(beat_schedule={"minutely": {"task": "t.m", "schedule": crontab()}})
    clock = Clock(START + timedelta(seconds=10))

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        first = Beat(app, clock=clock)
        await first.tick()  # anchored at 12:00:10
        clock.advance(60)
        await first.tick()  # 12:01 sent
        before = await _sent(app)
        clock.advance(5 * 60)  # down for five minutes: 12:02 ... 12:06 missed
        await Beat(app, clock=clock).tick()  # a new beat process
        await Beat(app, clock=clock).tick()  # and another: nothing more
        return before, await _sent(app)

    before, after = asyncio.run(run())
    assert [h["scheduled_time"] for h in before] == ["2026-05-01T12:01:00+00:00"]
    assert [h["scheduled_time"] for h in after] == ["2026-05-01T12:06:00+00:00"]


def test_a_slot_older_than_the_starting_deadline_is_skipped_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _app(
        beat_schedule={"minutely": {"task": "t.m", "schedule": crontab()}},
        beat_cron_starting_deadline=30,
    )
    clock = Clock(START + timedelta(seconds=10))

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        beat = Beat(app, clock=clock)
        await beat.tick()
        clock.advance(5 * 60 + 40)  # 12:05:50: the 12:05 slot is 50 s late
        await beat.tick()
        skipped = await _sent(app)
        clock.advance(15)  # 12:06:05: the next slot is on time
        await beat.tick()
        return skipped, await _sent(app)

    with caplog.at_level(logging.WARNING, "celeriac.beat"):
        skipped, sent = asyncio.run(run())
    assert skipped == []
    assert "minutely missed its run of 2026-05-01T12:05:00+00:00 by 50 s" in caplog.text
    assert [h["scheduled_time"] for h in sent] == ["2026-05-01T12:06:00+00:00"]


def test_a_busy_beat_catches_up_each_slot_in_turn() -> None:
    app = _app(beat_schedule={"tick": {"task": "t.tick", "schedule": 1.0}})
    clock = Clock()

    async def run() -> list[dict[str, Any]]:
        beat = Beat(app, clock=clock)
        await beat.tick()
        clock.advance(4.5)  # a tick 3.5 s late (a loaded machine): 4 slots due
        await beat.tick()
        return await _sent(app)

    slots = [h["scheduled_time"][17:19] for h in asyncio.run(run())]
    assert slots == ["01", "02", "03", "04"]


def test_entries_added_and_removed_at_runtime_reach_every_beat() -> None:
    app = _app()
    clock = Clock()

    async def run() -> list[dict[str, Any]]:
        beat = Beat(app, clock=clock)
        await app.beat.aadd("stored", "t.stored", 2.0, args=[5], options={"priority": 3})
        await beat.tick()  # anchored
        clock.advance(2)
        await beat.tick()
        await app.beat.aremove("stored")
        clock.advance(2)
        await beat.tick()
        return await _sent(app)

    headers = asyncio.run(run())
    assert [(h["task"], h["scheduled_time"]) for h in headers] == [
        ("t.stored", "2026-05-01T12:00:02+00:00")
    ]
    assert asyncio.run(_rows_after_remove(app)) == []


async def _rows_after_remove(app: Celery) -> list[str]:
    return [row.entry.name for row in await app.beat.arows()]


def test_add_periodic_task_in_on_after_configure_as_celerys_docs_show() -> None:
    app = _app()

    @app.task
    def hello(word: str) -> str:
        return word

    @app.on_after_configure.connect
    def setup_periodic_tasks(sender: Celery, **kwargs: Any) -> None:
        sender.add_periodic_task(10.0, hello.s("hello"), name="add every 10")
        sender.add_periodic_task(crontab(hour=7, minute=30, day_of_week=1), hello.s("monday"))

    finalized: list[Celery] = []
    app.on_after_finalize.connect(lambda sender, **kw: finalized.append(sender))
    assert app.conf.beat_schedule == {}
    app.finalize()
    app.finalize()  # once
    schedule = app.conf.beat_schedule
    assert finalized == [app]
    assert schedule["add every 10"]["task"] == hello.name
    assert schedule["add every 10"]["args"] == ("hello",)
    assert len(schedule) == 2
    clock = Clock()

    async def run() -> list[dict[str, Any]]:
        beat = Beat(app, clock=clock)
        await beat.tick()
        clock.advance(10)
        await beat.tick()
        return await _sent(app)

    (sent,) = asyncio.run(run())
    assert sent["task"] == hello.name and sent["scheduled_time"] == "2026-05-01T12:00:10+00:00"


def test_a_daily_0230_job_across_dst_changes_runs_once_each_day() -> None:
    """The beat itself (not only the schedule) with a clock stepping 10 minutes at a time
    over the night Europe/Berlin skips 02:00-03:00, and the night it repeats 02:00-03:00."""
    berlin = ZoneInfo("Europe/Berlin")

    async def run(start: datetime) -> list[str]:
        app = _app(
            timezone="Europe/Berlin",
            beat_schedule={"daily": {"task": "t.d", "schedule": crontab(minute=30, hour=2)}},
        )
        clock = Clock(start)
        beat = Beat(app, clock=clock)
        for _ in range(3 * 24 * 6):
            await beat.tick()
            clock.advance(600)
        return [
            datetime.fromisoformat(h["scheduled_time"]).astimezone(berlin).strftime("%d %H:%M")
            for h in await _sent(app)
        ]

    spring = asyncio.run(run(datetime(2026, 3, 27, 12, tzinfo=UTC)))
    assert spring == ["28 02:30", "29 03:00", "30 02:30"]
    autumn = asyncio.run(run(datetime(2026, 10, 23, 12, tzinfo=UTC)))
    assert autumn == ["24 02:30", "25 02:30", "26 02:30"]


def test_a_beat_that_cannot_reach_its_broker_says_so_and_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Celery("unreachable", broker="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.beat_schedule = {"tick": {"task": "t", "schedule": 1.0}}

    async def run() -> None:
        stop = asyncio.Event()
        seen: list[str] = []

        class Watch(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record.getMessage())
                if sum("retrying in" in line for line in seen) >= 2:
                    stop.set()

        handler = Watch(logging.DEBUG)
        logging.getLogger("celeriac.beat").addHandler(handler)
        try:
            await asyncio.wait_for(Beat(app).run(stop), 30)
        finally:
            logging.getLogger("celeriac.beat").removeHandler(handler)

    with caplog.at_level(logging.DEBUG, "celeriac.beat"):
        asyncio.run(run())
    # one warning for the outage, however many retries (each with a longer wait)
    lost = [r for r in caplog.records if "cannot reach" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert retries[:2] == ["beat: retrying in 1 s", "beat: retrying in 2 s"]


def test_an_entry_that_cannot_be_sent_is_logged_once_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _app(
        task_create_missing_queues=False,
        beat_schedule={
            "bad": {"task": "t.bad", "schedule": 1.0, "options": {"queue": "nowhere"}},
            "good": {"task": "t.good", "schedule": 1.0},
        },
    )
    clock = Clock()

    async def run() -> list[dict[str, Any]]:
        beat = Beat(app, clock=clock)
        for _ in range(4):
            await beat.tick()
            clock.advance(1)
        return await _sent(app)

    with caplog.at_level(logging.ERROR, "celeriac.beat"):
        sent = asyncio.run(run())
    assert [h["task"] for h in sent] == ["t.good"] * 3
    errors = [r.getMessage() for r in caplog.records if "cannot be sent" in r.getMessage()]
    assert len(errors) == 1 and "entry bad cannot be sent" in errors[0], errors


def test_entry_options_reach_the_message() -> None:
    app = _app(
        beat_schedule={
            "opts": {
                "task": "t.o",
                "schedule": 5.0,
                "args": (1, 2),
                "kwargs": {"k": "v"},
                "options": {"queue": "low", "priority": 7, "expires": 30, "headers": {"h": 1}},
            }
        }
    )
    clock = Clock()

    async def run() -> list[Any]:
        beat = Beat(app, clock=clock)
        await beat.tick()
        clock.advance(5)
        await beat.tick()
        broker = await app.get_broker()
        got = await broker.fetch(["low"], 10, 0)
        await broker.ack(got)
        return [d.message for d in got]

    (message,) = asyncio.run(run())
    assert message is not None
    assert message.headers["task"] == "t.o" and message.headers["h"] == 1
    assert message.headers["scheduled_time"] == "2026-05-01T12:00:05+00:00"
    assert message.headers["expires"] is not None
    assert message.properties["priority"] == 7
    call = decode_task(message, frozenset({"application/json"}))
    assert call.args == [1, 2] and call.kwargs == {"k": "v"}
