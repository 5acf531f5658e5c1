"""One Redis pub/sub listener for the broker's remote control (SUBSCRIBE to the pidbox
channel) and its events (PSUBSCRIBE to ``celeryev`` patterns): subscribe and wait for
every confirmation, hand each readable kombu envelope to the handler, and reconnect with
backoff after a lost connection (one warning, one line when listening again, saying
after how long). The connection's health check (:mod:`.resp_async`) PINGs it while it
is quiet, so a connection lost silently is noticed within twice
``health_check_interval``, not never."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from celeriac.exceptions import MessageError
from celeriac.protocol import Message, decode_envelope
from celeriac.transports.redis.resp import Endpoint, RespError, RespTimeoutError, Sentinels
from celeriac.transports.redis.resp_async import AsyncConnection
from celeriac.transports.redis.scripts import connection

logger = logging.getLogger("celeriac.transports.redis.broker")

_SUBSCRIBE_TIMEOUT = 10.0


async def listen(
    where: Endpoint | Sentinels,
    channels: Sequence[str],
    handler: Callable[[Message], Awaitable[None]],
    listening: Callable[[], None] | None,
    *,
    patterns: bool,
    what: str,
) -> None:
    """Listen on ``channels`` (glob patterns with ``patterns``) until cancelled; ``what``
    names the listener in its log lines (``"Remote control"``, ``"Events"``)."""
    command, kind = ("PSUBSCRIBE", b"pmessage") if patterns else ("SUBSCRIBE", b"message")
    size = 4 if patterns else 3  # [kind, (pattern,) channel, payload]
    noun = "event" if patterns else "request"
    named = ", ".join(channels)
    failures = 0
    lost_at = 0.0
    while True:
        items: asyncio.Queue[list[Any] | BaseException] = asyncio.Queue()
        conn = connection(where, push=items.put_nowait, on_lost=items.put_nowait)
        try:
            await _subscribe(conn, command, channels, items)
            if listening is not None:
                listening()
            if failures:
                after = time.monotonic() - lost_at
                logger.warning("%s: listening on %s again after %.1f s", what, named, after)
                failures = 0
            while True:
                item = await items.get()
                if isinstance(item, BaseException):
                    raise item
                if len(item) != size or item[0] != kind:
                    continue
                try:
                    message = decode_envelope(item[-1])
                except MessageError as exc:
                    logger.warning("%s: ignored an unreadable %s: %s", what, noun, exc)
                    continue
                await handler(message)
        except (RespError, OSError) as exc:
            if failures == 0:
                lost_at = time.monotonic()
                logger.warning("%s: lost %s (%s); reconnecting", what, named, exc)
            failures += 1
            await asyncio.sleep(min(5.0, 0.25 * failures))
        finally:
            conn.close()


async def _subscribe(
    conn: AsyncConnection,
    command: str,
    channels: Sequence[str],
    items: asyncio.Queue[list[Any] | BaseException],
) -> None:
    """(P)SUBSCRIBE to ``channels`` and wait for every confirmation (from then on,
    what is published reaches us)."""
    await conn.pipeline([(command, *channels)], replies=0)
    confirmation = command.lower().encode()
    waiting = {c.encode() for c in channels}
    while waiting:
        try:
            item = await asyncio.wait_for(items.get(), _SUBSCRIBE_TIMEOUT)
        except (TimeoutError, asyncio.TimeoutError):
            raise RespTimeoutError(f"no confirmation of {command} {', '.join(channels)}") from None
        if isinstance(item, BaseException):
            raise item
        if len(item) >= 2 and item[0] == confirmation:
            waiting.discard(item[1])


__all__ = ["listen"]
