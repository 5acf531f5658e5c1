"""The same behaviour test against a real Celery worker and a celeriac worker.

A test module here defines ``TASKS``: the body of a tasks module (it may use ``app``,
``pkg`` -- ``celery`` or ``celeriac`` --, ``pkg_exceptions`` and ``note(name, text)``,
which appends a line to a file the test reads back with ``cluster.lines(name)``). Its
tests take the ``cluster`` fixture, which runs each module three times:

- ``celery->celery``: a Celery client and a Celery worker, the reference: what the test
  expects is measured there, not assumed;
- ``celery->celeriac``: a Celery client sending to a celeriac worker;
- ``celeriac->celeriac``: celeriac on both sides.

Each run has a worker and a Redis database of its own (module-scoped: the tests of a
module share them, so they name their note files and keys with ``cluster.token()``);
a module with ``BROKER = "amqp"`` runs on a RabbitMQ vhost of its own instead, with
``rpc://`` results.
Where celeriac deliberately differs from Celery, the test says so by branching on
``cluster.worker`` with a comment naming the line of docs/coming-from-celery.md.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from support import WorkerProcess, celery_worker, wait_until

HEADER = """
import pathlib
import {package} as pkg
import {package}.exceptions as pkg_exceptions
from {package} import Celery

DIR = pathlib.Path({notes!r})
app = Celery("semantics", broker={url!r}, backend={backend!r}{extra})


def note(name, text):
    with (DIR / name).open("a") as f:
        f.write(f"{{text}}\\n")


if pkg.__name__ == "celery":
    # the test process loads several of these modules: Celery's default shared tasks
    # would all be added (colliding by name) to any Celery app finalized later
    import functools

    app.task = functools.partial(app.task, shared=False)
"""

#: tasks the canvas semantics modules share (prepended to their own ``TASKS``)
CANVAS_TASKS = """
@app.task(name="sem.collect")
def collect(values):
    return values


@app.task(name="sem.boom")
def boom(*args):
    raise KeyError("boom")


@app.task(name="sem.record")
def record(value, name):
    note(name, repr(value))
    return value


@app.task(name="sem.errback")
def errback(task_id):  # an errback of one argument: sent as a task with the failed id
    note(f"errback-{task_id}", task_id)
"""

COMBINATIONS = ["celery->celery", "celery->celeriac", "celeriac->celeriac"]


@dataclass
class Cluster:
    """One client app and one (or more) workers on a Redis database of their own."""

    client: str  # "celery" or "celeriac": the package the test's own app comes from
    worker: str  # the package the worker runs
    url: str
    directory: Path  # the worker's folder (its tasks module and the notes)
    tasks: ModuleType  # the client-side tasks module: tasks.app, tasks.<task>
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def app(self) -> Any:
        return self.tasks.app

    @property
    def pkg(self) -> ModuleType:
        """The client's package: ``cluster.pkg.chain``, ``cluster.pkg.group`` ..."""
        return sys.modules[self.client]

    @property
    def exceptions(self) -> ModuleType:
        return sys.modules[f"{self.client}.exceptions"]

    @property
    def reference(self) -> bool:
        """True on the Celery-to-Celery run, whose results define the expected ones."""
        return self.client == "celery" and self.worker == "celery"

    @property
    def log(self) -> str:
        return "\n".join(w.log for w in self.workers)

    def token(self) -> str:
        return uuid.uuid4().hex[:12]

    def lines(self, name: str) -> list[str]:
        path = self.directory / name
        return path.read_text().splitlines() if path.exists() else []

    def wait_lines(self, name: str, count: int, timeout: float = 10) -> list[str]:
        """The note file's lines once it has at least ``count`` of them."""
        wait_until(lambda: len(self.lines(name)) >= count, timeout, f"{count} lines in {name}")
        return self.lines(name)

    def start_worker(self, *args: str, name: str | None = None) -> WorkerProcess:
        """Another worker of the same kind on the same database (stopped at the end)."""
        node = f"-n{name or 'w' + self.token()}@%h"
        pool = [] if "-P" in args else ["-P", "threads"]
        if self.worker == "celery":
            process = celery_worker(self.directory, "semtasks", *pool, node, *args)
        else:
            process = WorkerProcess(self.directory, "semtasks", "-l", "info", *pool, node, *args)
        self.workers.append(process)
        return process.start()


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
