"""Celery's own ``examples/`` (from the sdist of the celery release in this venv), with
only the word ``celery`` replaced by ``celeriac`` in their imports and commands, start
and run their tasks on a celeriac worker.

The examples name ``amqp://`` on the default vhost (shared on this machine); the broker
and result backend URLs come from ``CELERY_BROKER_URL`` / ``CELERY_RESULT_BACKEND``,
which win over the app's own settings as in Celery, so the files stay as published.
The sdist is downloaded once per machine (pip, from the configured index) and kept in
the temporary folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from servers import leased_database
from support import WorkerProcess

pytestmark = pytest.mark.slow

CELERY_VERSION = version("celery")


def _sdist_examples() -> Path:
    """``examples/`` of the celery sdist, downloaded and unpacked once (under a lock)."""
    cache = Path(tempfile.gettempdir()) / f"celeriac-celery-{CELERY_VERSION}-sdist"
    cache.mkdir(exist_ok=True)
    with (cache / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        examples = cache / f"celery-{CELERY_VERSION}" / "examples"
        if not examples.is_dir():
            pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
            proc = subprocess.run(
                [*pip, "--no-binary", ":all:", f"celery=={CELERY_VERSION}", "-d", str(cache)],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            archives = sorted(cache.glob(f"celery-{CELERY_VERSION}.tar.gz"))
            assert proc.returncode == 0 and archives, f"pip download failed:\n{proc.stderr}"
            with tarfile.open(archives[0]) as tar:
                members = [m for m in tar.getmembers() if "/examples/" in m.name]
                tar.extractall(cache, members=members, filter="data")
        return examples


IMPORT = re.compile(r"^(\s*)(from|import) celery\b", re.MULTILINE)


def adapted(name: str, into: Path) -> Path:
    """A copy of ``examples/<name>`` with ``from celery``/``import celery`` made
    celeriac's (nothing else changes)."""
    target = into / name
    shutil.copytree(_sdist_examples() / name, target)
    for path in target.rglob("*.py"):
        path.write_text(IMPORT.sub(r"\1\2 celeriac", path.read_text()))
    return target


@pytest.fixture(scope="module")
def backend_db() -> Iterator[str]:
    with leased_database() as url:
        yield url


def env_for(broker: str, backend: str | None = None) -> dict[str, str]:
    env = {"CELERY_BROKER_URL": broker}
    if backend:
        env["CELERY_RESULT_BACKEND"] = backend
    return env


def client(cwd: Path, env: dict[str, str], code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def test_tutorial(rabbit: str, tmp_path: Path) -> None:
    """``celery -A tasks worker`` of the First Steps tutorial; its app has no result
    backend, so the client checks the run through the rpc:// backend it names here."""
    folder = adapted("tutorial", tmp_path)
    env = env_for(rabbit, "rpc://")
    with WorkerProcess(folder, "tasks", "-l", "INFO", "-c", "2", env=env):
        out = client(folder, env, "from tasks import add; print(add.delay(4, 4).get(timeout=20))")
    assert out == "8"


def test_app_started_by_python_myapp_py_worker(rabbit: str, tmp_path: Path) -> None:
    """``python myapp.py worker -l INFO`` (``app.start()``); its task sleeps 10 s."""
    folder = adapted("app", tmp_path)
    env = env_for(rabbit, "rpc://")
    worker = WorkerProcess(folder, "myapp", env=env)
    worker.argv = [sys.executable, "myapp.py", "worker", "-l", "INFO", "-c", "1"]
    with worker:
        out = client(folder, env, "from myapp import add; print(add.delay(16, 16).get(timeout=30))")
    assert out == "32"


def test_next_steps_project(rabbit: str, tmp_path: Path) -> None:
    """``celery -A proj worker`` of Next Steps: a package with ``proj/celery.py``, its
    tasks included by name, results over its own ``rpc://`` backend."""
    folder = adapted("next-steps", tmp_path)
    env = env_for(rabbit)
    with WorkerProcess(folder, "proj", "-l", "INFO", "-c", "2", env=env):
        out = client(
            folder,
            env,
            "import json\n"
            "from celeriac import chain, group\n"
            "from proj.tasks import add, mul, xsum\n"
            "print(json.dumps([add.delay(2, 2).get(timeout=20),\n"
            "    chain(add.s(4, 4), mul.s(8))().get(timeout=20),\n"
            "    group(add.s(i, i) for i in range(4))().get(timeout=20),\n"
            "    xsum.delay([1, 2, 3]).get(timeout=20)]))",
        )
    assert json.loads(out) == [4, 64, [0, 2, 4, 6], 6]


def test_django_project(rabbit: str, backend_db: str, tmp_path: Path) -> None:
    """``celery -A proj worker`` in Celery's Django example: settings read from
    ``django.conf:settings`` with the CELERY namespace, tasks autodiscovered from the
    Django apps, ORM tasks. Its ``CELERY_RESULT_BACKEND`` is SQLAlchemy's
    ``db+sqlite://`` (not in celeriac), so the environment names the Redis one."""
    pytest.importorskip("django")
    folder = adapted("django", tmp_path)
    env = env_for(rabbit, backend_db)
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    with WorkerProcess(folder, "proj", "-l", "INFO", "-c", "2", "-P", "threads", env=env):
        out = client(
            folder,
            {**env, "DJANGO_SETTINGS_MODULE": "proj.settings"},
            "import json, django\n"
            "django.setup()\n"
            "from proj.celery import app\n"
            "from demoapp.models import Widget\n"
            "from demoapp.tasks import add, count_widgets, rename_widget\n"
            "w = Widget.objects.create(name='before')\n"
            "rename_widget.delay(w.id, 'after').get(timeout=20)\n"
            "w.refresh_from_db()\n"
            "print(json.dumps([add.delay(2, 3).get(timeout=20),\n"
            "    count_widgets.delay().get(timeout=20), w.name]))",
        )
    assert json.loads(out) == [5, 1, "after"]
