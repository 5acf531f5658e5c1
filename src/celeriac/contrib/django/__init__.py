"""Django integration: the worker fix-up (:mod:`celeriac.contrib.django.fixup`, installed
by the app itself) and :class:`TasksBackend`, a backend for Django's task framework
(``django.tasks``; the ``django-tasks`` package before Django 6)."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "TasksBackend":  # imports Django: only when asked for
        from celeriac.contrib.django.tasks_backend import TasksBackend  # noqa: PLC0415

        return TasksBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TasksBackend"]
