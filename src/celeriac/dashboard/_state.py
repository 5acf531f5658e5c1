"""What the dashboard holds in its own memory, and the bounds that keep it small.

* tasks: the last ``max_tasks`` tasks seen (events, or the result backend at start-up),
  oldest dropped first; each keeps reprs cut to :data:`REPR_LIMIT` characters and a
  traceback cut to :data:`TRACEBACK_LIMIT`, so one task costs at most a few kilobytes;
* workers: one record per worker heard of (dropped an hour after it went offline);
* rates: :data:`RATE_BUCKETS` buckets of :data:`RATE_SECONDS` seconds (an hour of
  succeeded/failed counts), and per queue (500 at most) :data:`QUEUE_SAMPLES` length
  samples and as many buckets of tasks in and out: out = received by a worker (its
  ``task-received`` event), in = sent to it (``task-sent`` events) or, for a queue of
  which no ``task-sent`` event was heard, derived from the lengths: the growth between
  two samples plus what went out meanwhile (:meth:`DashboardState.queue_length`).

Everything else (a task that fell out of the window, its result and traceback) is read
from the result backend when it is asked for, so a restart loses nothing the backend holds.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from typing import Any

#: characters kept of an args/kwargs/result/exception repr
REPR_LIMIT = 500
#: characters kept of a traceback
TRACEBACK_LIMIT = 8000
RATE_SECONDS = 10
RATE_BUCKETS = 360
QUEUE_SAMPLES = 120
#: an offline worker is forgotten this many seconds after its last event
WORKER_FORGET = 3600.0
#: a worker whose last heartbeat is older than this many heartbeat intervals is offline
HEARTBEAT_EXPIRES = 2.5

TASK_EVENT_STATES = {
    "task-sent": "PENDING",
    "task-received": "RECEIVED",
    "task-started": "STARTED",
    "task-succeeded": "SUCCESS",
    "task-failed": "FAILURE",
    "task-retried": "RETRY",
    "task-revoked": "REVOKED",
    "task-rejected": "REJECTED",
}
#: the states a task does not leave
FINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED", "REJECTED"})


def cut(value: Any, limit: int = REPR_LIMIT) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(slots=True)
class Task:
    uuid: str
    name: str | None = None
    state: str = "PENDING"
    worker: str | None = None
    queue: str | None = None
    args: str | None = None
    kwargs: str | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    retries: int = 0
    parent_id: str | None = None
    root_id: str | None = None
    #: the group it is a member of (a chord's header): our task-received events, or the
    #: result backend's ``group_id``
    group_id: str | None = None
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    finished: float | None = None
    runtime: float | None = None
    #: where it came from: "events" or "backend"
    source: str = "events"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Worker:
    hostname: str
    freq: float = 2.0
    last_heartbeat: float = 0.0
    offline: bool = False
    active: int = 0
    processed: int = 0
    loadavg: list[float] = field(default_factory=list)
    software: str = ""
    #: from ``inspect stats`` / ``active_queues`` (polled)
    pool: dict[str, Any] = field(default_factory=dict)
    queues: list[str] = field(default_factory=list)
    pid: int | None = None
    #: online until then without heartbeats: it answered remote control (polled)
    answered_until: float = 0.0

    def alive(self, now: float) -> bool:
        fresh = now - self.last_heartbeat < self.freq * HEARTBEAT_EXPIRES
        return not self.offline and (fresh or now < self.answered_until)

    def as_dict(self, now: float) -> dict[str, Any]:
        data = asdict(self)
        data["online"] = self.alive(now)
        data["heartbeat_age"] = round(now - self.last_heartbeat, 1) if self.last_heartbeat else None
        return data


class DashboardState:
    """The dashboard's window on workers, tasks and rates; see the module docstring."""

    def __init__(self, max_tasks: int = 10_000) -> None:
        if max_tasks < 1:
            raise ValueError("max_tasks must be at least 1")
        self.max_tasks = max_tasks
        self.tasks: OrderedDict[str, Task] = OrderedDict()
        self.workers: dict[str, Worker] = {}
        #: (bucket start, succeeded, failed), oldest first
        self.rates: deque[list[int]] = deque(maxlen=RATE_BUCKETS)
        #: queue -> (time, length) samples, and the last known lengths
        self.queue_samples: dict[str, deque[tuple[float, int]]] = {}
        #: queue -> [bucket start, sent to it, received from it, in derived from the
        #: lengths], for the tasks whose queue is known
        self.queue_rates: dict[str, deque[list[int]]] = {}
        #: queues named by a task-sent event: their "in" is counted, not derived
        self.sent_to: set[str] = set()
        #: queue -> tasks received from it since its last length sample
        self._out_since: dict[str, int] = {}
        self.event_count = 0
        #: bumped on every change: the live stream tells browsers when it moved
        self.version = 0

    # -- tasks ----------------------------------------------------------------------
    def task(self, uuid: str) -> Task:
        found = self.tasks.get(uuid)
        if found is None:
            found = self.tasks[uuid] = Task(uuid)
            while len(self.tasks) > self.max_tasks:
                self.tasks.popitem(last=False)
        return found

    def event(self, event: dict[str, Any]) -> None:
        """Take one event (Celery's or celeriac's)."""
        self.event_count += 1
        kind = str(event.get("type", ""))
        if kind.startswith("worker-"):
            self._worker_event(kind, event)
        elif kind in TASK_EVENT_STATES and event.get("uuid"):
            self._task_event(kind, event)
        else:
            return
        self.version += 1

    def _worker_event(self, kind: str, event: dict[str, Any]) -> None:
        host = str(event.get("hostname", ""))
        worker = self.workers.get(host)
        if worker is None:
            worker = self.workers[host] = Worker(host)
        worker.offline = kind == "worker-offline"
        worker.last_heartbeat = float(event.get("local_received") or event.get("timestamp") or 0)
        worker.freq = float(event.get("freq") or worker.freq)
        if "active" in event:
            worker.active = int(event["active"] or 0)
            worker.processed = int(event.get("processed") or 0)
            worker.loadavg = [float(x) for x in event.get("loadavg") or []]
        if event.get("pid"):
            worker.pid = int(event["pid"])
        worker.software = f"{event.get('sw_ident', '')} {event.get('sw_ver', '')}".strip()

    def _task_event(self, kind: str, event: dict[str, Any]) -> None:
        task = self.task(str(event["uuid"]))
        state = TASK_EVENT_STATES[kind]
        when = float(event.get("timestamp") or time.time())
        if kind == "task-sent":
            task.sent = when
        else:
            task.worker = str(event.get("hostname") or "") or task.worker
        self._times(task, kind, when)
        self._task_queue(task, kind, event, when)
        # events of several senders may cross: a final state stays final, and "sent"
        # changes nothing a worker already said
        if not (task.state in FINAL and state not in FINAL) and not (
            state == "PENDING" and task.state != "PENDING"
        ):
            task.state = state
        for name in ("name", "parent_id", "root_id", "group_id"):
            if event.get(name):
                setattr(task, name, str(event[name]))
        for name in ("args", "kwargs", "result", "exception"):
            if event.get(name) is not None:
                setattr(task, name, cut(event[name]))
        if event.get("traceback"):
            task.traceback = cut(event["traceback"], TRACEBACK_LIMIT)
        if event.get("retries") is not None:
            task.retries = int(event["retries"] or 0)
        if event.get("runtime") is not None:
            task.runtime = float(event["runtime"])

    def _task_queue(self, task: Task, kind: str, event: dict[str, Any], when: float) -> None:
        """The task's queue (task-sent; our task-received; else the only queue its
        worker consumes), and the queue's in/out counts."""
        task.queue = event.get("queue") or task.queue
        if kind == "task-received" and not task.queue:
            task.queue = self._only_queue(task.worker)
        if task.queue and kind == "task-sent":
            if len(self.sent_to) < 500:
                self.sent_to.add(task.queue)
            self._queue_rate(task.queue, when, 1)
        elif task.queue and kind == "task-received":
            self._queue_rate(task.queue, when, 2)
            if task.queue in self._out_since:
                self._out_since[task.queue] += 1

    def _times(self, task: Task, kind: str, when: float) -> None:
        if kind == "task-received":
            task.received = when
        elif kind == "task-started":
            task.started = when
        elif kind in ("task-succeeded", "task-failed", "task-revoked", "task-rejected"):
            task.finished = when
            self._count(when, failed=kind == "task-failed", done=kind == "task-succeeded")

    def _count(self, when: float, failed: bool, done: bool) -> None:
        start = int(when // RATE_SECONDS) * RATE_SECONDS
        if not self.rates or self.rates[-1][0] < start:
            self.rates.append([start, 0, 0])
            bucket = self.rates[-1]
        else:
            bucket = next((b for b in reversed(self.rates) if b[0] <= start), self.rates[0])
        if done:
            bucket[1] += 1
        if failed:
            bucket[2] += 1

    def _queue_rate(self, queue: str, when: float, column: int, amount: int = 1) -> None:
        rates = self.queue_rates.get(queue)
        if rates is None:
            if len(self.queue_rates) >= 500:
                return
            rates = self.queue_rates[queue] = deque(maxlen=QUEUE_SAMPLES)
        start = int(when // RATE_SECONDS) * RATE_SECONDS
        if not rates or rates[-1][0] < start:
            rates.append([start, 0, 0, 0])
        bucket = next((b for b in reversed(rates) if b[0] <= start), rates[0])
        bucket[column] += amount

    def from_backend(self, task_id: str, meta: dict[str, Any]) -> Task:
        """Merge what the result backend holds of a task (it is the record of truth for
        the final state; events may have been missed while the dashboard was down)."""
        task = self.tasks.get(task_id)
        if task is None:
            task = self.task(task_id)
            task.source = "backend"
        status = str(meta.get("status") or task.state)
        if status != "PENDING":
            task.state = status
        task.name = task.name or meta.get("name")
        task.worker = task.worker or meta.get("worker")
        task.queue = task.queue or meta.get("queue")
        if meta.get("args") is not None and task.args is None:
            task.args = cut(meta["args"])
        if meta.get("kwargs") is not None and task.kwargs is None:
            task.kwargs = cut(meta["kwargs"])
        if status == "SUCCESS" and task.result is None:
            task.result = cut(meta.get("result"))
        elif status in ("FAILURE", "RETRY", "REVOKED") and task.exception is None:
            task.exception = cut(_exception_text(meta.get("result")))
        if meta.get("traceback") and not task.traceback:
            task.traceback = cut(meta["traceback"], TRACEBACK_LIMIT)
        task.parent_id = task.parent_id or meta.get("parent_id")
        task.group_id = task.group_id or meta.get("group_id")
        if meta.get("retries") is not None:
            task.retries = max(task.retries, int(meta["retries"] or 0))
        done = meta.get("date_done")
        if done and task.finished is None:
            task.finished = _epoch(done)
        self.version += 1
        return task

    # -- workers and queues ---------------------------------------------------------
    def forget_old_workers(self, now: float) -> None:
        for host in [
            h
            for h, w in self.workers.items()
            if now - max(w.last_heartbeat, w.answered_until) > WORKER_FORGET
        ]:
            del self.workers[host]

    def queue_length(self, queue: str, length: int, when: float) -> None:
        samples = self.queue_samples.get(queue)
        if samples is None:
            samples = self.queue_samples[queue] = deque(maxlen=QUEUE_SAMPLES)
        if not samples or samples[-1][1] != length:
            self.version += 1
        out = self._out_since.get(queue, 0)
        self._out_since[queue] = 0
        if samples and queue not in self.sent_to:
            # what came in since the last sample: the growth plus what went out (not
            # below 0: a purge, or a received event that arrives after the sample)
            came = max(0, length - samples[-1][1] + out)
            if came:
                self._queue_rate(queue, when, 3, came)
        samples.append((when, length))

    def queue_rates_of(self, queue: str) -> tuple[list[list[int]], str]:
        """``[bucket start, in, out]`` of ``queue``, oldest first, and where "in" came
        from: ``"sent"`` (task-sent events) or ``"lengths"`` (derived)."""
        counted = queue in self.sent_to
        rates = self.queue_rates.get(queue, ())
        return [[b[0], b[1] if counted else b[3], b[2]] for b in rates], (
            "sent" if counted else "lengths"
        )

    def _only_queue(self, host: str | None) -> str | None:
        """The queue a worker received from when it consumes only one (Celery's
        task-received events do not say)."""
        worker = self.workers.get(host or "")
        return worker.queues[0] if worker is not None and len(worker.queues) == 1 else None

    # -- views ----------------------------------------------------------------------
    def find(
        self,
        text: str = "",
        state: str = "",
        worker: str = "",
        name: str = "",
        limit: int = 200,
    ) -> list[Task]:
        """The most recent tasks matching every filter given (``text``: a substring of
        the id, name, args, kwargs, result or exception)."""
        needle = text.lower()
        found: list[Task] = []
        for task in reversed(self.tasks.values()):
            if state and task.state != state:
                continue
            if worker and task.worker != worker:
                continue
            if name and task.name != name:
                continue
            if needle and not any(
                needle in (v or "").lower()
                for v in (task.uuid, task.name, task.args, task.kwargs, task.result, task.exception)
            ):
                continue
            found.append(task)
            if len(found) >= limit:
                break
        return found

    def family(self, task: Task) -> list[Task]:
        """The tasks known to belong to ``task``'s canvas, at most 200: those of its root,
        and those of the groups they are members of, with their roots (a chord sent on
        its own has a root per header task)."""
        roots = {task.root_id or task.uuid}
        members: dict[str, Task] = {task.uuid: task}
        groups: set[str] = set()
        for _ in range(3):  # roots -> their groups -> the members' roots -> theirs
            for t in self.tasks.values():
                if (t.root_id or t.uuid) in roots or (t.group_id and t.group_id in groups):
                    members[t.uuid] = t
                    if len(members) >= 200:
                        return list(members.values())
            found = {t.group_id for t in members.values() if t.group_id}
            roots |= {t.root_id or t.uuid for t in members.values()}
            if found <= groups:
                break
            groups |= found
        return list(members.values())


def _exception_text(value: Any) -> Any:
    if isinstance(value, dict) and "exc_type" in value:
        message = value.get("exc_message")
        if isinstance(message, list | tuple):
            message = ", ".join(repr(m) for m in message)
        return f"{value['exc_type']}({message})"
    return value


def _epoch(value: Any) -> float | None:
    from datetime import datetime  # noqa: PLC0415

    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


__all__ = ["DashboardState", "Task", "Worker"]
