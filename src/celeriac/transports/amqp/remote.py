"""Celery's remote control on RabbitMQ (the pidbox): requests on the ``celery.pidbox``
fanout exchange, a worker's control queue ``<hostname>.celery.pidbox`` on a connection
of its own, replies through ``reply.celery.pidbox``, all declared as Celery declares
them (docs/internals/amqp.md, "Remote control")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from celeriac.exceptions import BrokerError, CeleriacError
from celeriac.protocol import JSON, Message
from celeriac.transports.amqp.connection import (
    ERRORS,
    Channel,
    ChannelLockedResource,
    ChannelPreconditionFailed,
    Connection,
    DeliveredMessage,
    connection,
)
from celeriac.transports.amqp.core import AMQPCore
from celeriac.transports.amqp.messages import message_properties

#: a worker's control queue's arguments, as Celery declares them
_PIDBOX_QUEUE_ARGS: dict[str, Any] = {"x-expires": 10_000, "x-message-ttl": 300_000}

#: the broker's logger (one for all its modules)
logger = logging.getLogger("celeriac.transports.amqp.broker")


class Pidbox(AMQPCore):
    """Broadcast, listen, request and reply, as Celery's workers and clients do."""

    async def broadcast_control(self, message: Message) -> None:
        """Publish to Celery's ``celery.pidbox`` fanout exchange (declared as Celery
        declares it), where each Celery worker's control queue is bound."""
        async with self._errors():
            s = await self._session()
            if "celery.pidbox" not in s.declared:
                ch = await self._channel(s, "admin")
                with contextlib.suppress(ChannelPreconditionFailed):  # made otherwise: use it
                    await ch.exchange_declare(
                        "celery.pidbox", exchange_type="fanout", durable=False
                    )
                s.declared.add("celery.pidbox")
            ch = await self._channel(s, "publish")
            props = message_properties(message, 0)
            await ch.basic_publish(message.body, exchange="celery.pidbox", properties=props)

    async def listen_control(
        self,
        hostname: str,
        handler: Callable[[Message], Awaitable[None]],
        listening: Callable[[], None] | None = None,
    ) -> None:
        """Celery's per-worker control queue (``<hostname>.celery.pidbox``: exclusive,
        auto-delete, bound to the ``celery.pidbox`` fanout exchange), on a connection of
        its own so that control never waits behind task traffic."""
        queue = f"{hostname}.celery.pidbox"
        failures = 0
        lost_at = 0.0
        while True:
            conn = connection(self._url)
            try:
                await asyncio.wait_for(conn.connect(), self._timeout)
                ch = await self._pidbox_channel(conn)
                # Celery's name, or one of our own when another worker has that name
                names = (
                    f"{hostname}.celery.pidbox",
                    f"{hostname}.{uuid.uuid4().hex[:12]}.celery.pidbox",
                )
                for queue in names:
                    try:
                        await ch.queue_declare(
                            queue, exclusive=True, auto_delete=True, arguments=_PIDBOX_QUEUE_ARGS
                        )
                        break
                    except ChannelLockedResource:  # the channel is closed: a new one
                        logger.warning(
                            "Remote control: another worker is named %s; give each worker "
                            "its own name (-n) so that requests can tell them apart",
                            hostname,
                        )
                        ch = await conn.channel()
                await ch.queue_bind(queue, "celery.pidbox", routing_key="")

                async def on_request(delivered: DeliveredMessage) -> None:
                    await handler(_control_message(delivered))

                await ch.basic_consume(queue, on_request, no_ack=True)
                self._control_channel = ch
                if listening is not None:
                    listening()
                if failures:
                    after = time.monotonic() - lost_at
                    logger.warning(
                        "Remote control: listening on %s again after %.1f s", queue, after
                    )
                    failures = 0
                await conn.closing
            except (*ERRORS, CeleriacError) as exc:
                if failures == 0:
                    lost_at = time.monotonic()
                    reason = conn.dead or exc  # the heartbeat check's reason first
                    logger.warning("Remote control: lost %s (%r); reconnecting", queue, reason)
                failures += 1
                await asyncio.sleep(min(5.0, 0.25 * failures))
            finally:
                self._control_channel = None
                with contextlib.suppress(Exception):
                    await conn.close()

    async def request_control(
        self, message: Message, reply_key: str, timeout: float, limit: int | None
    ) -> list[Message]:
        """The reply queue is exclusive to a connection of the request's own, bound to
        ``reply.celery.pidbox`` with ``reply_key``; it goes with the connection."""
        queue = f"{reply_key}.reply.celery.pidbox"
        replies: asyncio.Queue[Message] = asyncio.Queue()
        out: list[Message] = []
        conn = connection(self._url)
        try:
            async with self._errors():
                await asyncio.wait_for(conn.connect(), self._timeout)
                ch = await self._pidbox_channel(conn)
                await ch.queue_declare(
                    queue, exclusive=True, auto_delete=True, arguments=_PIDBOX_QUEUE_ARGS
                )
                await ch.queue_bind(queue, "reply.celery.pidbox", routing_key=reply_key)

                async def on_reply(delivered: DeliveredMessage) -> None:
                    replies.put_nowait(_control_message(delivered))

                await ch.basic_consume(queue, on_reply, no_ack=True)
                await ch.basic_publish(
                    message.body,
                    exchange="celery.pidbox",
                    properties=message_properties(message, 0),
                )
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout
                while limit is None or len(out) < limit:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        out.append(await asyncio.wait_for(replies.get(), left))
                    except asyncio.TimeoutError:
                        break
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
        return out

    @staticmethod
    async def _pidbox_channel(conn: Connection) -> Channel:
        """A channel on ``conn`` with Celery's two control exchanges declared (as
        Celery declares them; made otherwise, they are used as they are)."""
        ch = await conn.channel()
        for exchange, kind in (("celery.pidbox", "fanout"), ("reply.celery.pidbox", "direct")):
            try:
                await ch.exchange_declare(exchange, exchange_type=kind, durable=False)
            except ChannelPreconditionFailed:
                ch = await conn.channel()
        return ch

    async def reply_control(self, routing_key: str, message: Message) -> None:
        ch = self._control_channel
        if ch is None or ch.is_closed:
            raise BrokerError("RabbitMQ: the remote-control channel is not open")
        async with self._errors():
            await ch.basic_publish(
                message.body,
                exchange="reply.celery.pidbox",
                routing_key=routing_key,
                properties=message_properties(message, 0),
            )


def _control_message(delivered: DeliveredMessage) -> Message:
    """A control request or reply as read from its queue."""
    props = delivered.header.properties
    return Message(
        headers=dict(props.headers or {}),
        body=delivered.body,
        content_type=props.content_type or JSON,
        content_encoding=props.content_encoding or "utf-8",
    )


__all__ = ["Pidbox"]
