"""The custom remote-control commands' tasks module and checks, shared by the Redis and
RabbitMQ semantics modules (``tests/semantics/test_control_commands*_semantics.py``)."""

from __future__ import annotations

from semantic_cluster import Cluster
from support import wait_until

TASKS = '''
import importlib

control = importlib.import_module(pkg.__name__ + ".worker.control")


@control.control_command(args=[("n", int)], signature="[N=1]")
def sem_bump(state, n=1):
    """Bump a counter (a note line)."""
    note(f"bump-{state.hostname}", f"{n}")
    return {"ok": f"bumped {n}"}


@control.inspect_command()
def sem_where(state):
    consumer = state.consumer
    return {
        "hostname": state.hostname,
        "app": state.app.main,
        "consumer": [consumer.hostname, consumer.app.main, consumer.app is state.app],
        "state": sorted(state.keys()),
        "tset": state.tset([1, 2]),
    }


@control.inspect_command(name="sem_named", alias="sem_alias")
def whatever(state, x=None):
    return {"x": x}


@control.control_command()
def sem_fails(state):
    raise ValueError("nope")


@control.control_command()
def sem_nothing(state):
    return None


@app.task(name="sem.add")
def add(x, y):
    return x + y
'''


def run_checks(cluster: Cluster) -> None:
    """The calls and answers (shared with the RabbitMQ module)."""
    control = cluster.app.control
    # a worker may start listening to remote control a little after it is up
    wait_until(lambda: control.ping(timeout=1), 30, "a ping answered")
    answers = control.broadcast("sem_bump", arguments={"n": 3}, reply=True, timeout=5, limit=1)
    assert answers is not None and len(answers) == 1
    ((host, answer),) = answers[0].items()
    assert answer == {"ok": "bumped 3"}
    assert control.broadcast("sem_bump", arguments={"n": 4}) is None  # no reply asked
    assert cluster.wait_lines(f"bump-{host}", 2) == ["3", "4"]
    to = {"destination": [host], "timeout": 5}  # answered as soon as the worker replies

    where = control.inspect(**to)._request("sem_where")
    assert where == {
        host: {
            "hostname": host,
            "app": "semantics",
            "consumer": [host, "semantics", True],
            "state": ["app", "consumer", "hostname", "tset"],
            "tset": [1, 2],
        }
    }
    assert control.inspect(**to)._request("sem_named", x=5) == {host: {"x": 5}}
    assert control.broadcast("sem_alias", arguments={"x": 6}, reply=True, **to) == [
        {host: {"x": 6}}
    ]
    assert control.inspect(**to)._request("sem_where")[host]["app"] == ("semantics")
    # a handler that raises answers Celery's error (and the worker goes on)
    assert control.broadcast("sem_fails", reply=True, **to) == [
        {host: {"error": "ValueError('nope')"}}
    ]
    bad = control.broadcast("sem_bump", arguments={"zz": 1}, reply=True, **to)
    assert bad == [
        {host: {"error": "TypeError(\"sem_bump() got an unexpected keyword argument 'zz'\")"}}
    ]
    assert control.broadcast("sem_nothing", reply=True, **to) == [{host: None}]
    unknown = control.broadcast("sem_unknown", reply=True, **to)
    assert unknown is not None and "sem_unknown" in unknown[0][host]["error"]
    assert control.inspect(**to).ping() == {host: {"ok": "pong"}}  # built-ins still
    assert cluster.tasks.add.delay(1, 2).get(timeout=10) == 3
