"""``Task.replace``/``areplace`` and ``Task.add_to_chord``/``aadd_to_chord`` beyond what
the semantics harness compares with Celery (``tests/semantics/test_replace_semantics.py``,
``test_chord_errors_semantics.py``): the ``async def`` forms on the asyncio pool, the
memory and SQLite backends, and clear errors where a backend cannot grow a chord."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, chord, group
from celeriac.exceptions import Ignore
from celeriac.testing import TestWorker


def _app(url: str) -> Celery:
    app = Celery("replace", broker=url, set_as_current=False)

    @app.task(name="r.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="r.collect")
    def collect(values: list[Any]) -> list[Any]:
        return values

    @app.task(bind=True, name="r.swap")
    async def swap(self: Any, x: int) -> Any:
        return await self.areplace(group(add.s(x, 1), add.s(x, 2), app=app))

    @app.task(bind=True, name="r.grow")
    async def grow(self: Any, x: int) -> int:
        await self.aadd_to_chord(add.si(x, 100))
        return x

    @app.task(bind=True, name="r.grow_sync")
    def grow_sync(self: Any, x: int) -> int:
        self.add_to_chord(add.si(x, 100))
        return x

    return app


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celery]:
    if request.param == "memory":
        url = f"memory://replace-{uuid.uuid4().hex}"
    else:
        url = f"sqlite:///{tmp_path / 'replace.db'}"
    app = _app(url)
    try:
        with TestWorker(app, pool="asyncio", concurrency=4):
            yield app
    finally:
        app.close()


def test_areplace_in_an_async_task(app: Celery) -> None:
    swap, collect = app.tasks["r.swap"], app.tasks["r.collect"]
    assert swap.delay(5).get(timeout=10) == [6, 7]
    header = [swap.s(1), app.tasks["r.add"].si(1, 1)]
    assert chord(header, collect.s(), app=app).delay().get(timeout=10) == [[2, 3], 2]


def test_add_to_chord_in_sync_and_async_tasks(app: Celery) -> None:
    add, collect = app.tasks["r.add"], app.tasks["r.collect"]
    for name in ("r.grow", "r.grow_sync"):
        header = [app.tasks[name].s(1), add.si(2, 2)]
        result = chord(header, collect.s(), app=app).delay()
        assert sorted(result.get(timeout=10)) == [1, 4, 101]


def test_replace_called_directly_ends_the_call_with_ignore() -> None:
    app = _app(f"memory://replace-{uuid.uuid4().hex}")
    try:
        swap = app.tasks["r.swap"]
        # as Celery: outside a worker replace() still sends the replacement and ends the
        # call with Ignore
        with pytest.raises(Ignore):
            swap(1)
    finally:
        app.close()
