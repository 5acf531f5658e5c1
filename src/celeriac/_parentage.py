"""What a task sent from inside a running task inherits from it, as Celery's
``send_task`` does: ``parent_id`` (the running task's id) and ``root_id`` (its root, or
its id when it is the root), and with ``task_inherit_parent_priority`` its priority.

Measured on Celery 5.7: a task that calls ``add.delay()`` sends a child whose
``request.parent_id`` is the sender's id and whose ``request.root_id`` is the sender's
root; options given explicitly win. A task run eagerly (``apply``) counts as running, as
in Celery; a task called directly (``task()``) does not.
"""

from __future__ import annotations

from typing import Any


def running_request() -> Any:
    """The request of the task running in this context, or None."""
    from celeriac.task import _current_request  # noqa: PLC0415 - task imports the app

    request = _current_request.get()
    if request.called_directly or request.id is None:
        return None
    return request


def inherit(options: dict[str, Any], inherit_priority: bool) -> None:
    """Fill ``parent_id``/``root_id`` (and ``priority``) of a message about to be built
    from the running task, where the caller did not give them."""
    if options.get("root_id") and options.get("parent_id"):
        return
    request = running_request()
    if request is None:
        return
    if not options.get("root_id"):
        options["root_id"] = request.root_id or request.id
    if not options.get("parent_id"):
        options["parent_id"] = request.id
    if inherit_priority and options.get("priority") is None:
        priority = (request.delivery_info or {}).get("priority")
        if priority is not None:
            options["priority"] = priority


__all__ = ["inherit", "running_request"]
