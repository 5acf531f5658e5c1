"""A ``Task`` subclass's own ``__call__`` runs the task on the worker, as Celery's worker
calls it (Flask's documented pattern: ``class FlaskTask(Task)`` whose ``__call__`` wraps
``self.run`` in the Flask app's context, given as ``Celery(task_cls=FlaskTask)``)."""

from __future__ import annotations

import contextvars
import uuid
from typing import Any

import pytest

from celeriac import Celery, Task
from celeriac.testing import TestWorker

#: what a "pushed context" makes visible to the task body
pushed: contextvars.ContextVar[str] = contextvars.ContextVar("pushed", default="none")


class ContextTask(Task[Any, Any]):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        token = pushed.set(f"pushed for {self.name}")
        try:
            return self.run(*args, **kwargs)
        finally:
            pushed.reset(token)


@pytest.mark.parametrize("pool", ["threads", "solo", "asyncio"])
def test_task_cls_call_wraps_every_task_on_the_worker(pool: str) -> None:
    app = Celery(
        "callapp",
        broker=f"memory://call-{uuid.uuid4().hex}",
        backend="memory://",
        task_cls=ContextTask,
        set_as_current=False,
    )

    @app.task(name="call.seen")
    def seen() -> str:
        return pushed.get()

    @app.task(name="call.aseen")
    async def aseen() -> str:
        return pushed.get()

    try:
        with TestWorker(app, pool=pool):
            assert seen.delay().get(timeout=10) == "pushed for call.seen"
            # an async task's __call__ returns its coroutine, which the worker awaits after
            # __call__ has returned (outside what __call__ wrapped): the value still comes
            assert aseen.delay().get(timeout=10) == "none"
    finally:
        app.close()


def test_a_base_with_its_own_call_wraps_only_its_tasks() -> None:
    app = Celery(
        "callbase",
        broker=f"memory://call-{uuid.uuid4().hex}",
        backend="memory://",
        set_as_current=False,
    )

    @app.task(name="call.wrapped", base=ContextTask)
    def wrapped() -> str:
        return pushed.get()

    @app.task(name="call.plain")
    def plain() -> str:
        return pushed.get()

    try:
        with TestWorker(app):
            assert wrapped.delay().get(timeout=10) == "pushed for call.wrapped"
            assert plain.delay().get(timeout=10) == "none"
    finally:
        app.close()
