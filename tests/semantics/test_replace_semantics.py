"""``Task.replace(sig)``: a running task hands its place (its id, its callbacks and
errbacks, its chain, group and chord membership) to another signature, a task, a group
or a chain; measured on a Celery worker."""

from __future__ import annotations

import pytest

from semantic_cluster import CANVAS_TASKS, Cluster

TASKS = (
    CANVAS_TASKS
    + """
@app.task(name="sem.add")
def add(x, y):
    return x + y


@app.task(name="sem.mul")
def mul(x, y):
    return x * y


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


@app.task(name="sem.xsum")
def xsum(values):
    return sum(values)


@app.task(bind=True, name="sem.replace_chain_group")
def replace_chain_group(self, x):
    return self.replace(add.s(x, 1) | pkg.group(add.s(1), add.s(2)))


@app.task(bind=True, name="sem.replace_chord")
def replace_chord(self):
    return self.replace(pkg.chord([add.si(1, 1), add.si(2, 2)], xsum.s()))


@app.task(bind=True, name="sem.ids")
def ids(self, name):
    r = self.request
    note(name, repr([r.id, r.parent_id, r.root_id, r.group, r.group_index]))
    return 1


@app.task(bind=True, name="sem.replace_ids")
def replace_ids(self, name):
    r = self.request
    note(name, repr([r.id, r.parent_id, r.root_id, r.group, r.group_index]))
    return self.replace(ids.s(name))


@app.task(bind=True, name="sem.bad")
def bad(self, kind):
    sig = add.s(1, 1)
    if kind == "chord":
        sig.options["chord"] = None
    elif kind == "empty":
        sig = pkg.chain()
    try:
        self.replace(sig)
    except pkg_exceptions.ImproperlyConfigured as exc:
        return str(exc)
    return "no error"


@app.task(bind=True, name="sem.nesting")
def nesting(self, name, depth):
    note(name, str(self.request.replaced_task_nesting))
    if depth > 0:
        return self.replace(nesting.s(name, depth - 1))
    return depth
"""
)


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


def test_replacing_with_a_chain_ending_in_a_group_and_with_a_chord(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    assert t.replace_chain_group.delay(1).get(timeout=10) == [3, 4]
    assert (t.replace_chain_group.s(1) | t.collect.s()).delay().get(timeout=10) == [3, 4]
    header = [t.replace_chain_group.s(1), t.add.si(5, 5)]
    assert pkg.chord(header, t.collect.s()).delay().get(timeout=10) == [[3, 4], 10]
    assert t.replace_chord.delay().get(timeout=10) == 6
    assert (t.replace_chord.s() | t.add.s(1)).delay().get(timeout=10) == 7
    header = [t.replace_chord.s(), t.add.si(1, 1)]
    assert pkg.chord(header, t.collect.s()).delay().get(timeout=10) == [6, 2]


def test_a_replaced_step_of_a_chain_in_a_chord_header(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    header = [pkg.chain(t.replace_add.s(1, 1), t.add.s(1)), t.add.si(5, 5)]
    assert pkg.chord(header, t.collect.s()).delay().get(timeout=10) == [3, 10]


def test_the_replacement_request_has_the_replaced_ids(cluster: Cluster) -> None:
    t, pkg, name = cluster.tasks, cluster.pkg, cluster.token()
    result = pkg.group(t.replace_ids.s(name), t.add.si(1, 1)).delay()
    assert result.get(timeout=10) == [1, 2]
    member = result.results[0].id
    before, after = cluster.lines(name)
    assert before == repr([member, None, member, result.id, 0])
    # the replaced task is the replacement's parent: it sent it
    assert after == repr([member, member, member, result.id, 0])


def test_replace_refuses_a_chord_member_and_an_empty_chain(cluster: Cluster) -> None:
    t = cluster.tasks
    chorded = "A signature replacing a task must not be part of a chord"
    assert t.bad.delay("chord").get(timeout=10) == chorded
    assert t.bad.delay("empty").get(timeout=10) == "Cannot replace with an empty chain"


def test_replace_in_an_eager_call_returns_the_replacement_value(cluster: Cluster) -> None:
    t = cluster.tasks
    assert t.replace_add.apply((1, 2)).get() == 3
