"""What the page reads: one JSON view per route, from the state, the backend and the
broker. Nothing here changes anything (see :mod:`._actions`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from celeriac.dashboard._state import FINAL, RATE_SECONDS, Task, cut
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
        rates, came_from = dash.state.queue_rates_of(name)
        rows.append(
            {
                "name": name,
                "length": samples[-1][1] if samples else None,
                "consumers": sorted(consumers.get(name, [])),
                "samples": [[round(t, 1), n] for t, n in samples],
                "rates": rates,
                "in_from": came_from,
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
    if await _complete_groups(dash, backend, dash.state.family(found)):
        await _complete_groups(dash, backend, _siblings(dash, dash.state.family(found)))
    members = dash.state.family(found)
    nodes = {t.uuid: _node(t) for t in members}
    edges = {(t.parent_id, t.uuid) for t in members if t.parent_id and t.parent_id in nodes}
    _draw_groups(members, nodes, edges)
    for child in children:
        nodes.setdefault(child, {"id": child, "name": None, "state": "PENDING"})
        edges.add((task_id, child))
    if found.parent_id and found.parent_id not in nodes:
        parent = dash.state.tasks.get(found.parent_id)
        nodes[found.parent_id] = _node(parent) if parent else {"id": found.parent_id}
        edges.add((found.parent_id, task_id))
    return {
        "task": {**found.as_dict(), "group_id": found.group_id or None},
        "children": children,
        "graph": {"nodes": list(nodes.values()), "edges": sorted(edges)},
        "in_backend": meta is not None,
    }


def _node(task: Task) -> dict[str, Any]:
    return {"id": task.uuid, "name": task.name, "state": task.state}


async def _complete_groups(dash: Dashboard, backend: Any, members: list[Task]) -> bool:
    """The group ids events did not carry (Celery's workers' events carry none), from
    the backend's metas (``group_id``), in one read; a task read and found in no group
    is marked so (``""``), not to be read again. True when a group id was found."""
    missing = [t for t in members if t.group_id is None and t.state in FINAL]
    if not missing:
        return False
    try:
        found = await backend.get_many([t.uuid for t in missing])
    except NotImplementedError:  # a backend that cannot be read by others (rpc://)
        return False
    grouped = False
    for task in missing:
        meta = found.get(task.uuid) or {}
        if meta.get("group_id"):
            dash.state.from_backend(task.uuid, meta)
            grouped = True
        if task.group_id is None:
            task.group_id = ""
    return grouped


def _siblings(dash: Dashboard, members: list[Task]) -> list[Task]:
    """Tasks that may be in a group with a member but have another root (a chord sent
    on its own, by a Celery client: each header task its own root): same parent, same
    name, received within a minute of a member in a group; at most 200."""
    grouped = [t for t in members if t.group_id]
    found: list[Task] = []
    for task in dash.state.tasks.values():
        if task.group_id is not None or task.state not in FINAL:
            continue
        if any(
            task.parent_id == m.parent_id
            and task.name == m.name
            and abs((task.received or 0) - (m.received or 0)) < 60
            for m in grouped
        ):
            found.append(task)
            if len(found) >= 200:
                break
    return found


def _draw_groups(
    members: list[Task], nodes: dict[str, dict[str, Any]], edges: set[tuple[str, str]]
) -> None:
    """One node per group, fed by its members (the tasks that carry its id: in a group
    of chains, each chain's last task): a task whose parent is a member (a chord's
    body, sent by the member that completed the header, which may carry the group's id
    too) is fed by the group instead of by that one member."""
    groups: dict[str, list[Task]] = {}
    for task in members:
        if task.group_id:
            groups.setdefault(task.group_id, []).append(task)
    for gid, tasks in groups.items():
        ids = {t.uuid for t in tasks}
        heads = [t for t in tasks if t.parent_id not in ids]
        head_ids = {t.uuid for t in heads}
        fed = [t for t in members if t.parent_id in head_ids and t.uuid not in head_ids]
        if len(heads) < 2 and not fed:
            continue
        node = f"group:{gid}"
        states = {t.state for t in heads}
        nodes[node] = {
            "id": node,
            "kind": "group",
            "name": f"group of {len(heads)}",
            "state": states.pop() if len(states) == 1 else "mixed",
            "group_id": gid,
        }
        edges.update((t.uuid, node) for t in heads)
        for task in fed:
            edges.discard((str(task.parent_id), task.uuid))
            edges.add((node, task.uuid))


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
            message = letter.message or decode_envelope(letter.raw)
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
