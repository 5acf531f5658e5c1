"""celeriac.schedules: Celery's crontab syntax and return shapes, and fire times across
daylight-saving changes (schedule arithmetic with a clock passed in, no waiting)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from celeriac import Celery
from celeriac.exceptions import ImproperlyConfigured
from celeriac.schedules import ParseException, crontab, schedstate, schedule, solar

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def _app(zone: str | None = None) -> Celery:
    return Celery("sched", broker="memory://sched", timezone=zone, set_as_current=False)


def test_crontab_fields_take_celerys_syntax() -> None:
    c = crontab(minute="*/15", hour="9-17", day_of_week="mon-fri")
    assert c.minute == {0, 15, 30, 45}
    assert c.hour == set(range(9, 18))
    assert c.day_of_week == {1, 2, 3, 4, 5}
    assert crontab(minute="0,30", hour=3).minute == {0, 30}
    assert crontab(day_of_week="sun,sat").day_of_week == {0, 6}
    assert crontab(day_of_week="fri-mon").day_of_week == {5, 6, 0, 1}  # wraps round
    assert crontab(day_of_week="thursday").day_of_week == {4}
    assert crontab(month_of_year="jan-mar").month_of_year == {1, 2, 3}
    assert crontab(day_of_month="*/10").day_of_month == {1, 11, 21, 31}
    assert crontab(minute="1-10/3").minute == {1, 4, 7, 10}
    assert crontab(minute={5, 6}).minute == {5, 6}
    parsed = crontab.from_string("*/20 4 1 jan-feb mon")
    assert parsed == crontab(minute="*/20", hour=4, day_of_month=1, month_of_year="jan-feb",
                             day_of_week="mon")  # fmt: skip
    assert repr(parsed) == "<crontab: */20 4 mon 1 jan-feb (m/h/dM/MY/d)>"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"minute": 60}, "60 is out of range; valid values are 0-59"),
        ({"hour": "25"}, "out of range; valid values are 0-23"),
        ({"day_of_week": "funday"}, "'funday' is not a number or a known name"),
        ({"day_of_month": 0}, "valid values are 1-31"),
        ({"minute": "*/0"}, "the step must be at least 1"),
    ],
)
def test_a_bad_crontab_field_says_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ParseException, match=message):
        crontab(**kwargs)


def test_from_string_needs_five_fields() -> None:
    with pytest.raises(ValueError, match="Expected 5 fields, got 3"):
        crontab.from_string("* * *")


def test_day_fields_are_anded_as_celery_does() -> None:
    c = crontab(minute=0, hour=0, day_of_month=13, day_of_week="fri", app=_app())
    after = datetime(2026, 1, 1, tzinfo=UTC)
    first = c.times_between(after, after + timedelta(days=400))
    assert first[0] == datetime(2026, 2, 13, tzinfo=UTC)  # the first Friday the 13th of 2026
    assert all(t.weekday() == 4 and t.day == 13 for t in first)


def test_is_due_and_remaining_estimate_have_celerys_shapes() -> None:
    now = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
    every = schedule(timedelta(seconds=10), nowfun=lambda: now)
    due = every.is_due(now - timedelta(seconds=15))
    assert isinstance(due, schedstate) and due == (True, 10.0) and due.is_due and due.next == 10
    assert every.is_due(now - timedelta(seconds=4)) == (False, 6.0)
    assert every.remaining_estimate(now - timedelta(seconds=4)) == timedelta(seconds=6)
    assert repr(every) == "<freq: every 10 seconds>"
    cron = crontab(minute="*/5", nowfun=lambda: now, app=_app())
    assert cron.remaining_estimate(now - timedelta(seconds=20)) == timedelta(minutes=4, seconds=30)
    assert cron.is_due(now - timedelta(seconds=20)) == (False, 270.0)
    assert cron.remaining_estimate(now - timedelta(minutes=1)) == timedelta(seconds=-30)
    state = cron.is_due(now - timedelta(minutes=1))
    assert state.is_due and state.next == 270.0  # due; the next one in 4 min 30 s


def test_relative_rounds_to_the_resolution_of_the_interval() -> None:
    every = schedule(timedelta(minutes=5), relative=True, app=_app())
    last = datetime(2026, 5, 1, 12, 3, 41, tzinfo=UTC)
    assert every.first_fire(last) == datetime(2026, 5, 1, 12, 8, tzinfo=UTC)
    plain = schedule(300)
    assert plain.first_fire(last) == last + timedelta(minutes=5)


def test_an_interval_after_downtime_fires_the_latest_point_of_its_grid() -> None:
    every = schedule(60)
    last = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    now = last + timedelta(minutes=5, seconds=20)
    assert every.fire_time(last, now) == last + timedelta(minutes=5)  # one slot, not five
    assert every.next_fire(last, now) == last + timedelta(minutes=6)


def _local(times: list[datetime], zone: ZoneInfo) -> list[str]:
    return [t.astimezone(zone).strftime("%m-%d %H:%M %Z") for t in times]


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        ("Europe/Berlin", (2026, 3, 29), (2026, 10, 25)),
        ("America/New_York", (2026, 3, 8), (2026, 11, 1)),
    ],
)
def test_a_daily_0230_job_runs_once_on_each_dst_change_day(
    zone: str, spring: tuple[int, int, int], autumn: tuple[int, int, int]
) -> None:
    tz = ZoneInfo(zone)
    daily = crontab(minute=30, hour=2, app=_app(zone))
    for day, expected in ((spring, "03:00"), (autumn, "02:30")):
        start = datetime(*day, tzinfo=tz) - timedelta(days=1)
        runs = daily.times_between(
            start.astimezone(UTC), (start + timedelta(days=3)).astimezone(UTC)
        )
        on_day = [t for t in runs if t.astimezone(tz).date() == datetime(*day).date()]
        assert len(runs) == 3 and len(on_day) == 1, _local(runs, tz)
        assert on_day[0].astimezone(tz).strftime("%H:%M") == expected  # the first valid time
        # the days around are untouched
        assert {t.astimezone(tz).strftime("%H:%M") for t in runs if t not in on_day} == {"02:30"}


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
def test_an_hourly_job_neither_skips_nor_doubles_across_dst_changes(zone: str) -> None:
    hourly = crontab(minute=30, app=_app(zone))
    for start in (datetime(2026, 3, 7, tzinfo=UTC), datetime(2026, 10, 24, tzinfo=UTC)):
        end = start + timedelta(days=10)  # both zones change in these windows
        runs = hourly.times_between(start, end)
        gaps = {b - a for a, b in itertools.pairwise(runs)}
        assert gaps == {timedelta(hours=1)}, _local(runs, ZoneInfo(zone))
        assert len(runs) == 240


def test_crontab_is_evaluated_in_the_app_timezone() -> None:
    assert _app("Asia/Tokyo").timezone == ZoneInfo("Asia/Tokyo")
    assert _app().timezone == ZoneInfo("UTC") and _app("Asia/Tokyo").now().utcoffset() == timedelta(
        hours=9
    )
    nine = crontab(minute=0, hour=9, app=_app("America/New_York"))
    after = datetime(2026, 7, 1, tzinfo=UTC)
    assert nine.first_fire(after) == datetime(2026, 7, 1, 13, tzinfo=UTC)  # 09:00 EDT
    assert crontab(minute=0, hour=9, app=_app()).first_fire(after) == datetime(
        2026, 7, 1, 9, tzinfo=UTC
    )


def test_a_missed_crontab_slot_is_the_latest_before_now() -> None:
    every_minute = crontab(app=_app())
    last = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    now = last + timedelta(minutes=5, seconds=3)
    assert every_minute.fire_time(last, now) == last + timedelta(minutes=5)
    assert every_minute.fire_time(now, now) is None


def test_solar_sunrise_in_london_at_midsummer() -> None:
    sunrise = solar("sunrise", 51.5074, -0.1278, app=_app())
    first = sunrise.first_fire(datetime(2026, 6, 21, tzinfo=UTC))
    assert first is not None
    assert abs(first - datetime(2026, 6, 21, 3, 43, tzinfo=UTC)) < timedelta(minutes=3)
    with pytest.raises(ValueError, match="solar event 'moonrise'"):
        solar("moonrise", 0, 0)


def test_timezone_and_beat_schedule_are_checked_when_set() -> None:
    with pytest.raises(ImproperlyConfigured, match="did you mean 'Europe/Berlin'"):
        _app("Europe/Berln")
    with pytest.raises(ImproperlyConfigured, match=r"beat_schedule\['x'\] needs 'task'"):
        Celery("s", broker="memory://", beat_schedule={"x": {"schedule": 5}}, set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="unknown key 'shedule'"):
        Celery("s", broker="memory://", beat_schedule={"x": {"task": "t", "shedule": 5}},
               set_as_current=False)  # fmt: skip
    with pytest.raises(ImproperlyConfigured, match="needs 'schedule'"):
        Celery("s", broker="memory://", beat_schedule={"x": {"task": "t", "schedule": "5"}},
               set_as_current=False)  # fmt: skip
