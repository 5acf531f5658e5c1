"""Settings a worker acts on, measured on Celery: ``task_queues`` (kombu's ``Queue`` and
``Exchange`` objects: a worker started without ``-Q`` consumes each declared queue) with
``task_routes``, and ``task_annotations`` (a rate limit given there limits the task)."""

from __future__ import annotations

import itertools

from semantic_cluster import Cluster

TASKS = """
import time

from kombu import Exchange, Queue

app.conf.task_queues = (
    Queue("sem_plain"),
    Queue("sem_routed", Exchange("sem_exchange", type="direct"), routing_key="sem_key"),
)
app.conf.task_default_queue = "sem_plain"
app.conf.task_routes = {"sem.routed": {"queue": "sem_routed"}}
app.conf.task_annotations = {"sem.limited": {"rate_limit": "2/s"}}


@app.task(name="sem.routed")
def routed():
    return "routed"


@app.task(name="sem.plain")
def plain():
    return "plain"


@app.task(name="sem.limited")
def limited(token, index):
    note(token, f"{index} {time.time()}")
    return index
"""


def test_a_task_routed_to_a_declared_queue_runs_without_q(cluster: Cluster) -> None:
    # the worker was started without -Q: it consumes every queue of task_queues
    assert cluster.tasks.routed.delay().get(timeout=10) == "routed"
    assert cluster.tasks.plain.delay().get(timeout=10) == "plain"


def test_a_rate_limit_in_task_annotations_spaces_the_runs(cluster: Cluster) -> None:
    token = cluster.token()
    results = [cluster.tasks.limited.delay(token, i) for i in range(3)]
    assert sorted(r.get(timeout=20) for r in results) == [0, 1, 2]
    starts = sorted(float(line.split()[1]) for line in cluster.lines(token))
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # 2/s: one run each half second (unlimited, the three start together)
    assert all(gap >= 0.4 for gap in gaps), gaps
