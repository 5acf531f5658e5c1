"""What a task sent from a running task inherits (``parent_id``, ``root_id``), and the
options of ``AsyncResult.get`` / ``GroupResult.get`` / ``join``, as Celery 5.7 gives
them (measured here on the ``celery->celery`` run)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from semantic_cluster import Cluster

TASKS = """
import importlib

result_module = importlib.import_module(pkg.__name__ + ".result")
app.conf.task_inherit_parent_priority = True


@app.task(name="pa.add")
def add(x, y):
    return x + y


@app.task(name="pa.fail")
def fail(*args):
    raise KeyError("nope")


@app.task(name="pa.info", bind=True)
def info(self, *args):
    r = self.request
    return {"id": r.id, "parent_id": r.parent_id, "root_id": r.root_id}


@app.task(name="pa.priority", bind=True)
def priority(self):
    return self.request.delivery_info.get("priority")


@app.task(name="pa.spawn_priority", bind=True)
def spawn_priority(self):
    return [priority.delay().id, priority.apply_async(priority=1).id]


@app.task(name="pa.send_bad")
def send_bad():
    try:
        add.delay(1, 2, z=3)
    except TypeError as exc:
        return str(exc)
    return "sent"


@app.task(name="pa.headers", bind=True)
def headers(self):
    return self.request.headers


@app.task(name="pa.fields", bind=True)
def fields(self, *args, **kwargs):
    r = self.request
    names = ["task", "argsrepr", "kwargsrepr", "lang", "logfile", "loglevel", "utc", "taskset"]
    return [[getattr(r, name) for name in names], r.get("x-custom"), getattr(r, "x-custom")]


@app.task(name="pa.retried_headers", bind=True)
def retried_headers(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return self.request.headers


@app.task(name="pa.spawn", bind=True)
def spawn(self):
    return [self.request.id, self.request.root_id, info.delay().id]


@app.task(name="pa.spawn_deeper", bind=True)
def spawn_deeper(self):
    return spawn.delay().id


@app.task(name="pa.spawn_chain", bind=True)
def spawn_chain(self):
    return (info.si() | info.si()).delay().id


@app.task(name="pa.spawn_given", bind=True)
def spawn_given(self):
    return info.apply_async(parent_id="given-parent", root_id="given-root").id


@app.task(name="pa.waits")
def waits(how):
    r = add.delay(1, 2)
    try:
        if how == "allowed":
            return ["ok", r.get(timeout=10, disable_sync_subtasks=False)]
        if how == "block":
            with result_module.allow_join_result():
                return ["ok", r.get(timeout=10)]
        if how == "group":
            return ["ok", pkg.group(add.s(1, 1)).delay().get(timeout=10)]
        return ["ok", r.get(timeout=10)]
    except Exception as exc:
        return ["err", type(exc).__name__, str(exc)]


@app.task(name="pa.progress", bind=True)
def progress(self, key):
    import time

    self.update_state(state="PROGRESS", meta={"step": 1})
    flag = DIR / (key + ".go")
    deadline = time.monotonic() + 10
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"
"""


def _result(cluster: Cluster, task_id: str, **kwargs: Any) -> Any:
    return cluster.app.AsyncResult(task_id, **kwargs)


# -- parent_id / root_id ----------------------------------------------------------------
def test_a_task_sent_from_a_task_has_it_as_parent_and_its_root(cluster: Cluster) -> None:
    sent = cluster.tasks.spawn.delay()
    own_id, own_root, child_id = sent.get(timeout=10)
    assert own_id == own_root == sent.id
    assert _result(cluster, child_id).get(timeout=10) == {
        "id": child_id,
        "parent_id": sent.id,
        "root_id": sent.id,
    }


def test_the_root_is_the_first_task_of_the_tree(cluster: Cluster) -> None:
    top = cluster.tasks.spawn_deeper.delay()
    middle_id = top.get(timeout=10)
    middle, _, leaf_id = _result(cluster, middle_id).get(timeout=10)
    assert middle == middle_id
    assert _result(cluster, leaf_id).get(timeout=10) == {
        "id": leaf_id,
        "parent_id": middle_id,
        "root_id": top.id,
    }


def test_a_chain_sent_from_a_task(cluster: Cluster) -> None:
    """Its first step's parent is the task; the next step's is the first step."""
    top = cluster.tasks.spawn_chain.delay()
    last = _result(cluster, top.get(timeout=10)).get(timeout=10)
    assert last["root_id"] == top.id
    first = _result(cluster, last["parent_id"]).get(timeout=10)
    assert [first["parent_id"], first["root_id"]] == [top.id, top.id]


def test_a_task_sent_from_a_task_inherits_its_priority(cluster: Cluster) -> None:
    """With ``task_inherit_parent_priority`` (set in this module); a given one wins."""
    inherited, given = cluster.tasks.spawn_priority.apply_async(priority=3).get(timeout=10)
    assert _result(cluster, inherited).get(timeout=10) == 3
    assert _result(cluster, given).get(timeout=10) == 1


def test_given_ids_win(cluster: Cluster) -> None:
    child_id = cluster.tasks.spawn_given.delay().get(timeout=10)
    got = _result(cluster, child_id).get(timeout=10)
    assert [got["parent_id"], got["root_id"]] == ["given-parent", "given-root"]


def test_a_task_sent_by_the_client_has_no_parent(cluster: Cluster) -> None:
    sent = cluster.tasks.info.delay()
    assert sent.get(timeout=10) == {"id": sent.id, "parent_id": None, "root_id": sent.id}


# -- disable_sync_subtasks -----------------------------------------------------------------
def test_waiting_for_a_result_inside_a_task_raises(cluster: Cluster) -> None:
    kind, name, text = cluster.tasks.waits.delay("plain").get(timeout=20)
    assert [kind, name] == ["err", "RuntimeError"]
    assert text.startswith("Never call result.get() within a task!")
    assert cluster.tasks.waits.delay("group").get(timeout=20)[:2] == ["err", "RuntimeError"]


@pytest.mark.parametrize("how", ["allowed", "block"])
def test_waiting_inside_a_task_when_allowed(cluster: Cluster, how: str) -> None:
    assert cluster.tasks.waits.delay(how).get(timeout=20) == ["ok", 3]


# -- follow_parents ------------------------------------------------------------------------
def test_a_failed_parent_raises_first(cluster: Cluster) -> None:
    t = cluster.tasks
    failed, ok = t.fail.delay(), t.add.delay(1, 1)
    assert ok.get(timeout=10) == 2
    with pytest.raises(KeyError):
        failed.get(timeout=10)
    with pytest.raises(KeyError):  # its parent failed: raised although it succeeded
        _result(cluster, ok.id, parent=_result(cluster, failed.id)).get(timeout=10)
    fresh = _result(cluster, ok.id, parent=_result(cluster, failed.id))
    assert fresh.get(timeout=10, follow_parents=False) == 2
    fresh = _result(cluster, ok.id, parent=_result(cluster, failed.id))
    assert fresh.get(timeout=10, propagate=False) == 2  # parents only with propagate


def test_a_parent_failing_while_the_child_waits(cluster: Cluster) -> None:
    """Checked again every interval: the child never runs, the wait ends with the error."""
    t = cluster.tasks
    failed = t.fail.delay()
    never = _result(cluster, "never-sent-" + cluster.token(), parent=_result(cluster, failed.id))
    with pytest.raises(KeyError):
        never.get(timeout=10, interval=0.1)


# -- callback, on_message, on_interval -----------------------------------------------------
def test_callback_and_on_message(cluster: Cluster) -> None:
    key = cluster.token()
    result = cluster.tasks.progress.delay(key)
    messages: list[Any] = []
    called: list[Any] = []

    def on_message(meta: dict[str, Any]) -> None:
        messages.append((meta["task_id"], meta["status"], meta["result"]))
        if meta["status"] == "PROGRESS":
            (cluster.directory / f"{key}.go").touch()

    got = result.get(
        timeout=10, on_message=on_message, callback=lambda *a: called.append(a), interval=0.1
    )
    assert got == "done"
    assert called == [(result.id, "done")]
    # (Celery's also gets the messages of other tasks its client consumed meanwhile)
    mine = [m[1:] for m in messages if m[0] == result.id and m[1] in ("PROGRESS", "SUCCESS")]
    assert mine[0] == ("PROGRESS", {"step": 1}) and mine[-1] == ("SUCCESS", "done")


def test_on_interval_is_called_while_waiting(cluster: Cluster) -> None:
    key = cluster.token()
    result = cluster.tasks.progress.delay(key)
    ticks: list[int] = []

    def tick() -> None:
        ticks.append(1)
        (cluster.directory / f"{key}.go").touch()

    assert result.get(timeout=10, on_interval=tick, interval=0.2) == "done"
    assert ticks


def test_callback_of_a_known_result(cluster: Cluster) -> None:
    t = cluster.tasks
    ok, failed = t.add.delay(1, 1), t.fail.delay()
    assert ok.get(timeout=10) == 2
    called: list[Any] = []
    ticks: list[int] = []
    assert ok.get(callback=lambda *a: called.append(a), on_interval=lambda: ticks.append(1)) == 2
    assert [called, ticks] == [[(ok.id, 2)], []]
    with pytest.raises(KeyError):
        failed.get(timeout=10, callback=lambda *a: called.append(a))
    # known already, not propagated: returned without the callback (Celery's cache path)
    assert isinstance(failed.get(propagate=False, callback=called.append), KeyError)
    assert called == [(ok.id, 2)]


def test_callback_of_a_failure_not_yet_known(cluster: Cluster) -> None:
    failed = cluster.tasks.fail.delay()
    called: list[Any] = []
    value = failed.get(timeout=10, propagate=False, callback=lambda i, v: called.append((i, v)))
    assert isinstance(value, KeyError)
    assert [(i, type(v).__name__) for i, v in called] == [(failed.id, "KeyError")]


# -- group results -------------------------------------------------------------------------
def test_group_get_and_join_with_a_callback(cluster: Cluster) -> None:
    t = cluster.tasks
    result = cluster.pkg.group(t.add.s(1, 1), t.add.s(2, 2), t.fail.s()).delay()
    ids = [r.id for r in result.results]
    called: list[Any] = []
    assert result.get(timeout=10, propagate=False, callback=lambda *a: called.append(a)) is None
    assert sorted((ids.index(i), repr(v)) for i, v in called) == [
        (0, "2"),
        (1, "4"),
        (2, "KeyError('nope')"),
    ]
    called.clear()
    assert result.join(timeout=10, propagate=False, callback=lambda *a: called.append(a)) == []
    assert [(ids.index(i), repr(v)) for i, v in called] == [
        (0, "2"),
        (1, "4"),
        (2, "KeyError('nope')"),
    ]
    with pytest.raises(cluster.exceptions.ImproperlyConfigured, match="on_message"):
        result.join(timeout=10, on_message=print)
    assert [repr(v) for v in result.get(timeout=10, propagate=False, on_message=print)] == [
        "2",
        "4",
        "KeyError('nope')",
    ]


def test_group_get_with_a_callback_raises_a_failure(cluster: Cluster) -> None:
    t = cluster.tasks
    result = cluster.pkg.group(t.fail.s(), t.add.s(2, 2)).delay()
    with pytest.raises(KeyError):
        result.get(timeout=10, callback=lambda *a: None)


# -- self.request.headers ---------------------------------------------------------------
def test_request_headers_are_the_custom_ones(cluster: Cluster) -> None:
    t = cluster.tasks
    assert t.headers.delay().get(timeout=10) is None
    custom = {"x-custom": 1, "other": "b"}
    assert t.headers.apply_async(headers=custom).get(timeout=10) == custom
    assert t.headers.s().stamp(mystamp="v").apply_async().get(timeout=10) is None
    assert t.retried_headers.apply_async(headers=custom).get(timeout=10) == custom


def test_every_header_is_a_request_attribute(cluster: Cluster) -> None:
    got = cluster.tasks.fields.apply_async((1,), {"a": 2}, headers={"x-custom": 5})
    assert got.get(timeout=10) == [
        ["pa.fields", "(1,)", "{'a': 2}", "py", None, None, None, None],
        5,
        5,
    ]


# -- argument checking ------------------------------------------------------------------
def test_an_unknown_keyword_argument_is_a_type_error_before_sending(cluster: Cluster) -> None:
    t = cluster.tasks
    words = "add() got an unexpected keyword argument 'z'"
    with pytest.raises(TypeError, match=re.escape(words)):
        t.add.delay(1, 2, z=3)
    with pytest.raises(TypeError, match=re.escape(words)):
        t.add.apply_async((1, 2), {"z": 3})
    with pytest.raises(TypeError, match=re.escape(words)):
        t.add.s(1, 2, z=3).delay()
    assert t.send_bad.delay().get(timeout=10) == words  # from a task too


# -- aget (celeriac's asyncio API) ---------------------------------------------------------
def test_aget_takes_the_same_options(cluster: Cluster) -> None:
    if cluster.client != "celeriac":
        pytest.skip("aget is celeriac's own (Celery's client has no asyncio API)")
    t = cluster.tasks
    failed, ok = t.fail.delay(), t.add.delay(1, 1)
    key = cluster.token()
    slow = t.progress.delay(key)
    ticks: list[int] = []
    called: list[Any] = []

    def tick() -> None:
        ticks.append(1)
        (cluster.directory / f"{key}.go").touch()

    async def run() -> None:
        with pytest.raises(KeyError):
            await failed.aget(timeout=10)
        with pytest.raises(KeyError):
            await _result(cluster, ok.id, parent=_result(cluster, failed.id)).aget(timeout=10)
        child = _result(cluster, ok.id, parent=_result(cluster, failed.id))
        assert await child.aget(timeout=10, follow_parents=False) == 2
        got = await slow.aget(
            timeout=10, on_interval=tick, interval=0.2, callback=lambda *a: called.append(a)
        )
        assert got == "done"

    asyncio.run(run())
    assert ticks and called == [(slow.id, "done")]
