"""The client-side task API Celery code touches, compared with the real Celery in the
same test: arguments checked when a task is sent (``typing``), class-based tasks with
``app.register_task``, and ``AsyncResult.graph``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

import celeriac
from support import own_celery_tasks


@pytest.fixture
def apps() -> Iterator[tuple[Any, Any]]:
    """A Celery app and a celeriac app, each on an in-memory broker and backend."""
    import celery

    name = uuid.uuid4().hex
    with own_celery_tasks():  # no shared task of another test joins this app
        theirs = celery.Celery("api", broker="memory://", backend="cache+memory://")
        theirs.finalize(auto=True)
    ours = celeriac.Celery("api", broker=f"memory://{name}", backend=f"memory://{name}")
    try:
        yield theirs, ours
    finally:
        theirs.close()
        ours.close()


def _task(app: Any, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``app.task(**options)`` of either package, typed for the checker; not shared
    (a shared Celery task would join every Celery app the process makes later)."""
    return cast("Callable[[Callable[..., Any]], Any]", app.task(shared=False, **options))


def _calls(pkg: Any, app: Any) -> list[tuple[str, Callable[[], Any]]]:
    @_task(app, name="api.add")
    def add(x: int, y: int) -> int:
        return x + y

    @_task(app, name="api.badd", bind=True)
    def badd(self: Any, x: int, y: int = 2, *, z: int = 3) -> int:
        return x + y + z

    @_task(app, name="api.untyped", typing=False)
    def untyped(x: int) -> int:
        return x

    @_task(app, name="api.star")
    def star(a: int, /, *rest: int, **named: int) -> int:
        return a

    return [
        ("delay too few", lambda: add.delay(1)),
        ("delay too many", lambda: add.delay(1, 2, 3)),
        ("apply_async too few", lambda: add.apply_async((1,))),
        ("unexpected keyword", lambda: add.apply_async((1, 2), {"z": 1})),
        ("bound too few", badd.delay),
        ("bound keyword-only", lambda: badd.delay(1, 2, 3)),
        ("bound ok", lambda: badd.delay(1, z=5)),
        ("signature", lambda: add.s(1).delay()),
        ("immutable signature", lambda: add.si(1).delay()),
        ("chain's first task", (add.s(1) | add.s(2)).delay),
        ("chain ok", (add.s(1, 1) | add.s(2)).delay),
        ("group", lambda: pkg.group(add.s(1, 1), add.s(2)).delay()),
        ("chord header", lambda: pkg.chord([add.s(1)], add.s(1)).delay()),
        ("positional only by name", lambda: star.delay(a=1)),
        ("star ok", lambda: star.delay(1, 2, 3, k=4)),
        ("send_task unchecked", lambda: app.send_task("api.add", (1,))),
        ("typing=False unchecked", lambda: untyped.delay(1, 2)),
        ("apply runs here", lambda: add.apply((1,)).state),
    ]


def _outcomes(pkg: Any, app: Any) -> list[tuple[str, str]]:
    out = []
    for label, call in _calls(pkg, app):
        try:
            value = call()
        except TypeError as exc:
            cause = "" if exc.__cause__ is None else f" from {exc.__cause__!r}"
            out.append((label, f"TypeError: {exc}{cause}"))
        else:
            out.append(
                (label, value if isinstance(value, str) and label.startswith("apply") else "sent")
            )
    return out


def test_arguments_are_checked_when_sent_as_celery_does(apps: tuple[Any, Any]) -> None:
    import celery

    theirs, ours = apps
    expected = _outcomes(celery, theirs)
    assert _outcomes(celeriac, ours) == expected
    found = dict(expected)  # what Celery measured, spelled out for the reader
    assert found["delay too few"] == "TypeError: add() missing 1 required positional argument: 'y'"
    assert found["send_task unchecked"] == "sent"
    assert found["apply runs here"] == "FAILURE"


def test_always_eager_checks_too(apps: tuple[Any, Any]) -> None:
    for app in apps:
        app.conf.task_always_eager = True

        @_task(app, name="api.one")
        def one(x: int) -> int:
            return x

        with pytest.raises(TypeError, match=r"one\(\) takes 1 positional argument but 2"):
            one.delay(1, 2)
        assert one.delay(4).get() == 4


def _class_tasks(pkg: Any, app: Any) -> list[Any]:
    class Mine(pkg.Task):  # type: ignore[misc]
        name = "custom.mine"

        def run(self, x: int, y: int = 2) -> int:
            return x + y

    class Unnamed(pkg.Task):  # type: ignore[misc]
        def run(self, x: int) -> int:
            return x * 10

    class Free(pkg.Task):  # type: ignore[misc]
        name = "custom.free"

        def run(self) -> None:
            return None

    mine = app.register_task(Mine())
    unnamed = app.register_task(Unnamed)  # the class: an instance is made
    seen = [
        type(mine).__name__,
        mine.name,
        mine.app is app,
        app.tasks["custom.mine"] is mine,
        mine(1),
        mine.run(1, 5),
        type(unnamed).__name__,
        unnamed.name,
        unnamed.app is app,
        unnamed(3),
        Free().app.tasks is app.tasks,  # not registered: the current app (a proxy in Celery)
        mine.apply((2,)).get(),
    ]
    try:
        mine.delay()  # class-based tasks are not checked (measured)
        seen.append("sent unchecked")
    except TypeError as exc:
        seen.append(f"TypeError: {exc}")
    return seen


def test_class_based_tasks_with_register_task(apps: tuple[Any, Any]) -> None:
    import celery

    theirs, ours = apps
    theirs.set_current()
    expected = _class_tasks(celery, theirs)
    ours.set_current()
    assert _class_tasks(celeriac, ours) == expected
    assert expected[:2] == ["Mine", "custom.mine"]
    assert expected[7] == "test_task_api.Unnamed"


def test_register_task_refuses_what_it_cannot_register(apps: tuple[Any, Any]) -> None:
    _, ours = apps

    class Mine(celeriac.Task):  # type: ignore[type-arg]
        name = "custom.opts"

        def run(self) -> int:
            return 1

    with pytest.raises(TypeError, match="Task instance or class"):
        ours.register_task(lambda: 1)
    with pytest.raises(TypeError, match="unknown option"):
        ours.register_task(Mine(), retries_max=3)
    task = ours.register_task(Mine(), max_retries=7, autoretry_for=[KeyError])
    assert (task.max_retries, task.autoretry_for) == (7, (KeyError,))


def test_graph_of_an_eager_result_is_the_result_alone(apps: tuple[Any, Any]) -> None:
    """``graph`` of a result without children: one node, no edges (as Celery's)."""
    for app in apps:

        @_task(app, name="api.leaf")
        def leaf() -> int:
            return 1

        result = leaf.apply()
        graph = result.graph
        assert list(graph) == [result] and graph[result] == [] and list(graph.edges()) == []
        assert len(graph) == 1 and result in graph and graph.valency_of(result) == 0
