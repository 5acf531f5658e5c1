"""Remote control and events for brokers without a pub/sub of their own (SQLite, memory).

Such a broker gives two primitives, publishing raw envelopes on named channels and
listening to the channels matching glob patterns; this mixin builds Celery's remote
control (:class:`~.capabilities.RemoteControl`) and events
(:class:`~.capabilities.EventChannel`) on them, with channel names after kombu's
exchanges: ``celery.pidbox`` (requests), ``reply.celery.pidbox/<reply key>`` (answers),
``celeryev/<routing key>`` (events). Messages are kombu envelopes, as on Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from celeriac.exceptions import MessageError
from celeriac.protocol import Message, decode_envelope, encode_envelope
from celeriac.protocol.events import event_envelope

logger = logging.getLogger("celeriac.transports")

PIDBOX = "celery.pidbox"
EVENTS = "celeryev/"
Listener = Callable[[str, bytes], Awaitable[None]]


def _reply_channel(key: str) -> str:
    return f"reply.celery.pidbox/{key}"


class Fanout:
    """Remote control and events on :meth:`fan_publish` and :meth:`fan_listen`."""

    async def fan_publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish each ``(channel, raw envelope)`` to the listeners of its channel."""
        raise NotImplementedError

    async def fan_listen(
        self, globs: Sequence[str], handler: Listener, listening: Callable[[], None] | None
    ) -> None:
        """Pass ``(channel, raw)`` of each publication on a channel matching one of
        ``globs`` (``*`` matches anything) to ``handler`` until cancelled; call
        ``listening`` once publications reach it."""
        raise NotImplementedError

    async def _listen_messages(
        self,
        globs: Sequence[str],
        handler: Callable[[Message], Awaitable[None]],
        listening: Callable[[], None] | None,
    ) -> None:
        async def on_raw(_channel: str, raw: bytes) -> None:
            try:
                message = decode_envelope(raw)
            except MessageError as exc:
                logger.warning("Ignored an unreadable control message or event: %s", exc)
                return
            await handler(message)

        await self.fan_listen(globs, on_raw, listening)

    # -- events ------------------------------------------------------------------
    async def publish_events(self, items: Sequence[tuple[str, Message]]) -> None:
        if items:
            await self.fan_publish([(EVENTS + key, event_envelope(m)) for key, m in items])

    async def listen_events(
        self,
        patterns: Sequence[str],
        handler: Callable[[Message], Awaitable[None]],
        listening: Callable[[], None] | None = None,
    ) -> None:
        globs = [EVENTS + p.replace("#", "*") for p in patterns]
        await self._listen_messages(globs, handler, listening)

    # -- remote control ----------------------------------------------------------
    async def broadcast_control(self, message: Message) -> None:
        await self.fan_publish([(PIDBOX, encode_envelope(message))])

    async def listen_control(
        self,
        hostname: str,
        handler: Callable[[Message], Awaitable[None]],
        listening: Callable[[], None] | None = None,
    ) -> None:
        await self._listen_messages([PIDBOX], handler, listening)

    async def reply_control(self, routing_key: str, message: Message) -> None:
        await self.fan_publish([(_reply_channel(routing_key), encode_envelope(message))])

    async def request_control(
        self, message: Message, reply_key: str, timeout: float, limit: int | None
    ) -> list[Message]:
        replies: list[Message] = []
        enough = asyncio.Event()
        ready = asyncio.Event()

        async def on_reply(reply: Message) -> None:
            replies.append(reply)
            if limit is not None and len(replies) >= limit:
                enough.set()

        loop = asyncio.get_running_loop()
        listener = loop.create_task(
            self._listen_messages([_reply_channel(reply_key)], on_reply, ready.set)
        )
        try:
            waiting = loop.create_task(ready.wait())
            await asyncio.wait([waiting, listener], return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if listener.done():
                listener.result()  # raises what stopped it
            await self.broadcast_control(message)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(enough.wait(), timeout)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        return replies[:limit] if limit is not None else replies


__all__ = ["EVENTS", "PIDBOX", "Fanout", "Listener"]
