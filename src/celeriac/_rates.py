"""Celery's rate-limit strings (``"10/s"``), read by task definitions and the worker."""

from __future__ import annotations

from celeriac.exceptions import ImproperlyConfigured

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: str | float | int | None) -> float | None:
    """``"10/s"``, ``"100/m"``, ``"1000/h"`` or a number (per second) -> tasks per second;
    None or 0 means no limit."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value) or None
    count, _, unit = str(value).strip().partition("/")
    try:
        number = float(count)
    except ValueError:
        raise ImproperlyConfigured(
            f"rate_limit {value!r} is invalid: use '<n>/s', '<n>/m' or '<n>/h'"
        ) from None
    per = _UNITS.get(unit.strip()[:1] or "s")
    if per is None or number < 0:
        raise ImproperlyConfigured(
            f"rate_limit {value!r} is invalid: use '<n>/s', '<n>/m' or '<n>/h'"
        )
    return number / per or None


__all__ = ["parse_rate"]
