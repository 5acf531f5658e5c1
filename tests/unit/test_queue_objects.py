"""kombu's ``Queue``/``Exchange`` objects where Celery code puts them: ``task_queues``, the
``queue=`` option, ``task_routes`` (tables and routers), and routing by ``exchange`` and
``routing_key`` to the queue bound to them."""

from __future__ import annotations

from typing import Any

import pytest
from kombu.entity import Exchange
from kombu.entity import Queue as KombuQueue

import celeriac
from celeriac import _queues
from celeriac.exceptions import ImproperlyConfigured
from celeriac.testing import TestWorker


def _app(**settings: Any) -> celeriac.Celery:
    return celeriac.Celery("routing", broker="memory://routing", set_as_current=False, **settings)


QUEUES = (
    KombuQueue("plain"),  # type: ignore[no-untyped-call]
    KombuQueue("routed", Exchange("ex"), routing_key="rk"),  # type: ignore[no-untyped-call]
    celeriac.Queue("own", exchange="own_ex", routing_key="own_rk"),
)


def test_queue_objects_route_by_their_name() -> None:
    app = _app(task_queues=QUEUES)
    kombu_queue = KombuQueue("q1")  # type: ignore[no-untyped-call]
    assert app.route("t.x", [], {}, {"queue": kombu_queue}) == "q1"
    assert app.route("t.x", [], {}, {"queue": celeriac.Queue("q2")}) == "q2"
    app.conf.task_routes = {"t.x": {"queue": KombuQueue("q3")}}  # type: ignore[no-untyped-call]
    assert app.route("t.x", [], {}, {}) == "q3"
    app.conf.task_routes = [lambda *args, **kw: KombuQueue("q4")]  # type: ignore[no-untyped-call]
    assert app.route("t.x", [], {}, {}) == "q4"


@pytest.mark.parametrize(
    ("exchange", "key", "queue"),
    [
        ("ex", "rk", "routed"),
        (Exchange("ex"), "rk", "routed"),  # type: ignore[no-untyped-call]
        ("own_ex", "own_rk", "own"),
        ("plain", None, "plain"),  # a queue declared without an exchange: its name's
    ],
)
def test_exchange_and_routing_key_reach_the_queue_bound_to_them(
    exchange: Any, key: str | None, queue: str
) -> None:
    app = _app(task_queues=QUEUES)
    assert app.route("t.x", [], {}, {"exchange": exchange, "routing_key": key}) == queue
    app.conf.task_routes = {"t.*": {"exchange": exchange, "routing_key": key}}
    assert app.route("t.x", [], {}, {}) == queue


def test_a_tasks_own_exchange_and_routing_key_route_it() -> None:
    app = _app(task_queues=QUEUES)

    @app.task(name="t.bound", exchange="ex", routing_key="rk")
    def bound() -> None:
        return None

    assert app.route("t.bound", [], {}, {}, bound) == "routed"
    assert app.route("t.bound", [], {}, {"queue": "plain"}, bound) == "plain"  # option first


def test_an_exchange_no_queue_is_bound_to_fails_the_send_naming_it() -> None:
    app = _app(task_queues=QUEUES)
    with pytest.raises(ImproperlyConfigured, match="exchange 'ex' with routing key 'nope'"):
        app.send_task("t.x", exchange="ex", routing_key="nope")


def test_a_task_sent_by_exchange_and_key_runs_on_the_worker_of_that_queue() -> None:
    app = _app(task_queues=QUEUES)

    @app.task(name="t.where", bind=True)
    def where(self: Any) -> Any:
        return self.request.delivery_info.get("routing_key")

    with TestWorker(app, queues=["routed"]):
        result = where.apply_async(exchange=Exchange("ex"), routing_key="rk")  # type: ignore[no-untyped-call]
        assert result.get(timeout=20) == "routed"


def test_a_worker_binds_its_queues_to_the_exchanges_task_queues_gives_them() -> None:
    app = _app(task_queues=QUEUES)
    consumed = ["plain", "routed", "own"]
    assert _queues.bindings(app.conf, consumed) == [
        ("routed", "ex", "rk"),
        ("own", "own_ex", "own_rk"),
    ]
    assert _queues.bindings(app.conf, ["plain"]) == []  # bound by its name only


def test_a_queue_on_a_topic_exchange_is_not_bound_to_it() -> None:
    topic = KombuQueue("tq", Exchange("tx", type="topic"), routing_key="a.*")  # type: ignore[no-untyped-call]
    app = _app(task_queues=[topic])
    assert _queues.bindings(app.conf, ["tq"]) == []
