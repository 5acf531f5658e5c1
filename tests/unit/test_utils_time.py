"""``celeriac.utils.time`` gives what ``celery.utils.time`` gives, for the same inputs (the
real Celery package answers in the same test)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import celery.utils.time as theirs
import pytest

import celeriac.utils.time as ours

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def same(name: str, *args: Any, **kwargs: Any) -> Any:
    got = getattr(ours, name)(*args, **kwargs)
    expected = getattr(theirs, name)(*args, **kwargs)
    assert got == expected, (name, args, kwargs)
    if isinstance(expected, datetime):
        assert got.utcoffset() == expected.utcoffset(), (name, args, got, expected)
    return got


def test_every_name_celery_exports_that_celeriac_keeps() -> None:
    kept = set(theirs.__all__) - {"LocalTimezone", "ffwd"}
    assert kept <= set(dir(ours))


@pytest.mark.parametrize("value", [0, 5, 2.5, timedelta(seconds=3), None, "x"])
def test_maybe_timedelta(value: Any) -> None:
    same("maybe_timedelta", value)


@pytest.mark.parametrize("seconds", [0, 0.004, 0.5, 1, 1.5, 59, 60, 61, 3600, 7200, 86400, 90061])
@pytest.mark.parametrize("options", [{}, {"prefix": "in "}, {"prefix": "in", "sep": " "}])
def test_humanize_seconds(seconds: float, options: dict[str, Any]) -> None:
    same("humanize_seconds", seconds, **options)
    same("humanize_seconds", seconds, microseconds=True, now="right now", **options)


@pytest.mark.parametrize("value", ["100/m", "2/h", "0.5/s", "3", "0/s", None, "", 4, 0.25])
def test_rate(value: Any) -> None:
    same("rate", value)


def test_rate_with_an_unknown_unit_raises_as_celery() -> None:
    with pytest.raises(KeyError):
        theirs.rate("1/d")
    with pytest.raises(KeyError):
        ours.rate("1/d")


@pytest.mark.parametrize("name", ["sun", "Sunday", "mon", "tuesday", "SAT"])
def test_weekday(name: str) -> None:
    same("weekday", name)


def test_weekday_unknown_raises_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="noday"):
        ours.weekday("noday")


@pytest.mark.parametrize(
    "value",
    [None, "", "2024-01-02T03:04:05", "2024-01-02T03:04:05+02:00", "2024-01-02T03:04:05.123Z"],
)
def test_maybe_iso8601(value: Any) -> None:
    same("maybe_iso8601", value)


NAIVE = datetime(2024, 5, 6, 7, 8, 9, 123456)


@pytest.mark.parametrize(
    "delta",
    [timedelta(seconds=5), timedelta(minutes=2), timedelta(hours=3), timedelta(days=2)],
)
def test_delta_resolution(delta: timedelta) -> None:
    same("delta_resolution", NAIVE, delta)
    same("delta_resolution", NAIVE.replace(tzinfo=PARIS), delta)


@pytest.mark.parametrize(
    "dt",
    [
        NAIVE,
        NAIVE.replace(tzinfo=UTC),
        NAIVE.replace(tzinfo=PARIS),
        datetime(2024, 3, 31, 2, 30),  # skipped in Paris (DST starts)
        datetime(2024, 10, 27, 2, 30),  # repeated in Paris (DST ends)
        datetime(2024, 3, 10, 2, 30),  # skipped in New York
    ],
)
def test_zone_helpers(dt: datetime) -> None:
    same("is_naive", dt)
    if ours.is_naive(dt):
        same("to_utc", dt)
        for tz in (PARIS, NEW_YORK, UTC):
            same("make_aware", dt, tz)
            same("localize", dt, tz)
    same("maybe_make_aware", dt)
    same("maybe_make_aware", dt, "Europe/Paris")
    same("maybe_make_aware", dt, PARIS, naive_as_utc=False)
    same("add_seconds_to_datetime", dt, 3600)
    same("subtract_datetimes", dt, datetime(2024, 1, 1))


def test_localize_converts_utc_and_keeps_other_zones() -> None:
    same("localize", NAIVE.replace(tzinfo=ZoneInfo("UTC")), PARIS)
    same("localize", NAIVE.replace(tzinfo=NEW_YORK), PARIS)


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize(
    "ends_in", [timedelta(seconds=30), timedelta(minutes=10), timedelta(hours=2)]
)
def test_remaining(ends_in: timedelta, relative: bool) -> None:
    start = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    now = start + timedelta(seconds=10)
    same("remaining", start, ends_in, now=now, relative=relative)


def test_remaining_defaults_to_now() -> None:
    left = ours.remaining(datetime.now(UTC), timedelta(seconds=60))
    assert timedelta(seconds=50) < left <= timedelta(seconds=60)


def test_backoff_and_offsets() -> None:
    for factor, retries, maximum in [(1, 0, 10), (2, 3, 10), (2, 3, 100), (0, 5, 10)]:
        same("get_exponential_backoff_interval", factor, retries, maximum)
        jittered = ours.get_exponential_backoff_interval(factor, retries, maximum, True)
        assert 0 <= jittered <= min(maximum, factor * 2**retries)
    same("utcoffset")
    same("adjust_timestamp", 1_700_000_000.0, 2)


def test_the_timezone_helper() -> None:
    assert ours.timezone.utc == theirs.timezone.utc
    assert ours.timezone.get_timezone("Europe/Paris") == PARIS
    assert ours.timezone.tz_or_local("Europe/Paris") == PARIS
    local = ours.timezone.to_local(NAIVE, "Europe/Paris")
    assert local == theirs.timezone.to_local(NAIVE, "Europe/Paris")
    assert ours.timezone.to_system(NAIVE.replace(tzinfo=UTC)) == NAIVE.replace(tzinfo=UTC)
    assert ours.timezone.local.utcoffset(NAIVE) is not None
