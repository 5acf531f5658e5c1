"""Solar event times (the sunrise equation, as NOAA and Wikipedia give it), for
:class:`celeriac.schedules.solar`: accurate to about a minute away from the poles."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone

UTC = timezone.utc
_J2000 = 2451545.0
_EPOCH = date(2000, 1, 1)

#: Celery's event names -> (sun altitude in degrees, rising or setting; None: transit)
EVENTS: dict[str, tuple[float, bool | None]] = {
    "dawn_astronomical": (-18.0, True),
    "dawn_nautical": (-12.0, True),
    "dawn_civil": (-6.0, True),
    "sunrise": (-0.833, True),
    "solar_noon": (0.0, None),
    "sunset": (-0.833, False),
    "dusk_civil": (-6.0, False),
    "dusk_nautical": (-12.0, False),
    "dusk_astronomical": (-18.0, False),
}


def _from_julian(julian: float) -> datetime:
    return datetime(2000, 1, 1, 12, tzinfo=UTC) + timedelta(days=julian - _J2000)


def event_on(day: date, event: str, lat: float, lon: float) -> datetime | None:
    """The UTC instant of ``event`` on ``day`` at (``lat``, ``lon``; east positive), or
    None when the sun does not reach that altitude that day (polar day or night)."""
    altitude, rising = EVENTS[event]
    n = (day - _EPOCH).days
    mean_noon = n - lon / 360.0
    anomaly = math.radians((357.5291 + 0.98560028 * mean_noon) % 360)
    centre = (
        1.9148 * math.sin(anomaly) + 0.02 * math.sin(2 * anomaly) + 0.0003 * math.sin(3 * anomaly)
    )
    ecliptic = math.radians((math.degrees(anomaly) + centre + 180 + 102.9372) % 360)
    transit = _J2000 + mean_noon + 0.0053 * math.sin(anomaly) - 0.0069 * math.sin(2 * ecliptic)
    if rising is None:
        return _from_julian(transit)
    declination = math.asin(math.sin(ecliptic) * math.sin(math.radians(23.4397)))
    phi = math.radians(lat)
    cos_hour = (math.sin(math.radians(altitude)) - math.sin(phi) * math.sin(declination)) / (
        math.cos(phi) * math.cos(declination)
    )
    if not -1.0 <= cos_hour <= 1.0:
        return None
    hour = math.degrees(math.acos(cos_hour)) / 360.0
    return _from_julian(transit - hour if rising else transit + hour)


def solar_times(event: str, lat: float, lon: float, after: datetime) -> Iterator[datetime]:
    """The instants of ``event`` after ``after``, in order (for up to two years)."""
    day = after.astimezone(UTC).date() - timedelta(days=1)
    for _ in range(732):
        moment = event_on(day, event, lat, lon)
        if moment is not None and moment > after:
            yield moment.replace(microsecond=0)
        day += timedelta(days=1)


__all__ = ["EVENTS", "event_on", "solar_times"]
