"""``celeriac.contrib.django.TasksBackend``: Django's task framework (``django.tasks``;
the ``django-tasks`` package before Django 6) on a celeriac worker, which runs Django's
tasks and Celery-style ones from the same queues. The example project's ``TASKS``
setting names the backend; its queues are ``default`` (the app's ``celery`` queue) and
``reports``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from django_project import Project
from servers import leased_database

pytest.importorskip("django")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with leased_database() as url:
        yield Project(tmp_path_factory.mktemp("django-tasks") / "project", "celeriac", url)


@pytest.fixture(scope="module")
def worker(project: Project) -> Iterator[None]:
    with project.worker("-P", "threads", "-c", "2", "-Q", "celery,reports"):
        yield


def test_enqueue_and_get_result(project: Project, worker: None) -> None:
    out = project.run(
        """
        Widget.objects.create(name="report-1")
        result = finish(tasks.widget_report.enqueue("report"))
        again = tasks.widget_report.get_result(result.id)
        celery_style = tasks.add.delay(1, 2).get(timeout=10)
        print(json.dumps({
            "status": result.status, "value": result.return_value,
            "again": [again.status, again.return_value, again.args, again.id == result.id],
            "times": [stamp(result.enqueued_at), stamp(result.started_at),
                      stamp(result.finished_at)],
            "workers": result.worker_ids, "attempts": result.attempts,
            "backend": result.backend, "celery_style": celery_style,
        }))
    """
    )
    assert out["status"] == "SUCCESSFUL"
    assert out["value"] >= 1
    assert out["again"] == ["SUCCESSFUL", out["value"], ["report"], True]
    enqueued, started, finished = out["times"]
    assert enqueued <= started <= finished
    assert [w.startswith("celeriac@") for w in out["workers"]] == [True]
    assert out["attempts"] == 1
    assert out["backend"] == "default"
    assert out["celery_style"] == 3  # a Celery-style task from the same queue


def test_context_async_and_failure(project: Project, worker: None) -> None:
    out = project.run(
        """
        import asyncio
        attempt = finish(tasks.attempt_number.enqueue())
        total = finish(tasks.async_total.enqueue([1, 2, 3]))
        broken = finish(tasks.broken.enqueue("boom"))
        error = broken.errors[0]
        try:
            broken.return_value
        except ValueError as exc:
            raised = str(exc)

        async def main():
            result = await tasks.async_total.aenqueue([4, 5])
            while not result.is_finished:
                await result.arefresh()
                await asyncio.sleep(0.02)
            fetched = await tasks.async_total.aget_result(result.id)
            return [result.return_value, fetched.status]

        print(json.dumps({
            "attempt": [attempt.status, attempt.return_value],
            "total": [total.status, total.return_value],
            "broken": [broken.status, error.exception_class.__name__, "boom" in error.traceback,
                       raised],
            "async": asyncio.run(main()),
        }))
    """
    )
    assert out["attempt"] == ["SUCCESSFUL", 1]
    assert out["total"] == ["SUCCESSFUL", 6]
    assert out["broken"] == ["FAILED", "ValueError", True, "Task failed"]
    assert out["async"] == [9, "SUCCESSFUL"]


def test_queues_priorities_and_unknown_results(project: Project, worker: None) -> None:
    out = project.run(
        """
        try:
            from django.tasks import exceptions
        except ImportError:
            from django_tasks import exceptions
        sent = []
        def published(sender=None, routing_key=None, properties=None, **kwargs):
            sent.append([sender, routing_key, properties.get("priority")])
        from celeriac.signals import after_task_publish
        after_task_publish.connect(published)
        finish(tasks.slow_report.enqueue("a"))  # queue "reports", priority 50
        finish(tasks.widget_report.using(priority=100).enqueue("x"))
        finish(tasks.widget_report.using(priority=-100).enqueue("x"))
        try:
            tasks.widget_report.get_result("no-such-result")
        except exceptions.TaskResultDoesNotExist:
            missing = True
        try:
            tasks.widget_report.using(queue_name="elsewhere")
        except Exception as exc:
            invalid = type(exc).__name__
        print(json.dumps({"sent": sent, "missing": missing, "invalid": invalid}))
    """
    )
    assert out["sent"] == [
        ["demoapp.tasks.slow_report", "reports", 6],
        ["demoapp.tasks.widget_report", "celery", 9],
        ["demoapp.tasks.widget_report", "celery", 0],
    ]
    assert out["missing"] is True
    assert out["invalid"] in ("InvalidTask", "InvalidTaskError")  # Django 6, django-tasks


def test_run_after_defers_the_task(project: Project, worker: None) -> None:
    out = project.run(
        """
        from datetime import timedelta
        from django.utils import timezone
        when = timezone.now() + timedelta(seconds=1)
        result = finish(tasks.widget_report.using(run_after=when).enqueue("x"))
        print(json.dumps([stamp(when), stamp(result.started_at), result.status]))
    """
    )
    when, started, status = out
    assert status == "SUCCESSFUL"
    assert started >= when


def test_higher_priorities_run_first(tmp_path: Path) -> None:
    """Enqueued while no worker runs: the worker takes 100 before 0 before -100."""
    with leased_database() as url:
        project = Project(tmp_path / "project", "celeriac", url)
        ids = project.run("""
            ids = [tasks.slow_report.using(priority=p).enqueue(str(p)).id for p in (-100, 0, 100)]
            print(json.dumps(ids))
        """)
        with project.worker("-P", "solo", "-Q", "reports"):
            out = project.run(
                f"""
                results = [finish(tasks.slow_report.get_result(i)) for i in {ids!r}]
                print(json.dumps([[r.return_value, stamp(r.started_at)] for r in results]))
            """
            )
    order = [value for value, _ in sorted(out, key=lambda item: item[1])]
    assert order == ["100", "0", "-100"]
