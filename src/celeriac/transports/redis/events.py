"""Celery's events on Redis: kombu makes the ``celeryev`` exchange a pub/sub channel per
routing key, ``<global_keyprefix>/<db>.celeryev/<routing key>`` (``task.multi``,
``worker.heartbeat``, ...), and a receiver PSUBSCRIBEs its binding keys with ``#`` made
``*`` (``celery events``: ``/<db>.celeryev/*``). Messages are kombu envelopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from celeriac.protocol import Message, encode_envelope
from celeriac.protocol.events import EXCHANGE
from celeriac.transports.redis import pubsub
from celeriac.transports.redis.resp import Endpoint, Sentinels


class RedisEvents:
    """The :class:`~celeriac.transports.capabilities.EventChannel` of the Redis broker."""

    prefix: str
    _where: Endpoint | Sentinels

    async def _commands(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        raise NotImplementedError

    def _event_channel(self, key: str) -> str:
        return f"{self.prefix}/{self._where.db}.{EXCHANGE}/{key}"

    async def publish_events(self, items: Sequence[tuple[str, Message]]) -> None:
        if items:
            await self._commands(
                [("PUBLISH", self._event_channel(key), encode_envelope(m)) for key, m in items]
            )

    async def listen_events(
        self,
        patterns: Sequence[str],
        handler: Callable[[Message], Awaitable[None]],
        listening: Callable[[], None] | None = None,
    ) -> None:
        globs = [self._event_channel(p.replace("#", "*")) for p in patterns]
        await pubsub.listen(self._where, globs, handler, listening, patterns=True, what="Events")


__all__ = ["RedisEvents"]
