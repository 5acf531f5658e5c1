"""What the buttons do (POST only, admin only: :mod:`._auth` refuses the others): remote
control of workers, revoke/terminate/retry of tasks, purge of queues, periodic entries,
dead letters. Each answers JSON: what happened, or ``{"error": ...}`` with a 4xx."""

from __future__ import annotations

import ast
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from celeriac.protocol.envelope import decode_envelope
from celeriac.transports.capabilities import DeadLetterRemoval, DeadLetterStore

if TYPE_CHECKING:
    from celeriac.dashboard._web import Dashboard

Action = Callable[["Dashboard", Request, dict[str, Any]], Awaitable[Any]]

#: the worker commands a button may send, and the argument each takes from the body
WORKER_COMMANDS = {
    "pool_grow": "n",
    "pool_shrink": "n",
    "shutdown": None,
    "add_consumer": "queue",
    "cancel_consumer": "queue",
}


class Refused(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def worker_command(dash: Dashboard, request: Request, body: dict[str, Any]) -> Any:
    host, command = request.path_params["host"], request.path_params["command"]
    if command not in WORKER_COMMANDS:
        raise Refused(f"unknown worker command {command!r}", 404)
    arguments: dict[str, Any] = {}
    wanted = WORKER_COMMANDS[command]
    if wanted == "n":
        try:
            arguments["n"] = max(1, int(body.get("n", 1)))
        except (TypeError, ValueError):
            raise Refused("n must be a whole number") from None
    elif wanted == "queue":
        queue = str(body.get("queue") or "").strip()
        if not queue:
            raise Refused("a queue name is needed")
        arguments["queue"] = queue
    if command == "shutdown":
        await dash.app.control.abroadcast("shutdown", destination=[host])
        return {"sent": "shutdown", "worker": host}
    answers = await dash.app.control.abroadcast(
        command, arguments, destination=[host], reply=True, timeout=3.0
    )
    for answer in answers or []:
        if host in answer:
            if command in ("add_consumer", "cancel_consumer"):
                dash.collector.add_queue(arguments["queue"])
            return {"worker": host, "answer": answer[host]}
    raise Refused(f"{host} did not answer within 3 s", 504)


async def revoke(dash: Dashboard, request: Request, body: dict[str, Any]) -> Any:
    task_id = request.path_params["task_id"]
    terminate = request.url.path.endswith("/terminate")
    signal = str(body.get("signal") or "SIGTERM") if terminate else None
    await dash.app.control.arevoke([task_id], terminate=terminate, signal=signal)
    task = dash.state.tasks.get(task_id)
    if task is not None and task.state not in ("SUCCESS", "FAILURE"):
        task.state = "REVOKED"
    return {"revoked": task_id, "terminate": terminate}


async def retry(dash: Dashboard, request: Request, body: dict[str, Any]) -> Any:
    """Send a failed task again, now, as a new task with the same name and arguments
    (from the backend's extended result, or the event's reprs when they are literals)."""
    task_id = request.path_params["task_id"]
    backend = await dash.app.get_backend()
    meta = await backend.get(task_id) or {}
    task = dash.state.tasks.get(task_id)
    state = meta.get("status") or (task.state if task else None)
    if state not in ("FAILURE", "REVOKED", "REJECTED"):
        raise Refused(f"only a failed task can be retried, not one in state {state}", 409)
    name = meta.get("name") or (task.name if task else None)
    if not name:
        raise Refused("the task's name is unknown (no event nor extended result has it)", 409)
    if "args" in meta and meta.get("args") is not None:
        args, kwargs = list(meta.get("args") or []), dict(meta.get("kwargs") or {})
    else:
        args, kwargs = _literal_arguments(
            task.args if task else None, task.kwargs if task else None
        )
    queue = meta.get("queue") or (task.queue if task else None)
    options: dict[str, Any] = {"queue": queue} if queue else {}
    result = await dash.app.asend_task(str(name), args, kwargs, **options)
    return {"retried": task_id, "task_id": result.id}


def _literal_arguments(args: str | None, kwargs: str | None) -> tuple[list[Any], dict[str, Any]]:
    try:
        positional = ast.literal_eval(args) if args else ()
        keywords = ast.literal_eval(kwargs) if kwargs else {}
    except (ValueError, SyntaxError):
        raise Refused(
            "the arguments are known only as reprs that are not Python literals; "
            "set result_extended=True to retry such tasks from the dashboard",
            409,
        ) from None
    if not isinstance(positional, list | tuple) or not isinstance(keywords, dict):
        raise Refused("the arguments' reprs are not a tuple and a dict", 409)
    return list(positional), dict(keywords)


async def purge(dash: Dashboard, request: Request, body: dict[str, Any]) -> Any:
    queue = request.path_params["queue"]
    broker = await dash.app.get_broker()
    count = await broker.purge(queue)
    return {"queue": queue, "purged": count}


async def periodic(dash: Dashboard, request: Request, body: dict[str, Any]) -> Any:
    from celeriac.beat.service import Beat  # noqa: PLC0415

    name, what = request.path_params["name"], request.path_params["what"]
    beat = Beat(dash.app)
    entries = {e.name: e for e in await beat.entries()}
    entry = entries.get(name)
    if entry is None:
        raise Refused(f"no periodic entry {name!r}", 404)
    if what == "run":
        options = {k: v for k, v in entry.options.items() if k in ("queue", "priority")}
        result = await dash.app.asend_task(entry.task, entry.args, entry.kwargs, **options)
        return {"entry": name, "task_id": result.id}
    if what in ("enable", "disable"):
        await beat.set_enabled(name, what == "enable")
        return {"entry": name, "enabled": what == "enable"}
    raise Refused(f"unknown periodic action {what!r}", 404)


async def dead_letter(dash: Dashboard, request: Request, body: dict[str, Any]) -> Any:
    """Requeue (publish it again to its queue, then remove it) or delete a dead letter,
    named by its queue and time (``failed_at``) as the list gave them."""
    what = request.path_params["what"]
    broker = await dash.app.get_broker()
    if not isinstance(broker, DeadLetterStore):
        raise Refused(f"the {type(broker).__name__} broker keeps no dead letters", 404)
    if not isinstance(broker, DeadLetterRemoval):
        raise Refused(f"the {type(broker).__name__} broker cannot remove dead letters", 501)
    queue, failed_at = str(body.get("queue") or ""), body.get("failed_at")
    letter = next(
        (
            d
            for d in await broker.dead_letters(1000)
            if d.queue == queue and d.failed_at == failed_at
        ),
        None,
    )
    if letter is None:
        raise Refused("no such dead letter (requeued or deleted already?)", 404)
    if what == "requeue":
        message = letter.message or decode_envelope(letter.raw)
        await broker.publish(letter.queue, message)
    elif what != "delete":
        raise Refused(f"unknown dead-letter action {what!r}", 404)
    removed = await broker.remove_dead_letter(letter)
    return {"queue": queue, what: True, "removed": removed}


ROUTES: dict[str, Action] = {
    "/api/workers/{host}/{command}": worker_command,
    "/api/tasks/{task_id}/revoke": revoke,
    "/api/tasks/{task_id}/terminate": revoke,
    "/api/tasks/{task_id}/retry": retry,
    "/api/queues/{queue}/purge": purge,
    "/api/periodic/{name}/{what}": periodic,
    "/api/dead-letters/{what}": dead_letter,
}

__all__ = ["ROUTES", "Refused"]
