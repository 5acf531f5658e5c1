"""Task semantics as Celery 5.7's worker gives them: errbacks of both signatures,
``retry(args=..., kwargs=...)``, ``self.request``'s fields, a task that returns a result."""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime
from typing import Any

import pytest

from semantic_cluster import Cluster

TASKS = """
import json


@app.task(name="sem.add")
def add(x, y):
    return x + y


@app.task(name="sem.ident")
def ident(*args):
    return "ok"


@app.task(name="sem.fail")
def fail(*args):
    raise KeyError("nope")


# errbacks: the note file is the failed task's id
@app.task(name="sem.eb_new")
def eb_new(request, exc, traceback):
    note(request.id, f"new {type(exc).__name__} {type(traceback).__name__}")


@app.task(name="sem.eb_old")
def eb_old(task_id):
    note(task_id, "old")


@app.task(name="sem.eb_bound", bind=True)
def eb_bound(self, *args):
    note(str(args[0]) if len(args) == 1 else self.request.parent_id, f"bound {len(args)}")


@app.task(name="sem.eb_partial")
def eb_partial(task_id, extra):
    note(task_id, f"partial {extra}")


RETRY_CASES = {
    "args": {"args": None},
    "kwargs": {"kwargs": {"y": 7}},
    "both": {"args": None, "kwargs": {"w": 4}},
    "neither": {},
}


@app.task(name="sem.retry_args", bind=True)
def retry_args(self, key, x=0, y=0, *rest, **extra):
    note(key, json.dumps([[key, x, y, *rest], extra, self.request.retries]))
    if self.request.retries == 0:
        options = dict(RETRY_CASES[key.rsplit("-", 1)[1]])
        if "args" in options:
            options["args"] = [key, 5] if "kwargs" not in options else [key, 9]
        raise self.retry(countdown=0, **options)
    return "done"


def _names(items):
    return None if items is None else [item["task"] for item in items]


@app.task(name="sem.probe", bind=True)
def probe(self, *args, **kwargs):
    r = self.request
    properties = r.properties or {}
    return {
        "id": r.id,
        "args": list(r.args),
        "kwargs": r.kwargs,
        "retries": r.retries,
        "is_eager": r.is_eager,
        "called_directly": r.called_directly,
        "eta": r.eta,
        "expires": r.expires,
        "hostname": r.hostname,
        "delivery_info": r.delivery_info,
        "reply_to": r.reply_to,
        "correlation_id": r.correlation_id,
        "root_id": r.root_id,
        "parent_id": r.parent_id,
        "group": r.group,
        "group_index": r.group_index,
        "chord": None if r.chord is None else r.chord["task"],
        "chain": _names(r.chain),
        "callbacks": _names(r.callbacks),
        "errbacks": _names(r.errbacks),
        "origin": r.origin,
        "ignore_result": r.ignore_result,
        "replaced_task_nesting": r.replaced_task_nesting,
        "timelimit": None if r.timelimit is None else list(r.timelimit),
        "time_limit": r.time_limit,
        "soft_time_limit": r.soft_time_limit,
        "properties": {
            key: properties.get(key)
            for key in ("correlation_id", "reply_to", "priority", "delivery_info")
        },
    }


@app.task(name="sem.spawn")
def spawn():
    return add.delay(1, 2)


@app.task(name="sem.spawn_group")
def spawn_group():
    return pkg.group(add.s(1, 1), add.s(2, 2)).delay()
"""


# -- errbacks -----------------------------------------------------------------------
def test_errbacks_of_both_signatures_on_a_task(cluster: Cluster) -> None:
    """``(request, exc, traceback)`` is called in the worker; ``(task_id)``, a bound
    errback and one whose stored arguments leave one free get the failed id as a task."""
    t = cluster.tasks
    errbacks = [t.eb_new.s(), t.eb_old.s(), t.eb_bound.s(), t.eb_partial.s("x")]
    result = t.fail.apply_async(link_error=errbacks)
    with pytest.raises(KeyError):
        result.get(timeout=10)
    lines = cluster.wait_lines(result.id, 4)
    assert sorted(lines) == ["bound 1", "new KeyError str", "old", "partial x"]


def test_errbacks_of_both_signatures_on_a_chain(cluster: Cluster) -> None:
    """A chain's errbacks get the step that failed."""
    t = cluster.tasks
    chain = t.add.s(1, 1) | t.fail.s() | t.add.s(3)
    result = chain.apply_async(link_error=[t.eb_new.s(), t.eb_old.s()])
    with pytest.raises(KeyError):
        result.get(timeout=10)
    failed = result.parent
    assert failed is not None
    assert sorted(cluster.wait_lines(failed.id, 2)) == ["new KeyError str", "old"]


def test_errbacks_of_both_signatures_on_a_chord_body(cluster: Cluster) -> None:
    """A chord body's errbacks get the body's id and a ChordError (no traceback)."""
    t = cluster.tasks
    body = t.ident.s().on_error(t.eb_new.s()).on_error(t.eb_old.s())
    result = cluster.pkg.chord([t.add.s(1, 1), t.fail.s()], body).apply_async()
    with pytest.raises(Exception, match="nope"):  # its type is the canvas tests' matter
        result.get(timeout=10)
    assert sorted(cluster.wait_lines(result.id, 2)) == ["new ChordError NoneType", "old"]


# -- retry --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "args", "kwargs", "retried"),
    [
        # new positional arguments: the call's keywords they now fill are dropped
        ("args", [], {"x": 1, "y": 2, "z": 3}, [[5, 2], {"z": 3}]),
        # a new keyword naming a positional argument replaces it in place
        ("kwargs", [1, 2], {"z": 3}, [[1, 7], {}]),
        ("both", [1], {"z": 3}, [[9, 0], {"w": 4}]),
        ("neither", [1], {"z": 3}, [[1, 0], {"z": 3}]),
    ],
)
def test_retry_with_new_arguments(
    cluster: Cluster, case: str, args: list[Any], kwargs: dict[str, Any], retried: list[Any]
) -> None:
    key = f"{cluster.token()}-{case}"
    result = cluster.tasks.retry_args.apply_async([key, *args], kwargs)
    assert result.get(timeout=10) == "done"
    first, second = (_json(line) for line in cluster.wait_lines(key, 2))
    assert first[2] == 0 and second[2] == 1
    (_, *values), extra, _ = second
    assert [values[: len(retried[0])], extra] == retried


def _json(line: str) -> Any:
    return json.loads(line)


# -- self.request -------------------------------------------------------------------
def test_request_fields_of_a_plain_call(cluster: Cluster) -> None:
    t = cluster.tasks
    before = time.time()
    result = t.probe.apply_async(
        (1,), {"a": 2}, time_limit=30, soft_time_limit=20, expires=600, countdown=0.1
    )
    got = result.get(timeout=10)
    assert got.pop("hostname") == f"semantics@{socket.gethostname()}"
    eta, expires = got.pop("eta"), got.pop("expires")
    assert isinstance(eta, str) and isinstance(expires, str)  # the headers' ISO text
    assert before < datetime.fromisoformat(eta).timestamp() < before + 5
    assert before + 599 < datetime.fromisoformat(expires).timestamp() < time.time() + 601
    origin, reply_to = got.pop("origin"), got.pop("reply_to")
    assert isinstance(origin, str) and "@" in origin
    assert isinstance(reply_to, str) and reply_to
    assert got == {
        "id": result.id,
        "args": [1],
        "kwargs": {"a": 2},
        "retries": 0,
        "is_eager": False,
        "called_directly": False,
        "delivery_info": {
            "exchange": "",
            "routing_key": "celery",
            "priority": 0,
            "redelivered": False,
        },
        "correlation_id": result.id,
        "root_id": result.id,
        "parent_id": None,
        "group": None,
        "group_index": None,
        "chord": None,
        "chain": None,
        "callbacks": None,
        "errbacks": None,
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "timelimit": [30, 20],
        "time_limit": 30,
        "soft_time_limit": 20,
        "properties": {
            "correlation_id": result.id,
            "reply_to": reply_to,
            "priority": 0,
            "delivery_info": {"exchange": "", "routing_key": "celery"},
        },
    }


def test_request_fields_of_a_chain_step(cluster: Cluster) -> None:
    t = cluster.tasks
    step = t.probe.s(7).on_error(t.eb_old.s())
    step.link(t.ident.si())
    chain = t.add.s(1, 1) | step | t.ident.s()
    result = chain.apply_async()
    assert result.get(timeout=10) == "ok"
    probe, first = result.parent, result.parent.parent
    got = probe.get(timeout=10)
    assert {k: got[k] for k in ("id", "args", "root_id", "parent_id")} == {
        "id": probe.id,
        "args": [2, 7],
        "root_id": first.id,
        "parent_id": first.id,
    }
    assert [got["chain"], got["callbacks"], got["errbacks"]] == [
        ["sem.ident"],
        ["sem.ident"],
        ["sem.eb_old"],
    ]
    assert [got["group"], got["group_index"], got["chord"]] == [None, None, None]
    assert [got["timelimit"], got["time_limit"], got["soft_time_limit"]] == [
        [None, None],
        None,
        None,
    ]


def test_request_fields_of_group_and_chord_members(cluster: Cluster) -> None:
    t = cluster.tasks
    group = cluster.pkg.group(t.probe.s(), t.probe.s()).apply_async()
    got = group.get(timeout=10)
    assert [(g["group"], g["group_index"], g["chord"]) for g in got] == [
        (group.id, 0, None),
        (group.id, 1, None),
    ]
    chord = cluster.pkg.chord([t.probe.s()], t.ident.s()).apply_async()
    assert chord.get(timeout=10) == "ok"
    member = chord.parent.results[0]
    got = member.get(timeout=10)
    assert (got["group"], got["group_index"], got["chord"]) == (chord.parent.id, 0, "sem.ident")


# -- a task returning a result --------------------------------------------------------
def test_a_returned_async_result_is_stored_as_a_reference(cluster: Cluster) -> None:
    result = cluster.tasks.spawn.delay()
    value = result.get(timeout=10)
    assert isinstance(value, list) and len(value) == 2 and value[1] is None
    child_id, parent = value[0]
    assert parent is None
    assert cluster.app.AsyncResult(child_id).get(timeout=10) == 3
    assert [c.id for c in result.children] == [child_id]


def test_a_returned_group_result_is_stored_as_a_reference(cluster: Cluster) -> None:
    result = cluster.tasks.spawn_group.delay()
    value = result.get(timeout=10)
    (group_id, parent), members = value
    assert isinstance(group_id, str) and parent is None
    ids = [member_id for (member_id, member_parent), none in members]
    assert [cluster.app.AsyncResult(i).get(timeout=10) for i in ids] == [2, 4]
    assert all(none is None for (_, none) in members)
