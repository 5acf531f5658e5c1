"""``worker_enable_remote_control=False``, measured on Celery: the worker answers no
remote control (a ping gets no reply) and still runs tasks."""

from __future__ import annotations

from semantic_cluster import Cluster

APP_OPTIONS = "worker_enable_remote_control=False"

TASKS = """
@app.task(name="sem.alive")
def alive():
    return "alive"
"""


def test_a_worker_without_remote_control_answers_no_ping(cluster: Cluster) -> None:
    assert cluster.tasks.alive.delay().get(timeout=10) == "alive"
    assert cluster.app.control.ping(timeout=1.0) == []
