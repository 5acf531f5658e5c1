"""``revoke`` of a task that a worker is running, without ``terminate``.

Measured on Celery: the task keeps the state it stored (here PROGRESS) after every
worker has acted on the revoke, finishes, and its result is stored.
"""

from __future__ import annotations

from semantic_cluster import Cluster
from support import wait_until

TASKS = """
import time


@app.task(name="rv.hold", bind=True)
def hold(self, key):
    self.update_state(state="PROGRESS", meta={"step": 1})
    note(key, "started")
    flag = DIR / (key + ".go")
    deadline = time.monotonic() + 10
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "finished" if flag.exists() else "gave up"
"""


def test_revoking_a_running_task_keeps_its_state_and_result(cluster: Cluster) -> None:
    key = cluster.token()
    result = cluster.tasks.hold.delay(key)
    cluster.wait_lines(key, 1)
    assert result.state == "PROGRESS"
    if cluster.client == "celery":
        # the workers' replies: each has flagged the task revoked when this returns
        replies = cluster.app.control.revoke(result.id, reply=True, timeout=5)
        assert len(replies) == 1
    else:
        cluster.app.control.revoke(result.id)  # durable: in effect when it returns
    assert result.state == "PROGRESS"
    assert result.info == {"step": 1}
    (cluster.directory / f"{key}.go").touch()
    assert result.get(timeout=10) == "finished"
    assert result.state == "SUCCESS"


def test_revoking_a_queued_task_stops_it(cluster: Cluster) -> None:
    """The other half: a task no worker has started does not run."""
    key = cluster.token()
    result = cluster.tasks.hold.apply_async((key,), countdown=2)
    cluster.app.control.revoke(result.id)
    wait_until(lambda: result.state == "REVOKED", 10, "the queued task revoked")
    assert cluster.lines(key) == []
