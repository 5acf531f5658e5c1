"""The Django fix-up: what a worker of a Django project does besides running tasks.

Installed by the app when ``DJANGO_SETTINGS_MODULE`` is set (or the app is configured
from ``django.conf:settings``), as Celery's:

* the worker calls ``django.setup()`` (and Django's system checks, unless
  ``CELERY_SKIP_CHECKS`` is set) before it imports the task modules, so a tasks module
  may import models; ``app.autodiscover_tasks()`` with no list looks in every installed
  app;
* the database connections of the executing thread are closed before and after each
  task, and the caches after it (a connection left by a task may be broken, or be
  another thread's; Django opens a new one on next use);
* a prefork child drops the connections it inherited from its supervisor on fork,
  closing their sockets without a word to the server (a ``close()`` would end the
  parent's session too).

Nothing here imports Django until the fix-up is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

from celeriac.middleware import Middleware

if TYPE_CHECKING:
    from celeriac._outcome import Outcome
    from celeriac.app import Celeriac
    from celeriac.task import Context, Task


class FixupWarning(UserWarning):
    """``DJANGO_SETTINGS_MODULE`` is set but Django cannot be imported."""


_fork_hook_installed = False


def install(app: Celeriac) -> DjangoFixup | None:
    """The app's Django fix-up, installed once (None, with a warning, without Django)."""
    for existing in app._fixups:
        if isinstance(existing, DjangoFixup):
            return existing
    try:
        import django  # noqa: F401, PLC0415
    except ImportError:
        warnings.warn(
            FixupWarning(
                "DJANGO_SETTINGS_MODULE is set but Django is not installed: "
                "the Django fix-up is not applied"
            ),
            stacklevel=3,
        )
        return None
    fixup = DjangoFixup(app)
    app._fixups.append(fixup)
    app.add_middleware(DjangoMiddleware())
    if os.getcwd() not in sys.path:  # the project's directory, as Celery's fix-up
        sys.path.insert(0, os.getcwd())
    return fixup


class DjangoFixup:
    def __init__(self, app: Celeriac) -> None:
        self.app = app

    def on_import_modules(self) -> None:
        """In the worker, before the task modules are imported."""
        global _fork_hook_installed
        import django  # noqa: PLC0415

        django.setup()
        if not os.environ.get("CELERY_SKIP_CHECKS"):
            from django.core.checks import run_checks  # noqa: PLC0415

            run_checks()
        close_database()
        close_caches()
        if not _fork_hook_installed:  # prefork children: see drop_inherited_connections
            os.register_at_fork(after_in_child=drop_inherited_connections)
            _fork_hook_installed = True

    def autodiscover_packages(self) -> list[str]:
        """The packages ``autodiscover_tasks()`` searches when given none."""
        from django.apps import apps  # noqa: PLC0415

        return [config.name for config in apps.get_app_configs()]


class DjangoMiddleware(Middleware):
    """Closes the executing thread's connections around each task (not eager ones)."""

    def before_task(self, task: Task[Any, Any], request: Context) -> None:
        if not request.is_eager:
            close_database()

    def after_task(self, task: Task[Any, Any], request: Context, outcome: Outcome) -> None:
        if not request.is_eager:
            close_database()
            close_caches()


def close_database() -> None:
    """Close this thread's open database connections (none can be open in a thread that
    runs an event loop: Django refuses to connect there, and to close from there)."""
    try:
        asyncio.get_running_loop()
        return
    except RuntimeError:
        pass
    from django.db import DatabaseError, connections  # noqa: PLC0415
    from django.db.utils import InterfaceError  # noqa: PLC0415

    for conn in connections.all(initialized_only=True):
        try:
            conn.close()
        except InterfaceError:
            pass
        except DatabaseError as exc:  # already closed by the server: nothing to do
            text = str(exc)
            if "closed" not in text and "not connected" not in text:
                raise


def close_caches() -> None:
    from django.core.cache import close_caches as close  # noqa: PLC0415

    close()


def drop_inherited_connections() -> None:
    """In a forked child: close the sockets of the connections the parent opened (no
    network traffic, which would end the parent's session), then the connections."""
    from django.apps import apps  # noqa: PLC0415

    if not apps.ready:
        return
    from django.db import connections  # noqa: PLC0415

    for conn in connections.all(initialized_only=True):
        raw = conn.connection
        if raw is not None:
            with contextlib.suppress(AttributeError, OSError, TypeError):
                os.close(raw.fileno())
    close_database()


def on_commit(callback: Any) -> None:
    """Django's ``transaction.on_commit`` (a clear error without Django)."""
    try:
        from django.db import transaction  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("delay_on_commit/apply_async_on_commit need Django") from exc
    transaction.on_commit(callback)
