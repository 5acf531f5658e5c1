"""``task-sent`` events from a client, when ``task_send_sent_event`` is set (Celery's
fields: ``uuid``, ``root_id``, ``parent_id``, ``name``, ``args``, ``kwargs`` (reprs),
``retries``, ``eta``, ``expires``, ``queue``, ``exchange``, ``routing_key``)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celeriac.events.dispatcher import EventDispatcher
from celeriac.middleware import Middleware
from celeriac.protocol import Message

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger("celeriac.events")


def sent_fields(message: Message, queue: str) -> dict[str, Any]:
    h = message.headers
    return {
        "uuid": h.get("id"),
        "root_id": h.get("root_id"),
        "parent_id": h.get("parent_id"),
        "name": h.get("task"),
        "args": h.get("argsrepr"),
        "kwargs": h.get("kwargsrepr"),
        "retries": h.get("retries") or 0,
        "eta": h.get("eta"),
        "expires": h.get("expires"),
        "queue": queue,
        "exchange": "",
        "routing_key": queue,
    }


class TaskSentEvents(Middleware):
    """Sends ``task-sent`` after each publish, when the app's ``task_send_sent_event``
    (or the task's ``send_sent_event``) says so. ``listeners`` are called with the task's
    name and queue for each task-sent event (a worker counts its own for Prometheus)."""

    def __init__(self) -> None:
        self._dispatcher: EventDispatcher | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.listeners: list[Callable[[str, str], None]] = []

    def after_publish(self, app: Celeriac, message: Message, queue: str) -> None:
        if not app.conf["task_send_sent_event"]:
            return
        dispatcher = self._dispatcher
        if dispatcher is None:
            # Celery's client name: gen<pid>@<host>
            name = f"gen{os.getpid()}@{socket.gethostname()}"
            dispatcher = self._dispatcher = EventDispatcher(name)
        fields = sent_fields(message, queue)
        for listener in self.listeners:
            listener(str(fields["name"]), queue)

        async def send() -> None:
            await dispatcher.send(await app.get_broker(), "task-sent", **fields)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            from celeriac._loop import run_sync  # noqa: PLC0415

            run_sync(send())
        else:
            task = loop.create_task(send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)


__all__ = ["TaskSentEvents", "sent_fields"]
