"""Two different envelopes that share a ``delivery_tag`` (a non-kombu producer, a tool
that re-sends envelopes) keep a lease each: after the worker that held both is killed
(SIGKILL), both come back and run (issue 15). The broker-level cases, on every broker,
are in the conformance suite (``LeaseRecoveryConformance``, ``DeadLetterConformance``)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celery
from celeriac.protocol import build_task_message
from celeriac.testing.conformance import opened
from celeriac.transports.redis.broker import RedisBroker
from servers import leased_database
from support import WorkerProcess, wait_until, write_module

TASKS = """
import os, pathlib, time
from celeriac import Celery

DIR = pathlib.Path(__file__).resolve().parent
app = Celery("stasks", broker="{url}")
app.conf.broker_transport_options = {{"visibility_timeout": 2}}

@app.task
def hold(name):
    with open(DIR / f"{{name}}.attempts", "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    deadline = time.monotonic() + 60
    while not (DIR / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return name
"""


@pytest.fixture
def db_url() -> Iterator[str]:
    with leased_database() as url:
        yield url


def _attempts(directory: Path, name: str) -> list[str]:
    path = directory / f"{name}.attempts"
    return path.read_text().split() if path.exists() else []


async def _send_sharing_a_tag(url: str, names: list[str]) -> list[str]:
    messages = [build_task_message("stasks.hold", (name,)) for name in names]
    for m in messages:
        m.properties["delivery_tag"] = "one-tag-for-all"
    async with opened(RedisBroker(url)) as broker:
        await broker.publish_many([("celery", m, 0, None) for m in messages])
    return [str(m.task_id) for m in messages]


def test_two_envelopes_sharing_a_tag_both_survive_a_killed_worker(
    db_url: str, tmp_path: Path
) -> None:
    write_module(tmp_path, "stasks", TASKS.format(url=db_url))
    client = Celery("stasks", broker=db_url, set_as_current=False)
    with WorkerProcess(tmp_path, "stasks", "-P", "threads", "-c", "2") as worker:
        ids = asyncio.run(_send_sharing_a_tag(db_url, ["a", "b"]))
        wait_until(
            lambda: _attempts(tmp_path, "a") and _attempts(tmp_path, "b"), 20, "both to start"
        )
        assert worker.proc is not None
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.wait()
    (tmp_path / "release").touch()
    with WorkerProcess(tmp_path, "stasks", "-P", "threads", "-c", "2"):
        results = [client.AsyncResult(task_id).get(timeout=30) for task_id in ids]
    assert results == ["a", "b"]
    assert len(_attempts(tmp_path, "a")) == 2 and len(_attempts(tmp_path, "b")) == 2
