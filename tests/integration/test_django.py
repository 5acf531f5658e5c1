"""The Django example project (``examples/django``, Celery's ``examples/django`` for
celeriac), run for real: ``manage.py migrate`` on a SQLite file, ``celeriac -A proj
worker`` in the project's folder, and clients that are Django processes of the project.

Each test of the Celery-style API runs twice: with the project as it is (celeriac), and
with its two ``from celeriac import`` lines made ``from celery import`` and the real
Celery worker (the reference). Django's task framework (``TasksBackend``) is celeriac's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from django_project import Project
from servers import REDIS_URL, leased_database

pytest.importorskip("django")


@pytest.fixture(scope="module", params=["celery", "celeriac"])
def project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    with leased_database() as url:
        yield Project(tmp_path_factory.mktemp("django") / "project", str(request.param), url)


@pytest.mark.parametrize("pool", ["prefork", "threads", "asyncio"])
def test_the_example_runs_its_tasks(project: Project, pool: str) -> None:
    """The demo tasks, two of them on the ORM; the worker closes the task thread's
    database connection around each task (so the second task finds it closed, although
    the first one used it in the same thread). Celery has no asyncio pool: its reference
    run of that case uses its other single-threaded pool, solo."""
    if pool == "asyncio" and project.kind == "celery":
        pool = "solo"
    with project.worker("-P", pool, "-c", "1"):
        out = project.run("""
            w = Widget.objects.create(name="before")
            results = [
                tasks.add.delay(2, 3).get(timeout=10),
                tasks.mul.delay(3, 4).get(timeout=10),
                tasks.xsum.delay([1, 2, 3]).get(timeout=10),
                tasks.count_widgets.delay().get(timeout=10),
            ]
            tasks.rename_widget.delay(w.id, "after").get(timeout=10)
            w.refresh_from_db()
            closed = [tasks.found_connection_closed.delay().get(timeout=10) for _ in range(2)]
            print(json.dumps([results, w.name, closed]))
        """)
    results, name, closed = out
    assert results[:3] == [5, 12, 6]
    assert results[3] >= 1
    assert name == "after"
    assert closed == [True, True]


def test_delay_on_commit_sends_only_after_commit(project: Project) -> None:
    with project.worker("-P", "threads", "-c", "1"):
        out = project.run(
            """
            import importlib
            after_task_publish = importlib.import_module(KIND + ".signals").after_task_publish
            sent = []
            def published(sender=None, **kwargs):
                sent.append(sender)
            after_task_publish.connect(published)
            w = Widget.objects.create(name="start")
            with transaction.atomic():
                tasks.rename_widget.delay_on_commit(w.id, "committed")
                inside = len(sent)
            committed = len(sent)
            until(lambda: Widget.objects.get(id=w.id).name == "committed")
            try:
                with transaction.atomic():
                    tasks.rename_widget.delay_on_commit(w.id, "rolled back")
                    tasks.rename_widget.apply_async_on_commit((w.id, "rolled back"))
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
            rolled_back = len(sent)
            with transaction.atomic():
                tasks.rename_widget.apply_async_on_commit((w.id, "applied"), countdown=0)
                inside_apply = len(sent) - rolled_back
            until(lambda: Widget.objects.get(id=w.id).name == "applied")
            print(json.dumps([inside, committed, rolled_back, inside_apply, len(sent)]))
        """
        )
    inside, committed, rolled_back, inside_apply, total = out
    assert (inside, committed) == (0, 1)
    assert rolled_back == 1  # a rolled-back transaction sends nothing
    assert (inside_apply, total) == (0, 2)


def test_the_django_setup_precedes_the_task_modules(project: Project) -> None:
    """The worker starts although demoapp.tasks imports a model at its top (which
    needs ``django.setup()`` first: AppRegistryNotReady otherwise), and lists the
    tasks autodiscovery found in the installed apps."""
    with project.worker("-P", "solo") as worker:
        assert worker.proc is not None and worker.proc.poll() is None
        log = worker.log
    assert "demoapp.tasks.count_widgets" in log
    assert "proj.celery.debug_task" in log
    assert "AppRegistryNotReady" not in log


def test_celerys_result_backend_setting_is_a_clear_error(tmp_path: Path) -> None:
    """Celery's example sets ``CELERY_RESULT_BACKEND = 'db+sqlite:///results.sqlite'``
    (SQLAlchemy): the worker stops at start-up, naming the backends it has."""
    project = Project(tmp_path / "project", "celeriac", REDIS_URL)  # not reached
    project.env["DEMO_RESULT_BACKEND"] = "db+sqlite:///results.sqlite"
    worker = project.worker("-P", "solo").start(wait_ready=False)
    try:
        code = worker.wait()
    finally:
        worker.stop()
    assert code != 0
    assert "unknown scheme 'db+sqlite'" in worker.log
    assert "redis://" in worker.log
    assert "no SQLAlchemy 'db+' or django-celery-results backend" in worker.log
