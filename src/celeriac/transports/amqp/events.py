"""Celery's events on RabbitMQ: the durable ``celeryev`` topic exchange, routing keys
``task.multi``, ``worker.heartbeat``, ...; a receiver's queue ``celeryev.<uuid>`` is
exclusive and auto-delete with ``x-expires 60000`` and ``x-message-ttl 5000``, as Celery
declares it, on a connection of its own; events are published without confirms
(``delivery_mode`` 1, as Celery's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from celeriac.exceptions import CeleriacError
from celeriac.protocol import JSON, Message
from celeriac.protocol.events import EXCHANGE
from celeriac.transports.amqp.connection import (
    ERRORS,
    ChannelPreconditionFailed,
    DeliveredMessage,
    connection,
)
from celeriac.transports.amqp.core import AMQPCore
from celeriac.transports.amqp.messages import message_properties

_EVENT_QUEUE_ARGS: dict[str, Any] = {"x-expires": 60_000, "x-message-ttl": 5_000}

logger = logging.getLogger("celeriac.transports.amqp.broker")


class EventExchange(AMQPCore):
    """The :class:`~celeriac.transports.capabilities.EventChannel` of the RabbitMQ broker."""

    async def publish_events(self, items: Sequence[tuple[str, Message]]) -> None:
        if not items:
            return
        async with self._errors():
            s = await self._session()
            ch = await self._channel(s, "admin")
            if EXCHANGE not in s.declared:
                try:
                    await ch.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
                except ChannelPreconditionFailed:  # made otherwise: use it as it is
                    ch = await self._channel(s, "admin")
                s.declared.add(EXCHANGE)
            for key, message in items:
                await ch.basic_publish(
                    message.body,
                    exchange=EXCHANGE,
                    routing_key=key,
                    properties=message_properties(message, 0),
                )

    async def listen_events(
        self,
        patterns: Sequence[str],
        handler: Callable[[Message], Awaitable[None]],
        listening: Callable[[], None] | None = None,
    ) -> None:
        failures = 0
        while True:
            conn = connection(self._url)
            try:
                await asyncio.wait_for(conn.connect(), self._timeout)
                ch = await conn.channel()
                try:
                    await ch.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
                except ChannelPreconditionFailed:
                    ch = await conn.channel()
                queue = f"{EXCHANGE}.{uuid.uuid4()}"
                await ch.queue_declare(
                    queue, exclusive=True, auto_delete=True, arguments=_EVENT_QUEUE_ARGS
                )
                for pattern in patterns:
                    await ch.queue_bind(queue, EXCHANGE, routing_key=pattern)

                async def on_event(delivered: DeliveredMessage) -> None:
                    props = delivered.header.properties
                    key = str(getattr(delivered.delivery, "routing_key", "") or "")
                    await handler(
                        Message(
                            headers=dict(props.headers or {}),
                            body=delivered.body,
                            content_type=props.content_type or JSON,
                            content_encoding=props.content_encoding or "utf-8",
                            properties={
                                "delivery_info": {"exchange": EXCHANGE, "routing_key": key}
                            },
                        )
                    )

                await ch.basic_consume(queue, on_event, no_ack=True)
                if listening is not None:
                    listening()
                if failures:
                    logger.info("Events: listening again")
                    failures = 0
                await conn.closing
            except (*ERRORS, CeleriacError) as exc:
                if failures == 0:
                    logger.warning("Events: lost the event queue (%r); reconnecting", exc)
                failures += 1
                await asyncio.sleep(min(5.0, 0.25 * failures))
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()


__all__ = ["EventExchange"]
