"""The app's periodic-task API (a mixin of :class:`celeriac.app.base.Celeriac`):
``add_periodic_task``, ``app.beat``, ``finalize`` and Celery's app signals
``on_configure``, ``on_after_configure`` and ``on_after_finalize``."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from celeriac.signals import Signal

if TYPE_CHECKING:
    from celeriac._config import Settings
    from celeriac.beat import BeatAPI


class PeriodicMixin:
    """Celery's ``add_periodic_task`` and app signals; the beat is :mod:`celeriac.beat`."""

    conf: Settings
    _finalized: bool = False

    @functools.cached_property
    def on_configure(self) -> Signal:
        """Sent (sender=app) when the app is finalized, before ``on_after_configure``."""
        return Signal("on_configure")

    @functools.cached_property
    def on_after_configure(self) -> Signal:
        """Sent (sender=app, source=app.conf) once the configuration is complete: when a
        worker or beat starts, or ``app.finalize()`` is called."""
        return Signal("on_after_configure")

    @functools.cached_property
    def on_after_finalize(self) -> Signal:
        """Sent (sender=app) after ``on_after_configure``, once the tasks are imported."""
        return Signal("on_after_finalize")

    def finalize(self, auto: bool = False) -> None:
        """Send ``on_configure``, ``on_after_configure`` and ``on_after_finalize``, once
        per app (the worker and the beat call it at start-up)."""
        if self._finalized:
            return
        self._finalized = True
        self.on_configure.send(sender=self)
        self.on_after_configure.send(sender=self, source=self.conf)
        self.on_after_finalize.send(sender=self)

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Any,
        args: Any = (),
        kwargs: Any = (),
        name: str | None = None,
        **opts: Any,
    ) -> str:
        """Add an entry to ``beat_schedule`` (Celery's signature): ``sig`` is a signature
        (``task.s(...)``) or a task; returns the entry's name."""
        task = getattr(sig, "task", None) or getattr(sig, "name", None)
        if not isinstance(task, str):
            raise TypeError(f"add_periodic_task: {sig!r} is not a signature or a task")
        sig_args = tuple(getattr(sig, "args", ()) or ())
        sig_kwargs = dict(getattr(sig, "kwargs", {}) or {})
        sig_options = dict(getattr(sig, "options", {}) or {})
        key = name or repr(sig)
        entry = {
            "task": task,
            "schedule": schedule,
            "args": tuple(args) + sig_args if args else sig_args,
            "kwargs": {**sig_kwargs, **dict(kwargs or {})},
            "options": {**sig_options, **opts},
        }
        table = dict(self.conf["beat_schedule"])
        table[key] = entry
        self.conf["beat_schedule"] = table
        return key

    @functools.cached_property
    def beat(self) -> BeatAPI:
        """Entries stored in the broker at runtime: ``app.beat.add(...)``/``remove``."""
        from celeriac.beat import BeatAPI  # noqa: PLC0415 - the beat imports the app

        return BeatAPI(self)  # type: ignore[arg-type]


__all__ = ["PeriodicMixin"]
