"""The arguments of a retried task when ``Task.retry`` is given only ``args`` or only
``kwargs``: as Celery 5.7, the call's other half is kept where it does not clash with
the new one (celery#6494).

- ``retry(args=...)`` keeps the call's keyword arguments except those naming a
  parameter the new positional arguments now fill;
- ``retry(kwargs=...)`` keeps the call's positional arguments, and a new keyword that
  names one of them replaces it in place.

Given both, or neither, the given ones replace the call's, the others are the call's.
"""

from __future__ import annotations

import inspect
from typing import Any

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def retry_arguments(
    parameters: inspect.Signature | None,
    called_args: list[Any],
    called_kwargs: dict[str, Any],
    args: tuple[Any, ...] | list[Any] | None,
    kwargs: dict[str, Any] | None,
) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` of the retried call; ``parameters`` is the task function's
    signature without ``self`` (None when it cannot be read)."""
    if parameters is not None:
        if args is not None and kwargs is None and called_kwargs:
            kwargs = dict(called_kwargs)
            filled = [p for p in parameters.parameters.values() if p.kind in _POSITIONAL]
            for param in filled[: len(args)]:
                if param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
                    kwargs.pop(param.name, None)
        elif kwargs is not None and args is None and called_args:
            try:
                bound = parameters.bind_partial(*called_args)
            except TypeError:
                pass  # the call did not fit the function: the run reports it
            else:
                kwargs = dict(kwargs)
                for name in list(kwargs):
                    found = parameters.parameters.get(name)
                    if (
                        name in bound.arguments
                        and found is not None
                        and found.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
                    ):
                        bound.arguments[name] = kwargs.pop(name)
                args, kwargs = list(bound.args), {**bound.kwargs, **kwargs}
    return (
        list(called_args if args is None else args),
        dict(called_kwargs if kwargs is None else kwargs),
    )


def task_parameters(task: Any) -> inspect.Signature | None:
    """The signature a task is called with (its function's, without a bound ``self``)."""
    fn = inspect.getattr_static(type(task), "_fn", None)
    try:
        if isinstance(fn, staticmethod):
            found = inspect.signature(fn.__func__)
            if task.bind:
                found = found.replace(parameters=list(found.parameters.values())[1:])
            return found
        return inspect.signature(task.run)
    except (TypeError, ValueError):
        return None


__all__ = ["retry_arguments", "task_parameters"]
