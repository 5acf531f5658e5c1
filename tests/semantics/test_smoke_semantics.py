"""The harness itself: one task, one chain, one failure, the same on every pair."""

from __future__ import annotations

import pytest

from semantic_cluster import Cluster

TASKS = """
@app.task(name="sem.add")
def add(x, y):
    return x + y


@app.task(name="sem.boom")
def boom():
    raise KeyError("boom")
"""


def test_a_task_and_a_chain(cluster: Cluster) -> None:
    t = cluster.tasks
    assert t.add.delay(2, 3).get(timeout=10) == 5
    assert (t.add.s(1, 1) | t.add.s(10)).delay().get(timeout=10) == 12


def test_a_failure_is_raised_on_the_client(cluster: Cluster) -> None:
    result = cluster.tasks.boom.delay()
    with pytest.raises(KeyError, match="boom"):
        result.get(timeout=10)
    assert result.state == "FAILURE"
