"""``app.beat``: the entries stored in the broker at runtime, and a listing of all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celeriac._loop import run_sync
from celeriac.beat.entries import Entry, check_entry, encode_entry, entry_of
from celeriac.beat.service import Beat, _next_fire, from_ms, utcnow

if TYPE_CHECKING:
    from celeriac.app import Celeriac


@dataclass(frozen=True)
class Row:
    """One line of ``celeriac beat --list``."""

    entry: Entry
    schedule: str
    last_run: datetime | None
    next_run: datetime | None


class BeatAPI:
    """Add and remove entries at runtime: every beat sees them on its next tick (within
    ``beat_max_loop_interval``). They are kept in the broker's store (the result
    backend's with RabbitMQ), so they survive restarts."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app

    def add(
        self,
        name: str,
        task: Any,
        schedule: Any,
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Entry:
        """Store entry ``name`` (replacing one of that name): ``task`` is a name or a task."""
        return run_sync(self.aadd(name, task, schedule, args, kwargs, options))

    async def aadd(
        self,
        name: str,
        task: Any,
        schedule: Any,
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Entry:
        spec = {
            "task": task if isinstance(task, str) else task.name,
            "schedule": schedule,
            "args": tuple(args),
            "kwargs": dict(kwargs or {}),
            "options": dict(options or {}),
        }
        check_entry("app.beat.add", name, spec)
        entry = entry_of(self.app, name, spec, source="store")
        data = encode_entry(entry)
        store = await Beat(self.app).claims.open()
        await store.schedule_set_entry(name, data)
        return entry

    def remove(self, name: str) -> None:
        """Delete the stored entry ``name`` and its last run (nothing if there is none)."""
        run_sync(self.aremove(name))

    async def aremove(self, name: str) -> None:
        store = await Beat(self.app).claims.open()
        await store.schedule_set_entry(name, None)

    def rows(self, now: datetime | None = None) -> list[Row]:
        """Every entry (``beat_schedule`` and stored), its schedule in words, last and
        next run."""
        return run_sync(self.arows(now))

    async def arows(self, now: datetime | None = None) -> list[Row]:
        beat = Beat(self.app)
        entries = await beat.entries()
        store = await beat.claims.open()
        runs = await store.schedule_runs([e.name for e in entries])
        moment = now or utcnow()
        rows = []
        for entry in entries:
            last = from_ms(runs[entry.name]) if entry.name in runs else None
            human = getattr(entry.schedule, "human", None)
            words = human() if callable(human) else repr(entry.schedule)
            upcoming = _next_fire(entry.schedule, last or moment, moment)
            rows.append(Row(entry, words, last, upcoming))
        return rows


__all__ = ["BeatAPI", "Row"]
