"""``celeriac.app.task``: where Celery code imports ``Task`` and ``Context`` from."""

from celeriac.task import Context, Task

__all__ = ["Context", "Task"]
