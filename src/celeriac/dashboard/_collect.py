"""The dashboard's background work: it listens to events, asks the workers, samples the
queues and reads the result backend, into one :class:`~._state.DashboardState`.

Loops (each restarts itself after an error, with a pause, and logs the error once):

* events, as ``celeriac events`` receives them (Celery's workers' too);
* every ``poll_interval`` seconds: ``stats`` and ``active_queues`` of every worker
  (pool, concurrency, consumed queues), ``enable_events`` to a worker heard of the first
  time (as Flower does, so a worker started without ``-E`` still sends task events),
  the length of every known queue, and the backend's state of the tasks still shown
  unfinished (an event missed while the dashboard was down);
* once at start: the newest ``max_tasks`` results the backend holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from celeriac._queues import consumed_queues
from celeriac.dashboard._state import DashboardState, Worker
from celeriac.events import EventReceiver
from celeriac.transports.capabilities import RemoteControl
from celeriac.utils.log import mask_url

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger("celeriac.dashboard")

_UNFINISHED = ("PENDING", "RECEIVED", "STARTED", "RETRY")
#: at most this many queue names are sampled (names come from events: bound them)
MAX_QUEUES = 500


class Collector:
    """Fills ``state`` while :meth:`start`-ed; :meth:`stop` ends every loop."""

    def __init__(
        self, app: Celeriac, state: DashboardState, poll_interval: float = 2.0, **flags: bool
    ) -> None:
        self.app = app
        self.state = state
        self.poll_interval = poll_interval
        self.enable_events = flags.get("enable_events", True)
        self.history = flags.get("history", True)
        self._tasks: list[asyncio.Task[None]] = []
        self._failing: set[str] = set()
        self._asked: set[str] = set()
        #: queues seen (configured, consumed by a worker, named by a task-sent event)
        self.queues: set[str] = set(consumed_queues(app.conf))
        self.listening = asyncio.Event()
        self.polled = asyncio.Event()

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._forever("events", self._events)),
            loop.create_task(self._forever("polling", self._poll)),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _forever(self, what: str, body: Any) -> None:
        while True:
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if what not in self._failing:
                    logger.warning("dashboard %s: %s (retrying)", what, mask_url(str(exc)))
                    self._failing.add(what)
                await asyncio.sleep(self.poll_interval)

    async def _events(self) -> None:
        def on_event(event: dict[str, Any]) -> None:
            self.state.event(event)
            if event.get("type") == "task-sent" and event.get("queue"):
                self.add_queue(str(event["queue"]))

        receiver = EventReceiver(self.app, {"*": on_event})
        await receiver.acapture(listening=self.listening.set)

    def add_queue(self, name: str) -> None:
        if len(self.queues) < MAX_QUEUES:
            self.queues.add(name)

    async def _poll(self) -> None:
        if self.history:
            await self.load_history()
            self.history = False
        while True:
            await self.poll_once()
            self._failing.discard("polling")
            self.polled.set()
            await asyncio.sleep(self.poll_interval)

    async def load_history(self) -> int:
        """The newest results the backend holds, into the task list (oldest first, so
        that the newest are the last dropped)."""
        backend = await self.app.get_backend()
        try:
            found = await backend.recent_results(self.state.max_tasks)
        except NotImplementedError:  # a backend that cannot list what it holds
            return 0
        for task_id, meta in reversed(found):
            self.state.from_backend(task_id, meta)
        return len(found)

    async def poll_once(self) -> None:
        now = time.time()
        await self._ask_workers(now)
        await self._sample_queues(now)
        await self._settle_unfinished()
        self.state.forget_old_workers(now)

    async def _ask_workers(self, now: float) -> None:
        broker = await self.app.get_broker()
        if not isinstance(broker, RemoteControl):
            return
        control = self.app.control
        timeout = min(1.0, self.poll_interval / 2)
        stats, queues = await asyncio.gather(
            control.abroadcast("stats", reply=True, timeout=timeout),
            control.abroadcast("active_queues", reply=True, timeout=timeout),
        )
        for answer in stats or []:
            for host, info in answer.items():
                worker = self.state.workers.get(host)
                if worker is None:
                    worker = self.state.workers[host] = Worker(host)
                worker.offline = False  # it answered: online, heartbeats or not
                worker.answered_until = now + 2.5 * max(self.poll_interval, timeout)
                if not isinstance(info, dict):
                    continue
                pool = info.get("pool") or {}
                worker.pool = {
                    "implementation": str(pool.get("implementation", "")),
                    "max_concurrency": pool.get("max-concurrency"),
                    "processes": len(pool.get("processes") or []),
                    "uptime": info.get("uptime"),
                }
                if self.enable_events and host not in self._asked:
                    self._asked.add(host)
                    await control.abroadcast("enable_events", destination=[host])
        for answer in queues or []:
            for host, infos in answer.items():
                names = [str(q.get("name")) for q in infos or [] if isinstance(q, dict)]
                for name in names:
                    self.add_queue(name)
                if host in self.state.workers:
                    self.state.workers[host].queues = names
        self.state.version += 1

    async def _sample_queues(self, now: float) -> None:
        broker = await self.app.get_broker()
        for queue in sorted(self.queues):
            self.state.queue_length(queue, await broker.size(queue), now)

    async def _settle_unfinished(self) -> None:
        ids = [t.uuid for t in self.state.tasks.values() if t.state in _UNFINISHED][-500:]
        if not ids:
            return
        backend = await self.app.get_backend()
        try:
            found = await backend.get_many(ids)
        except NotImplementedError:  # a backend that cannot be read by others (rpc://)
            return
        for task_id, meta in found.items():
            if meta.get("status") not in (None, "PENDING"):
                self.state.from_backend(task_id, meta)


__all__ = ["Collector"]
