"""The app's Celery-named API that third-party code uses (``app.Task``, ``app.AsyncResult``,
``app.GroupResult``, ``app.signature``, ``app.now``), ``celeriac.uuid`` and ``~sig``: each
test runs on the real Celery package too, so what it expects is Celery's behaviour."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest

import celeriac
from celeriac.exceptions import ImproperlyConfigured
from celeriac.testing import TestWorker

PACKAGES = ["celery", "celeriac"]


@pytest.fixture(params=PACKAGES)
def pkg(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


def _task(app: Any, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``app.task(**options)`` of either package, typed for the checker; not shared."""
    return cast("Callable[[Callable[..., Any]], Any]", app.task(shared=False, **options))


def _app(pkg: ModuleType, **settings: Any) -> Any:
    return pkg.Celery(
        "api", broker="memory://", backend="cache+memory://", set_as_current=False, **settings
    )


def test_app_task_is_the_base_every_task_of_the_app_builds_on(pkg: ModuleType) -> None:
    app = _app(pkg)
    assert app.Task is app.Task  # made once per app
    assert issubclass(app.Task, pkg.Task)
    assert app.Task is not _app(pkg).Task  # each app its own

    @_task(app)
    def plain(x: int) -> int:
        return x

    assert isinstance(plain, app.Task)
    assert plain.app is app


def test_a_subclass_of_app_task_is_a_base_for_tasks(pkg: ModuleType) -> None:
    app = _app(pkg, task_always_eager=True)
    seen: list[str] = []

    class Audited(app.Task):  # type: ignore[name-defined,misc]
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            seen.append(f"{self.name} {retval}")

        def on_failure(
            self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
        ) -> None:
            seen.append(f"{self.name} failed {exc!r}")

        def after_return(self, status: str, *args: Any) -> None:
            seen.append(status)

        def helper(self) -> str:
            return "helped"

    @_task(app, base=Audited, name="api.add")
    def add(x: int, y: int) -> int:
        return x + y

    assert isinstance(add, Audited) and isinstance(add, app.Task)
    assert add.helper() == "helped"
    assert Audited().app is app

    @_task(app, base=Audited, name="api.fail")
    def fail() -> None:
        raise KeyError("k")

    assert add.delay(2, 3).get() == 5
    assert seen == ["api.add 5", "SUCCESS"]
    assert fail.apply().failed()
    assert seen[2:] == ["api.fail failed KeyError('k')", "FAILURE"]


def test_task_cls_gives_app_task_its_base(pkg: ModuleType) -> None:
    twin = CustomTask if pkg is celeriac else CeleryCustomTask
    for task_cls in (twin, f"{__name__}:{twin.__name__}"):
        app = _app(pkg, task_cls=task_cls)
        assert issubclass(app.Task, twin)

        @_task(app)
        def t() -> None:
            return None

        assert t.custom == "yes"


class CustomTask(celeriac.Task):  # type: ignore[type-arg]
    """``task_cls``: this class for celeriac, its twin below for Celery."""

    custom = "yes"


import celery  # noqa: E402 - the twin needs the real package

CeleryCustomTask = type("CeleryCustomTask", (celery.Task,), {"custom": "yes"})


def test_task_cls_must_be_a_task_class() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"subclass of celeriac\.Task"):
        _ = _app(celeriac, task_cls=dict).Task
    with pytest.raises(ImproperlyConfigured, match=r"cannot import 'no\.such:Thing'"):
        _ = _app(celeriac, task_cls="no.such:Thing").Task


def test_app_signature_by_name_is_bound_to_the_app(pkg: ModuleType) -> None:
    app = _app(pkg)
    sig = app.signature("api.add", (2, 2), {"z": 1}, countdown=10)
    assert sig.task == "api.add"
    assert tuple(sig.args) == (2, 2) and sig.kwargs == {"z": 1}
    assert sig.options == {"countdown": 10}
    assert sig.app is app
    again = app.signature(dict(sig))
    assert again == sig and again.app is app


def test_result_classes_of_the_app_are_bound_to_it(pkg: ModuleType) -> None:
    app = _app(pkg)
    result = app.AsyncResult("t1")
    assert isinstance(result, pkg.result.AsyncResult) and isinstance(result, app.AsyncResult)
    assert result.app is app and result.id == "t1"
    group = app.GroupResult("g1", [result, app.AsyncResult("t2")])
    assert isinstance(group, pkg.result.GroupResult)
    assert group.app is app and [r.id for r in group.results] == ["t1", "t2"]
    assert app.ResultSet([result]).app is app


def test_a_saved_group_result_is_restored_through_app_group_result(
    pkg: ModuleType, tmp_path: Path
) -> None:
    backend = "cache+memory://" if pkg.__name__ == "celery" else f"sqlite:///{tmp_path}/r.db"
    app = pkg.Celery("api", broker="memory://", backend=backend, set_as_current=False)
    group_id = str(uuid.uuid4())
    app.GroupResult(group_id, [app.AsyncResult("a"), app.AsyncResult("b")]).save()
    restored = app.GroupResult.restore(group_id)
    assert restored is not None and restored.app is app
    assert [r.id for r in restored.results] == ["a", "b"]
    assert app.GroupResult.restore(str(uuid.uuid4())) is None


def test_now_is_aware_and_utc_by_default(pkg: ModuleType) -> None:
    app = _app(pkg)
    assert app.now().utcoffset() == timedelta(0)
    assert str(app.timezone) == "UTC" and app.uses_utc_timezone()


def test_uuid_is_celerys(pkg: ModuleType) -> None:
    from celeriac.utils import uuid as utils_uuid

    for make in (pkg.uuid, utils_uuid, celeriac.uuid):
        value = make()
        assert isinstance(value, str) and len(value) == 36
        assert uuid.UUID(value).version == 4
    assert celeriac.uuid() != celeriac.uuid()


def test_invert_sends_and_waits_eagerly(pkg: ModuleType) -> None:
    app = _app(pkg, task_always_eager=True)

    @_task(app, name="api.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    assert ~mul.s(6, 7) == 42
    assert ~(mul.s(2, 3) | mul.s(10)) == 60


def test_invert_sends_to_a_worker_and_waits() -> None:
    app = celeriac.Celery("inv", broker="memory://inv", set_as_current=False)

    @app.task(name="inv.add")
    def add(x: int, y: int) -> int:
        return x + y

    with TestWorker(app):
        assert ~add.s(40, 2) == 42
        assert ~celeriac.group(add.s(1, 1), add.s(2, 2)) == [2, 4]
