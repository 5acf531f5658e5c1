"""Celery's event protocol: workers' and clients' events on the ``celeryev`` exchange.

* :class:`EventDispatcher` sends them (a worker's task events in ``task.multi`` batches);
* :class:`EventReceiver` receives them, from celeriac's and Celery's workers alike;
* :class:`TaskSentEvents` sends ``task-sent`` from a client (``task_send_sent_event``).

The worker's side (task events with ``-E``, heartbeats every 2 s, worker-online and
worker-offline) is :mod:`celeriac.worker._events`.
"""

from __future__ import annotations

from celeriac.events.dispatcher import EventDispatcher
from celeriac.events.receiver import EventReceiver
from celeriac.events.sent import TaskSentEvents

__all__ = ["EventDispatcher", "EventReceiver", "TaskSentEvents"]
