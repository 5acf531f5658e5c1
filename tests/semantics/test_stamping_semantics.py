"""Stamping (Celery 5.3+), the same on every pair: ``sig.stamp(...)`` and the visitor's
hooks, the ``stamped_headers``/``stamps`` headers a client publishes, ``self.request.
stamps`` in the worker, stamps carried to chain steps, callbacks and chord bodies, and
``app.control.revoke_by_stamped_headers``."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis

from semantic_cluster import Cluster
from support import wait_until

TASKS = """
import json
import time


def seen(request):
    names = request.stamped_headers
    return {
        "stamped_headers": sorted(names) if names is not None else None,
        "stamps": request.stamps,
    }


@app.task(name="st.record", bind=True)
def record(self, *args, token):
    note(token, json.dumps([list(args), seen(self.request)], sort_keys=True))
    return list(args)


@app.task(name="st.collect", bind=True)
def collect(self, results, *, token):
    note(token, json.dumps([["body"], seen(self.request)], sort_keys=True))
    return len(results)


@app.task(name="st.flaky", bind=True, max_retries=1)
def flaky(self, *, token):
    note(token, json.dumps([[self.request.retries], seen(self.request)], sort_keys=True))
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "done"


@app.task(name="st.sleeper")
def sleeper(seconds, *, token):
    note(token, "started")
    time.sleep(seconds)
    note(token, "finished")
    return "slept"


app.conf.result_extended = True  # results keep the stamps of their task
"""


# -- helpers ------------------------------------------------------------------------
def stamps(cluster: Cluster) -> Any:
    """The client package's ``StampingVisitor``, where Celery users import it from."""
    return __import__(f"{cluster.client}.canvas", fromlist=["StampingVisitor"]).StampingVisitor


def notes(cluster: Cluster, token: str, count: int) -> list[Any]:
    """What the tasks noted, sorted (tasks of a group or chord run in any order)."""
    return sorted((json.loads(line) for line in cluster.wait_lines(token, count)), key=str)


def request(names: list[str] | None, values: dict[str, Any]) -> dict[str, Any]:
    return {"stamped_headers": names, "stamps": values}


def published(cluster: Cluster, queue: str) -> list[dict[str, Any]]:
    """The messages waiting in ``queue`` (no worker consumes it), oldest first: their
    headers and, as ``embed``, the third part of their body."""
    client = redis.Redis.from_url(cluster.url)
    try:
        raw = client.lrange(queue, 0, -1)
        client.delete(queue)
    finally:
        client.close()
    out = []
    for item in reversed(raw):  # LPUSH: the newest is first
        envelope = json.loads(item)
        body = json.loads(base64.b64decode(envelope["body"]))
        out.append({**envelope["headers"], "embed": body[2]})
    return out


def stored(cluster: Cluster, task_id: str) -> dict[str, Any]:
    """The result meta as the worker stored it (in Redis, for any client)."""
    client = redis.Redis.from_url(cluster.url)
    try:
        raw = client.get(f"celery-task-meta-{task_id}")
    finally:
        client.close()
    assert raw is not None, f"no result stored for {task_id}"
    return json.loads(raw)  # type: ignore[no-any-return]


def ours(replies: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The answer of the module's main worker (``semantics@...``) among ``replies``."""
    for reply in replies or ():
        for name, answer in reply.items():
            if name.startswith("semantics@"):
                return answer  # type: ignore[no-any-return]
    raise AssertionError(f"the worker did not answer: {replies!r}")


# -- signatures (client side) ---------------------------------------------------------
def option_stamps(sig: Any) -> dict[str, Any]:
    names = sig.options.get("stamped_headers") or []
    return {"names": sorted(names), **{n: sig.options[n] for n in names}}


def test_stamp_merges_as_celery(cluster: Cluster) -> None:
    add = cluster.tasks.record

    def twice(first: dict[str, Any], second: dict[str, Any], append: bool = False) -> Any:
        sig = add.s(token="t")
        sig.stamp(**first)
        sig.stamp(append_stamps=append, **second)
        return option_stamps(sig)

    assert twice({"a": "x"}, {"a": "y"}) == {"names": ["a"], "a": "y"}
    assert twice({"a": "x"}, {"a": "y"}, append=True) == {"names": ["a"], "a": ["y", "x"]}
    assert twice({"a": [1]}, {"a": [2]}) == {"names": ["a"], "a": [2, 1]}
    assert twice({"a": 1}, {"a": [2]}) == {"names": ["a"], "a": [2]}
    assert twice({"a": {"x": 1}}, {"a": {"y": 2}}) == {"names": ["a"], "a": {"x": 1, "y": 2}}
    assert twice({"a": {"x": 1}}, {"a": {"x": 2}}, append=True) == {
        "names": ["a"],
        "a": {"x": [2, 1]},
    }
    assert twice({"a": 3}, {"a": None}, append=True) == {"names": ["a"], "a": [3]}
    assert twice({"a": "x"}, {"b": "y"}) == {"names": ["a", "b"], "a": "x", "b": "y"}

    class Vote(stamps(cluster)):  # type: ignore[misc]
        def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
            return {"a": "visitor", "v": 1}

    sig = add.s(token="t")
    sig.stamp(Vote(), a="keyword")  # a keyword stamp wins over the visitor's
    assert option_stamps(sig) == {"names": ["a", "v"], "a": "keyword", "v": 1}
    sig = add.s(token="t")
    sig.stamp(Vote(), append_stamps=True, a="keyword")
    assert option_stamps(sig) == {"names": ["a", "v"], "a": ["keyword", "visitor"], "v": 1}
    # a stamp is not changed by later options
    sig = add.s(token="t")
    sig.stamp(a="x")
    assert option_stamps(sig.clone(a="y")) == {"names": ["a"], "a": "x"}


def test_visitor_hooks_are_called_as_celery_calls_them(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    calls: list[Any] = []

    class Trace(stamps(cluster)):  # type: ignore[misc]
        def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
            # the stamps handed down (not their "stamped_headers" list: Celery's shares
            # one list object between siblings, so it shows names a sibling added)
            given = sorted(k for k in headers if k != "stamped_headers")
            calls.append(["signature", list(sig.args), given])
            return {"arg": sig.args[0] if sig.args else None}

        def on_group_start(self, group: Any, **headers: Any) -> dict[str, Any]:
            calls.append(["group_start", len(group.tasks)])
            return {}

        def on_group_end(self, group: Any, **headers: Any) -> None:
            calls.append(["group_end", len(group.tasks)])

        def on_chain_start(self, chain: Any, **headers: Any) -> dict[str, Any]:
            calls.append(["chain_start"])
            return {}

        def on_chain_end(self, chain: Any, **headers: Any) -> None:
            calls.append(["chain_end"])

        def on_chord_header_start(self, sig: Any, **headers: Any) -> dict[str, Any]:
            calls.append(["chord_header_start"])
            return {"part": "header", **super().on_chord_header_start(sig, **headers)}

        def on_chord_header_end(self, sig: Any, **headers: Any) -> None:
            calls.append(["chord_header_end"])
            super().on_chord_header_end(sig, **headers)

        def on_chord_body(self, sig: Any, **headers: Any) -> dict[str, Any]:
            calls.append(["chord_body", headers.get("part")])
            return {"part": "body"}

        def on_callback(self, callback: Any, **headers: Any) -> dict[str, Any]:
            calls.append(["callback", list(callback.args)])
            return {"link": "callback"}

        def on_errback(self, errback: Any, **headers: Any) -> dict[str, Any]:
            calls.append(["errback", list(errback.args)])
            return {"link": "errback"}

    first = t.record.s(1, token="t")
    first.link(t.record.si(10, token="t"))
    first.link_error(t.record.si(20, token="t"))
    header = [t.record.s(3, token="t"), pkg.group(t.record.s(4, token="t"))]
    canvas = pkg.group(
        pkg.chain(first, t.record.s(2, token="t")),
        pkg.chord(header, t.collect.s(token="t")),
    )
    canvas.stamp(Trace(), k="K")
    assert calls == [
        ["group_start", 2],
        ["chain_start"],
        ["callback", [10]],
        ["signature", [10], ["k", "link"]],
        ["errback", [20]],
        ["signature", [20], ["k", "link"]],
        ["signature", [1], ["k"]],
        ["signature", [2], ["k"]],
        ["chain_end"],
        ["chord_header_start"],
        ["group_start", 2],
        ["signature", [3], ["k", "part"]],
        ["group_start", 1],
        ["signature", [4], ["k", "part"]],
        ["group_end", 1],
        ["chord_header_end"],
        ["group_end", 2],
        ["chord_body", "header"],
        ["signature", [], ["k", "part"]],
        ["group_end", 2],
    ]
    stamped = canvas.tasks[0].tasks[0]  # Celery's chain holds a copy of ``first``
    assert option_stamps(stamped) == {"names": ["arg", "k"], "arg": 1, "k": "K"}
    body = canvas.tasks[1].body
    assert option_stamps(body) == {
        "names": ["arg", "k", "part"],
        "arg": None,
        "k": "K",
        "part": "header",
    }


# -- on the wire ----------------------------------------------------------------------
def test_the_headers_a_client_publishes(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    queue = f"nobody-{cluster.token()}"
    sig = t.record.s(1, token="t").set(queue=queue)
    sig.stamp(k="K", lst=[1, 2])
    sig.delay()
    t.record.apply_async((2,), {"token": "t"}, queue=queue)
    t.record.apply_async((3,), {"token": "t"}, queue=queue, stamped_headers=["z"], z="zz")
    steps = pkg.chain(t.record.s(4, token="t"), t.record.s(token="t")).set(queue=queue)
    steps.stamp(c="C")
    steps.delay()
    stamped, plain, option, chained = published(cluster, queue)
    assert sorted(stamped["stamped_headers"]) == ["k", "lst"]
    assert stamped["stamps"] == {"k": "K", "lst": [1, 2]}
    assert "k" not in stamped and "lst" not in stamped  # only in "stamps"
    assert (plain["stamped_headers"], plain["stamps"]) == (None, {})
    assert (option["stamped_headers"], option["stamps"]) == (["z"], {"z": "zz"})
    assert (chained["stamped_headers"], chained["stamps"]) == (["c"], {"c": "C"})
    (step,) = chained["embed"]["chain"]
    assert (step["options"]["stamped_headers"], step["options"]["c"]) == (["c"], "C")


# -- in the worker ----------------------------------------------------------------------
def test_the_request_shows_the_stamps(cluster: Cluster) -> None:
    t = cluster.tasks
    token = cluster.token()
    sig = t.record.s(1, token=token)
    sig.stamp(k="K", lst=[1, 2])
    sig.delay().get(timeout=10)
    t.record.delay(2, token=token).get(timeout=10)
    sig = t.record.s(3, token=token)
    sig.stamp(a="x")
    sig.apply_async(a="other").get(timeout=10)  # the stamp stays
    assert notes(cluster, token, 3) == [
        [[1], request(["k", "lst"], {"k": "K", "lst": [1, 2]})],
        [[2], request(None, {})],
        [[3], request(["a"], {"a": "x"})],
    ]


def test_a_visitor_stamps_each_member_of_a_group(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    token = cluster.token()

    class Monitoring(stamps(cluster)):  # type: ignore[misc]
        def on_group_start(self, group: Any, **headers: Any) -> dict[str, Any]:
            return {"batch": "B1"}

        def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
            return {"mtask_id": f"m{sig.args[0]}"}

    members = pkg.group(t.record.s(1, token=token), t.record.s(2, token=token))
    members.stamp(Monitoring())
    assert members.delay().get(timeout=10) == [[1], [2]]
    assert notes(cluster, token, 2) == [
        [[1], request(["batch", "mtask_id"], {"batch": "B1", "mtask_id": "m1"})],
        [[2], request(["batch", "mtask_id"], {"batch": "B1", "mtask_id": "m2"})],
    ]


def test_chain_steps_and_callbacks_keep_their_stamps(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    token = cluster.token()
    steps = pkg.chain(t.record.s(1, token=token), t.record.s(token=token))
    steps.stamp(c="C")
    assert steps.delay().get(timeout=10) == [[1]]
    sig = t.record.s(2, token=token)
    sig.link(t.record.si(3, token=token))
    sig.stamp(k="L")
    sig.delay().get(timeout=10)
    assert notes(cluster, token, 4) == [
        [[1], request(["c"], {"c": "C"})],
        [[2], request(["k"], {"k": "L"})],
        [[3], request(["k"], {"k": "L"})],
        [[[1]], request(["c"], {"c": "C"})],
    ]


def test_a_retried_task_keeps_its_stamps(cluster: Cluster) -> None:
    token = cluster.token()
    sig = cluster.tasks.flaky.s(token=token)
    sig.stamp(k="K")
    assert sig.delay().get(timeout=10) == "done"
    assert notes(cluster, token, 2) == [
        [[0], request(["k"], {"k": "K"})],
        [[1], request(["k"], {"k": "K"})],
    ]


def test_a_chord_body_is_stamped_only_by_a_visitor(cluster: Cluster) -> None:
    t, pkg = cluster.tasks, cluster.pkg
    token = cluster.token()
    workflow = pkg.chord([t.record.s(1, token=token)], t.collect.s(token=token))
    workflow.stamp(h="H")
    assert workflow.delay().get(timeout=10) == 1

    class Body(stamps(cluster)):  # type: ignore[misc]
        def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
            return {}

        def on_chord_body(self, sig: Any, **headers: Any) -> dict[str, Any]:
            return {"b": "B"}

    workflow = pkg.chord([t.record.s(2, token=token)], t.collect.s(token=token))
    workflow.stamp(Body(), h="V")
    assert workflow.delay().get(timeout=10) == 1
    assert notes(cluster, token, 4) == [
        [["body"], request(None, {})],
        [["body"], request(["b", "h"], {"b": "B", "h": "V"})],
        [[1], request(["h"], {"h": "H"})],
        [[2], request(["h"], {"h": "V"})],
    ]


def test_an_extended_result_keeps_the_stamps(cluster: Cluster) -> None:
    sig = cluster.tasks.record.s(1, token=cluster.token())
    sig.stamp(k="K", lst=[1, 2])
    result = sig.delay()
    result.get(timeout=10)
    meta = stored(cluster, result.id)
    assert sorted(meta["stamped_headers"]) == ["k", "lst"]
    assert (meta["k"], meta["lst"]) == ("K", [1, 2])
    plain = cluster.tasks.record.delay(2, token=cluster.token())
    plain.get(timeout=10)
    assert "stamped_headers" not in stored(cluster, plain.id)


# -- revoking by stamp --------------------------------------------------------------------
def test_revoke_by_stamped_headers_discards_the_tasks(cluster: Cluster) -> None:
    t = cluster.tasks
    token, value = cluster.token(), cluster.token()
    replies = cluster.app.control.revoke_by_stamped_headers({"batch": value}, reply=True, timeout=3)
    assert ours(replies) == {
        "ok": f"headers {{'batch': {value!r}}} flagged as revoked, but not terminated"
    }
    revoked = t.record.s(1, token=token)
    revoked.stamp(batch=value)
    in_list = t.record.s(2, token=token)
    in_list.stamp(batch=["other", value])
    runs = t.record.s(3, token=token)
    runs.stamp(batch="other")
    results = [revoked.delay(), in_list.delay(), runs.delay()]
    assert results[2].get(timeout=10) == [3]
    wait_until(lambda: all(r.state == "REVOKED" for r in results[:2]), 10, "revoked")
    for result in results[:2]:
        meta = stored(cluster, result.id)
        assert (meta["status"], meta["result"]["exc_type"], meta["result"]["exc_message"]) == (
            "REVOKED",
            "TaskRevokedError",
            ["revoked"],
        )
    assert notes(cluster, token, 1) == [[[3], request(["batch"], {"batch": "other"})]]


def test_revoke_by_stamped_headers_terminates_running_tasks(cluster: Cluster) -> None:
    token = cluster.token()
    queue = f"long-{token}"
    cluster.start_worker("-P", "prefork", "-c", "1", "-Q", queue)
    sig = cluster.tasks.sleeper.s(30, token=token).set(queue=queue)
    sig.stamp(job=token)
    result = sig.delay()
    cluster.wait_lines(token, 1, timeout=20)
    cluster.app.control.revoke_by_stamped_headers({"job": token}, terminate=True)
    wait_until(lambda: result.state == "REVOKED", 15, "terminated")
    meta = stored(cluster, result.id)
    assert (meta["result"]["exc_type"], meta["result"]["exc_message"]) == (
        "TaskRevokedError",
        ["terminated"],
    )
    assert cluster.lines(token) == ["started"]


@pytest.mark.parametrize("form", ["dict", "command line"])
def test_a_stamp_revocation_reaches_a_worker_started_later(cluster: Cluster, form: str) -> None:
    token, value = cluster.token(), cluster.token()
    queue = f"later-{token}"
    headers: Any = {"wave": value} if form == "dict" else [f"wave={value}"]
    replies = cluster.app.control.revoke_by_stamped_headers(headers, reply=True, timeout=3)
    assert "flagged as revoked" in ours(replies)["ok"]
    cluster.start_worker("-Q", queue)
    sig = cluster.tasks.record.s(1, token=token).set(queue=queue)
    sig.stamp(wave=value)
    result = sig.delay()
    if cluster.worker == "celery":
        # Celery keeps a stamp revocation in the memory of the workers running then
        assert result.get(timeout=15) == [1]
    else:
        # celeriac keeps it in the broker's store (docs/coming-from-celery.md)
        wait_until(lambda: result.state == "REVOKED", 15, "revoked")
        assert cluster.lines(token) == []
