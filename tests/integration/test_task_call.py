"""The running task as the worker gives it, as Celery's: ``current_task``, and a ``Task``
subclass's own ``__call__`` (Flask's documented pattern: ``class FlaskTask(Task)`` whose
``__call__`` wraps ``self.run`` in the Flask app's context, given as
``Celery(task_cls=FlaskTask)``), which the worker calls instead of ``run``."""

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


@pytest.mark.parametrize("pool", ["threads", "asyncio"])
def test_current_task_is_the_running_task_as_celerys(pool: str) -> None:
    import celery

    from celeriac import current_task

    # outside a task: false, as Celery's (its proxy wraps None)
    assert not current_task and not celery.current_task
    app = Celery(
        "curtask",
        broker=f"memory://call-{uuid.uuid4().hex}",
        backend="memory://",
        set_as_current=False,
    )

    @app.task(name="cur.sync", bind=True)
    def sync(self: Any) -> list[Any]:
        return [current_task.name, current_task.request.id == self.request.id]

    @app.task(name="cur.async", bind=True)
    async def asynchronous(self: Any) -> list[Any]:
        return [current_task.name, current_task.request.id == self.request.id]

    try:
        assert sync.apply().get() == ["cur.sync", True]  # eagerly too
        with TestWorker(app, pool=pool, concurrency=2):
            assert sync.delay().get(timeout=10) == ["cur.sync", True]
            assert asynchronous.delay().get(timeout=10) == ["cur.async", True]
    finally:
        app.close()
    assert not current_task
    with pytest.raises(AttributeError, match="no task is running"):
        _ = current_task.request
