"""Custom remote-control commands as in ``test_control_commands_semantics``, on
RabbitMQ (a vhost of the module's own, ``rpc://`` results)."""

from __future__ import annotations

from control_checks import TASKS, run_checks
from semantic_cluster import Cluster

__all__ = ["TASKS"]

BROKER = "amqp"


def test_custom_commands_on_rabbitmq(cluster: Cluster) -> None:
    run_checks(cluster)
