"""``raise Reject(...)`` as Celery 5.7's worker handles it on Redis.

Measured on Celery: ``Reject(requeue=False)`` stores FAILURE with the ``Reject`` itself
and no traceback, and calls the errbacks; ``Reject(requeue=True)`` stores nothing and
the message comes back flagged ``delivery_info['redelivered']``. Celery puts it back at
once: a task that always rejects runs hundreds of times a second. celeriac's worker puts
the first requeue back at once too and pauses each further one of the same message
longer (0.1 s, doubling, up to 10 s) -- a deliberate difference, in
docs/coming-from-celery.md.
"""

from __future__ import annotations

import itertools
import json

import pytest

from semantic_cluster import Cluster
from support import wait_until

TASKS = """
import json
import time


@app.task(name="rej.requeue", bind=True, acks_late=True)
def requeue(self, key, times):
    runs = len((DIR / key).read_text().splitlines()) if (DIR / key).exists() else 0
    info = self.request.delivery_info
    note(key, json.dumps([info.get("redelivered"), self.request.retries, time.time()]))
    if times is None or runs < times:
        raise pkg_exceptions.Reject("again", requeue=True)
    return "ran"


@app.task(name="rej.drop", acks_late=True)
def drop():
    raise pkg_exceptions.Reject("no", requeue=False)


@app.task(name="rej.eb_old")
def eb_old(task_id):
    note(task_id, "errback")
"""


def _runs(cluster: Cluster, key: str, count: int) -> list[list[float]]:
    return [json.loads(line) for line in cluster.wait_lines(key, count)]


def test_reject_with_requeue_redelivers_flagged(cluster: Cluster) -> None:
    key = cluster.token()
    result = cluster.tasks.requeue.delay(key, 2)
    assert result.get(timeout=10) == "ran"
    runs = _runs(cluster, key, 3)
    assert [(redelivered, retries) for redelivered, retries, _ in runs] == [
        (False, 0),
        (True, 0),
        (True, 0),
    ]


def test_reject_with_requeue_forever_does_not_spin(cluster: Cluster) -> None:
    key = cluster.token()
    result = cluster.tasks.requeue.delay(key, None)
    runs = _runs(cluster, key, 5)[:5]
    assert [redelivered for redelivered, _, _ in runs] == [False, True, True, True, True]
    assert result.state == "PENDING"  # a requeued task stores nothing
    if cluster.worker == "celeriac":
        # deliberate difference (docs/coming-from-celery.md): Celery runs it again at
        # once every time; celeriac pauses 0.1 s before the second requeue, doubling
        # (less 10% for the broker's millisecond clock; Celery's gaps are milliseconds)
        gaps = [b[2] - a[2] for a, b in itertools.pairwise(runs)]
        assert gaps[1] >= 0.09 and gaps[2] >= 0.18 and gaps[3] >= 0.36, gaps
    cluster.app.control.revoke(result.id)  # ends the loop
    wait_until(lambda: result.state == "REVOKED", 10, "the rejecting task revoked")


def test_reject_without_requeue_stores_failure(cluster: Cluster) -> None:
    result = cluster.tasks.drop.apply_async(link_error=cluster.tasks.eb_old.s())
    with pytest.raises(cluster.exceptions.Reject) as raised:
        result.get(timeout=10)
    assert raised.value.args == ("no", False)
    assert result.state == "FAILURE"
    assert result.traceback is None
    assert cluster.wait_lines(result.id, 1) == ["errback"]
