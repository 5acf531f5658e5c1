"""Chords whose header fails, chords in chains and groups, re-applied chords and
``Task.add_to_chord``; measured on a Celery worker."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from semantic_cluster import CANVAS_TASKS, Cluster
from support import wait_until

TASKS = (
    CANVAS_TASKS
    + """
@app.task(name="sem.add")
def add(x, y):
    return x + y


@app.task(name="sem.xsum")
def xsum(values):
    return sum(values)


@app.task(bind=True, name="sem.grow")
def grow(self, x):
    self.add_to_chord(add.si(x, 100))
    return x


@app.task(bind=True, name="sem.grow_lazy")
def grow_lazy(self, x, name):
    sig = self.add_to_chord(add.si(x, 200), lazy=True)
    note(name, type(sig).__name__)
    sig.delay()
    return x


@app.task(bind=True, name="sem.lonely_grow")
def lonely_grow(self):
    try:
        self.add_to_chord(add.si(1, 1))
    except ValueError as exc:
        return str(exc)
    return "no error"
"""
)


def failed_with_chord_error(cluster: Cluster, result: Any) -> None:
    """``result`` (a chord body or a step after it) ends FAILURE with Celery's
    ``ChordError`` naming the failed header task, and its caller is not left waiting.
    (Celery's client re-raises a failed parent's error while it waits, so ``get`` raises
    the header's ``KeyError`` or the ``ChordError``, whichever it sees first.)"""
    with pytest.raises((cluster.exceptions.ChordError, KeyError)):
        result.get(timeout=10)
    wait_until(lambda: result.state == "FAILURE", 10, f"{result.id} FAILURE")
    error = result.result
    assert isinstance(error, cluster.exceptions.ChordError)
    assert str(error).startswith("Dependency ")
    assert "raised KeyError('boom')" in str(error)


def test_a_failed_header_fails_the_body_and_calls_its_errback(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    body = t.xsum.s().on_error(t.errback.s())
    result = pkg.chord([t.add.s(1, 1), t.boom.s()], body).delay()
    failed_with_chord_error(cluster, result)
    # the body's errback is called, with the body's id
    assert cluster.wait_lines(f"errback-{result.id}", 1) == [result.id]


def test_a_failed_header_fails_a_group_body_member_by_member(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    body = pkg.group(t.xsum.s().on_error(t.errback.s()), t.collect.s())
    result = pkg.chord([t.add.si(1, 1), t.boom.si()], body).delay()
    with pytest.raises(KeyError):
        result.get(timeout=10)
    # each member stores the header task's own exception, and calls its errbacks
    for member in result.results:
        wait_until(lambda m=member: m.state == "FAILURE", 10, f"{member.id} FAILURE")
        assert repr(member.result) == "KeyError('boom')"
    first = result.results[0].id
    assert cluster.wait_lines(f"errback-{first}", 1) == [first]


def test_a_failed_header_fails_the_chain_that_follows(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    first = pkg.chord([t.add.si(1, 1), t.boom.si()], t.xsum.s())
    second = pkg.chord([t.add.si(2, 2), t.add.si(3, 3)], t.xsum.si())
    result = pkg.chain(first, second, t.add.s(1)).delay()
    failed_with_chord_error(cluster, result)
    assert result.parent is not None
    failed_with_chord_error(cluster, result.parent)  # the second chord's body


def test_a_failed_header_of_a_later_chord_in_a_chain(cluster: Cluster) -> None:
    t, pkg, name = cluster.tasks, cluster.pkg, cluster.token()
    first = pkg.chord([t.add.si(1, 1), t.add.si(2, 2)], t.xsum.s())
    second = pkg.chord([t.add.s(1), t.boom.s()], t.xsum.s())
    workflow = pkg.chain(first, second, t.record.s(name))
    result = workflow.delay()
    failed_with_chord_error(cluster, result)
    assert cluster.lines(name) == []


def test_nested_group_chain_chord_shapes_complete(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    inner = pkg.chain(t.add.si(1, 1), pkg.chord([t.add.s(1), t.add.s(2)], t.xsum.s()))
    result = pkg.group(inner, t.add.si(5, 5)).delay()
    assert result.get(timeout=10) == [7, 10]
    nested = pkg.chord([t.add.si(1, 1), pkg.chain(t.add.si(2, 2), t.add.s(1))], t.collect.s())
    result = pkg.group(nested, pkg.chain(t.add.si(1, 0), nested.clone())).delay()
    assert result.get(timeout=10) == [[2, 5], [2, 5]]
    pair = pkg.chord([t.add.si(1, 1), t.add.si(2, 2)], t.xsum.s())
    assert pkg.chord([pair, t.add.si(3, 3)], t.collect.s()).delay().get(timeout=10) == [6, 6]
    then = pkg.group(pkg.chain(pair.clone(), t.add.s(1)), t.add.si(2, 2))
    assert then.delay().get(timeout=10) == [7, 4]
    split = pkg.chord([t.add.si(1, 1), t.add.si(2, 2)], pkg.group(t.xsum.s(), t.collect.s()))
    assert split.delay().get(timeout=10) == [6, [2, 4]]
    fanned = pkg.chain(pkg.chord([t.add.si(1, 1)], t.xsum.s()), pkg.group(t.add.s(1), t.add.s(2)))
    assert pkg.chain(fanned, t.xsum.s()).delay().get(timeout=10) == 7


def test_groups_ending_chains_and_in_groups(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    add, group, chain = t.add, pkg.group, pkg.chain
    # a chain that ends in a group, in a chord header: the group's results are one value
    header = [
        add.si(3, 3),
        chain(add.si(1, 1), group(add.s(1), add.s(2))),
        chain(add.si(0, 0), group(add.s(5), add.s(6), add.s(7))),
    ]
    result = pkg.chord(header, t.collect.s()).delay()
    assert result.get(timeout=10) == [6, [3, 4], [5, 6, 7]]
    # a group in a group runs as members of the outer one
    nested = group(add.si(0, 0), group(group(add.si(1, 1), add.si(2, 2)), add.si(3, 3)))
    assert nested.delay().get(timeout=10) == [0, 2, 4, 6]
    assert group(chain(add.si(1, 1), group(add.s(1), add.s(2))), add.si(0, 0)).delay().get(
        timeout=10
    ) == [[3, 4], 0]


def test_a_group_in_a_chord_header(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    header = [pkg.group(t.add.si(1, 1), t.add.si(2, 2)), t.add.si(3, 3)]
    result = pkg.chord(header, t.collect.s()).delay().get(timeout=10)
    if cluster.client == "celery":
        # Celery's client reverses a nested group's tasks when it freezes a chord
        # header; celeriac's keeps them in the order written (docs/coming-from-celery.md:
        # a group in a chord header)
        assert result == [4, 2, 6]
    else:
        assert result == [2, 4, 6]


def test_a_failure_inside_a_chord_in_a_chord_header_fails_the_outer_chord(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    inner = pkg.chord([t.boom.s(), t.add.s(1)], t.xsum.s())
    outer = pkg.chord([pkg.chain(t.add.si(1, 1), inner), t.add.si(0, 0)], t.collect.s())
    result = outer.delay()
    header = result.parent
    assert header is not None
    inner_body = header.results[0]
    if cluster.worker == "celery":
        # Celery's worker never counts the failed inner body into the outer chord, so
        # the outer body stays PENDING: only its client's re-raising of a failed
        # parent's error ends the wait. celeriac fails the outer chord too (docs/
        # coming-from-celery.md: a chord in a chord header that fails).
        with pytest.raises(cluster.exceptions.ChordError):
            result.get(timeout=10)
        assert inner_body.state == "FAILURE"
        assert result.state == "PENDING"
        return
    failed_with_chord_error(cluster, result)
    # the outer chord's failed member is the inner chord's body
    assert str(result.result).startswith(f"Dependency {inner_body.id} raised ChordError(")
    grouped = pkg.group(pkg.chain(t.add.si(1, 1), inner.clone()), t.add.si(2, 2)).delay()
    with pytest.raises((cluster.exceptions.ChordError, KeyError)):  # as above
        grouped.get(timeout=10)


def test_a_reapplied_frozen_chord_runs_its_body_again(cluster: Cluster) -> None:
    t, pkg, name = cluster.tasks, cluster.pkg, cluster.token()
    workflow = pkg.chord([t.add.si(1, 1), t.add.si(2, 2)], t.record.s(name))
    frozen = workflow.freeze()
    first = workflow.apply_async()
    assert first.id == frozen.id
    assert first.get(timeout=10) == [2, 4]
    assert cluster.wait_lines(name, 1) == ["[2, 4]"]
    if cluster.worker == "celery":
        # Celery's worker publishes the body before it cleans the chord's keys up and
        # marks it done: re-applied in between (the body can finish first under load),
        # that cleanup deletes the second run's chord size and its body never runs. A
        # caller re-applying later would not meet it, so wait for the cleanup.
        done = f"celery-taskset-meta-{frozen.parent.id}.c"
        with redis.Redis.from_url(cluster.url) as r:
            wait_until(lambda: r.get(done) == b"done", 10, "Celery's chord cleanup")
    second = workflow.apply_async()
    assert second.id == frozen.id
    assert cluster.wait_lines(name, 2) == ["[2, 4]", "[2, 4]"]


def test_add_to_chord(cluster: Cluster) -> None:
    t, pkg, name = cluster.tasks, cluster.pkg, cluster.token()
    result = pkg.chord([t.grow.s(1), t.add.si(2, 2)], t.collect.s()).delay()
    assert sorted(result.get(timeout=10)) == [1, 4, 101]
    result = pkg.chord([t.grow_lazy.s(3, name), t.add.si(2, 2)], t.collect.s()).delay()
    assert sorted(result.get(timeout=10)) == [3, 4, 203]
    assert cluster.lines(name) == ["Signature"]
    assert t.lonely_grow.delay().get(timeout=10) == "Current task is not member of any chord"
