"""Retries and revokes stay readable across celeriac and the real ``celery`` package.

- A retry message a celeriac worker publishes is run by a Celery worker, and the other
  way round; each side's client reads the final result. (The retry goes to a queue only
  the other side consumes: a celeriac worker on the same queue would move the message to
  its delayed store, which a Celery worker does not read.)
- A celeriac revoke stores REVOKED, which a Celery client reads as its own state, and is
  broadcast as Celery's remote-control request, which a running Celery worker obeys.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import celery
import celery.exceptions
import pytest

import celeriac
from servers import leased_database
from support import (
    WorkerProcess,
    celery_worker,
    close_celery_app,
    repeat_until_logged,
    wait_until,
    write_module,
)

pytestmark = pytest.mark.slow


TASKS = """
{imports}
app = Celery("rtasks", broker="{url}", backend="{url}")

@app.task(bind=True, max_retries=3)
def retry_once(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0.5, queue="retries")
    return "{who} ran retry " + str(self.request.retries)
"""


@pytest.fixture
def db_url() -> Iterator[str]:
    """A Redis database of the test's own (they may run in parallel), flushed around."""
    with leased_database() as url:
        yield url


def modules(tmp_path: Path, url: str) -> None:
    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    write_module(
        tmp_path / "ours",
        "rtasks",
        TASKS.format(imports="from celeriac import Celery", url=url, who="celeriac"),
    )
    write_module(
        tmp_path / "theirs",
        "rtasks",
        TASKS.format(imports="from celery import Celery", url=url, who="celery"),
    )


def test_celeriac_retry_message_is_run_by_a_celery_worker(db_url: str, tmp_path: Path) -> None:
    modules(tmp_path, db_url)
    client = celery.Celery("rtasks", broker=db_url, backend=db_url)
    result = client.send_task("rtasks.retry_once")
    with WorkerProcess(tmp_path / "ours", "rtasks", "-P", "threads", "-l", "info") as ours:
        ours.wait_for(r"rtasks\.retry_once\[.*\] retry: Retry in 0\.5s")
        wait_until(lambda: result.state == "RETRY", 10, "the RETRY state")
        with celery_worker(tmp_path / "theirs", "rtasks", "-Q", "retries"):
            assert result.get(timeout=20) == "celery ran retry 1"
    close_celery_app(client)


def test_celery_retry_message_is_run_by_a_celeriac_worker(db_url: str, tmp_path: Path) -> None:
    modules(tmp_path, db_url)
    app = celeriac.Celery("rtasks", broker=db_url, backend=db_url, set_as_current=False)
    result = app.send_task("rtasks.retry_once")
    with celery_worker(tmp_path / "theirs", "rtasks", "-Q", "celery") as theirs:
        theirs.wait_for(r"Task rtasks\.retry_once\[.*\] retry: Retry in 0\.5s")
        wait_until(lambda: result.state == "RETRY", 10, "the RETRY state")
        with WorkerProcess(tmp_path / "ours", "rtasks", "-P", "threads", "-Q", "retries"):
            assert result.get(timeout=20) == "celeriac ran retry 1"
    app.close()


def test_celeriac_revoke_is_read_by_a_celery_client(db_url: str, tmp_path: Path) -> None:
    modules(tmp_path, db_url)
    app = celeriac.Celery("rtasks", broker=db_url, backend=db_url, set_as_current=False)
    sent = app.send_task("rtasks.retry_once", countdown=30)
    sent.revoke()
    client = celery.Celery("rtasks", broker=db_url, backend=db_url)
    theirs = client.AsyncResult(sent.id)
    assert theirs.state == "REVOKED"
    with pytest.raises(celery.exceptions.TaskRevokedError):
        theirs.get(timeout=5)
    close_celery_app(client)
    app.close()


def test_celeriac_revoke_reaches_a_running_celery_worker(db_url: str, tmp_path: Path) -> None:
    modules(tmp_path, db_url)
    app = celeriac.Celery("rtasks", broker=db_url, backend=db_url, set_as_current=False)
    task_id = "c0ffee00-0000-4000-8000-000000000001"
    try:
        with celery_worker(tmp_path / "theirs", "rtasks", "-Q", "celery") as theirs:
            theirs.wait_for(r"ready\.")
            # Celery's pidbox broadcast, besides our own store
            revoke = partial(app.control.revoke, task_id)
            repeat_until_logged(revoke, theirs, f"Tasks flagged as revoked: {task_id}")
            sent = app.send_task("rtasks.retry_once", task_id=task_id)
            theirs.wait_for(rf"Discarding revoked task: rtasks\.retry_once\[{task_id}\]")
        assert sent.state == "REVOKED"
    finally:
        app.close()
