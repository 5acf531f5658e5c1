"""The app: configuration, registration, routing, and results through a real worker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import celeriac
from celeriac import Celery, shared_task, states
from celeriac._loop import run_sync
from celeriac.exceptions import ImproperlyConfigured, TimeoutError
from celeriac.testing import TestWorker

_counter = iter(range(10**6))


@pytest.fixture
def app() -> Celery:
    return Celery("tapp", broker=f"memory://tapp-{next(_counter)}")


def test_unknown_setting_names_the_nearest_valid_one() -> None:
    with pytest.raises(ImproperlyConfigured, match="did you mean 'worker_concurrency'"):
        Celery("x", broker="memory://", worker_concurency=2)


def test_bad_value_names_the_setting() -> None:
    with pytest.raises(ImproperlyConfigured, match="worker_prefetch_multiplier=0 is invalid"):
        Celery("x", broker="memory://", worker_prefetch_multiplier=0)
    with pytest.raises(ImproperlyConfigured, match="did you mean 'threads'"):
        Celery("x", broker="memory://", worker_pool="thread")


def test_unknown_broker_scheme_fails_with_the_known_ones() -> None:
    app = Celery("x", broker="zmq://localhost")
    with pytest.raises(ImproperlyConfigured, match=r"unknown scheme 'zmq'.*memory://"):
        app.check_configuration()


def test_environment_variables_configure_and_are_validated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERIAC_BROKER_URL", "memory://fromenv")
    monkeypatch.setenv("CELERIAC_WORKER_CONCURRENCY", "3")
    monkeypatch.setenv("CELERIAC_TASK_ACKS_LATE", "false")
    app = Celery("x")
    assert app.broker_url == "memory://fromenv"
    assert app.conf.worker_concurrency == 3 and app.conf.task_acks_late is False
    monkeypatch.setenv("CELERIAC_WORKER_CONCURENCY", "3")
    with pytest.raises(ImproperlyConfigured, match="CELERIAC_WORKER_CONCURRENCY"):
        Celery("y")


def test_config_from_object_accepts_modules_mappings_and_namespaces() -> None:
    module = types.ModuleType("cfg")
    module.broker_url = "memory://cfg"  # type: ignore[attr-defined]
    module.result_expires = timedelta(hours=1)  # type: ignore[attr-defined]
    module.timedelta = timedelta  # type: ignore[attr-defined]  # an import, not a setting
    app = Celery("x")
    app.config_from_object(module)
    assert app.conf.broker_url == "memory://cfg" and app.conf.result_expires == 3600.0
    app.config_from_object({"CELERY_TASK_DEFAULT_QUEUE": "q", "OTHER": 1}, namespace="CELERY")
    assert app.conf.task_default_queue == "q"
    with pytest.raises(ImproperlyConfigured, match="unknown setting 'brokr_url'"):
        app.config_from_object({"brokr_url": "x"})


def test_default_broker_is_the_embedded_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERIAC_BROKER_URL", raising=False)
    app = Celery("x")
    assert app.broker_url == "sqlite:///celeriac.sqlite3"
    assert app.backend_url == app.broker_url


def test_task_names_options_and_unknown_options(app: Celery) -> None:
    @app.task
    def plain(x: int) -> int:
        return x

    @app.task(name="custom.name", queue="q2", ignore_result=True)
    def named() -> None:
        return None

    assert plain.name == f"{__name__}.plain" and app.tasks[plain.name] is plain
    assert named.name == "custom.name" and named.queue == "q2" and named.ignore_result
    assert plain(3) == 3  # a direct call runs the function here
    with pytest.raises(TypeError, match=r"unknown option 'retyr_backoff'.*'retry_backoff'"):
        app.task(retyr_backoff=True)(lambda: None)


def test_routing_by_option_task_routes_globs_and_task_queue(app: Celery) -> None:
    app.conf.task_routes = {"tapp.special": {"queue": "fast"}, "tapp.img.*": {"queue": "img"}}
    task = types.SimpleNamespace(queue="own")
    assert app.route("tapp.special", [], {}, {}) == "fast"
    assert app.route("tapp.img.resize", [], {}, {}) == "img"
    assert app.route("tapp.other", [], {}, {}, task) == "own"  # type: ignore[arg-type]
    assert app.route("tapp.other", [], {}, {}) == "celery"
    assert app.route("tapp.special", [], {}, {"queue": "explicit"}) == "explicit"
    app.conf.task_routes = [lambda name, *a, **k: {"queue": "fn"} if name == "z" else None]
    assert app.route("z", [], {}, {}) == "fn"


def test_apply_runs_locally_with_request_context(app: Celery) -> None:
    @app.task(bind=True)
    def who(self: Any, x: int) -> tuple[Any, ...]:
        self.update_state(state="PROGRESS", meta={"x": x})  # eager: stored nowhere
        return (self.request.id, self.request.is_eager, x)

    @app.task
    def fails() -> None:
        raise KeyError("k")

    result = who.apply((5,), task_id="t1")
    assert result.get() == ("t1", True, 5) and result.successful()
    assert app.AsyncResult("t1").state == states.PENDING  # update_state stored nothing
    failed = fails.apply()
    assert failed.state == states.FAILURE and isinstance(failed.result, KeyError)
    with pytest.raises(KeyError):
        failed.get()


@pytest.fixture
def worker_app(app: Celery) -> Iterator[tuple[Celery, Any]]:
    class AppError(Exception):
        pass

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def aadd(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    @app.task
    def raise_app_error(msg: str) -> None:
        raise AppError(msg)

    @app.task(bind=True)
    def context(self: Any) -> dict[str, Any]:
        r = self.request
        return {
            "id": r.id,
            "hostname": r.hostname,
            "eager": r.is_eager,
            "queue": r.delivery_info["routing_key"],
            "retries": r.retries,
        }

    ns = types.SimpleNamespace(add=add, aadd=aadd, err=raise_app_error, context=context)
    with TestWorker(app, pool="asyncio", concurrency=4) as worker:
        ns.worker = worker
        yield app, ns


def test_delay_get_and_result_states_through_the_memory_broker(
    worker_app: tuple[Celery, Any],
) -> None:
    _app, t = worker_app
    result = t.add.delay(4, 4)
    assert result.get(timeout=5) == 8
    assert result.ready() and result.successful() and not result.failed()
    assert result.state == result.status == states.SUCCESS
    assert result.date_done is not None and result.traceback is None
    assert t.aadd.delay(1, 2).get(timeout=5) == 3
    ctx = t.context.apply_async(task_id="fixed-id").get(timeout=5)
    assert ctx == {
        "id": "fixed-id",
        "hostname": "testworker@localhost",
        "eager": False,
        "queue": "celery",
        "retries": 0,
    }


def test_exception_type_message_and_forget(worker_app: tuple[Celery, Any]) -> None:
    app, t = worker_app
    result = t.err.delay("nope")
    with pytest.raises(Exception, match="nope") as info:
        result.get(timeout=5)
    assert type(info.value).__name__ == "AppError"
    assert isinstance(result.get(timeout=5, propagate=False), Exception)
    result.forget()
    assert app.AsyncResult(result.id).state == states.PENDING


def test_get_times_out_for_a_task_nobody_runs(app: Celery) -> None:
    result = app.send_task("nobody.runs.this")
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.1s"):
        result.get(timeout=0.1)
    assert result.state == states.PENDING


def test_await_result_and_join(worker_app: tuple[Celery, Any]) -> None:
    _app, t = worker_app

    async def main() -> list[int]:
        results = [await t.add.adelay(i, i) for i in range(5)]
        return [await r for r in results]

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    sent = [t.add.delay(i, 1) for i in range(20)]
    t.worker.join(timeout=10)
    assert all(r.ready() for r in sent)


def test_ignore_result_stores_nothing(worker_app: tuple[Celery, Any]) -> None:
    _app, t = worker_app
    result = t.add.apply_async((1, 1), ignore_result=True)
    t.worker.join(timeout=10)
    assert result.state == states.PENDING


def test_get_of_an_ignored_result_returns_none_at_once(worker_app: tuple[Celery, Any]) -> None:
    app, t = worker_app
    ignored = t.add.apply_async((1, 1), ignore_result=True)
    kept = t.add.apply_async((2, 2))
    assert ignored.ignored and not kept.ignored
    # no timeout given: this would wait forever for a result that is never stored
    done = threading.Event()
    got: list[Any] = []

    def wait() -> None:
        got.append(ignored.get())
        got.append(asyncio.run(ignored.aget()))
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    assert done.wait(10), "get() of an ignore_result task blocked"
    assert got == [None, None]
    assert kept.get(timeout=5) == 4
    # a task whose ignore_result is set on the task itself, sent by name
    app.conf.task_ignore_result = True
    assert app.send_task(t.add.name, (3, 3)).ignored


def test_a_prefetched_task_that_expires_before_its_turn_is_not_run(app: Celery) -> None:
    release, ran = threading.Event(), []

    @app.task(name="tasks.hold")
    def hold() -> str:
        release.wait(20)
        return "held"

    @app.task(name="tasks.late")
    def late() -> str:
        ran.append(True)
        return "ran"

    async def waiting() -> int:
        return await (await app.get_broker()).size("celery")

    with TestWorker(app, pool="threads", concurrency=1) as worker:
        first = hold.delay()
        expires = time.time() + 1.0
        second = late.apply_async(expires=expires - time.time())
        # both are fetched (the second waits in the worker, behind the first) ...
        deadline = time.monotonic() + 10
        while run_sync(waiting()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert run_sync(waiting()) == 0
        # ... and the second's expiry passes while it waits (time passing is the event)
        while time.time() <= expires:
            time.sleep(0.02)
        release.set()
        assert first.get(timeout=10) == "held"
        worker.join(timeout=10)
    assert ran == []
    assert second.state == states.REVOKED


def test_celerys_own_client_returns_none_for_an_ignored_result() -> None:
    """What the behaviour above copies, measured on the real Celery client."""
    celery = pytest.importorskip("celery")
    capp = celery.Celery("measure", broker="memory://", backend="cache+memory://")
    try:
        result = capp.AsyncResult("never-stored")
        result.ignored = True
        assert result.get() is None
    finally:
        capp.close()


def test_shared_task_registers_with_every_app() -> None:
    @shared_task
    def shared_thing() -> str:
        return "s"

    later = Celery("later", broker="memory://later")
    assert shared_thing.name in later.tasks


SHARED_TASKS_MODULE = """
from {pkg} import shared_task

@shared_task
def add(x, y):
    return x + y
"""

BIND_LATE = """
import os, {pkg}
import tasks                                   # imported before any app exists
app = {pkg}.Celery("late", broker="memory://late")
print("bound:", tasks.add.app is app, isinstance(tasks.add, {task_cls}))
print("files:", sorted(os.listdir(".")))
"""


def run_script(directory: Path, code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_shared_task_imported_before_the_app_binds_to_it(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(SHARED_TASKS_MODULE.format(pkg="celeriac"))
    code = BIND_LATE.format(pkg="celeriac", task_cls="celeriac.Task") + (
        "from celeriac.testing import TestWorker\n"
        "with TestWorker(app) as w:\n"
        "    print('result:', tasks.add.delay(2, 3).get(timeout=10))\n"
    )
    out = run_script(tmp_path, code)
    assert "bound: True True" in out
    assert "result: 5" in out
    assert "celeriac.sqlite3" not in out  # no hidden default app on the embedded broker


def test_celerys_shared_task_binds_late_too(tmp_path: Path) -> None:
    """The behaviour above, measured on the real Celery package."""
    pytest.importorskip("celery")
    (tmp_path / "tasks.py").write_text(SHARED_TASKS_MODULE.format(pkg="celery"))
    out = run_script(tmp_path, BIND_LATE.format(pkg="celery", task_cls="celery.Task"))
    assert "bound: True True" in out


def test_a_shared_task_used_with_no_app_says_so(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(SHARED_TASKS_MODULE.format(pkg="celeriac"))
    code = (
        "import os, tasks\n"
        "from celeriac.exceptions import ImproperlyConfigured\n"
        "try:\n"
        "    tasks.add.delay(1, 2)\n"
        "except ImproperlyConfigured as exc:\n"
        "    print('error:', exc)\n"
        "print('files:', sorted(os.listdir('.')))\n"
    )
    out = run_script(tmp_path, code)
    assert "error: shared task tasks.add used before any app exists" in out
    assert "celeriac.sqlite3" not in out


def test_public_names_are_pinned() -> None:
    assert sorted(celeriac.__all__) == [
        "AsyncResult",
        "Celeriac",
        "Celery",
        "Middleware",
        "Queue",
        "Signature",
        "Task",
        "__version__",
        "chain",
        "chord",
        "chunks",
        "current_app",
        "current_task",
        "group",
        "maybe_signature",
        "shared_task",
        "signature",
        "states",
        "subtask",
        "uuid",
        "xmap",
        "xstarmap",
    ]
    import celeriac.exceptions as exc_module

    for name in [
        "Retry",
        "Reject",
        "Ignore",
        "MaxRetriesExceededError",
        "SoftTimeLimitExceeded",
        "TimeLimitExceeded",
        "TimeoutError",
        "ChordError",
    ]:
        assert name in exc_module.__all__
    from celeriac.result import AsyncResult, GroupResult, ResultSet
    from celeriac.utils.log import get_task_logger

    assert GroupResult.__module__ == ResultSet.__module__ == "celeriac.result"

    assert AsyncResult is celeriac.AsyncResult and callable(get_task_logger)


def test_bad_rate_limit_options_fail_when_the_task_is_defined(app: Celery) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"rate_limit '10/x' is invalid"):
        app.task(rate_limit="10/x")(lambda: None)
    with pytest.raises(ImproperlyConfigured, match=r"rate_limit_scope='cluster' is invalid"):
        app.task(rate_limit="1/s", rate_limit_scope="cluster")(lambda: None)


def test_the_embedded_broker_needs_no_optional_package(tmp_path: Path) -> None:
    """What ``pip install celeriac`` gives (no extras) runs the quick start: none of the
    extras' packages is imported on the way (they are made unimportable here)."""
    code = """
import importlib.abc, sys
EXTRAS = {"redis", "hiredis", "aiormq", "aio_pika", "pamqp", "yarl", "psycopg", "msgpack", "gevent"}

class NoExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in EXTRAS:
            raise ImportError(f"{name} is an optional package")
        return None

sys.meta_path.insert(0, NoExtras())
from celeriac import Celery
from celeriac.testing import TestWorker

app = Celery("plain", broker="sqlite:///plain.db")

@app.task
def add(x, y):
    return x + y

with TestWorker(app) as worker:
    result = add.delay(2, 3)
    worker.join()
    print(result.get(timeout=10))
app.close()
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
