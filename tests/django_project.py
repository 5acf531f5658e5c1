"""The Django example project (``examples/django``) copied into a temporary folder, for
the tests of the Django integration: its worker, and client scripts run as Django
processes of the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from support import ROOT, WorkerProcess, celery_worker

EXAMPLE = ROOT / "examples" / "django"

#: what every client script starts with: a Django process of the project
PRELUDE = """
import json, os, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
import django
django.setup()
from django.db import transaction
from demoapp.models import Widget
from demoapp import tasks

def until(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)

def finish(result):  # a Django TaskResult, finished (Django's API has no blocking wait)
    until(lambda: result.refresh() or result.is_finished)
    return result

def stamp(value):
    return value.isoformat() if value else None
"""


class Project:
    """A copy of the example project in a temporary folder, with its database migrated."""

    def __init__(
        self, where: Path, kind: str, redis_url: str, python: str = sys.executable
    ) -> None:
        self.dir = where
        self.kind = kind
        self.python = python
        shutil.copytree(EXAMPLE, where, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
        if kind == "celery":  # Celery's own example: the import lines name celery
            for path in (where / "proj" / "celery.py", where / "demoapp" / "tasks.py"):
                text = path.read_text()
                path.write_text(text.replace("from celeriac import", "from celery import"))
        self.env = {
            "DEMO_BROKER_URL": redis_url,
            "DEMO_RESULT_BACKEND": redis_url,
            "DEMO_DATABASE": str(where / "db.sqlite3"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if kind == "celery":  # TasksBackend is celeriac's: Django's reference backend here
            self.env["DEMO_TASKS_BACKEND"] = "django_tasks.backends.immediate.ImmediateBackend"
        self.manage("migrate", "-v", "0")

    def manage(self, *args: str) -> None:
        done = subprocess.run(
            [self.python, "manage.py", *args],
            cwd=self.dir,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def worker(self, *args: str) -> WorkerProcess:
        if self.kind == "celery":
            worker = celery_worker(self.dir, "proj", *args)
        else:
            worker = WorkerProcess(self.dir, "proj", "-l", "INFO", *args)
            worker.argv[0] = self.python
        worker.env.update(self.env)
        return worker

    def run(self, script: str) -> Any:
        """Run a client script in the project; the JSON it prints last."""
        done = subprocess.run(
            [self.python, "-c", f"KIND = {self.kind!r}\n{PRELUDE}{textwrap.dedent(script)}"],
            cwd=self.dir,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])
