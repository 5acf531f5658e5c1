"""The remote-control commands a celeriac worker carries out itself, registered in the
same registry as the user's (:class:`celeriac.worker.control.Panel`), as Celery's are:
a user command of the same name replaces one (the last registered wins).

Their answers are Celery 5.7's, measured against its worker: ``ping`` ->
``{"ok": "pong"}``; ``revoke`` -> ``{"ok": "tasks {'<id>', ...} flagged as revoked"}``
(the set of ids, as Celery words it), with ``terminate=True`` ``{"ok": "terminate:
<ids this worker holds>"}`` or ``{"ok": "terminate: tasks unknown"}``; every command takes
(and ignores) extra keyword arguments, as Celery's handlers do. A celeriac revoke is
durable (:mod:`celeriac.control`), so this worker records it in the broker's store for
every worker, and a running task revoked with ``terminate`` is stopped by the worker
running it within a second.
"""

from __future__ import annotations

import os
import signal as signal_module
from typing import Any

from celeriac import _stamp_revoke
from celeriac.worker.control import ControlState, control_command, inspect_command


async def ping(state: ControlState, **kwargs: Any) -> Any:
    """Ping a worker."""
    return {"ok": "pong"}


async def registered(state: ControlState, taskinfoitems: Any = None, **kwargs: Any) -> Any:
    """The names of the tasks this worker knows."""
    return sorted(name for name in state.app.tasks if not name.startswith("celery."))


async def shutdown(state: ControlState, **kwargs: Any) -> Any:
    """A warm shutdown: SIGTERM to the worker's main process."""
    pid = getattr(state.consumer, "worker_pid", None) or os.getpid()
    os.kill(pid, signal_module.SIGTERM)
    return {"ok": "shutting down"}


async def revoke(
    state: ControlState,
    task_id: Any = None,
    terminate: bool = False,
    signal: str | None = None,
    **kwargs: Any,
) -> Any:
    """Revoke tasks by id (durably); ``terminate``: stop them where they run."""
    ids = [str(task_id)] if isinstance(task_id, str) else [str(i) for i in task_id or ()]
    held = {job.call.id for job in _held(state.consumer)}  # before it takes effect
    await state.app.control.arevoke(
        ids, terminate=bool(terminate), signal=str(signal) if signal else None, broadcast=False
    )
    if terminate:
        here = [i for i in dict.fromkeys(ids) if i in held]
        return {"ok": f"terminate: {', '.join(here)}" if here else "terminate: tasks unknown"}
    return {"ok": f"tasks {set(ids)!r} flagged as revoked"}


async def revoke_by_stamped_headers(state: ControlState, **arguments: Any) -> Any:
    """Revoke the tasks stamped with the given headers (durably)."""
    return await _stamp_revoke.command(state.app, arguments)


async def hello(state: ControlState, **kwargs: Any) -> Any:
    """A starting Celery worker's greeting: nothing revoked in memory to share."""
    return {"revoked": {}, "clock": 0}


def _held(consumer: Any) -> list[Any]:
    """The jobs this worker holds (running or waiting for a slot), as Celery's
    ``terminate`` looks among the requests its worker holds."""
    held = getattr(consumer, "held", None) or {}
    return [job for job in held.values() if job is not None]


inspect_command(ping)
inspect_command(registered)
control_command(shutdown)
control_command(revoke, variadic="task_id", signature="[id1 [id2 [... [idN]]]]")
control_command(
    revoke_by_stamped_headers,
    name=_stamp_revoke.COMMAND,
    variadic="headers",
    signature="[key1=value1 [key2=value2 [... [keyN=valueN]]]]",
)
control_command(hello, visible=False)

#: the built-in commands' names
BUILTINS = ("ping", "registered", "revoke", _stamp_revoke.COMMAND, "shutdown", "hello")

__all__ = ["BUILTINS"]
