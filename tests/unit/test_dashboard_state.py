"""The dashboard's own memory and its credentials, without servers: the task window is
bounded, reprs and tracebacks are cut, events crossing from several senders do not
move a task back, the backend completes what events missed; tokens and basic auth."""

from __future__ import annotations

import base64

import pytest

from celeriac.dashboard import ADMIN, READ_ONLY, Auth, DashboardState
from celeriac.dashboard._auth import is_loopback
from celeriac.dashboard._state import REPR_LIMIT, TRACEBACK_LIMIT, Worker


def test_the_task_window_is_bounded_and_drops_the_oldest() -> None:
    state = DashboardState(max_tasks=100)
    for n in range(1000):
        state.event({"type": "task-received", "uuid": f"t{n}", "hostname": "w@h", "name": "x"})
    assert len(state.tasks) == 100
    assert next(iter(state.tasks)) == "t900" and "t999" in state.tasks
    with pytest.raises(ValueError, match="at least 1"):
        DashboardState(max_tasks=0)


def test_reprs_and_tracebacks_are_cut() -> None:
    state = DashboardState()
    state.event(
        {
            "type": "task-failed",
            "uuid": "a",
            "hostname": "w@h",
            "exception": "E" * 10_000,
            "traceback": "T" * 100_000,
        }
    )
    task = state.tasks["a"]
    assert task.exception is not None and len(task.exception) == REPR_LIMIT
    assert task.traceback is not None and len(task.traceback) == TRACEBACK_LIMIT


def test_a_late_event_does_not_move_a_task_back() -> None:
    state = DashboardState()
    base = {"uuid": "a", "hostname": "w@h"}
    state.event({**base, "type": "task-received", "name": "n", "timestamp": 1.0})
    state.event({**base, "type": "task-succeeded", "result": "3", "timestamp": 3.0})
    state.event({**base, "type": "task-started", "timestamp": 2.0})  # crossed in flight
    state.event({"type": "task-sent", "uuid": "a", "queue": "q", "hostname": "gen1@h"})
    task = state.tasks["a"]
    assert (task.state, task.result, task.queue, task.worker) == ("SUCCESS", "3", "q", "w@h")
    # a retried task goes round again
    state.event({**base, "uuid": "b", "type": "task-started"})
    state.event({**base, "uuid": "b", "type": "task-retried", "exception": "E()"})
    state.event({**base, "uuid": "b", "type": "task-received", "retries": 1})
    state.event({**base, "uuid": "b", "type": "task-started"})
    assert state.tasks["b"].state == "STARTED" and state.tasks["b"].retries == 1


def test_the_backend_completes_what_events_missed() -> None:
    state = DashboardState()
    state.event({"type": "task-started", "uuid": "a", "hostname": "w@h", "name": "n"})
    meta = {
        "status": "FAILURE",
        "result": {"exc_type": "KeyError", "exc_message": ["k"]},
        "traceback": "Traceback ...",
        "date_done": "2026-12-06T12:00:00+00:00",
    }
    task = state.from_backend("a", meta)
    assert (task.state, task.exception, task.traceback) == (
        "FAILURE",
        "KeyError('k')",
        meta["traceback"],
    )
    assert task.finished is not None and task.source == "events"
    assert state.from_backend("b", {"status": "SUCCESS", "result": 4}).source == "backend"


def test_worker_heartbeats_and_rates() -> None:
    state = DashboardState()
    state.event({"type": "worker-online", "hostname": "w@h", "freq": 2.0, "timestamp": 100.0})
    state.event(
        {"type": "worker-heartbeat", "hostname": "w@h", "active": 2, "processed": 9,
         "loadavg": [0.5, 0.4, 0.3], "local_received": 101.0}
    )  # fmt: skip
    worker = state.workers["w@h"]
    assert worker.alive(102.0) and not worker.alive(106.0)
    assert worker.as_dict(103.0)["heartbeat_age"] == 2.0 and worker.processed == 9
    state.event({"type": "worker-offline", "hostname": "w@h", "local_received": 103.0})
    assert not state.workers["w@h"].alive(103.5)
    for n, kind in enumerate(["task-succeeded", "task-succeeded", "task-failed"]):
        state.event({"type": kind, "uuid": f"r{n}", "hostname": "w@h", "timestamp": 1005.0})
    assert list(state.rates) == [[1000, 2, 1]]
    state.event({"type": "task-sent", "uuid": "q1", "queue": "q", "timestamp": 1001.0})
    state.event({"type": "task-received", "uuid": "q1", "hostname": "w@h", "timestamp": 1012.0})
    assert state.queue_rates_of("q") == ([[1000, 1, 0], [1010, 0, 1]], "sent")


def test_tokens_and_basic_auth() -> None:
    auth = Auth.of(basic=["ann:pw-a"], readonly_basic=["bob:pw-b"], readonly_tokens=["r" * 12])

    def basic(user: str, password: str) -> dict[str, str]:
        return {
            "authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        }

    assert auth.role_of(basic("ann", "pw-a"), {}, "") == ADMIN
    assert auth.role_of(basic("bob", "pw-b"), {}, "") == READ_ONLY
    assert auth.role_of(basic("ann", "pw-b"), {}, "") is None
    assert auth.role_of({"authorization": "Basic !!!"}, {}, "") is None
    assert auth.role_of({"authorization": "Bearer " + "r" * 12}, {}, "") == READ_ONLY
    assert auth.role_of({}, {}, "token=" + "r" * 12) == READ_ONLY
    assert auth.role_of({}, {"celeriac_dashboard_token": "r" * 12}, "") == READ_ONLY
    assert auth.role_of({}, {}, "") is None
    assert not Auth().configured and auth.configured
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.1.2.3")] == [
        True, True, True, False, False
    ]  # fmt: skip


def test_the_queue_comes_from_our_event_or_the_only_queue_a_worker_consumes() -> None:
    state = DashboardState()
    # celeriac's task-received carries the delivery's routing key as "queue"
    state.event({"type": "task-received", "uuid": "a", "hostname": "w@h", "queue": "hi"})
    # Celery's does not: the queue is known when the worker consumes only one
    state.workers["c@h"] = Worker("c@h", queues=["low"])
    state.workers["m@h"] = Worker("m@h", queues=["low", "hi"])
    state.event({"type": "task-received", "uuid": "b", "hostname": "c@h"})
    state.event({"type": "task-received", "uuid": "c", "hostname": "m@h"})
    assert [state.tasks[x].queue for x in "abc"] == ["hi", "low", None]


def test_queue_in_is_derived_from_lengths_without_sent_events() -> None:
    state = DashboardState()
    t0 = 1000.0  # one 10-second bucket: 1000..1009
    state.queue_length("q", 0, t0)
    state.queue_length("q", 3, t0 + 1)  # 3 came in
    for n in range(2):  # 2 went out, and 4 came in, between two samples
        state.event({"type": "task-received", "uuid": f"o{n}", "hostname": "w@h",
                     "queue": "q", "timestamp": t0 + 2})  # fmt: skip
    state.queue_length("q", 5, t0 + 3)
    state.queue_length("q", 0, t0 + 4)  # purged: nothing came in, nothing counted
    rates, source = state.queue_rates_of("q")
    assert source == "lengths" and rates == [[1000, 7, 2]]
    # once a task-sent event names the queue, "in" is what was sent
    state.event({"type": "task-sent", "uuid": "s", "queue": "q", "timestamp": t0 + 5})
    assert state.queue_rates_of("q") == ([[1000, 1, 2]], "sent")


def test_a_chord_header_is_one_group_feeding_its_body() -> None:
    from celeriac.dashboard._views import _draw_groups

    state = DashboardState()
    # a chord sent on its own: each header task its own root; our task-received events
    # carry the group id; the body is sent by the header task that completed the chord,
    # and carries the group id too
    for h in ("h1", "h2", "h3"):
        state.event({"type": "task-received", "uuid": h, "hostname": "w@h", "name": "add",
                     "group_id": "g"})  # fmt: skip
        state.event({"type": "task-succeeded", "uuid": h, "hostname": "w@h"})
    state.event({"type": "task-received", "uuid": "body", "hostname": "w@h", "name": "total",
                 "parent_id": "h3", "root_id": "h3", "group_id": "g"})  # fmt: skip
    state.event({"type": "task-received", "uuid": "other", "hostname": "w@h", "name": "x"})
    members = state.family(state.tasks["body"])
    assert {t.uuid for t in members} == {"h1", "h2", "h3", "body"}
    nodes = {t.uuid: {"id": t.uuid} for t in members}
    edges = {(str(t.parent_id), t.uuid) for t in members if t.parent_id in nodes}
    _draw_groups(members, nodes, edges)
    assert nodes["group:g"]["name"] == "group of 3" and nodes["group:g"]["state"] == "SUCCESS"
    assert edges == {("h1", "group:g"), ("h2", "group:g"), ("h3", "group:g"), ("group:g", "body")}
