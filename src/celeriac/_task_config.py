"""Settings that shape each task's attributes: ``task_default_retry_delay`` and
``task_annotations``.

Applied when a task is registered and again whenever either setting is assigned (so a
``config_from_object`` after the tasks are defined reaches them), as Celery applies them
when it binds a task to its app:

- ``task_default_retry_delay``: ``default_retry_delay`` of every task that did not set
  its own (in ``@app.task(...)`` or a base class);
- ``task_annotations``: attributes set on tasks by name, ``'*'`` for every task. A
  mapping, an object with ``annotate(task)`` returning a mapping (or None), an import
  path of one, or a list of them; the first that matches a task by name applies, then the
  first with a ``'*'`` entry (Celery's order).
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from celeriac._rates import parse_rate
from celeriac.exceptions import ImproperlyConfigured
from celeriac.task import Task

if TYPE_CHECKING:
    from celeriac.app import Celeriac

#: the attributes a task class set itself (before any setting touched it)
_own: weakref.WeakKeyDictionary[type, frozenset[str]] = weakref.WeakKeyDictionary()

WATCHED = ("task_default_retry_delay", "task_annotations")


def _own_attributes(cls: type) -> frozenset[str]:
    own = _own.get(cls)
    if own is None:
        names: set[str] = set()
        for klass in cls.__mro__:
            if klass is Task:
                break
            names.update(vars(klass))
        own = _own[cls] = frozenset(names)
    return own


def configure_task(app: Celeriac, task: Task[Any, Any]) -> None:
    """Apply ``task_default_retry_delay`` and ``task_annotations`` to ``task``."""
    cls = type(task)
    own = _own_attributes(cls)
    delay = app.conf["task_default_retry_delay"]
    if "default_retry_delay" not in own and delay is not None:
        cls.default_retry_delay = float(delay)
    for attributes in matching(app.conf["task_annotations"], task):
        for key, value in attributes.items():
            if not isinstance(key, str) or key.startswith("@") or key.startswith("_"):
                raise ImproperlyConfigured(
                    f"task_annotations for {task.name}: {key!r} is not a task attribute "
                    "(celeriac does not wrap methods with '@' annotations)"
                )
            if key == "rate_limit" and value is not None:
                parse_rate(value)  # a bad rate fails here, not at every run
            setattr(cls, key, tuple(value) if key in ("autoretry_for", "throws") else value)


def configure_all(app: Celeriac) -> None:
    for task in list(app.tasks.values()):
        configure_task(app, task)


def matching(annotations: Any, task: Task[Any, Any]) -> list[Mapping[str, Any]]:
    """The attribute mappings ``annotations`` gives ``task``: by name, then ``'*'``."""
    if not annotations:
        return []
    items = annotations if isinstance(annotations, (list, tuple)) else [annotations]
    resolved = [_resolve(item) for item in items]
    found: list[Mapping[str, Any]] = []
    for lookup in (_by_name, _any_task):
        for item in resolved:
            attributes = lookup(item, task)
            if attributes:
                found.append(attributes)
                break
    return found


def _resolve(item: Any) -> Any:
    if isinstance(item, str):
        module, _, attr = item.rpartition(":") if ":" in item else item.rpartition(".")
        try:
            item = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ImproperlyConfigured(f"task_annotations: cannot import {item!r}: {exc}") from exc
        if isinstance(item, type):
            item = item()
    return item


def _by_name(item: Any, task: Task[Any, Any]) -> Mapping[str, Any] | None:
    value = item.get(task.name) if isinstance(item, Mapping) else item.annotate(task)
    return _checked(value, task)


def _any_task(item: Any, task: Task[Any, Any]) -> Mapping[str, Any] | None:
    if isinstance(item, Mapping):
        value = item.get("*")
    else:
        method = getattr(item, "annotate_any", None)
        value = method() if method is not None else None
    return _checked(value, task)


def _checked(value: Any, task: Task[Any, Any]) -> Mapping[str, Any] | None:
    if value is None or isinstance(value, Mapping):
        return value
    raise ImproperlyConfigured(
        f"task_annotations for {task.name}: {value!r} is not a mapping of attributes"
    )


__all__ = ["WATCHED", "configure_all", "configure_task", "matching"]
