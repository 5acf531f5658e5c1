"""Schedules of periodic tasks, as Celery's ``celery.schedules``.

:class:`schedule` (an interval), :class:`crontab` and :class:`solar` keep Celery's
constructors, attributes and the two methods users override: ``is_due(last_run_at)``
returns a :data:`schedstate` ``(is_due, next)`` (``next``: seconds until the beat should
look again) and ``remaining_estimate(last_run_at)`` a :class:`~datetime.timedelta`.

celeriac's beat also asks a schedule for its *fire times* (:meth:`BaseSchedule.fire_time`:
the latest scheduled instant in ``(last, now]``; :meth:`BaseSchedule.next_fire`), so
that every beat computes the same slot from the schedule and the stored last run,
never from its own clock reading; a subclass that overrides only ``is_due`` still
works (the slot is then derived from ``remaining_estimate``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo

from celeriac._cron import MONTHS, WEEKDAYS, CronTimes, ParseException, parse_field
from celeriac._solar import EVENTS, solar_times

if TYPE_CHECKING:
    from celeriac.app import Celeriac

UTC = timezone.utc


class schedstate(NamedTuple):
    """What ``is_due`` returns: due now?, and seconds until the beat should look again."""

    is_due: bool
    next: float


def zone(name: Any) -> tzinfo:
    """The ``tzinfo`` of a ``timezone`` setting (a name or a tzinfo); UTC for None."""
    if name is None or name == "":
        return UTC
    if isinstance(name, tzinfo):
        return name
    return ZoneInfo(str(name))


def _aware(value: datetime, tz: tzinfo) -> datetime:
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


class BaseSchedule:
    """What every schedule shares: the app's time zone and clock."""

    def __init__(self, nowfun: Callable[[], datetime] | None = None, app: Celeriac | None = None):
        self.nowfun = nowfun
        self._app = app

    @property
    def app(self) -> Celeriac:
        if self._app is None:
            from celeriac.app import current_app  # noqa: PLC0415 - app imports schedules

            return current_app()
        return self._app

    @app.setter
    def app(self, app: Celeriac) -> None:
        self._app = app

    @property
    def tz(self) -> tzinfo:
        """The app's ``timezone`` (UTC when unset; with ``enable_utc=False`` and no
        ``timezone``, the machine's local zone, as Celery)."""
        conf = self._app.conf if self._app is not None else None
        if conf is None:
            return UTC
        if conf["timezone"]:
            return zone(conf["timezone"])
        if conf["enable_utc"] is False:
            local = datetime.now().astimezone().tzinfo
            return local or UTC
        return UTC

    @property
    def utc_enabled(self) -> bool:
        return self._app is None or self._app.conf["enable_utc"] is not False

    def now(self) -> datetime:
        return (self.nowfun or (lambda: datetime.now(UTC)))()

    def maybe_make_aware(self, dt: datetime) -> datetime:
        return _aware(dt, self.tz)

    def to_local(self, dt: datetime) -> datetime:
        return _aware(dt, UTC).astimezone(self.tz)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        raise NotImplementedError(f"{type(self).__name__}.remaining_estimate")

    def is_due(self, last_run_at: datetime) -> schedstate:
        raise NotImplementedError(f"{type(self).__name__}.is_due")

    # -- celeriac's fire times ---------------------------------------------------
    def fire_time(self, last: datetime, now: datetime) -> datetime | None:
        """The latest scheduled instant in ``(last, now]`` (UTC), or None."""
        due, _ = self.is_due(last)
        if not due:
            return None
        rounded = now + self.remaining_estimate(last)  # when it came due
        moment = min(max(rounded, last + timedelta(milliseconds=1)), now)
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)

    def next_fire(self, last: datetime, now: datetime) -> datetime | None:
        """The first scheduled instant after ``last`` that is still to come (UTC)."""
        return now + max(self.remaining_estimate(last), timedelta(0))

    def first_fire(self, last: datetime) -> datetime | None:
        """The first scheduled instant after ``last`` (None: not known)."""
        return None

    def human(self) -> str:
        return repr(self)


class schedule(BaseSchedule):
    """Run every ``run_every`` (a timedelta or seconds). ``relative=True`` rounds each
    run time down to the interval's resolution (day, hour, minute or second), as Celery."""

    def __init__(
        self,
        run_every: float | timedelta | None = None,
        relative: bool = False,
        nowfun: Callable[[], datetime] | None = None,
        app: Celeriac | None = None,
    ) -> None:
        super().__init__(nowfun, app)
        if run_every is None:
            raise ValueError("schedule(run_every=...): give a timedelta or a number of seconds")
        self.run_every = (
            run_every if isinstance(run_every, timedelta) else timedelta(seconds=run_every)
        )
        if self.run_every <= timedelta(0):
            raise ValueError(f"schedule(run_every={run_every!r}): the interval must be positive")
        self.relative = relative

    @property
    def seconds(self) -> float:
        return self.run_every.total_seconds()

    @property
    def human_seconds(self) -> str:
        seconds = self.seconds
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
            if seconds >= size and seconds % size == 0:
                count = int(seconds // size)
                return f"every {count} {unit}{'s' if count != 1 else ''}"
        return f"every {seconds:g} second{'s' if seconds != 1 else ''}"

    def _after(self, moment: datetime) -> datetime:
        end = moment + self.run_every
        if not self.relative:
            return end
        local = end.astimezone(self.tz)
        step = self.run_every
        if step >= timedelta(days=1):
            local = local.replace(hour=0, minute=0, second=0, microsecond=0)
        elif step >= timedelta(hours=1):
            local = local.replace(minute=0, second=0, microsecond=0)
        elif step >= timedelta(minutes=1):
            local = local.replace(second=0, microsecond=0)
        else:
            local = local.replace(microsecond=0)
        return max(local.astimezone(UTC), moment + timedelta(seconds=1))

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        last = self.maybe_make_aware(last_run_at)
        return self._after(last) - self.maybe_make_aware(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        remaining = max(self.remaining_estimate(last_run_at).total_seconds(), 0.0)
        if remaining == 0:
            return schedstate(is_due=True, next=self.seconds)
        return schedstate(is_due=False, next=remaining)

    def fire_time(self, last: datetime, now: datetime) -> datetime | None:
        slot = self._after(last)
        if slot > now:
            return None
        if not self.relative:  # the latest point of the grid last + k * run_every
            return last + self.run_every * math.floor((now - last) / self.run_every)
        for _ in range(100_000):
            following = self._after(slot)
            if following > now:
                break
            slot = following
        return slot

    def next_fire(self, last: datetime, now: datetime) -> datetime | None:
        slot = self.fire_time(last, now) or last
        return self._after(slot)

    def first_fire(self, last: datetime) -> datetime | None:
        return self._after(last)

    def human(self) -> str:
        return self.human_seconds + (" (relative)" if self.relative else "")

    def __repr__(self) -> str:
        return f"<freq: {self.human_seconds}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, schedule):
            return self.run_every == other.run_every and self.relative == other.relative
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.run_every, self.relative))

    def __reduce__(self) -> Any:
        return self.__class__, (self.run_every, self.relative, self.nowfun)


class crontab(BaseSchedule):
    """Cron-like schedule, with Celery's fields and syntax; every field must match
    (``day_of_week`` and ``day_of_month`` are ANDed, as Celery, unlike cron's OR).
    Evaluated in the app's ``timezone``; see :mod:`celeriac._cron` for DST changes."""

    def __init__(
        self,
        minute: Any = "*",
        hour: Any = "*",
        day_of_week: Any = "*",
        day_of_month: Any = "*",
        month_of_year: Any = "*",
        **kwargs: Any,
    ) -> None:
        super().__init__(kwargs.get("nowfun"), kwargs.get("app"))
        self._orig_minute = minute
        self._orig_hour = hour
        self._orig_day_of_week = day_of_week
        self._orig_day_of_month = day_of_month
        self._orig_month_of_year = month_of_year
        self.minute = parse_field(minute, 60)
        self.hour = parse_field(hour, 24)
        self.day_of_week = parse_field(day_of_week, 7, 0, WEEKDAYS)
        self.day_of_month = parse_field(day_of_month, 31, 1)
        self.month_of_year = parse_field(month_of_year, 12, 1, MONTHS)
        self._times = CronTimes(
            self.minute, self.hour, self.day_of_week, self.day_of_month, self.month_of_year
        )

    @classmethod
    def from_string(cls, crontab: str) -> crontab:
        """``crontab.from_string("*/15 9-17 * * mon-fri")``: minute hour day-of-month
        month day-of-week, as a crontab line."""
        fields = crontab.split()
        if len(fields) != 5:
            raise ValueError(f"Expected 5 fields, got {len(fields)}: {crontab!r}")
        minute, hour, dom, month, dow = fields
        return cls(minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow)

    def _now(self) -> datetime:
        return self.maybe_make_aware(self.now())

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        last = self.maybe_make_aware(last_run_at)
        following = self._times.next_after(last, self.tz)
        if following is None:
            return timedelta(days=36500)
        return following - self._now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        if remaining > 0:
            return schedstate(is_due=False, next=remaining)
        ahead = self.remaining_estimate(self._now()).total_seconds()
        return schedstate(is_due=True, next=max(ahead, 0.0))

    def fire_time(self, last: datetime, now: datetime) -> datetime | None:
        latest = self._times.last_at_or_before(now, self.tz)
        return latest if latest is not None and latest > last else None

    def next_fire(self, last: datetime, now: datetime) -> datetime | None:
        return self._times.next_after(max(last, now), self.tz)

    def first_fire(self, last: datetime) -> datetime | None:
        return self._times.next_after(last, self.tz)

    def times_between(self, start: datetime, end: datetime) -> list[datetime]:
        """The fire times in ``(start, end]`` (UTC), in order."""
        return list(self._times.between(start, end, self.tz))

    def human(self) -> str:
        return (
            f"minute {self._orig_minute}, hour {self._orig_hour}, day of week "
            f"{self._orig_day_of_week}, day of month {self._orig_day_of_month}, month "
            f"{self._orig_month_of_year} ({self.tz})"
        )

    def __repr__(self) -> str:
        return (
            f"<crontab: {self._orig_minute} {self._orig_hour} {self._orig_day_of_week} "
            f"{self._orig_day_of_month} {self._orig_month_of_year} (m/h/dM/MY/d)>"
        )

    def _key(self) -> tuple[Any, ...]:
        return (self.minute, self.hour, self.day_of_week, self.day_of_month, self.month_of_year)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, crontab):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(frozenset(s) for s in self._key()))

    def __reduce__(self) -> Any:
        args = (
            self._orig_minute,
            self._orig_hour,
            self._orig_day_of_week,
            self._orig_day_of_month,
            self._orig_month_of_year,
        )
        return self.__class__, args


class solar(BaseSchedule):
    """Run at a solar event (``sunrise``, ``sunset``, ``dawn_civil``, ``solar_noon``, ...
    Celery's names) at a place: computed with the NOAA solar equations in the standard
    library (no ``ephem`` needed), accurate to about a minute."""

    def __init__(
        self,
        event: str,
        lat: float,
        lon: float,
        nowfun: Callable[[], datetime] | None = None,
        app: Celeriac | None = None,
    ) -> None:
        super().__init__(nowfun, app)
        if event not in EVENTS:
            raise ValueError(f"solar event {event!r}: use one of {', '.join(sorted(EVENTS))}")
        if not -90 <= lat <= 90:
            raise ValueError(f"solar latitude {lat}: expected -90 to 90")
        if not -180 <= lon <= 180:
            raise ValueError(f"solar longitude {lon}: expected -180 to 180")
        self.event, self.lat, self.lon = event, lat, lon

    def _next_after(self, moment: datetime) -> datetime | None:
        return next(solar_times(self.event, self.lat, self.lon, moment), None)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        following = self._next_after(self.maybe_make_aware(last_run_at))
        if following is None:
            return timedelta(days=36500)
        return following - self.maybe_make_aware(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        if remaining > 0:
            return schedstate(is_due=False, next=remaining)
        ahead = self.remaining_estimate(self.maybe_make_aware(self.now())).total_seconds()
        return schedstate(is_due=True, next=max(ahead, 0.0))

    def fire_time(self, last: datetime, now: datetime) -> datetime | None:
        latest = None
        for moment in solar_times(self.event, self.lat, self.lon, last):
            if moment > now:
                break
            latest = moment
        return latest

    def next_fire(self, last: datetime, now: datetime) -> datetime | None:
        return self._next_after(max(last, now))

    def first_fire(self, last: datetime) -> datetime | None:
        return self._next_after(last)

    def human(self) -> str:
        return f"{self.event} at ({self.lat}, {self.lon})"

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude {self.lon}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, solar):
            return (self.event, self.lat, self.lon) == (other.event, other.lat, other.lon)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.event, self.lat, self.lon))

    def __reduce__(self) -> Any:
        return self.__class__, (self.event, self.lat, self.lon)


def maybe_schedule(
    s: Any, relative: bool = False, app: Celeriac | None = None
) -> BaseSchedule | Any:
    """A number of seconds or a timedelta as a :class:`schedule`; others unchanged."""
    if isinstance(s, bool):
        raise TypeError(f"schedule {s!r}: expected seconds, a timedelta or a schedule")
    if isinstance(s, (int, float)):
        s = timedelta(seconds=s)
    if isinstance(s, timedelta):
        return schedule(s, relative, app=app)
    if app is not None and isinstance(s, BaseSchedule) and s._app is None:
        s.app = app
    return s


__all__ = [
    "BaseSchedule",
    "ParseException",
    "crontab",
    "maybe_schedule",
    "schedstate",
    "schedule",
    "solar",
    "zone",
]
