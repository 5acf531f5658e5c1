"""The ``cluster`` fixture: see ``semantic_cluster.py`` beside ``conftest.py``."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest

from semantic_cluster import COMBINATIONS, HEADER, Cluster, load
from servers import leased_database
from support import close_celery_app, write_module


@pytest.fixture(scope="module", params=COMBINATIONS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    client, worker = request.param.split("->")
    body = getattr(request.module, "TASKS", "")
    extra = getattr(request.module, "APP_OPTIONS", "")
    extra = f", {extra}" if extra else ""
    root = tmp_path_factory.mktemp("semantics")
    (root / "worker").mkdir()
    (root / "client").mkdir()
    with leased_database() as url:
        for side, package in (("worker", worker), ("client", client)):
            notes = str(root / "worker")
            source = HEADER.format(package=package, url=url, notes=notes, extra=extra) + body
            write_module(root / side, "semtasks", source)
        module_name = f"semtasks_{client}_{uuid.uuid4().hex[:8]}"
        tasks = load(root / "client" / "semtasks.py", module_name)
        found = Cluster(client, worker, url, root / "worker", tasks)
        try:
            found.start_worker("-c", "4", name="semantics")
            yield found
        finally:
            for process in found.workers:
                process.stop()
            if client == "celery":
                close_celery_app(tasks.app)
            else:
                tasks.app.close()
            sys.modules.pop(module_name, None)
