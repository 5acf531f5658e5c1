"""The application: ``Celery``/``Celeriac``, ``current_app`` and ``shared_task``.

A package, as Celery's ``celery.app`` is, so that the import paths third-party code uses
(``celeriac.app.task.Task``, ``celeriac.app.base.Celery``) resolve.
"""

from celeriac.app.base import (
    DEFAULT_BROKER_URL,
    Celeriac,
    Celery,
    _CurrentAppProxy,
    current_app,
    shared_task,
)

__all__ = [
    "DEFAULT_BROKER_URL",
    "Celeriac",
    "Celery",
    "_CurrentAppProxy",
    "current_app",
    "shared_task",
]
