"""Routing with kombu's objects, measured on Celery (shared by the Redis and RabbitMQ
semantics modules): a ``Queue`` object as the ``queue=`` option and in ``task_routes``, and
``exchange``/``routing_key`` reaching the queue of ``task_queues`` bound to them (a Celery
client: through the binding the worker made). The default queue is one no worker
consumes, so a message routed wrongly never runs (and the test fails) instead of landing
there."""

from __future__ import annotations

from semantic_cluster import Cluster

TASKS = """
from kombu import Exchange, Queue

ROUTED = Queue("sem_rt_a", Exchange("sem_rt_ex", type="direct"), routing_key="sem_rt_key")
app.conf.task_queues = (ROUTED, Queue("sem_rt_b"))
app.conf.task_default_queue = "sem_rt_nobody"
app.conf.task_routes = {"sem.rt.by_object": {"queue": ROUTED}}


@app.task(name="sem.rt.ping")
def ping():
    return "pong"


@app.task(name="sem.rt.by_object")
def by_object():
    return "object"
"""


def check_queue_object_option(cluster: Cluster) -> None:
    t = cluster.tasks
    assert t.ping.apply_async(queue=t.ROUTED).get(timeout=20) == "pong"
    assert t.ping.apply_async(queue=t.Queue("sem_rt_b")).get(timeout=20) == "pong"


def check_queue_object_route(cluster: Cluster) -> None:
    assert cluster.tasks.by_object.delay().get(timeout=20) == "object"


def check_exchange_and_routing_key(cluster: Cluster) -> None:
    # a Celery client sending by exchange alone declares nothing: it finds the queue
    # through the binding the worker made
    t = cluster.tasks
    result = t.ping.apply_async(exchange="sem_rt_ex", routing_key="sem_rt_key")
    assert result.get(timeout=20) == "pong"
