"""``task_ignore_result`` and ``task_store_errors_even_if_ignored``, measured on Celery: a
success is not stored, a failure is."""

from __future__ import annotations

import redis

from semantic_cluster import Cluster

APP_OPTIONS = "task_ignore_result=True, task_store_errors_even_if_ignored=True"

TASKS = """
@app.task(name="sem.quiet")
def quiet():
    return "quiet"


@app.task(name="sem.loud", ignore_result=False)
def loud():
    return "loud"


@app.task(name="sem.fails")
def fails():
    raise KeyError("stored anyway")
"""


def test_a_success_is_not_stored_and_a_failure_is(cluster: Cluster) -> None:
    queue = f"q{cluster.token()}"
    # one slot: the first task's result, were it stored, is stored before the second's
    cluster.start_worker("-Q", queue, "-c", "1")
    quiet = cluster.tasks.quiet.apply_async(queue=queue)
    fails = cluster.tasks.fails.apply_async(queue=queue)
    loud = cluster.tasks.loud.apply_async(queue=queue)
    assert loud.get(timeout=10) == "loud"
    client = redis.Redis.from_url(cluster.url)
    try:
        assert client.get(f"celery-task-meta-{quiet.id}") is None
        assert client.get(f"celery-task-meta-{fails.id}") is not None
    finally:
        client.close()
    assert fails.state == "FAILURE"
