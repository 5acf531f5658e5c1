"""``app.autodiscover_tasks()``, measured against the real Celery: lazy until the worker
imports its task modules (Celery: ``app.loader.import_default_modules()``), immediate
with ``force``; a package list or a callable giving one; ``related_name``; a package
without the module is skipped, an import error inside one is raised."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import celery
import pytest

import celeriac
from celeriac.exceptions import ImproperlyConfigured

# A Celery app takes in, when finalized, every @shared_task this process has seen: under
# xdist those of other test modules, some of which share a name (their own business).
pytestmark = pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning")

PACKAGES = {
    "alpha": {"tasks": "task"},
    "beta": {"jobs": "task"},
    "gamma": {"tasks": "import a_module_that_does_not_exist_{token}\n"},
    "delta": {},
}


@pytest.fixture(params=["celery", "celeriac"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Packages ``<token>_alpha`` (``tasks``), ``_beta`` (``jobs``), ``_gamma`` (a tasks
    module whose own import fails), ``_delta`` (no tasks module); yields the token."""
    token = f"ad{uuid.uuid4().hex[:8]}"
    for name, modules in PACKAGES.items():
        package = tmp_path / f"{token}_{name}"
        package.mkdir()
        (package / "__init__.py").write_text("")
        for module, source in modules.items():
            body = source
            if source == "task":
                body = (
                    "import importlib, os\n"
                    "pkg = importlib.import_module(os.environ['AD_PKG'])\n"
                    f"@pkg.current_app.task(name='{token}.{name}.{module}')\n"
                    "def job():\n    return 1\n"
                )
            (package / f"{module}.py").write_text(body.format(token=token))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield token
    for name in list(sys.modules):
        if name.startswith(token):
            del sys.modules[name]


def make_app(kind: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Callable[[], Any]]:
    """An app of ``kind`` (current), and its worker's "import the task modules" step."""
    monkeypatch.setenv("AD_PKG", kind)
    if kind == "celery":
        app: Any = celery.Celery("ad", set_as_current=True)
        app.set_current()
        return app, app.loader.import_default_modules
    app = celeriac.Celeriac("ad", broker="memory://")
    return app, app.import_modules


def test_lazy_until_the_task_modules_are_imported(
    kind: str, packages: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, import_modules = make_app(kind, monkeypatch)
    assert app.autodiscover_tasks([f"{packages}_alpha", f"{packages}_delta"]) is None
    assert f"{packages}.alpha.tasks" not in app.tasks
    assert f"{packages}_alpha.tasks" not in sys.modules
    import_modules()
    assert f"{packages}.alpha.tasks" in app.tasks  # delta, without a tasks module: skipped


def test_force_related_name_and_callable(
    kind: str, packages: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = make_app(kind, monkeypatch)
    assert app.autodiscover_tasks([f"{packages}_beta"], related_name="jobs", force=True) is None
    assert f"{packages}.beta.jobs" in app.tasks
    asked: list[bool] = []

    def later() -> list[str]:
        asked.append(True)
        return [f"{packages}_alpha"]

    app.autodiscover_tasks(later, force=True)
    assert asked == [True]
    assert f"{packages}.alpha.tasks" in app.tasks


def test_a_callable_is_called_when_the_worker_imports(
    kind: str, packages: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, import_modules = make_app(kind, monkeypatch)
    asked: list[bool] = []

    def later() -> list[str]:
        asked.append(True)
        return [f"{packages}_alpha"]

    app.autodiscover_tasks(later)
    assert asked == []
    import_modules()
    assert asked == [True]
    assert f"{packages}.alpha.tasks" in app.tasks


def test_import_errors_are_raised(
    kind: str, packages: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, import_modules = make_app(kind, monkeypatch)
    with pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist"):
        app.autodiscover_tasks([f"{packages}_gamma"], force=True)
    with pytest.raises(ModuleNotFoundError, match=f"{packages}_missing"):
        app.autodiscover_tasks([f"{packages}_missing"], force=True)
    app.autodiscover_tasks([f"{packages}_missing"])
    with pytest.raises(ModuleNotFoundError, match=f"{packages}_missing"):
        import_modules()


@pytest.mark.parametrize(
    ("url", "scheme"), [("db+sqlite:///results.sqlite", "db+sqlite"), ("django-db", "")]
)
def test_celerys_database_backends_are_a_clear_error(url: str, scheme: str) -> None:
    app = celeriac.Celeriac("db", broker="memory://", backend=url)
    with pytest.raises(ImproperlyConfigured) as info:
        app.check_configuration()
    text = str(info.value)
    assert f"result_backend {url!r}: unknown scheme {scheme!r}" in text
    for supported in ("redis://", "sqlite://", "rpc://", "memory://"):
        assert supported in text
    assert "no SQLAlchemy 'db+' or django-celery-results backend" in text
