"""Celery's events on Redis: kombu makes the ``celeryev`` exchange a pub/sub channel per
routing key, ``<global_keyprefix>/<db>.celeryev/<routing key>`` (``task.multi``,
``worker.heartbeat``, ...), and a receiver PSUBSCRIBEs its binding keys with ``#`` made
``*`` (``celery events``: ``/<db>.celeryev/*``). Messages are kombu envelopes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from celeriac.exceptions import MessageError
from celeriac.protocol import Message, decode_envelope, encode_envelope
from celeriac.protocol.events import EXCHANGE
from celeriac.transports.redis.resp import Endpoint, RespError, RespTimeoutError, Sentinels
from celeriac.transports.redis.resp_async import AsyncConnection
from celeriac.transports.redis.scripts import connection

logger = logging.getLogger("celeriac.transports.redis.broker")

_SUBSCRIBE_TIMEOUT = 10.0


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
        failures = 0
        while True:
            items: asyncio.Queue[list[Any] | BaseException] = asyncio.Queue()
            conn = connection(self._where, push=items.put_nowait, on_lost=items.put_nowait)
            try:
                await _psubscribe(conn, globs, items)
                if listening is not None:
                    listening()
                if failures:
                    logger.info("Events: listening again")
                    failures = 0
                while True:
                    item = await items.get()
                    if isinstance(item, BaseException):
                        raise item
                    if len(item) != 4 or item[0] != b"pmessage":
                        continue
                    try:
                        message = decode_envelope(item[3])
                    except MessageError as exc:
                        logger.warning("Events: ignored an unreadable event: %s", exc)
                        continue
                    await handler(message)
            except (RespError, OSError) as exc:
                if failures == 0:
                    logger.warning("Events: lost the event channel (%s); reconnecting", exc)
                failures += 1
                await asyncio.sleep(min(5.0, 0.25 * failures))
            finally:
                conn.close()


async def _psubscribe(
    conn: AsyncConnection, globs: Sequence[str], items: asyncio.Queue[list[Any] | BaseException]
) -> None:
    """PSUBSCRIBE to ``globs`` and wait for every confirmation."""
    await conn.pipeline([("PSUBSCRIBE", *globs)], replies=0)
    waiting = {g.encode() for g in globs}
    while waiting:
        try:
            item = await asyncio.wait_for(items.get(), _SUBSCRIBE_TIMEOUT)
        except (TimeoutError, asyncio.TimeoutError):
            raise RespTimeoutError("no confirmation of PSUBSCRIBE") from None
        if isinstance(item, BaseException):
            raise item
        if len(item) >= 2 and item[0] == b"psubscribe":
            waiting.discard(item[1])


__all__ = ["RedisEvents"]
