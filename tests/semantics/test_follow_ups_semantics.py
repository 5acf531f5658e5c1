"""A follow-up of a finished task (a ``link`` callback, the next chain step, an
errback) that cannot be sent, measured against Celery 5.7's worker.

Celery's worker stores the task itself as FAILURE with the sending error (and sends none
of its callbacks). celeriac keeps the task's own result (it ran and succeeded), sends the
other follow-ups, and stores the error as the FAILURE of the follow-ups that have an id,
so a caller waiting on the end of a chain gets it (docs/coming-from-celery.md)."""

from __future__ import annotations

import pytest

from semantic_cluster import Cluster

TASKS = """
@app.task(name="fu.add")
def add(x, y):
    return x + y


@app.task(name="fu.record")
def record(value, key):
    note(key, repr(value))
    return value


@app.task(name="fu.fail")
def fail(*args):
    raise KeyError("nope")
"""

# a countdown neither worker can turn into a time: the follow-up fails to be sent
BAD = {"countdown": "soon"}


def test_a_callback_that_cannot_be_sent(cluster: Cluster) -> None:
    t, key = cluster.tasks, cluster.token()
    result = t.add.apply_async((1, 1), link=[t.add.s(1).set(**BAD), t.record.s(key)])
    if cluster.worker == "celery":
        with pytest.raises(TypeError):
            result.get(timeout=10)
        assert result.state == "FAILURE"
        return
    assert result.get(timeout=10) == 2
    assert result.state == "SUCCESS"
    assert cluster.wait_lines(key, 1) == ["2"]  # the other callback was sent
    assert "could not be sent" in cluster.log


def test_a_chain_step_that_cannot_be_sent(cluster: Cluster) -> None:
    t = cluster.tasks
    result = (t.add.s(1, 1) | t.add.s(1).set(**BAD) | t.add.s(2)).apply_async()
    first = result.parent.parent
    with pytest.raises((TypeError, ValueError)):  # each worker's words for the countdown
        result.get(timeout=10)
    assert result.state == "FAILURE"
    assert first.state == ("FAILURE" if cluster.worker == "celery" else "SUCCESS")


def test_an_errback_that_cannot_be_sent(cluster: Cluster) -> None:
    """The task's FAILURE stays, and the other errbacks are sent."""
    t, key = cluster.tasks, cluster.token()
    result = t.fail.apply_async(link_error=[t.add.s(1).set(**BAD), t.record.s(key)])
    with pytest.raises(KeyError):
        result.get(timeout=10)
    assert result.state == "FAILURE"
    if cluster.worker == "celery":
        return  # (what Celery does with the other errbacks is not compared here)
    assert cluster.wait_lines(key, 1) == [repr(result.id)]
