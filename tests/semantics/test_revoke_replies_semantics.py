"""``app.control.revoke(..., reply=True)`` and an unknown remote-control command: the
workers' answers as Celery 5.7's worker gives them (measured on ``celery->celery``)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from semantic_cluster import Cluster
from support import wait_until

TASKS = """
import time


@app.task(name="rr.hold")
def hold(key):
    note(key, "started")
    flag = DIR / (key + ".go")
    deadline = time.monotonic() + 20
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "finished"
"""


def _host(cluster: Cluster) -> str:
    """The worker's name, once it answers remote control (it may start listening a
    little after the worker is up)."""
    host = f"semantics@{socket.gethostname()}"
    control = cluster.app.control
    wait_until(lambda: control.ping(destination=[host], timeout=1), 30, "a ping answered")
    return host


def test_revoke_with_reply(cluster: Cluster) -> None:
    host = _host(cluster)
    result = cluster.tasks.hold.apply_async(("never",), countdown=30)
    got: list[Any] = []
    replies = cluster.app.control.revoke(
        result.id, reply=True, timeout=5, destination=[host], callback=got.append
    )
    assert replies == [{host: {"ok": f"tasks {{'{result.id}'}} flagged as revoked"}}]
    assert got == replies
    wait_until(lambda: result.state == "REVOKED", 10, "the task revoked")
    with pytest.raises(cluster.exceptions.TaskRevokedError):
        result.get(timeout=10)


def test_revoke_of_several_ids_with_reply(cluster: Cluster) -> None:
    host = _host(cluster)
    ids = [cluster.tasks.hold.apply_async(("never",), countdown=30).id, "no-such-task"]
    replies = cluster.app.control.revoke(ids, reply=True, timeout=5, limit=1)
    assert replies is not None and len(replies) == 1
    text = replies[0][host]["ok"]
    assert text in (  # a set of the ids, in no particular order
        f"tasks {{'{ids[0]}', '{ids[1]}'}} flagged as revoked",
        f"tasks {{'{ids[1]}', '{ids[0]}'}} flagged as revoked",
    )
    assert cluster.app.control.revoke(ids, reply=True, timeout=1, destination=["x@y"]) == []
    assert cluster.app.control.revoke(ids) is None


def test_revoke_terminate_of_a_task_no_worker_holds(cluster: Cluster) -> None:
    host = _host(cluster)
    task_id = f"unknown-{cluster.token()}"
    replies = cluster.app.control.revoke(task_id, reply=True, timeout=5, terminate=True)
    assert replies == [{host: {"ok": "terminate: tasks unknown"}}]


def test_revoke_terminate_of_a_running_task(cluster: Cluster) -> None:
    host, key = _host(cluster), cluster.token()
    result = cluster.tasks.hold.delay(key)
    cluster.wait_lines(key, 1)
    replies = cluster.app.control.revoke(
        result.id, reply=True, timeout=5, terminate=True, signal="SIGKILL"
    )
    if cluster.worker == "celery":
        # Celery's thread pool cannot terminate a task: its worker answers an error,
        # and the task runs on (celeriac's threads pool stops it)
        assert replies == [
            {
                host: {
                    "error": "NotImplementedError(\"<class 'celery.concurrency.thread."
                    "TaskPool'> does not implement kill_job\")"
                }
            }
        ]
        (cluster.directory / f"{key}.go").touch()
        assert result.get(timeout=10) == "finished"
        return
    assert replies == [{host: {"ok": f"terminate: {result.id}"}}]
    with pytest.raises(cluster.exceptions.TaskRevokedError):
        result.get(timeout=10)
    assert result.state == "REVOKED"


def test_an_unknown_command(cluster: Cluster) -> None:
    host = _host(cluster)
    answers = cluster.app.control.broadcast("nonesuch", reply=True, timeout=5, limit=1)
    assert answers == [{host: {"error": "KeyError('nonesuch')"}}]
    # extra keywords are the command's arguments; ping takes any
    assert cluster.app.control.broadcast("ping", reply=True, timeout=5, limit=1, zz=1) == [
        {host: {"ok": "pong"}}
    ]
    assert cluster.app.control.inspect(timeout=5)._request("nonesuch") == {
        host: {"error": "KeyError('nonesuch')"}
    }
