"""The app's Celery-named conveniences, as a mixin of :class:`~celeriac.app.base.Celeriac`.

- ``app.Task``: the app's base task class, a subclass of ``task_cls`` (``celeriac.Task``
  unless ``Celery(task_cls=...)`` names another) bound to the app. ``@app.task`` builds
  on it unless ``base=`` says otherwise, and users subclass it for shared behaviour
  (``class DatabaseTask(app.Task): ...`` then ``@app.task(base=DatabaseTask)``).
- ``app.AsyncResult``, ``app.GroupResult``, ``app.ResultSet``: the result classes,
  bound to the app (``app.GroupResult.restore(group_id)`` reads this app's backend).
- ``app.signature(name_or_dict, args, kwargs, **options)``: a signature bound to the app.
- ``app.now()``, ``app.timezone``, ``app.uses_utc_timezone()``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celeriac.exceptions import ImproperlyConfigured
from celeriac.result import AsyncResult, GroupResult, ResultSet
from celeriac.task import Task as BaseTask

if TYPE_CHECKING:
    from celeriac._config import Settings
    from celeriac.app.base import Celeriac
    from celeriac.canvas import Signature

C = TypeVar("C", bound=type)


def _bound_to(cls: C, bound_app: Celeriac) -> C:
    """A subclass of ``cls`` whose instances get ``app`` unless given another, as
    Celery's ``app.AsyncResult``/``app.GroupResult`` are."""
    base_init = cast("Any", cls).__init__
    position = list(inspect.signature(base_init).parameters).index("app") - 1

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) <= position:
            kwargs.setdefault("app", bound_app)
        base_init(self, *args, **kwargs)

    attrs: dict[str, Any] = {
        "__init__": __init__,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
    }
    if cls is GroupResult or issubclass(cls, GroupResult):

        def restore(
            klass: type[GroupResult], id: str, backend: Any = None, app: Celeriac | None = None
        ) -> GroupResult | None:
            return GroupResult.restore(id, backend, app=app or bound_app)

        async def arestore(
            klass: type[GroupResult], id: str, app: Celeriac | None = None
        ) -> GroupResult | None:
            return await GroupResult.arestore(id, app=app or bound_app)

        attrs["restore"] = classmethod(restore)
        attrs["arestore"] = classmethod(arestore)
    return cast("C", type(cls.__name__, (cls,), attrs))


def task_base(task_cls: Any) -> type[BaseTask[Any, Any]]:
    """``Celery(task_cls=...)``: a ``Task`` subclass, or its ``"module:Class"`` path."""
    if task_cls is None:
        return BaseTask
    if isinstance(task_cls, str):
        path = task_cls
        module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
        try:
            task_cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ImproperlyConfigured(f"task_cls: cannot import {task_cls!r}: {exc}") from exc
    if not (isinstance(task_cls, type) and issubclass(task_cls, BaseTask)):
        raise ImproperlyConfigured(
            f"task_cls must be a subclass of celeriac.Task (or its import path), not {task_cls!r}"
        )
    return task_cls


class AppAPI:
    """The methods above; :class:`Celeriac` supplies ``conf`` and ``_task_cls``."""

    conf: Settings
    _task_cls: Any = None

    @functools.cached_property
    def Task(self) -> type[BaseTask[Any, Any]]:
        """The app's base task class: ``task_cls`` bound to this app (abstract: it is
        registered only through the tasks made from it)."""
        base = task_base(self._task_cls)
        attrs = {
            "_bound_app": self,
            "__module__": base.__module__,
            "__qualname__": base.__qualname__,
            "__doc__": base.__doc__,
        }
        return type(base.__name__, (base,), attrs)

    @property
    def task_cls(self) -> type[BaseTask[Any, Any]]:
        """The class ``app.Task`` is made from (``Celery(task_cls=...)``)."""
        return task_base(self._task_cls)

    @functools.cached_property
    def AsyncResult(self) -> type[AsyncResult[Any]]:
        """``app.AsyncResult(task_id)``: a result handle on this app's backend."""
        return _bound_to(AsyncResult, cast("Celeriac", self))

    @functools.cached_property
    def GroupResult(self) -> type[GroupResult]:
        """``app.GroupResult(group_id, results)``, ``app.GroupResult.restore(group_id)``."""
        return _bound_to(GroupResult, cast("Celeriac", self))

    @functools.cached_property
    def ResultSet(self) -> type[ResultSet]:
        """``app.ResultSet(results)``: results waited for together."""
        return _bound_to(ResultSet, cast("Celeriac", self))

    def signature(self, *args: Any, **kwargs: Any) -> Signature:
        """``app.signature("tasks.add", (2, 2), countdown=10)`` (a name, a task or a
        signature dict), bound to this app: it sends through this app's broker."""
        from celeriac.canvas import signature  # noqa: PLC0415 - canvas imports the app

        kwargs["app"] = self
        return signature(*args, **kwargs)

    @property
    def timezone(self) -> tzinfo:
        """The ``timezone`` setting's zone; UTC when unset (celeriac keeps times in UTC)."""
        name = self.conf["timezone"]
        if not name:
            return ZoneInfo("UTC")
        if isinstance(name, tzinfo):
            return name
        try:
            return ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"timezone {name!r} is not a known zone name (use one like 'Europe/Paris')"
            ) from exc

    def uses_utc_timezone(self) -> bool:
        """True when the app's zone is UTC."""
        return getattr(self.timezone, "key", "UTC") in {"UTC", "Etc/UTC"}

    def now(self) -> datetime:
        """The time now, aware, in the app's zone (``app.timezone``)."""
        return datetime.now(self.timezone)


__all__ = ["AppAPI", "task_base"]
