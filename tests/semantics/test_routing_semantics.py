"""Routing with kombu's objects on Redis, measured on Celery: see ``routing_checks``."""

from __future__ import annotations

from routing_checks import (
    TASKS,
    check_exchange_and_routing_key,
    check_queue_object_option,
    check_queue_object_route,
)
from semantic_cluster import Cluster

__all__ = ["TASKS"]


def test_a_queue_object_as_the_queue_option(cluster: Cluster) -> None:
    check_queue_object_option(cluster)


def test_a_queue_object_in_task_routes(cluster: Cluster) -> None:
    check_queue_object_route(cluster)


def test_an_exchange_and_routing_key_reach_the_queue_bound_to_them(cluster: Cluster) -> None:
    check_exchange_and_routing_key(cluster)
