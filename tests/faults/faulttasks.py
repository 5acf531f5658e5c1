"""The tasks the fault scenarios run (``celeriac -A faulttasks worker``, with this
directory as the worker's working directory). Configured from the environment:
``FAULTS_BROKER`` (URL), ``FAULTS_RUNS`` (the history's ``runs/`` directory),
``FAULTS_WORKER`` (the worker's label in the history), ``FAULTS_LEASE`` (the
visibility timeout, s). Results are not stored: the history is the record."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celeriac import Celery
from celeriac.signals import task_received
from faults.history import record_run

app = Celery("faulttasks", broker=os.environ.get("FAULTS_BROKER", "memory://"))
app.conf.update(
    task_ignore_result=True,
    broker_transport_options={"visibility_timeout": float(os.environ.get("FAULTS_LEASE", "2"))},
)
RUNS = Path(os.environ.get("FAULTS_RUNS", "."))
WORKER = os.environ.get("FAULTS_WORKER", "worker")


@task_received.connect
def _received(sender: Any = None, request: Any = None, **_: Any) -> None:
    """Record that this process received the message (its lease began just before):
    a fault between this and the run's start may also cause a redelivery."""
    if request is not None and request.task == "faulttasks.work":
        record_run(RUNS, WORKER, "R", request.id)


@app.task(bind=True)
def work(self: Any, seconds: float) -> None:
    """Record the start, take ``seconds``, record the end."""
    task_id = self.request.id
    record_run(RUNS, WORKER, "S", task_id)
    time.sleep(seconds)
    record_run(RUNS, WORKER, "E", task_id)
