"""``celeriac.contrib.pytest``: Celery's fixtures, installed as a pytest plugin.

A small test suite written the way Celery's docs write one (a ``conftest.py`` with
``pytest_plugins = ("celery.contrib.pytest",)`` and fixture overrides) runs in a child
pytest twice: as written, on the real Celery with its own plugin (the reference; celeriac's
plugin, installed in the same environment, must step aside), and with ``celery`` replaced
by ``celeriac``. The same assertions hold in both.
"""

from __future__ import annotations

import sys

import pytest

pytest_plugins = ("pytester",)

CONFTEST = """
import pytest

pytest_plugins = ("{pkg}.contrib.pytest",)


@pytest.fixture(scope="session")
def celery_config():
    return {{"task_default_queue": "pytestq", "result_expires": 600}}


@pytest.fixture(scope="session")
def celery_includes():
    return ["sessiontasks"]
"""

SESSION_TASKS = """
from {pkg} import shared_task


@shared_task(name="pytest.echo")
def echo(value):
    return ["echo", value]
"""

TEST_BASIC = """
import pytest

import {pkg} as pkg


@pytest.fixture
def tasks(celery_app):
    @celery_app.task(name="pytest.mul", shared=False)
    def mul(x, y):
        return x * y

    return {{"mul": mul}}


def test_a_worker_runs_the_apps_tasks(celery_app, tasks, celery_worker):
    assert celery_app.conf.task_default_queue == "pytestq"  # celery_config applies
    assert tasks["mul"].delay(6, 7).get(timeout=20) == 42
    assert ~tasks["mul"].s(2, 3) == 6


@pytest.mark.celery(result_expires=123)
def test_the_celery_mark_overrides_the_config(celery_app):
    assert celery_app.conf.result_expires == 123
    assert celery_app.conf.task_default_queue == "pytestq"


def test_each_test_has_a_new_app(celery_app):
    assert celery_app.conf.result_expires == 600  # the mark applied to its test only


def test_the_app_is_not_current_by_default(celery_app):
    assert pkg.current_app.conf is not celery_app.conf


def test_depends_on_current_app_makes_it_current(celery_app, depends_on_current_app):
    assert pkg.current_app.conf is celery_app.conf


def test_the_defaults_of_the_override_fixtures(
    celery_parameters, celery_worker_parameters, celery_enable_logging, use_celery_app_trap,
    celery_worker_pool,
):
    assert celery_parameters == {{}} and celery_worker_parameters == {{}}
    assert celery_enable_logging is False and use_celery_app_trap is False
    assert celery_worker_pool == "solo"
"""

TEST_SESSION = """
import sessiontasks

import {pkg} as pkg


def test_the_session_worker_runs_included_shared_tasks(celery_session_app, celery_session_worker):
    assert pkg.current_app.conf is celery_session_app.conf
    assert sessiontasks.echo.delay(5).get(timeout=20) == ["echo", 5]
"""

TEST_TRAP = """
import pytest

import {pkg} as pkg


@pytest.fixture(scope="session")
def use_celery_app_trap():
    return True


def test_the_trap_refuses_the_current_app(celery_app):
    with pytest.raises(RuntimeError):
        pkg.current_app.conf
    assert celery_app.conf.task_default_queue == "pytestq"
"""


def write_suite(pytester: pytest.Pytester, pkg: str) -> None:
    files = {
        "conftest": CONFTEST,
        "sessiontasks": SESSION_TASKS,
        "test_basic": TEST_BASIC,
        "test_session": TEST_SESSION,
        "test_trap": TEST_TRAP,
    }
    pytester.makepyfile(**{name: body.format(pkg=pkg) for name, body in files.items()})
    pytester.syspathinsert()


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", *args
    )


@pytest.mark.parametrize("pkg", ["celery", "celeriac"])
def test_the_suite_passes_with_each_packages_fixtures(pytester: pytest.Pytester, pkg: str) -> None:
    write_suite(pytester, pkg)
    result = run(pytester)
    result.assert_outcomes(passed=8)


def test_celeriacs_fixtures_come_without_naming_the_plugin(pytester: pytest.Pytester) -> None:
    write_suite(pytester, "celeriac")
    conftest = pytester.path / "conftest.py"
    conftest.write_text(
        conftest.read_text().replace('pytest_plugins = ("celeriac.contrib.pytest",)', "")
    )
    result = run(pytester, "--fixtures")
    assert "fixtures defined from celeriac.contrib.pytest" in result.stdout.str()
    run(pytester).assert_outcomes(passed=8)


def test_with_celerys_plugin_active_celeriacs_steps_aside(pytester: pytest.Pytester) -> None:
    write_suite(pytester, "celery")
    out = run(pytester, "--fixtures").stdout.str()
    assert "fixtures defined from celery.contrib.pytest" in out
    assert "celeriac.contrib.pytest" not in out


def test_the_plugin_is_turned_off_by_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_off="def test_no_fixture(request):\n"
        "    with __import__('pytest').raises(Exception):\n"
        "        request.getfixturevalue('celery_app')\n"
    )
    run(pytester, "-p", "no:celeriac").assert_outcomes(passed=1)


def test_a_bad_worker_parameter_is_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
import pytest

@pytest.fixture(scope="session")
def celery_worker_parameters():
    return {"without_heartbeat": True}

def test_worker(celery_worker):
    pass
"""
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'without_heartbeat' is not a parameter of celeriac's test*"])
