"""Sending Celery's events: :class:`EventDispatcher` builds them (with the sender's
Lamport clock) and batches task events into ``task.multi`` messages, as a Celery
worker run with ``-E`` does."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections import deque
from typing import Any

from celeriac.protocol.events import (
    event_message,
    json_value,
    routing_key,
    timestamp_text,
    utcoffset,
)
from celeriac.transports.broker import Broker
from celeriac.transports.capabilities import EventChannel

logger = logging.getLogger("celeriac.events")


class EventDispatcher:
    """Events of one node (``hostname``; ``pid`` is the worker's main process)."""

    def __init__(self, hostname: str, pid: int | None = None) -> None:
        self.hostname = hostname
        self.pid = pid if pid is not None else os.getpid()
        self._clock = itertools.count(1)
        self._offset = utcoffset()
        #: task events waiting for :meth:`flush`, as JSON text (appended from any thread)
        self.buffer: deque[str] = deque()
        #: the sender's fields, as JSON object members (for events made from templates)
        self.sender_json = (
            f'"hostname": {json_value(hostname)}, "utcoffset": {self._offset!r}, "pid": {self.pid}'
        )
        self._failing = False
        self._last = 0

    @property
    def clock(self) -> int:
        """The Lamport clock value of the last event."""
        return self._last

    def event(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """One event dict, as Celery's ``Event()`` makes it (``type`` and ``timestamp``
        last)."""
        fields["hostname"] = self.hostname
        fields["utcoffset"] = self._offset
        fields["pid"] = self.pid
        fields["clock"] = self._last = next(self._clock)
        fields["timestamp"] = time.time()
        fields["type"] = event_type
        return fields

    def set_pid(self, pid: int) -> None:
        self.pid = pid
        self.sender_json = (
            f'"hostname": {json_value(self.hostname)}, "utcoffset": {self._offset!r}, "pid": {pid}'
        )

    def stamp(self) -> tuple[str, int, str]:
        """For an event made as JSON text: the sender's members, the next clock value
        and the time now (as JSON text: :func:`~celeriac.protocol.events.timestamp_text`)."""
        self._last = clock = next(self._clock)
        return self.sender_json, clock, timestamp_text()

    def buffered(self, event_type: str, **fields: Any) -> None:
        """Queue a task event for the next :meth:`flush` (a ``task.multi`` batch)."""
        self.buffer.append(json.dumps(self.event(event_type, **fields), default=repr))

    async def send(self, broker: Broker, event_type: str, **fields: Any) -> None:
        """Publish one event now, alone (worker events, ``task-sent``)."""
        if not isinstance(broker, EventChannel):
            return
        event = self.event(event_type, **fields)
        key = routing_key(event_type)
        await self._publish(broker, [(key, event_message(self.hostname, key, event))])

    async def flush(self, broker: Broker) -> int:
        """Publish the buffered events, one batch per group; how many were sent."""
        if not self.buffer:
            return 0
        take, batch = self.buffer.popleft, []
        for _ in range(len(self.buffer)):  # what others append meanwhile waits its turn
            batch.append(take())
        if not isinstance(broker, EventChannel):
            return 0
        body = ("[" + ", ".join(batch) + "]").encode()
        await self._publish(
            broker, [("task.multi", event_message(self.hostname, "task.multi", body))]
        )
        return len(batch)

    async def _publish(self, broker: EventChannel, items: list[Any]) -> None:
        try:
            await broker.publish_events(items)
        except Exception as exc:  # events are best effort: the tasks go on
            if not self._failing:
                logger.warning("Could not send events: %s", exc)
            self._failing = True
        else:
            if self._failing:
                logger.info("Sending events again")
            self._failing = False


__all__ = ["EventDispatcher"]
