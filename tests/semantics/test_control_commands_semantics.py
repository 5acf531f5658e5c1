"""Custom remote-control commands (``worker.control.control_command`` /
``inspect_command``) registered by the worker's tasks module, reached through
``app.control.broadcast`` and ``app.control.inspect()._request``, on Redis (the module
and its checks: ``tests/control_checks.py``)."""

from __future__ import annotations

from control_checks import TASKS, run_checks
from semantic_cluster import Cluster

__all__ = ["TASKS"]


def test_custom_commands(cluster: Cluster) -> None:
    run_checks(cluster)
