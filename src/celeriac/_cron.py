"""Crontab fields and fire times, for :class:`celeriac.schedules.crontab`.

Parsing follows Celery's syntax: ``*``, ``*/n``, ``a``, ``a-b`` (wrapping round when
``b < a``), ``a-b/n``, ``a/n`` (``a`` to the end by ``n``), comma lists of those, ints,
and iterables of ints; weekday names (``sun``..``sat``, or longer, by their first three
letters, Sunday = 0) and month names (``jan``..``dec``).

Fire times are found in local wall-clock time of a ``zoneinfo`` zone, then turned into
UTC instants by one rule for daylight-saving changes (as Vixie cron does):

* a wall time that does not exist (the hour skipped in spring): a job restricted to
  some hours runs once at the first valid instant after the gap; a job that runs every
  hour (``hour='*'``) just has no run there, so its runs stay an hour apart;
* a wall time that happens twice (the hour repeated in autumn): a job restricted to some
  hours runs at the first occurrence only; an every-hour job runs at both, an hour apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta, timezone, tzinfo

UTC = timezone.utc
WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
#: how far a search looks (a crontab such as February 30 never fires)
SEARCH_DAYS = 366 * 8


class ParseException(ValueError):
    """A crontab field that cannot be parsed (Celery's ``ParseException``)."""


_RANGE_STEP = re.compile(r"^(\w+)-(\w+)/(\d+)$")
_RANGE = re.compile(r"^(\w+)-(\w+)$")
_STAR_STEP = re.compile(r"^\*/(\d+)$")
_NUMBER_STEP = re.compile(r"^(\w+)/(\d+)$")


def parse_field(
    spec: object, max_: int, min_: int = 0, names: dict[str, int] | None = None
) -> set[int]:
    """The values of one crontab field (``max_`` values starting at ``min_``)."""
    if isinstance(spec, bool):
        raise ParseException(f"crontab field {spec!r}: expected a number, a pattern or a set")
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, str):
        values = set()
        for part in spec.replace(" ", "").split(","):
            values |= _parse_part(part, max_, min_, names)
    elif isinstance(spec, Iterable):
        values = set()
        for item in spec:
            values |= parse_field(item, max_, min_, names)
    else:
        raise ParseException(f"crontab field {spec!r}: expected a number, a pattern or a set")
    bad = sorted(v for v in values if not min_ <= v < min_ + max_)
    if bad:
        raise ParseException(
            f"crontab field {spec!r}: {bad[0]} is out of range; valid values are "
            f"{min_}-{min_ + max_ - 1}"
        )
    return values


def _value(token: str, names: dict[str, int] | None, spec: str) -> int:
    if token.isdigit():
        return int(token)
    if names is not None and token[:3].lower() in names and token.isalpha():
        return names[token[:3].lower()]
    raise ParseException(f"crontab field {spec!r}: {token!r} is not a number or a known name")


def _span(first: int, last: int, max_: int, min_: int) -> list[int]:
    if last >= first:
        return list(range(first, last + 1))
    return list(range(first, min_ + max_)) + list(range(min_, last + 1))  # wraps round


def _parse_part(part: str, max_: int, min_: int, names: dict[str, int] | None) -> set[int]:
    if not part:
        raise ParseException("crontab field: empty item (two commas in a row?)")
    if part == "*":
        return set(range(min_, min_ + max_))
    if m := _STAR_STEP.match(part):
        return set(range(min_, min_ + max_, _step(m.group(1), part)))
    if m := _RANGE_STEP.match(part):
        span = _span(_value(m[1], names, part), _value(m[2], names, part), max_, min_)
        return set(span[:: _step(m[3], part)])
    if m := _RANGE.match(part):
        return set(_span(_value(m[1], names, part), _value(m[2], names, part), max_, min_))
    if m := _NUMBER_STEP.match(part):
        return set(range(_value(m[1], names, part), min_ + max_, _step(m[2], part)))
    return {_value(part, names, part)}


def _step(text: str, part: str) -> int:
    step = int(text)
    if step < 1:
        raise ParseException(f"crontab field {part!r}: the step must be at least 1")
    return step


class CronTimes:
    """The fire times of five parsed fields, in zone ``tz``."""

    def __init__(
        self,
        minute: set[int],
        hour: set[int],
        day_of_week: set[int],
        day_of_month: set[int],
        month_of_year: set[int],
    ) -> None:
        self.minutes = sorted(minute)
        self.hours = sorted(hour)
        self.days_of_week = day_of_week
        self.days_of_month = day_of_month
        self.months = month_of_year
        self.every_hour = len(hour) == 24

    def _day_matches(self, day: date) -> bool:
        # Celery's rule: every day field must match (day_of_week AND day_of_month)
        return (
            day.month in self.months
            and day.day in self.days_of_month
            and (day.isoweekday() % 7) in self.days_of_week
        )

    def _instants(self, day: date, tz: tzinfo) -> list[datetime]:
        """The UTC fire times of local date ``day``, sorted."""
        out: list[datetime] = []
        for hour in self.hours:
            for minute in self.minutes:
                out.extend(self._resolve(datetime(day.year, day.month, day.day, hour, minute), tz))
        out.sort()
        return out

    def _resolve(self, wall: datetime, tz: tzinfo) -> list[datetime]:
        first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first.astimezone(tz).replace(tzinfo=None) == wall:  # happens twice (autumn)
            return [first, second] if self.every_hour else [min(first, second)]
        if self.every_hour:  # skipped (spring): every-hour jobs keep their spacing
            return []
        return [_gap_end(min(first, second), max(first, second), tz)]

    def next_after(self, moment: datetime, tz: tzinfo) -> datetime | None:
        """The first fire time strictly after ``moment`` (aware), or None (never)."""
        local = moment.astimezone(tz)
        day = local.date() - timedelta(days=1)  # a DST shift may move a wall time back
        for _ in range(SEARCH_DAYS):
            if self._day_matches(day):
                for instant in self._instants(day, tz):
                    if instant > moment:
                        return instant
            day += timedelta(days=1)
        return None

    def last_at_or_before(self, moment: datetime, tz: tzinfo) -> datetime | None:
        """The latest fire time at or before ``moment``, or None within the search."""
        local = moment.astimezone(tz)
        day = local.date() + timedelta(days=1)
        for _ in range(SEARCH_DAYS):
            if self._day_matches(day):
                for instant in reversed(self._instants(day, tz)):
                    if instant <= moment:
                        return instant
            day -= timedelta(days=1)
        return None

    def between(self, start: datetime, end: datetime, tz: tzinfo) -> Iterator[datetime]:
        """Fire times in ``(start, end]``, in order (for tests and listings)."""
        moment: datetime | None = start
        while moment is not None:
            moment = self.next_after(moment, tz)
            if moment is None or moment > end:
                return
            yield moment


def _gap_end(before: datetime, after: datetime, tz: tzinfo) -> datetime:
    """The instant a skipped stretch of wall time ends: the first instant, between
    ``before`` and ``after``, with the later UTC offset (found to the second)."""
    target = after.astimezone(tz).utcoffset()
    low, high = before, after
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == target:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0)


__all__ = ["MONTHS", "WEEKDAYS", "CronTimes", "ParseException", "parse_field"]
