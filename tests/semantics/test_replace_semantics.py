"""``Task.replace(sig)``: a running task hands its place (its id, its callbacks and
errbacks, its chain, group and chord membership) to another signature, a task, a group
or a chain; measured on a Celery worker."""

from __future__ import annotations

import pytest

from semantic_cluster import Cluster

TASKS = """
@app.task(name="sem.add")
def add(x, y):
    return x + y


@app.task(name="sem.mul")
def mul(x, y):
    return x * y


@app.task(name="sem.collect")
def collect(values):
    return values


@app.task(name="sem.boom")
def boom(*args):
    raise KeyError("boom")


@app.task(name="sem.record")
def record(value, name):
    note(name, repr(value))
    return value


@app.task(name="sem.errback")
def errback(task_id):  # an errback of one argument: sent as a task with the failed id
    note(f"errback-{task_id}", task_id)


@app.task(bind=True, name="sem.replace_add")
def replace_add(self, x, y):
    return self.replace(add.s(x, y))


@app.task(bind=True, name="sem.replace_group")
def replace_group(self, x):
    return self.replace(pkg.group(add.s(x, 1), add.s(x, 2)))


@app.task(bind=True, name="sem.replace_chain")
def replace_chain(self, x):
    return self.replace(add.s(x, 1) | mul.s(10))


@app.task(bind=True, name="sem.replace_boom")
def replace_boom(self):
    return self.replace(boom.s())


@app.task(bind=True, name="sem.replace_noted")
def replace_noted(self, name):
    note(name, "before")
    self.replace(add.s(1, 1))
    note(name, "after")


@app.task(bind=True, name="sem.nesting")
def nesting(self, name, depth):
    note(name, str(self.request.replaced_task_nesting))
    if depth > 0:
        return self.replace(nesting.s(name, depth - 1))
    return depth
"""


def test_the_caller_of_the_replaced_id_gets_the_replacement_result(cluster: Cluster) -> None:
    t, name = cluster.tasks, cluster.token()
    result = t.replace_add.delay(2, 3)
    assert result.get(timeout=10) == 5
    assert result.state == "SUCCESS"
    # nothing after replace() runs: it raises Ignore in the worker
    result = t.replace_noted.delay(name)
    assert result.get(timeout=10) == 2
    assert cluster.lines(name) == ["before"]


def test_a_replaced_chain_step_hands_its_result_on(cluster: Cluster) -> None:
    t = cluster.tasks
    result = (t.add.s(1, 1) | t.replace_add.s(10) | t.mul.s(2)).delay()
    assert result.get(timeout=10) == 24
    assert result.parent is not None
    assert result.parent.get(timeout=10) == 12


def test_replacing_with_a_group(cluster: Cluster) -> None:
    t = cluster.tasks
    assert t.replace_group.delay(5).get(timeout=10) == [6, 7]
    result = (t.replace_group.s(5) | t.collect.s()).delay()
    assert result.get(timeout=10) == [6, 7]


def test_replacing_with_a_chain(cluster: Cluster) -> None:
    t = cluster.tasks
    assert t.replace_chain.delay(1).get(timeout=10) == 20
    assert (t.replace_chain.s(1) | t.add.s(3)).delay().get(timeout=10) == 23


def test_the_replacement_keeps_callbacks_and_errbacks(cluster: Cluster) -> None:
    t, name = cluster.tasks, cluster.token()
    result = t.replace_add.apply_async((1, 2), link=t.record.s(name))
    assert result.get(timeout=10) == 3
    assert cluster.wait_lines(name, 1) == ["3"]
    result = t.replace_boom.apply_async(link_error=t.errback.s())
    with pytest.raises(KeyError):
        result.get(timeout=10)
    assert result.state == "FAILURE"
    # the errback is given the id the replacement inherited
    assert cluster.wait_lines(f"errback-{result.id}", 1) == [result.id]
    # a group and a chain replacement also keep the callback
    grouped, chained = cluster.token(), cluster.token()
    t.replace_group.apply_async((5,), link=t.record.s(grouped)).get(timeout=10)
    t.replace_chain.apply_async((1,), link=t.record.s(chained)).get(timeout=10)
    assert cluster.wait_lines(grouped, 1) == ["[6, 7]"]
    assert cluster.wait_lines(chained, 1) == ["20"]


def test_replaced_members_of_a_group_and_a_chord_header(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    assert pkg.group(t.replace_add.s(1, 1), t.add.s(2, 2)).delay().get(timeout=10) == [2, 4]
    header = [t.replace_add.s(1, 1), t.replace_group.s(1), t.replace_chain.s(0), t.add.s(3, 3)]
    result = pkg.chord(header, t.collect.s()).delay()
    assert result.get(timeout=10) == [2, [2, 3], 10, 6]


def test_replaced_task_nesting_in_the_request(cluster: Cluster) -> None:
    t, name = cluster.tasks, cluster.token()
    assert t.nesting.delay(name, 2).get(timeout=10) == 0
    assert cluster.lines(name) == ["0", "1", "2"]
