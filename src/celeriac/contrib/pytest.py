"""celeriac's pytest plugin: Celery's fixtures (``celery_app``, ``celery_worker``, ...).

Installed with celeriac: a ``pytest11`` entry point named ``celeriac``
(:mod:`celeriac.contrib._pytest_plugin`, ``-p no:celeriac`` turns it off) registers this
module when pytest starts, so a suite written for ``celery.contrib.pytest`` runs unchanged
on celeriac; naming it (``pytest_plugins = ("celeriac.contrib.pytest",)``, ``-p``) works
too. When Celery's own plugin is active (by ``-p``, ``pytest_plugins`` or an entry point)
the entry point does not register this one: the two define the same fixture names, and
the suite gets the ones it asked for.

The fixtures, with Celery's names, scopes and meanings:

- ``celery_config`` (session, ``{}``), ``celery_parameters`` (session, ``{}``: arguments of
  ``Celery(...)``), ``celery_enable_logging`` (False), ``use_celery_app_trap`` (False),
  ``celery_includes`` (``()``: modules the worker imports), ``celery_worker_pool``
  (``"solo"``), ``celery_worker_parameters`` (``{}``), ``celery_class_tasks`` (``[]``):
  override them in a ``conftest.py`` to configure the two below.
- ``celery_app``: a new app per test on an in-process broker and result backend of its
  own (``memory://`` + ``cache+memory://``), with ``celery_config`` and a test's
  ``@pytest.mark.celery(**settings)`` applied; not the current app unless the test also
  asks for ``depends_on_current_app``; with ``use_celery_app_trap`` any use of the current
  app raises ``RuntimeError``.
- ``celery_worker``: a worker thread running ``celery_app``'s tasks for the test (the real
  consumer, through serialisation: :class:`celeriac.testing.TestWorker`).
- ``celery_session_app`` / ``celery_session_worker``: the same, once per session (the
  session app is the current app).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from celeriac.app import Celeriac
from celeriac.app import base as _app_state
from celeriac.testing import TestWorker

#: what a test app starts from (Celery's test defaults that mean something here)
DEFAULT_TEST_CONFIG: dict[str, Any] = {
    "broker_url": "memory://",
    "result_backend": "cache+memory://",
    "worker_hijack_root_logger": False,
}

#: ``celery_worker_pool`` values -> celeriac's in-process pools
_POOLS = {"solo": "solo", "threads": "threads", "thread": "threads", "asyncio": "asyncio"}
#: ``celery_worker_parameters`` celeriac's test worker takes
_WORKER_PARAMETERS = frozenset(
    # perform_ping_check: the worker is consuming when the fixture returns, either way
    {"queues", "concurrency", "hostname", "loglevel", "perform_ping_check"}
)


class _Trap:
    """Stands in for the current app under ``use_celery_app_trap``: any use raises."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"Test depends on current_app (it used current_app.{name})")

    def __repr__(self) -> str:
        return "<current_app trap>"


def _own_memory_url(url: Any, tag: str) -> Any:
    """An in-process URL of this app's own (``memory://`` -> ``memory://pytest-<id>``), so
    that messages or results one test leaves behind never reach another's worker."""
    if url in ("memory://", "cache+memory://"):
        return f"{url}{tag}"
    return url


@contextlib.contextmanager
def _test_app(
    config: Mapping[str, Any], parameters: Mapping[str, Any], use_trap: bool
) -> Iterator[Celeriac]:
    settings = {**DEFAULT_TEST_CONFIG, **config}
    params = dict(parameters)
    if params.get("broker") is not None:
        settings.pop("broker_url", None)
    if params.get("backend") is not None:
        settings.pop("result_backend", None)
    tag = f"pytest-{uuid.uuid4().hex[:12]}"
    for key in ("broker_url", "result_backend"):
        if key in settings:
            settings[key] = _own_memory_url(settings[key], tag)
    previous = _app_state._current
    app = Celeriac(params.pop("main", "celery.tests"), set_as_current=False, **params)
    app.conf.update_from_object(settings)
    if use_trap:
        _app_state._current = _Trap()  # type: ignore[assignment]
    try:
        yield app
    finally:
        _app_state._current = previous
        app.close()
        _forget_memory(app, tag)


def _forget_memory(app: Celeriac, tag: str) -> None:
    """Drop the in-process queues and results of this app's own memory URLs."""
    from celeriac.transports.memory import backend, broker  # noqa: PLC0415

    if app.broker_url.endswith(tag):
        broker.clear_stores(app.broker_url)
    if app.backend_url.endswith(tag):
        backend.clear_stores(app.backend_url)


@contextlib.contextmanager
def _worker(
    app: Celeriac,
    pool: Any,
    parameters: Mapping[str, Any],
    includes: Sequence[str],
    enable_logging: bool,
) -> Iterator[TestWorker | None]:
    if os.environ.get("NO_WORKER"):  # as Celery's plugin: the tests bring their own
        yield None
        return
    unknown = sorted(set(parameters) - _WORKER_PARAMETERS)
    if unknown:
        raise pytest.UsageError(
            f"celery_worker_parameters: {unknown[0]!r} is not a parameter of celeriac's test "
            f"worker (it takes {', '.join(sorted(_WORKER_PARAMETERS))})"
        )
    if pool not in _POOLS:
        raise pytest.UsageError(
            f"celery_worker_pool {pool!r}: celeriac's test worker runs in this process; "
            f"use one of {', '.join(sorted(_POOLS))}"
        )
    for module in includes:
        importlib.import_module(module)
    if enable_logging:
        from celeriac.utils.log import setup_logging  # noqa: PLC0415

        setup_logging(str(parameters.get("loglevel", "WARNING")), app.conf)
    queues = parameters.get("queues")
    if isinstance(queues, str):
        queues = [q.strip() for q in queues.split(",") if q.strip()]
    worker = TestWorker(
        app,
        queues=queues,
        pool=_POOLS[pool],
        concurrency=int(parameters.get("concurrency", 1)),
        hostname=str(parameters.get("hostname", f"gen{os.getpid()}@pytest")),
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``celery`` marker (``@pytest.mark.celery(**settings)``)."""
    config.addinivalue_line(
        "markers", "celery(**overrides): override celery configuration for a test case"
    )


def _config(request: pytest.FixtureRequest, celery_config: Mapping[str, Any]) -> dict[str, Any]:
    mark = request.node.get_closest_marker("celery")
    return {**celery_config, **(mark.kwargs if mark else {})}


@pytest.fixture(scope="session")
def use_celery_app_trap() -> bool:
    """Override to return True: then any use of the current app raises RuntimeError."""
    return False


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    """Override to return True: the worker sets up logging as a real one does."""
    return False


@pytest.fixture(scope="session")
def celery_includes() -> Sequence[str]:
    """Override: modules the worker fixtures import before starting (task modules...)."""
    return ()


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    """Override: the worker fixtures' pool (``solo``, ``threads`` or ``asyncio``)."""
    return "solo"


@pytest.fixture(scope="session")
def celery_config() -> Mapping[str, Any]:
    """Override: settings of the test apps."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    """Override: arguments of the test apps' ``Celery(...)``."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_parameters() -> Mapping[str, Any]:
    """Override: the worker fixtures' ``queues``, ``concurrency``, ``hostname``..."""
    return {}


@pytest.fixture(scope="session")
def celery_class_tasks() -> Sequence[Any]:
    """Override: class-based tasks ``celery_session_worker`` registers."""
    return []


@pytest.fixture
def celery_app(
    request: pytest.FixtureRequest,
    celery_config: Mapping[str, Any],
    celery_parameters: Mapping[str, Any],
    use_celery_app_trap: bool,
) -> Iterator[Celeriac]:
    """A new app for this test, on an in-process broker and result backend of its own."""
    config = _config(request, celery_config)
    with _test_app(config, celery_parameters, use_celery_app_trap) as app:
        yield app


@pytest.fixture
def celery_worker(
    celery_app: Celeriac,
    celery_includes: Sequence[str],
    celery_worker_pool: str,
    celery_worker_parameters: Mapping[str, Any],
    celery_enable_logging: bool,
) -> Iterator[TestWorker | None]:
    """A worker thread running ``celery_app``'s tasks until the test returns."""
    with _worker(
        celery_app,
        celery_worker_pool,
        celery_worker_parameters,
        celery_includes,
        celery_enable_logging,
    ) as worker:
        yield worker


@pytest.fixture(scope="session")
def celery_session_app(
    request: pytest.FixtureRequest,
    celery_config: Mapping[str, Any],
    celery_parameters: Mapping[str, Any],
    use_celery_app_trap: bool,
) -> Iterator[Celeriac]:
    """One app for the session (the current app, unless the trap is on)."""
    config = _config(request, celery_config)
    with _test_app(config, celery_parameters, use_celery_app_trap) as app:
        if not use_celery_app_trap:
            app.set_current()
        yield app


@pytest.fixture(scope="session")
def celery_session_worker(
    celery_session_app: Celeriac,
    celery_includes: Sequence[str],
    celery_class_tasks: Sequence[Any],
    celery_worker_pool: str,
    celery_worker_parameters: Mapping[str, Any],
    celery_enable_logging: bool,
) -> Iterator[TestWorker | None]:
    """A worker thread for the whole session, on ``celery_session_app``."""
    for task in celery_class_tasks:
        celery_session_app.register_task(task)
    with _worker(
        celery_session_app,
        celery_worker_pool,
        celery_worker_parameters,
        celery_includes,
        celery_enable_logging,
    ) as worker:
        yield worker


@pytest.fixture
def depends_on_current_app(celery_app: Celeriac) -> None:
    """Make ``celery_app`` the current app for this test."""
    celery_app.set_current()
