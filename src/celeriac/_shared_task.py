"""What ``@shared_task`` returns: a stand-in for the current app's task (Celery's lazy
binding of shared tasks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.task import Task


class _SharedTask:
    """What ``@shared_task`` returns: the task as the *current* app has it, looked up at
    each use (Celery binds shared tasks lazily too), so a tasks module imported before the
    app exists still sends through that app. No app at all is an error, never a hidden
    default app on a broker nobody configured."""

    def __init__(self, func: Callable[..., Any], options: dict[str, Any]) -> None:
        self.__dict__["_shared"] = (func, options)

    def _task(self) -> Task[Any, Any]:
        func, options = self.__dict__["_shared"]
        from celeriac.app import base as _app  # noqa: PLC0415 - the app module imports this one

        app = _app._current
        if app is None:
            raise ImproperlyConfigured(
                f"shared task {func.__module__}.{func.__name__} used before any app exists: "
                "create your app (app = Celery(...)) before sending or calling shared tasks"
            )
        name = options.get("name") or app.gen_task_name(func.__name__, func.__module__)
        task = app.tasks.get(name)
        return task if task is not None else app._register(func, dict(options))

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(shared, Task) holds, as for the task itself
        return type(self._task())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._task(), name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)

    def __repr__(self) -> str:
        func = self.__dict__["_shared"][0]
        return f"<@shared_task {func.__module__}.{func.__name__}>"


__all__ = ["_SharedTask"]
