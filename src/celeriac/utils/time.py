"""Date, time and rate helpers under Celery's path, ``celery.utils.time``.

The functions third-party code imports from there, with Celery's names, arguments and
results: ``maybe_timedelta``, ``delta_resolution``, ``remaining``, ``rate``,
``weekday``, ``humanize_seconds``, ``maybe_iso8601``, ``is_naive``, ``make_aware``,
``localize``, ``to_utc``, ``maybe_make_aware``, ``add_seconds_to_datetime``,
``subtract_datetimes``, ``utcoffset``, ``adjust_timestamp``,
``get_exponential_backoff_interval`` and the ``timezone`` helper object (``.utc``,
``.local``, ``.get_timezone``, ``.tz_or_local``, ``.to_local``, ``.to_system``).

Zones are the standard library's :mod:`zoneinfo` (no ``dateutil``/``tzlocal``); a naive
datetime is taken as UTC wherever a zone must be assumed, as celeriac does everywhere.
"""

from __future__ import annotations

import numbers
import random
import time as _time
from datetime import datetime, timedelta, tzinfo
from datetime import timezone as _dt_timezone
from functools import cached_property
from typing import Any, overload
from zoneinfo import ZoneInfo

DAYNAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
WEEKDAYS = {name: index for index, name in enumerate(DAYNAMES)}
MONTHNAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
YEARMONTHS = {name: index for index, name in enumerate(MONTHNAMES, start=1)}

#: rate unit -> seconds per unit
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: humanize_seconds' units, largest first
_UNITS = (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0))
UTC = ZoneInfo("UTC")


class _Zone:
    """``celery.utils.time.timezone``: the zones an app uses, and conversions."""

    @cached_property
    def utc(self) -> tzinfo:
        return UTC

    @cached_property
    def local(self) -> tzinfo:
        """This machine's zone (its current offset when it has no IANA name)."""
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else UTC

    def get_timezone(self, zone: str | tzinfo) -> tzinfo:
        return ZoneInfo(zone) if isinstance(zone, str) else zone

    def tz_or_local(self, tz: str | tzinfo | None = None) -> tzinfo:
        return self.local if tz is None else self.get_timezone(tz)

    def to_local(
        self, dt: datetime, local: str | tzinfo | None = None, orig: tzinfo | None = None
    ) -> datetime:
        """``dt`` in ``local`` (this machine's zone by default); a naive ``dt`` is in
        ``orig`` (UTC by default)."""
        if is_naive(dt):
            dt = make_aware(dt, orig or self.utc)
        return localize(dt, self.tz_or_local(local))

    def to_system(self, dt: datetime) -> datetime:
        return dt.astimezone()

    def to_local_fallback(self, dt: datetime) -> datetime:
        if is_naive(dt):
            return make_aware(dt, self.local)
        return localize(dt, self.local)


timezone = _Zone()


@overload
def maybe_timedelta(delta: float) -> timedelta: ...
@overload
def maybe_timedelta(delta: Any) -> Any: ...
def maybe_timedelta(delta: Any) -> Any:
    """A number of seconds as a ``timedelta``; anything else unchanged."""
    if isinstance(delta, numbers.Real) and not isinstance(delta, bool):
        return timedelta(seconds=float(delta))
    return delta


def delta_resolution(dt: datetime, delta: timedelta) -> datetime:
    """``dt`` rounded down to the unit of ``delta``: to the day when ``delta`` is a day
    or more, the hour, the minute; seconds and less leave ``dt`` as it is."""
    seconds = max(delta.total_seconds(), 0)
    if seconds >= 86400:
        return dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if seconds >= 3600:
        return dt.replace(minute=0, second=0, microsecond=0)
    if seconds >= 60:
        return dt.replace(second=0, microsecond=0)
    return dt


def add_seconds_to_datetime(dt: datetime, seconds: float) -> datetime:
    """``dt`` plus elapsed seconds (across a DST change an aware ``dt`` keeps real time)."""
    step = timedelta(seconds=seconds)
    if is_naive(dt):
        return dt + step
    return (dt.astimezone(_dt_timezone.utc) + step).astimezone(dt.tzinfo)


def subtract_datetimes(end: datetime, start: datetime) -> timedelta:
    """The real time from ``start`` to ``end`` (naive ones taken as UTC)."""
    return _as_utc(end) - _as_utc(start)


def remaining(
    start: datetime, ends_in: timedelta, now: datetime | None = None, relative: bool = False
) -> timedelta:
    """How long until ``start + ends_in`` from ``now`` (default: now, UTC). With
    ``relative`` the end is rounded down to the unit of ``ends_in``
    (:func:`delta_resolution`), as interval schedules count. Naive times are UTC."""
    now = now or datetime.now(_dt_timezone.utc)
    end = add_seconds_to_datetime(start, ends_in.total_seconds())
    if relative:
        end = delta_resolution(end, ends_in).replace(microsecond=0)
    return _as_utc(end) - _as_utc(now)


def rate(r: Any) -> float:
    """A rate limit in tasks per second: ``rate('100/m') == 100 / 60``, ``rate('2/h')``,
    ``rate('0.5')`` (per second); a number is returned as it is, empty gives 0."""
    if not r:
        return 0
    if isinstance(r, str):
        amount, _, unit = r.partition("/")
        try:
            per = _PER[unit or "s"]
        except KeyError:
            raise KeyError(unit) from None
        return float(amount) / per or 0
    return float(r)


def weekday(name: str) -> int:
    """A day's number from its name, Sunday first: ``weekday('mon') == 1``."""
    try:
        return WEEKDAYS[name[:3].lower()]
    except KeyError:
        raise KeyError(name) from None


def yearmonth(name: str) -> int:
    """A month's number from its name: ``yearmonth('jan') == 1``."""
    try:
        return YEARMONTHS[name[:3].lower()]
    except KeyError:
        raise KeyError(name) from None


def humanize_seconds(
    secs: float, prefix: str = "", sep: str = "", now: str = "now", microseconds: bool = False
) -> str:
    """Seconds for people: ``'1.00 minute'``, ``'2.00 hours'``, ``now`` for zero;
    ``prefix`` goes before a duration (``'in 1.00 second'``), not before ``now``."""
    secs = round(float(secs), 2)
    for unit, size in _UNITS:
        if secs >= size:
            amount = secs / size
            plural = "" if amount == 1 else "s"
            return f"{prefix}{sep}{amount:.2f} {unit}{plural}"
    if microseconds and secs > 0:
        return f"{prefix}{sep}{secs:.2f} seconds"
    return now


def maybe_iso8601(dt: datetime | str | None) -> datetime | None:
    """An ISO 8601 text as a ``datetime`` (a datetime as it is; empty gives None)."""
    if not dt:
        return None
    if isinstance(dt, datetime):
        return dt
    text = dt.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def is_naive(dt: datetime) -> bool:
    """True when ``dt`` has no zone (or one that gives no offset)."""
    return dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None


def make_aware(dt: datetime, tz: tzinfo) -> datetime:
    """``dt``'s wall time in zone ``tz``. A time a DST change skips is moved forward by
    the gap; a repeated one is its first occurrence."""
    aware = dt.replace(tzinfo=tz, fold=0)
    there_and_back = aware.astimezone(_dt_timezone.utc).astimezone(tz)
    if there_and_back.replace(tzinfo=None) != aware.replace(tzinfo=None):  # in a gap
        offsets = (aware.replace(fold=1).utcoffset(), aware.utcoffset())
        if offsets[0] is not None and offsets[1] is not None:
            aware += abs(offsets[1] - offsets[0])
    return aware


def localize(dt: datetime, tz: tzinfo) -> datetime:
    """``dt`` in zone ``tz``: a naive ``dt`` is given ``tz``; a UTC one converted."""
    if is_naive(dt):
        return make_aware(dt, tz)
    if dt.utcoffset() == timedelta(0) and _is_utc(dt.tzinfo):
        return dt.astimezone(tz)
    return dt


def to_utc(dt: datetime) -> datetime:
    """A naive ``dt`` as UTC."""
    return make_aware(dt, UTC)


def maybe_make_aware(
    dt: datetime, tz: str | tzinfo | None = None, naive_as_utc: bool = True
) -> datetime:
    """An aware ``dt`` as it is; a naive one taken as UTC (``naive_as_utc``) and shown
    in ``tz`` (UTC by default)."""
    if not is_naive(dt):
        return dt
    if naive_as_utc:
        dt = to_utc(dt)
    return localize(dt, UTC if tz is None else timezone.tz_or_local(tz))


def utcoffset(
    time: Any = _time,
    localtime: Any = _time.localtime,
) -> float:
    """This machine's offset from UTC in hours, west positive (Celery's sign)."""
    if localtime().tm_isdst:
        return float(time.altzone) / 3600
    return float(time.timezone) / 3600


def adjust_timestamp(ts: float, offset: float, here: Any = utcoffset) -> float:
    """A timestamp taken at UTC offset ``offset`` (hours) moved to this machine's."""
    return float(ts - (offset - here()) * 3600)


def get_exponential_backoff_interval(
    factor: float, retries: int, maximum: float, full_jitter: bool = False
) -> float:
    """``factor * 2 ** retries`` capped at ``maximum``; with ``full_jitter`` a random
    whole number of seconds from 0 to that (retry backoff's countdown)."""
    countdown: float = min(maximum, factor * 2.0**retries)
    if full_jitter:
        countdown = random.randrange(int(countdown) + 1)
    return max(0, countdown)


def _as_utc(dt: datetime) -> datetime:
    return (to_utc(dt) if is_naive(dt) else dt).astimezone(_dt_timezone.utc)


def _is_utc(tz: tzinfo | None) -> bool:
    return tz is _dt_timezone.utc or tz == UTC or getattr(tz, "key", None) in {"UTC", "Etc/UTC"}


__all__ = [
    "add_seconds_to_datetime",
    "adjust_timestamp",
    "delta_resolution",
    "get_exponential_backoff_interval",
    "humanize_seconds",
    "is_naive",
    "localize",
    "make_aware",
    "maybe_iso8601",
    "maybe_make_aware",
    "maybe_timedelta",
    "rate",
    "remaining",
    "subtract_datetimes",
    "timezone",
    "to_utc",
    "utcoffset",
    "weekday",
    "yearmonth",
]
