"""What a consumer tells monitors: Celery's events (task events with ``-E`` /
``worker_send_task_events``, batched as ``task.multi``; worker-online, a heartbeat every
2 s and worker-offline from the consumer that answers remote control), the counts and
requests that ``inspect`` reports, and, in a prefork worker, the snapshot and settings
files the children share (:mod:`celeriac.worker._state`).

Task events are built in the hooks (in the executing thread) and buffered; the consumer's
loop publishes them within :data:`FLUSH_EVERY` seconds, or sooner after a settled batch,
so one publish carries many events. On a broker that knows whether anyone listens
(``task_events_listened``: SQLite's listener table, the receiver count of Redis's
PUBLISH), no task events are built while nobody does."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import platform
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from celeriac import __version__, signals, states
from celeriac.events.dispatcher import EventDispatcher
from celeriac.events.sent import TaskSentEvents
from celeriac.middleware import Middleware
from celeriac.protocol import safe_repr
from celeriac.protocol.events import json_text, runtime_text
from celeriac.worker._metrics import MetricsServer, TaskCounts
from celeriac.worker._state import READ_EVERY, WRITE_EVERY, SharedState

if TYPE_CHECKING:
    from celeriac._outcome import Outcome
    from celeriac.app import Celeriac
    from celeriac.task import Context, Task
    from celeriac.transports.backend import ResultBackend
    from celeriac.transports.broker import Broker
    from celeriac.worker.consumer import Consumer
    from celeriac.worker.core import Job

logger = logging.getLogger("celeriac.worker")

#: buffered task events are published this often (seconds; the broker may ask for less
#: often: ``fanout_interval``) or once this many are waiting
FLUSH_EVERY = 0.1
FLUSH_AT = 2000
#: the heartbeat interval (seconds) unless ``--heartbeat-interval`` says otherwise
HEARTBEAT_INTERVAL = 2.0
SOFTWARE = {"sw_ident": "py-celeriac", "sw_ver": __version__, "sw_sys": platform.system()}


def _always() -> bool:
    return True


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return [0.0, 0.0, 0.0]


def request_info(job: Job, hostname: str) -> dict[str, Any]:
    """A held request as Celery's ``Request.info()`` shows it."""
    call, info = job.call, job.request.delivery_info
    started = time.time() - (time.monotonic() - job.started_at) if job.started else None
    return {
        "id": call.id,
        "name": call.name,
        "args": call.args,
        "kwargs": call.kwargs,
        "type": call.name,
        "hostname": hostname,
        "time_start": started,
        "acknowledged": bool(job.delivery.extra.get("acked")) or job.started,
        "delivery_info": {
            "exchange": info.get("exchange", ""),
            "routing_key": info.get("routing_key"),
            "priority": info.get("priority"),
            "redelivered": info.get("redelivered", False),
        },
        "worker_pid": os.getpid() if job.started else None,
    }


def scheduled_info(job: Job, hostname: str) -> dict[str, Any]:
    """A held request with an ETA as Celery's ``inspect scheduled`` shows it (priority:
    that of Celery's timer entry for ETA tasks, always 6)."""
    eta = job.call.eta
    return {
        "eta": eta.isoformat() if eta is not None else None,
        "priority": 6,
        "request": request_info(job, hostname),
    }


class WorkerMonitor(Middleware):
    """One consumer's events, counts and shared state; see the module docstring."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.task_events = bool(consumer.app.conf["worker_send_task_events"])
        self.heartbeat_interval: float | None = HEARTBEAT_INTERVAL
        self.dispatcher = EventDispatcher(consumer.hostname)
        self.total: Counter[str] = Counter()
        self.started = time.monotonic()
        #: the prefork worker's shared directory (None: this consumer is the worker)
        self.shared: SharedState | None = None
        #: stopping to be replaced (max tasks or memory per child), not with the worker
        self.recycling = False
        self._dirty = True
        self._kick: asyncio.Event | None = None
        #: the Worker that made this consumer (None in celeriac.testing's TestWorker)
        self.worker: Any = None
        #: the prefork supervisor's pipe, for pool changes (None: not a prefork child)
        self.supervisor_fd: int | None = None
        #: counts for Prometheus (celeriac.worker._metrics), and the port to serve them on
        self.metrics = TaskCounts()
        self.metrics_port: int | None = None
        #: when the consumer last fetched from the broker (time.monotonic(); /healthz)
        self.fetched_at = 0.0
        #: False while the broker says nobody listens to task events (SQLite): the hooks
        #: build none, as the broker would drop them
        self.listened = True

    @property
    def speaks_for_worker(self) -> bool:
        return self.consumer.control

    # -- task events (executing thread) ------------------------------------------------
    def _wanted(self, task: Task[Any, Any]) -> bool:
        return (
            self.task_events and self.listened and getattr(task, "send_events", True) is not False
        )

    def on_received(self, task: Task[Any, Any], request: Context) -> None:
        self._dirty = True
        queue = _queue(request)
        self.metrics.count("received", task.name, queue)
        if self._wanted(task):
            h, v = request.message_headers, json_text
            sender, clock, now = self.dispatcher.stamp()
            self.dispatcher.buffer.append(
                f'{{"uuid": {v(request.id)}, "name": {v(task.name)}, '
                f'"args": {v(h.get("argsrepr") or safe_repr(request.args))}, '
                f'"kwargs": {v(h.get("kwargsrepr") or safe_repr(request.kwargs))}, '
                f'"root_id": {v(request.root_id)}, "parent_id": {v(request.parent_id)}, '
                f'"retries": {v(request.retries or 0)}, "eta": {v(h.get("eta"))}, '
                f'"expires": {v(h.get("expires"))}, "queue": {v(queue or None)}, '
                f'"group_id": {v(request.group)}, {sender}, "clock": {clock}, '
                f'"timestamp": {now}, "type": "task-received"}}'
            )

    def before_task(self, task: Task[Any, Any], request: Context) -> None:
        self._dirty = True
        self.metrics.count("started", task.name, _queue(request))
        if self._wanted(task):
            sender, clock, now = self.dispatcher.stamp()
            self.dispatcher.buffer.append(
                f'{{"uuid": {json_text(request.id)}, {sender}, "clock": {clock}, '
                f'"timestamp": {now}, "type": "task-started"}}'
            )

    def after_task(self, task: Task[Any, Any], request: Context, outcome: Outcome) -> None:
        if not self._wanted(task):
            return
        state, send = outcome.state, self.dispatcher.buffered
        if state == states.SUCCESS:
            sender, clock, now = self.dispatcher.stamp()
            value = outcome.value
            self.dispatcher.buffer.append(
                f'{{"uuid": {json_text(request.id)}, '
                f'"result": {json_text("None" if value is None else safe_repr(value))}, '
                f'"runtime": {runtime_text(outcome.runtime)}, {sender}, "clock": {clock}, '
                f'"timestamp": {now}, "type": "task-succeeded"}}'
            )
        elif state in (states.FAILURE, states.RETRY):
            kind = "task-failed" if state == states.FAILURE else "task-retried"
            send(
                kind, uuid=request.id, exception=safe_repr(outcome.exc), traceback=outcome.traceback
            )
        elif state == states.REJECTED:
            from celeriac._outcome import Action  # noqa: PLC0415

            send("task-rejected", uuid=request.id, requeue=outcome.action is Action.REQUEUE)

    # -- on the consumer's loop ---------------------------------------------------------
    async def settle(
        self, app: Celeriac, outcomes: list[Outcome], broker: Broker, backend: ResultBackend
    ) -> None:
        from celeriac._outcome import Action  # noqa: PLC0415

        for o in outcomes:
            if o.action is Action.PROGRESS:
                continue
            if o.job is not None:
                self.total[o.job.call.name] += 1
                self._count(o)
            elif o.state == states.REVOKED and o.delivery.message is not None:
                name = o.delivery.message.task_name or ""
                self.metrics.count("revoked", name, o.delivery.queue)
            if self.task_events and o.state == states.REVOKED and o.meta:
                why = (o.meta.get("result") or {}).get("exc_message") or ["revoked"]
                self.dispatcher.buffered(
                    "task-revoked",
                    uuid=o.meta.get("task_id"),
                    terminated=why[0] == "terminated",
                    signum=None,
                    expired=why[0] == "expired",
                )
        self._dirty = True
        if self._kick is not None and len(self.dispatcher.buffer) >= FLUSH_AT:
            self._kick.set()

    def _count(self, outcome: Outcome) -> None:
        assert outcome.job is not None
        state = _STATE_METRIC.get(outcome.state or "")
        if state is None:
            return
        name, queue = outcome.job.call.name, _queue(outcome.job.request)
        self.metrics.count(state, name, queue)
        if state in ("succeeded", "failed"):
            self.metrics.observe(name, queue, outcome.runtime)

    async def run(self) -> None:
        """Until cancelled: publish buffered events, send heartbeats, share state."""
        consumer = self.consumer
        self.fetched_at = time.monotonic()  # connected and declared its queues just now
        self.dispatcher.set_pid(consumer.worker_pid)
        self._kick = asyncio.Event()
        broker = consumer.broker
        assert broker is not None
        server = None
        # celery_task_sent_total: the task-sent events of the tasks this process sends
        # (follow-ups the consumer publishes, tasks sent from task bodies)
        senders = [mw for mw in consumer.app.middleware if isinstance(mw, TaskSentEvents)]
        for sender in senders:
            sender.listeners.append(self._count_sent)
        if self.speaks_for_worker and self.metrics_port:
            server = MetricsServer(consumer, self.metrics_port)
            try:
                await server.start()
            except OSError as exc:
                logger.error("Metrics: cannot serve on port %d: %s", self.metrics_port, exc)
                server = None
        try:
            await self._run(broker)
        finally:
            for sender in senders:
                with contextlib.suppress(ValueError):
                    sender.listeners.remove(self._count_sent)
            if server is not None:
                await server.close()

    def _count_sent(self, name: str, queue: str) -> None:
        self._dirty = True
        self.metrics.count("sent", name, queue)

    async def _run(self, broker: Broker) -> None:
        if self.speaks_for_worker:
            await self._worker_event(broker, "worker-online")
        now = time.monotonic()
        next_beat = now + (self.heartbeat_interval or 0)
        next_write = next_read = now
        every = max(FLUSH_EVERY, float(getattr(broker, "fanout_interval", 0.0)))
        probe = getattr(broker, "task_events_listened", None) or _always
        await self._listeners(probe)
        while True:
            assert self._kick is not None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._kick.wait(), every)
            self._kick.clear()
            now = time.monotonic()
            held_back = False
            if self.shared is not None and self._dirty:
                # the snapshot before the events: who saw task-started finds it in active
                if now >= next_write:
                    self._dirty = False
                    next_write = now + WRITE_EVERY
                    self.shared.write_snapshot(self.snapshot())
                else:
                    held_back = True  # the events wait for the next snapshot
            await self._listeners(probe)
            if not held_back:
                await self.dispatcher.flush(broker)
            if self.shared is not None and now >= next_read:
                next_read = now + READ_EVERY
                changes = self.shared.new_settings()
                if changes:
                    await self.apply(changes)
            if self.speaks_for_worker and self.heartbeat_interval and now >= next_beat:
                next_beat += self.heartbeat_interval
                if next_beat < now:
                    next_beat = now + self.heartbeat_interval
                await self._worker_event(broker, "worker-heartbeat")

    async def _listeners(self, probe: Any) -> None:
        if not self.task_events:
            return
        try:
            heard = probe()
            if inspect.isawaitable(heard):
                heard = await heard
        except Exception as exc:  # best effort, as the events: build them
            logger.debug("Could not tell whether anyone listens to events: %s", exc)
            heard = True
        if bool(heard) != self.listened:
            logger.info(
                "Task events: %s",
                "a monitor listens" if heard else "nobody listens; none are built meanwhile",
            )
        self.listened = bool(heard)
        if not self.listened:
            self.dispatcher.buffer.clear()  # the broker would drop them

    async def close(self) -> None:
        """At the consumer's stop: the last events, and worker-offline for the worker."""
        broker = self.consumer.broker
        if broker is None:
            return
        await self.dispatcher.flush(broker)
        if self.shared is not None:
            self.shared.write_snapshot(self.snapshot())
        if self.speaks_for_worker and not self.recycling:
            await self._worker_event(broker, "worker-offline")

    async def _worker_event(self, broker: Broker, kind: str) -> None:
        # as Celery's heart: the signal comes with its online/heartbeat/offline events,
        # none without heartbeats (--without-heartbeat)
        if self.heartbeat_interval and signals.heartbeat_sent.receivers:
            signals.heartbeat_sent.send(sender=self)
        active, processed = self.counts()
        await self.dispatcher.send(
            broker,
            kind,
            freq=self.heartbeat_interval or HEARTBEAT_INTERVAL,
            active=active,
            processed=processed,
            loadavg=load_average(),
            **SOFTWARE,
        )

    async def heartbeat_now(self) -> None:
        """The ``heartbeat`` control command: a heartbeat now (Celery's has freq 5)."""
        broker = self.consumer.broker
        if broker is not None:
            await self.dispatcher.send(broker, "worker-heartbeat", freq=5, **SOFTWARE)

    # -- state --------------------------------------------------------------------------
    def jobs(self) -> tuple[list[Job], list[Job]]:
        """(running, held but not started) jobs of this consumer."""
        held = [j for j in list(self.consumer.held.values()) if j is not None]
        return [j for j in held if j.running], [j for j in held if not j.started]

    def snapshot(self) -> dict[str, Any]:
        running, waiting = self.jobs()
        host = self.consumer.hostname
        return {
            "pid": os.getpid(),
            "processed": self.consumer.processed,
            "total": dict(self.total),
            "metrics": self.metrics.snapshot(),
            "active": [request_info(j, host) for j in running],
            "reserved": [request_info(j, host) for j in waiting],
            "scheduled": [scheduled_info(j, host) for j in waiting if j.call.eta is not None],
        }

    def snapshots(self) -> list[dict[str, Any]]:
        """Every consumer's snapshot: this one's now, its siblings' as last written."""
        mine = self.snapshot()
        if self.shared is None:
            return [mine]
        others = [s for s in self.shared.snapshots() if s.get("pid") != mine["pid"]]
        return [mine, *others]

    def counts(self) -> tuple[int, int]:
        """(tasks running, tasks processed) over the whole worker."""
        found = self.snapshots()
        return sum(len(s.get("active") or ()) for s in found), sum(
            int(s.get("processed") or 0) for s in found
        )

    async def change(self, **changes: Any) -> None:
        """Apply remote control's ``changes`` here and, in prefork, in every child."""
        if self.shared is not None:
            self.shared.update_settings(**changes)
            changes = self.shared.new_settings() or self.shared.settings()
        await self.apply(changes)

    async def apply(self, changes: dict[str, Any]) -> None:
        consumer, app = self.consumer, self.consumer.app
        if "task_events" in changes:
            self.task_events = bool(changes["task_events"])
        for name, rate in (changes.get("rate_limits") or {}).items():
            if name in app.tasks:
                app.tasks[name].rate_limit = rate or None
        for name, (soft, hard) in (changes.get("time_limits") or {}).items():
            if name in app.tasks:
                app.tasks[name].soft_time_limit = soft
                app.tasks[name].time_limit = hard
        queues = changes.get("queues")
        if isinstance(queues, list) and queues != consumer.queues:
            broker = consumer.broker
            for queue in queues:
                if queue not in consumer.queues and broker is not None:
                    await broker.declare(queue)
            consumer.queues = [str(q) for q in queues]
            logger.info("Now consuming from %s", ", ".join(consumer.queues) or "no queue")


_STATE_METRIC = {
    states.SUCCESS: "succeeded",
    states.FAILURE: "failed",
    states.RETRY: "retried",
    states.REVOKED: "revoked",
    states.REJECTED: "rejected",
}


def _queue(request: Context) -> str:
    return str(request.delivery_info.get("routing_key") or "")


__all__ = [
    "HEARTBEAT_INTERVAL",
    "SOFTWARE",
    "WorkerMonitor",
    "load_average",
    "request_info",
    "scheduled_info",
]
