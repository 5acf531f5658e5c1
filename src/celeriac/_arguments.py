"""Argument checking when a task is sent (``typing=True``, the default), as Celery does.

Celery calls a stand-in of the task function with the arguments before it publishes, so
``add.delay(1)`` raises ``TypeError("add() missing 1 required positional argument:
'y'")`` in the caller instead of failing on the worker. Measured on Celery 5.7: the
check covers ``delay``/``apply_async``, signatures and the first task of chains, groups
and chords (the tasks made with ``@app.task``); it skips ``send_task``, ``apply`` (run
here, the failure is the result), ``typing=False`` tasks, and class-based tasks (their
``run`` is not checked). The follow-ups a worker sends for a finished task (callbacks,
the next chain step, a chord body: they carry its ``parent_id``) are not checked here,
so a mismatch fails the next task on its worker instead of losing the message.

The stand-in is a function with the same parameters and an empty body, so Python itself
words the error (a bound task's ``self`` counted; a positional-only parameter may be
given by name, as Celery's check lets it).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.task import Task

_STUBS: weakref.WeakKeyDictionary[type, Callable[..., None] | None] = weakref.WeakKeyDictionary()


def _stub(fn: Callable[..., Any]) -> Callable[..., None] | None:
    """A function with ``fn``'s parameters and an empty body (None: not expressible)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    namespace: dict[str, Any] = {}
    text: list[str] = []
    star_done = False
    for index, param in enumerate(params):
        kind = param.kind
        if kind is param.VAR_POSITIONAL:
            text.append(f"*{param.name}")
            star_done = True
            continue
        if kind is param.VAR_KEYWORD:
            text.append(f"**{param.name}")
            continue
        if kind is param.KEYWORD_ONLY and not star_done:
            text.append("*")
            star_done = True
        item = param.name
        if param.default is not param.empty:
            namespace[f"_default_{index}"] = param.default
            item += f"=_default_{index}"
        text.append(item)  # positional-only parameters too: Celery's check lets them by name
    name = fn.__name__ if fn.__name__.isidentifier() else "task"
    source = f"def {name}({', '.join(text)}):\n    return None\n"
    try:
        exec(compile(source, f"<arguments of {name}>", "exec"), namespace)
    except SyntaxError:
        return None
    stub: Callable[..., None] = namespace[name]
    return stub


def check_arguments(task: Task[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Raise ``TypeError`` (Python's own words) when ``args``/``kwargs`` do not fit the
    task function of ``task``; see the module docstring for which tasks are checked."""
    if not task.typing:
        return
    cls = type(task)
    if cls not in _STUBS:
        fn = cls.__dict__.get("_fn")
        function = getattr(fn, "__func__", fn)
        _STUBS[cls] = _stub(function) if callable(function) else None
    stub = _STUBS[cls]
    if stub is None:
        return
    try:
        if task.bind:  # the bound ``self`` counts in Python's words, as in Celery's
            stub(task, *args, **kwargs)
        else:
            stub(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(str(exc)) from None


def check_sent(
    task: Task[Any, Any] | None, args: Sequence[Any], kwargs: dict[str, Any], options: Any
) -> None:
    """The check of ``app._prepare``: for a registered task, unless sent by name
    (``_unchecked``, popped here) or a worker's follow-up (a ``parent_id``)."""
    if not options.pop("_unchecked", False) and task is not None and "parent_id" not in options:
        check_arguments(task, args, kwargs)


__all__ = ["check_arguments", "check_sent"]
