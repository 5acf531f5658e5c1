"""What the page reads: one JSON view per route, from the state, the backend and the
broker. Nothing here changes anything (see :mod:`._actions`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from celeriac.dashboard._state import RATE_SECONDS, Task, cut
from celeriac.protocol.envelope import decode_envelope
from celeriac.transports.capabilities import DeadLetterStore
from celeriac.utils.log import mask_url

if TYPE_CHECKING:
    from celeriac.dashboard._web import Dashboard

View = Callable[["Dashboard", Request], Awaitable[Any]]


class NotFound(Exception):
    pass


def summary(dash: Dashboard) -> dict[str, Any]:
    """The live stream's payload: enough for the header and to know what to refetch."""
    now = time.time()
    state = dash.state
    online = sum(1 for w in state.workers.values() if w.alive(now))
    counts: dict[str, int] = {}
    for task in state.tasks.values():
        counts[task.state] = counts.get(task.state, 0) + 1
    return {
        "version": state.version,
        "workers_online": online,
        "workers": len(state.workers),
        "tasks": len(state.tasks),
        "states": counts,
        "events": state.event_count,
    }


async def overview(dash: Dashboard, request: Request) -> Any:
    state = dash.state
    now = time.time()
    start = int(now // RATE_SECONDS) * RATE_SECONDS - RATE_SECONDS * 59
    by_start = {b[0]: b for b in state.rates}
    series = [
        {
            "t": t,
            "succeeded": by_start.get(t, [t, 0, 0])[1],
            "failed": by_start.get(t, [t, 0, 0])[2],
        }
        for t in range(start, start + RATE_SECONDS * 60, RATE_SECONDS)
    ]
    return {**summary(dash), "bucket_seconds": RATE_SECONDS, "series": series}


async def workers(dash: Dashboard, request: Request) -> Any:
    now = time.time()
    return [w.as_dict(now) for w in sorted(dash.state.workers.values(), key=lambda w: w.hostname)]


async def queues(dash: Dashboard, request: Request) -> Any:
    rows = []
    consumers: dict[str, list[str]] = {}
    now = time.time()
    for worker in dash.state.workers.values():
        if worker.alive(now):
            for queue in worker.queues:
                consumers.setdefault(queue, []).append(worker.hostname)
    for name in sorted(dash.collector.queues):
        samples = list(dash.state.queue_samples.get(name, ()))
        rows.append(
            {
                "name": name,
                "length": samples[-1][1] if samples else None,
                "consumers": sorted(consumers.get(name, [])),
                "samples": [[round(t, 1), n] for t, n in samples],
                "rates": [list(b) for b in dash.state.queue_rates.get(name, ())],
            }
        )
    return rows


def _query(request: Request, name: str) -> str:
    return str(request.query_params.get(name, "")).strip()


async def tasks(dash: Dashboard, request: Request) -> Any:
    try:
        limit = max(1, min(int(_query(request, "limit") or 200), 1000))
    except ValueError:
        limit = 200
    found = dash.state.find(
        text=_query(request, "q"),
        state=_query(request, "state").upper(),
        worker=_query(request, "worker"),
        name=_query(request, "name"),
        limit=limit,
    )
    names = sorted({t.name for t in dash.state.tasks.values() if t.name})[:500]
    return {
        "tasks": [{**t.as_dict(), "traceback": None} for t in found],
        "total": len(dash.state.tasks),
        "names": names,
        "workers": sorted(dash.state.workers),
    }


async def task(dash: Dashboard, request: Request) -> Any:
    """One task: what events told, completed by the backend (which has it even when the
    dashboard never saw it, or was restarted), its canvas as nodes and edges."""
    task_id = request.path_params["task_id"]
    backend = await dash.app.get_backend()
    try:
        meta = await backend.get(task_id)
    except NotImplementedError:  # a backend that cannot be read by others (rpc://)
        meta = None
    known = dash.state.tasks.get(task_id)
    if meta is None and known is None:
        raise NotFound(f"no task {task_id} in the dashboard or the result backend")
    found = dash.state.from_backend(task_id, meta) if meta else known
    assert found is not None
    children = _children(meta)
    members = dash.state.family(found)
    nodes = {t.uuid: _node(t) for t in members}
    edges = {(t.parent_id, t.uuid) for t in members if t.parent_id and t.parent_id in nodes}
    for child in children:
        nodes.setdefault(child, {"id": child, "name": None, "state": "PENDING"})
        edges.add((task_id, child))
    if found.parent_id and found.parent_id not in nodes:
        parent = dash.state.tasks.get(found.parent_id)
        nodes[found.parent_id] = _node(parent) if parent else {"id": found.parent_id}
        edges.add((found.parent_id, task_id))
    return {
        "task": found.as_dict(),
        "children": children,
        "graph": {"nodes": list(nodes.values()), "edges": sorted(edges)},
        "in_backend": meta is not None,
    }


def _node(task: Task) -> dict[str, Any]:
    return {"id": task.uuid, "name": task.name, "state": task.state}


def _children(meta: dict[str, Any] | None) -> list[str]:
    """Ids of the children a backend meta lists (Celery's ``[[[id, parent], None],
    None]`` tuples, or plain ids)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list | tuple) and value:
            head = value[0]
            if isinstance(head, list | tuple) and head and isinstance(head[0], str):
                found.append(head[0])
            elif isinstance(head, list | tuple):
                for item in head:
                    walk(item)

    for child in (meta or {}).get("children") or []:
        walk(child)
    return found[:200]


async def periodic(dash: Dashboard, request: Request) -> Any:
    try:
        rows = await dash.app.beat.arows()
    except Exception as exc:  # no schedule store on this broker/backend pair
        return {"entries": [], "error": mask_url(str(exc))}
    disabled = await _disabled(dash)
    return {
        "entries": [
            {
                "name": row.entry.name,
                "task": row.entry.task,
                "schedule": row.schedule,
                "args": cut(row.entry.args),
                "kwargs": cut(row.entry.kwargs),
                "source": row.entry.source,
                "last_run": row.last_run.isoformat() if row.last_run else None,
                "next_run": row.next_run.isoformat() if row.next_run else None,
                "enabled": row.entry.name not in disabled,
            }
            for row in rows
        ],
        "error": None,
    }


async def _disabled(dash: Dashboard) -> set[str]:
    from celeriac.beat.service import Beat  # noqa: PLC0415

    return set(await Beat(dash.app).disabled())


async def dead_letters(dash: Dashboard, request: Request) -> Any:
    broker = await dash.app.get_broker()
    if not isinstance(broker, DeadLetterStore):
        return {"letters": [], "error": f"the {type(broker).__name__} broker keeps none"}
    letters = []
    for index, letter in enumerate(await broker.dead_letters(200)):
        try:
            message = decode_envelope(letter.raw)
            name, task_id = message.task_name, message.task_id
            args = message.headers.get("argsrepr")
        except Exception:
            name = task_id = args = None
        letters.append(
            {
                "index": index,
                "queue": letter.queue,
                "reason": cut(letter.reason),
                "failed_at": letter.failed_at,
                "task": name,
                "task_id": task_id,
                "args": cut(args),
            }
        )
    return {"letters": letters, "error": None}


ROUTES: dict[str, View] = {
    "/api/overview": overview,
    "/api/workers": workers,
    "/api/queues": queues,
    "/api/tasks": tasks,
    "/api/tasks/{task_id}": task,
    "/api/periodic": periodic,
    "/api/dead-letters": dead_letters,
}

__all__ = ["ROUTES", "NotFound", "summary"]
