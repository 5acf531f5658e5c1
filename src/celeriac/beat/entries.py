"""Periodic entries: ``beat_schedule`` checked when it is set, and the entries added at
runtime (``app.beat.add``), stored in the broker as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.app import Celeriac

ENTRY_KEYS = ("task", "schedule", "args", "kwargs", "options", "relative")


@dataclass
class Entry:
    """One periodic task: what to send and when."""

    name: str
    task: str
    schedule: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    #: "config" (``beat_schedule``) or "store" (added at runtime, kept in the broker)
    source: str = "config"


def _is_schedule(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float, timedelta)) or callable(getattr(value, "is_due", None))


def check_entry(setting: str, name: Any, spec: Any) -> None:
    where = f"{setting}[{name!r}]"
    if not isinstance(name, str) or not name:
        raise ImproperlyConfigured(
            f"{setting}: entry names must be non-empty strings, not {name!r}"
        )
    if not isinstance(spec, dict):
        raise ImproperlyConfigured(f"{where} must be a dict with 'task' and 'schedule'")
    unknown = [k for k in spec if k not in ENTRY_KEYS]
    if unknown:
        raise ImproperlyConfigured(
            f"{where}: unknown key {unknown[0]!r}; an entry takes {', '.join(ENTRY_KEYS)}"
        )
    if not isinstance(spec.get("task"), str) or not spec["task"]:
        raise ImproperlyConfigured(f"{where} needs 'task': the task's name (a string)")
    if not _is_schedule(spec.get("schedule")):
        raise ImproperlyConfigured(
            f"{where} needs 'schedule': seconds, a timedelta, or a celeriac.schedules "
            f"object (crontab, schedule, solar); got {spec.get('schedule')!r}"
        )
    args = spec.get("args", ())
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
        raise ImproperlyConfigured(f"{where}: 'args' must be a list or tuple, not {args!r}")
    for key in ("kwargs", "options"):
        if not isinstance(spec.get(key) or {}, dict):
            raise ImproperlyConfigured(f"{where}: {key!r} must be a dict")


def check_schedule(setting: str, value: dict[str, Any]) -> dict[str, Any]:
    """``beat_schedule`` as given, or an error naming what to change."""
    for name, spec in value.items():
        check_entry(setting, name, spec)
    return value


def entry_of(app: Celeriac, name: str, spec: dict[str, Any], source: str = "config") -> Entry:
    from celeriac.schedules import maybe_schedule  # noqa: PLC0415 - schedules import app

    return Entry(
        name=name,
        task=spec["task"],
        schedule=maybe_schedule(spec["schedule"], bool(spec.get("relative")), app=app),
        args=tuple(spec.get("args") or ()),
        kwargs=dict(spec.get("kwargs") or {}),
        options=dict(spec.get("options") or {}),
        source=source,
    )


def configured(app: Celeriac) -> list[Entry]:
    """The entries of ``beat_schedule``."""
    return [entry_of(app, name, spec) for name, spec in app.conf["beat_schedule"].items()]


# -- the stored form of runtime entries --------------------------------------------
def encode_schedule(value: Any) -> dict[str, Any]:
    from celeriac.schedules import crontab, schedule, solar  # noqa: PLC0415

    if isinstance(value, bool):
        raise TypeError("a schedule cannot be a bool")
    if isinstance(value, (int, float)):
        return {"type": "interval", "seconds": float(value), "relative": False}
    if isinstance(value, timedelta):
        return {"type": "interval", "seconds": value.total_seconds(), "relative": False}
    if type(value) is schedule:
        return {"type": "interval", "seconds": value.seconds, "relative": value.relative}
    if type(value) is crontab:
        fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
        return {"type": "crontab", **{f: _spec(getattr(value, f"_orig_{f}")) for f in fields}}
    if type(value) is solar:
        return {"type": "solar", "event": value.event, "lat": value.lat, "lon": value.lon}
    raise ImproperlyConfigured(
        f"app.beat.add(): a schedule of type {type(value).__name__} cannot be stored in the "
        "broker (use seconds, a timedelta, crontab, schedule or solar; or put it in "
        "beat_schedule)"
    )


def _spec(value: Any) -> Any:
    return value if isinstance(value, (str, int)) else sorted(value)


def decode_schedule(data: dict[str, Any], app: Celeriac) -> Any:
    from celeriac.schedules import crontab, schedule, solar  # noqa: PLC0415

    kind = data["type"]
    if kind == "interval":
        return schedule(timedelta(seconds=data["seconds"]), data.get("relative", False), app=app)
    if kind == "crontab":
        fields = {k: v for k, v in data.items() if k != "type"}
        return crontab(**fields, app=app)
    if kind == "solar":
        return solar(data["event"], data["lat"], data["lon"], app=app)
    raise ValueError(f"unknown stored schedule type {kind!r}")


def encode_entry(entry: Entry) -> bytes:
    return json.dumps(
        {
            "task": entry.task,
            "schedule": encode_schedule(entry.schedule),
            "args": list(entry.args),
            "kwargs": entry.kwargs,
            "options": entry.options,
        }
    ).encode()


def decode_entry(app: Celeriac, name: str, raw: bytes) -> Entry:
    data = json.loads(raw)
    return Entry(
        name=name,
        task=data["task"],
        schedule=decode_schedule(data["schedule"], app),
        args=tuple(data.get("args") or ()),
        kwargs=dict(data.get("kwargs") or {}),
        options=dict(data.get("options") or {}),
        source="store",
    )


__all__ = [
    "ENTRY_KEYS",
    "Entry",
    "check_schedule",
    "configured",
    "decode_entry",
    "encode_entry",
    "entry_of",
]
