"""Celery's events on Redis: kombu makes the ``celeryev`` exchange a pub/sub channel per
routing key, ``<global_keyprefix>/<db>.celeryev/<routing key>`` (``task.multi``,
``worker.heartbeat``, ...), and a receiver PSUBSCRIBEs its binding keys with ``#`` made
``*`` (``celery events``: ``/<db>.celeryev/*``). Messages are kombu envelopes.

PUBLISH answers how many clients got the message: while the last batch of task events
reached nobody, :meth:`RedisEvents.task_events_listened` says so (a worker then builds
none) and counts again every :data:`LOOK_EVERY` seconds with an empty batch (a monitor
that just subscribed may miss up to that long of them, as on SQLite)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from celeriac.protocol import Message
from celeriac.protocol.events import EXCHANGE, event_envelope, event_message
from celeriac.transports.redis import pubsub
from celeriac.transports.redis.resp import Endpoint, Sentinels

#: while nobody receives task events, look again this often (seconds)
LOOK_EVERY = 0.5
_TASK_BATCH = "task.multi"


class RedisEvents:
    """The :class:`~celeriac.transports.capabilities.EventChannel` of the Redis broker."""

    prefix: str
    _where: Endpoint | Sentinels
    #: how many clients got the last batch of task events (None: none sent yet), and when
    _task_receivers: int | None = None
    _counted = 0.0

    async def _commands(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        raise NotImplementedError

    def _event_channel(self, key: str) -> str:
        return f"{self.prefix}/{self._where.db}.{EXCHANGE}/{key}"

    async def publish_events(self, items: Sequence[tuple[str, Message]]) -> None:
        if not items:
            return
        counts = await self._commands(
            [("PUBLISH", self._event_channel(key), event_envelope(m)) for key, m in items]
        )
        for (key, _), count in zip(items, counts, strict=False):
            if key == _TASK_BATCH and isinstance(count, int):
                self._task_receivers, self._counted = count, time.monotonic()

    async def task_events_listened(self) -> bool:
        """Whether the last batch of task events reached anyone (counted again with an
        empty batch once it is :data:`LOOK_EVERY` seconds old)."""
        if self._task_receivers == 0 and time.monotonic() - self._counted >= LOOK_EVERY:
            empty = event_message("", _TASK_BATCH, b"[]")
            await self.publish_events([(_TASK_BATCH, empty)])
        return self._task_receivers != 0

    async def listen_events(
        self,
        patterns: Sequence[str],
        handler: Callable[[Message], Awaitable[None]],
        listening: Callable[[], None] | None = None,
    ) -> None:
        globs = [self._event_channel(p.replace("#", "*")) for p in patterns]
        await pubsub.listen(self._where, globs, handler, listening, patterns=True, what="Events")


__all__ = ["RedisEvents"]
