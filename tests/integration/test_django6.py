"""The Django example on Django 6 itself, whose task framework is ``django.tasks`` (the
default suite's Django 5.2 uses the ``django-tasks`` package): a Python 3.12 virtual
environment in a temporary folder gets celeriac (from this checkout) and Django 6, and
runs the example's worker and a client of both task APIs. Django 6 needs Python 3.12,
which celeriac itself does not: without one the test is skipped, saying so."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_project import Project
from servers import leased_database
from support import ROOT

pytestmark = pytest.mark.slow


def python312() -> str | None:
    """A working Python 3.12 interpreter (on PATH, or one pyenv installed), or None."""
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which("python3.12") or ""]
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3.12"))
    for candidate in filter(None, candidates):
        done = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip() == "True":
            return candidate
    return None


@pytest.fixture(scope="module")
def django6_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    base = python312()
    if base is None:
        pytest.skip("Django 6 needs Python 3.12, and no python3.12 is installed here")
    where = tmp_path_factory.mktemp("django6") / "venv"
    subprocess.run([base, "-m", "venv", str(where)], check=True, capture_output=True)
    python = str(where / "bin" / "python")
    install = ["install", f"{ROOT}[redis]", "django>=6,<7"]
    done = subprocess.run(
        [python, "-m", "pip", "-q", "--disable-pip-version-check", *install],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return python


@pytest.fixture
def project(django6_python: str, tmp_path: Path) -> Iterator[Project]:
    with leased_database() as url:
        yield Project(tmp_path / "project", "celeriac", url, python=django6_python)


def test_the_example_on_django_6(project: Project) -> None:
    with project.worker("-P", "prefork", "-c", "2"):
        out = project.run("""
            from celeriac.contrib.django import tasks_backend
            w = Widget.objects.create(name="six")
            with transaction.atomic():
                tasks.rename_widget.delay_on_commit(w.id, "renamed")
            until(lambda: Widget.objects.get(id=w.id).name == "renamed")
            report = finish(tasks.widget_report.enqueue("ren"))
            attempt = finish(tasks.attempt_number.enqueue())
            broken = finish(tasks.broken.enqueue("boom"))
            print(json.dumps({
                "django": django.VERSION[0], "framework": tasks_backend._tasks.__name__,
                "celery_style": [tasks.add.delay(2, 3).get(timeout=10),
                                 tasks.count_widgets.delay().get(timeout=10)],
                "report": [report.status, report.return_value],
                "again": tasks.widget_report.get_result(report.id).status,
                "attempt": attempt.return_value,
                "broken": [broken.status, broken.errors[0].exception_class.__name__],
            }))
        """)
    assert out["django"] >= 6
    assert out["framework"] == "django.tasks"
    assert out["celery_style"] == [5, 1]
    assert out["report"] == ["SUCCESSFUL", 1]
    assert out["again"] == "SUCCESSFUL"
    assert out["attempt"] == 1
    assert out["broken"] == ["FAILED", "ValueError"]
