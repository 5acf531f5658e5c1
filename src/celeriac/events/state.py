"""What a monitor knows from the events it received: workers (online while their
heartbeats come) and recent tasks with their latest state, as Celery's
``celery.events.state.State`` keeps them, in small."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

#: a worker whose last heartbeat is older than this many heartbeat intervals is offline
HEARTBEAT_EXPIRES = 2.5

_TASK_STATES = {
    "task-sent": "PENDING",
    "task-received": "RECEIVED",
    "task-started": "STARTED",
    "task-succeeded": "SUCCESS",
    "task-failed": "FAILURE",
    "task-retried": "RETRY",
    "task-revoked": "REVOKED",
    "task-rejected": "REJECTED",
}


@dataclass
class WorkerInfo:
    hostname: str
    freq: float = 2.0
    last_heartbeat: float = 0.0
    offline: bool = False
    active: int = 0
    processed: int = 0
    loadavg: list[float] = field(default_factory=list)
    sw: str = ""

    @property
    def alive(self) -> bool:
        fresh = time.time() - self.last_heartbeat < self.freq * HEARTBEAT_EXPIRES
        return not self.offline and fresh


@dataclass
class TaskInfo:
    uuid: str
    name: str | None = None
    state: str = "PENDING"
    hostname: str | None = None
    args: str | None = None
    kwargs: str | None = None
    result: str | None = None
    exception: str | None = None
    runtime: float | None = None
    timestamp: float = 0.0


class State:
    """Workers and the last ``max_tasks`` tasks, from events given to :meth:`event`."""

    def __init__(self, max_tasks: int = 1000) -> None:
        self.workers: dict[str, WorkerInfo] = {}
        self.tasks: OrderedDict[str, TaskInfo] = OrderedDict()
        self.max_tasks = max_tasks
        self.event_count = 0

    def event(self, event: dict[str, Any]) -> None:
        self.event_count += 1
        kind = str(event.get("type", ""))
        host = str(event.get("hostname", ""))
        if kind.startswith("worker-"):
            worker = self.workers.setdefault(host, WorkerInfo(host))
            worker.offline = kind == "worker-offline"
            worker.last_heartbeat = float(
                event.get("local_received") or event.get("timestamp") or 0
            )
            worker.freq = float(event.get("freq") or worker.freq)
            if "active" in event:
                worker.active = int(event["active"] or 0)
                worker.processed = int(event.get("processed") or 0)
                worker.loadavg = list(event.get("loadavg") or [])
            worker.sw = f"{event.get('sw_ident', '')} {event.get('sw_ver', '')}".strip()
        elif kind in _TASK_STATES and event.get("uuid"):
            task = self.tasks.get(event["uuid"])
            if task is None:
                task = self.tasks[event["uuid"]] = TaskInfo(str(event["uuid"]))
                while len(self.tasks) > self.max_tasks:
                    self.tasks.popitem(last=False)
            if kind != "task-sent":
                task.hostname = host
            task.state = _TASK_STATES[kind]
            task.timestamp = float(event.get("timestamp") or 0)
            for name in ("name", "args", "kwargs", "result", "exception", "runtime"):
                if event.get(name) is not None:
                    setattr(task, name, event[name])


__all__ = ["State", "TaskInfo", "WorkerInfo"]
