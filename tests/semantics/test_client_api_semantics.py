"""The client-side result API against a worker: ``children``, ``collect()``,
``iterdeps()``, ``graph`` after tasks that send tasks, chain results nested through
``.parent`` as Celery nests them, ``GroupResult``'s methods, and a class-based task
registered with ``app.register_task`` run by the worker."""

from __future__ import annotations

from typing import Any

import pytest

from semantic_cluster import Cluster
from support import wait_until

TASKS = """
@app.task(name="sem.add")
def add(x, y):
    return x + y


@app.task(name="sem.boom")
def boom():
    raise KeyError("boom")


@app.task(name="sem.spawn")
def spawn(n):
    for i in range(n):
        add.delay(i, i)
    return n


@app.task(name="sem.fanout")
def fanout(n):
    pkg.group(add.s(i, 1) for i in range(n)).delay()
    return n


class Multiply(pkg.Task):
    name = "sem.multiply"

    def run(self, x, y=2):
        return [x * y, self.app.main, self.name]


multiply = app.register_task(Multiply())
"""


def shape(result: Any, depth: int = 0) -> Any:
    """A result's type and the types of its ``parent`` chain (ids left out)."""
    if result is None or depth > 6:
        return None
    members = [shape(r, depth + 1) for r in getattr(result, "results", None) or []]
    return (type(result).__name__, members, shape(result.parent, depth + 1))


def test_children_collect_iterdeps_and_graph(cluster: Cluster) -> None:
    t = cluster.tasks
    result = t.spawn.delay(3)
    assert result.get(timeout=10) == 3
    children = result.children
    assert [type(c).__name__ for c in children] == ["AsyncResult"] * 3
    assert [c.get(timeout=10) for c in children] == [0, 2, 4]  # in the order sent
    assert [c.parent for c in children] == [None, None, None]
    collected = list(result.collect(timeout=10))
    assert [value for _, value in collected] == [3, 0, 2, 4]
    assert [node.id for node, _ in collected] == [result.id] + [c.id for c in children]
    deps = [(p.id if p is not None else None, n.id) for p, n in result.iterdeps()]
    assert deps == [(None, result.id)] + [(result.id, c.id) for c in children]
    graph = result.graph
    assert [n.id for n in graph] == [result.id] + [c.id for c in children]
    assert [c.id for c in graph[result]] == [c.id for c in children]
    assert [n.id for n in graph.edges()] == [result.id]
    assert [graph.valency_of(n) for n in graph] == [3, 0, 0, 0]
    assert len(graph) == 4


def test_a_group_sent_by_a_task_is_its_child(cluster: Cluster) -> None:
    result = cluster.tasks.fanout.delay(2)
    assert result.get(timeout=10) == 2
    (child,) = result.children
    assert type(child).__name__ == "GroupResult"
    assert child.get(timeout=10) == [1, 2]
    assert [value for _, value in result.collect(timeout=10)] == [2, [1, 2], 1, 2]


def test_an_unfinished_result_stops_iterdeps(cluster: Cluster) -> None:
    result = cluster.tasks.add.apply_async((1, 1), countdown=30)
    assert result.children is None  # PENDING: no meta yet
    with pytest.raises(cluster.exceptions.IncompleteStream):
        list(result.iterdeps())
    assert [n.id for _, n in result.iterdeps(intermediate=True)] == [result.id]
    result.revoke()


def test_chain_results_nest_through_parent(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    last = (t.add.s(1, 1) | t.add.s(2) | t.add.s(3)).delay()
    assert last.get(timeout=10) == 7
    middle, first = last.parent, last.parent.parent
    assert first.parent is None
    assert [first.get(timeout=10), middle.get(timeout=10)] == [2, 4]
    assert [c.id for c in first.children] == [middle.id]  # each step's child: the next
    assert [c.id for c in middle.children] == [last.id]
    assert last.children == []
    assert [value for _, value in first.collect(timeout=10)] == [2, 4, 7]

    to_group = (t.add.s(1, 1) | pkg.group(t.add.s(2), t.add.s(3))).delay()
    assert to_group.get(timeout=10) == [4, 5]
    assert shape(to_group) == (
        "GroupResult",
        [("AsyncResult", [], None)] * 2,
        ("AsyncResult", [], None),
    )
    assert [c.id for c in to_group.parent.children] == [to_group.id]

    after_group = (pkg.group(t.add.s(2, 1), t.add.s(3, 1)) | t.add.si(1, 1)).delay()
    assert after_group.get(timeout=10) == 2
    assert shape(after_group)[0] == "AsyncResult"
    assert shape(after_group)[2][0] == "GroupResult"

    three = (t.add.s(1, 1) | pkg.group(t.add.s(2), t.add.s(3)) | t.add.si(1, 1)).delay()
    assert three.get(timeout=10) == 2
    assert shape(three)[2][0] == "GroupResult"
    assert shape(three)[2][2] == ("AsyncResult", [], None)

    chord = pkg.chord([t.add.s(1, 1), t.add.s(2, 2)], t.add.si(5, 5)).delay()
    assert chord.get(timeout=10) == 10
    assert shape(chord) == (
        "AsyncResult",
        [],
        ("GroupResult", [("AsyncResult", [], None)] * 2, None),
    )


def test_group_result_methods(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    group = pkg.group(t.add.s(i, i).set(countdown=1) for i in range(3)).delay()
    assert type(group).__name__ == "GroupResult"
    assert len(group) == 3 and [r.id for r in group] == [r.id for r in group.results]
    assert [r.id for r in group.children] == [r.id for r in group.results]
    assert (group.ready(), group.waiting(), group.completed_count()) == (False, True, 0)
    assert group.join(timeout=10) == [0, 2, 4]
    assert (group.ready(), group.waiting(), group.successful(), group.failed()) == (
        True,
        False,
        True,
        False,
    )
    assert group.completed_count() == 3

    group.save()
    restored = cluster.pkg.result.GroupResult.restore(group.id, app=cluster.app)
    assert restored.id == group.id
    assert [r.id for r in restored.results] == [r.id for r in group.results]
    assert restored.get(timeout=10) == [0, 2, 4]
    group.delete()
    assert cluster.pkg.result.GroupResult.restore(group.id, app=cluster.app) is None

    mixed = pkg.group(t.add.s(1, 1), t.boom.s()).delay()
    assert mixed.join(timeout=10, propagate=False)[0] == 2
    assert (mixed.ready(), mixed.successful(), mixed.failed(), mixed.completed_count()) == (
        True,
        False,
        True,
        1,
    )
    with pytest.raises(KeyError):
        mixed.join(timeout=10)


def test_group_revoke(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    group = pkg.group(t.add.s(i, i).set(countdown=1) for i in range(2)).delay()
    group.revoke()
    wait_until(group.ready, 10, "the revoked group to be ready")
    assert [r.state for r in group.results] == ["REVOKED", "REVOKED"]
    assert (group.successful(), group.failed(), group.completed_count()) == (False, False, 0)
    with pytest.raises(cluster.exceptions.TaskRevokedError):
        group.join(timeout=10)


def test_class_based_task_registered_with_register_task(cluster: Cluster) -> None:
    t = cluster.tasks
    assert t.multiply.name == "sem.multiply" and t.multiply.app is t.app
    assert t.multiply.delay(4).get(timeout=10) == [8, "semantics", "sem.multiply"]
    assert t.multiply.apply_async((3,), {"y": 3}).get(timeout=10) == [
        9,
        "semantics",
        "sem.multiply",
    ]


def test_arguments_are_checked_before_anything_is_sent(cluster: Cluster) -> None:
    with pytest.raises(TypeError, match=r"add\(\) missing 1 required positional argument: 'y'"):
        cluster.tasks.add.delay(1)
    with pytest.raises(TypeError, match="takes 2 positional arguments but 3 were given"):
        (cluster.tasks.add.s(1, 2, 3) | cluster.tasks.add.s(1)).delay()


def test_a_later_chain_step_that_does_not_fit_fails_and_is_not_lost(cluster: Cluster) -> None:
    """The next step gets the parent's result prepended: three arguments for ``add``.
    Its TypeError reaches the chain's result (never a result left PENDING)."""
    t = cluster.tasks
    last = (t.add.s(1, 1) | t.add.s(1, 2)).delay()
    with pytest.raises(TypeError, match="takes 2 positional arguments but 3 were given"):
        last.get(timeout=10)
