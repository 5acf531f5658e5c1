"""Durable revocations on RabbitMQ: a stream every broker instance reads from its start
and then follows on the task consumers' channel, so ``revoked`` answers from memory.
The formats and the bookkeeping are in :mod:`.control`; the design, and why a stream:
docs/internals/amqp.md, "Revocations"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence

from celeriac.exceptions import BrokerError
from celeriac.protocol import JSON
from celeriac.transports.amqp import control as _ctl
from celeriac.transports.amqp.codec import Properties
from celeriac.transports.amqp.connection import (
    ERRORS,
    ChannelPreconditionFailed,
    DeliveredMessage,
    Returned,
    Session,
)
from celeriac.transports.amqp.core import AMQPCore
from celeriac.transports.amqp.messages import delivery_tag
from celeriac.transports.broker import Revocation

#: the broker's logger (one for all its modules)
logger = logging.getLogger("celeriac.transports.amqp.broker")


class StreamRevocations(AMQPCore):
    """The revocation stream: ``revoke`` appends, ``revoked`` reads from memory."""

    async def revoke(
        self,
        task_ids: Sequence[str],
        ttl: float,
        *,
        terminate: bool = False,
        signal: str | None = None,
    ) -> None:
        """Append one record to the revocation stream (confirmed before returning)."""
        if not task_ids:
            return
        if ttl > self._retention and not self._warned_retention:
            self._warned_retention = True
            logger.warning(
                "Revocations last %.0f s (worker_revoke_expires) but the revocation stream "
                "keeps %.0f s (broker_transport_options revoke_retention)",
                ttl,
                self._retention,
            )
        body = _ctl.revocation_record(list(task_ids), time.time() + ttl, terminate, signal)
        async with self._errors():
            await self._append(await self._session(), body)
        self._log.read(body)

    async def revoked(self, task_ids: Sequence[str]) -> dict[str, Revocation]:
        """From memory, once this connection has read the stream up to a marker of its
        own (the first call waits for that)."""
        if not task_ids:
            return {}
        await self._following()
        return self._log.lookup(task_ids)

    async def revoked_ids(self, limit: int) -> list[str]:
        await self._following()
        return self._log.live(limit)

    async def _following(self) -> None:
        async with self._errors():
            s = await self._session()
            if not s.following:
                async with self._follow_lock:
                    if not s.following:
                        await self._follow(s)

    async def _declare_stream(self, s: Session) -> None:
        if _ctl.REVOKED_STREAM in s.declared:
            return
        ch = await self._channel(s, "admin")
        args = _ctl.stream_arguments(self._retention)
        try:
            await ch.queue_declare(_ctl.REVOKED_STREAM, durable=True, arguments=args)
        except ChannelPreconditionFailed:  # made with another retention: use it as it is
            ch = await self._channel(s, "admin")
            await ch.queue_declare(_ctl.REVOKED_STREAM, passive=True)
        s.declared.add(_ctl.REVOKED_STREAM)

    async def _append(self, s: Session, body: bytes) -> None:
        props = Properties(content_type=JSON, delivery_mode=2)
        for attempt in (1, 2):
            await self._declare_stream(s)
            ch = await self._channel(s, "publish")
            try:
                await ch.basic_publish(
                    body, routing_key=_ctl.REVOKED_STREAM, properties=props, mandatory=True
                )
                return
            except Returned:  # the stream was deleted behind our back
                if attempt == 2:
                    raise BrokerError("RabbitMQ routed a revocation to no queue") from None
                s.declared.discard(_ctl.REVOKED_STREAM)

    async def _follow(self, s: Session) -> None:
        """Consume the revocation stream on the task consumers' channel (why that
        channel: docs/internals/amqp.md, "Revocations"), then wait until a marker appended now has
        been read back."""
        await self._declare_stream(s)
        loop = asyncio.get_running_loop()
        marker = uuid.uuid4().hex
        seen = s.markers[marker] = loop.create_future()
        log = self._log

        async def on_record(message: DeliveredMessage) -> None:
            offset = (message.header.properties.headers or {}).get("x-stream-offset")
            if isinstance(offset, int):
                log.next_offset = offset + 1
            found = log.read(message.body)
            if found is not None:
                waiter = s.markers.pop(found, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            tag = delivery_tag(message)
            s.outstanding.discard(tag)
            with contextlib.suppress(*ERRORS):
                await s.consume.basic_ack(tag, wait=False)

        start: int | str = "first" if log.next_offset is None else log.next_offset
        async with self._qos_lock:
            await s.consume.basic_qos(prefetch_count=_ctl.STREAM_PREFETCH, global_=False)
            try:
                await s.consume.basic_consume(
                    _ctl.REVOKED_STREAM,
                    on_record,
                    no_ack=False,
                    consumer_tag=s.stream_tag,
                    arguments={"x-stream-offset": start},
                )
            finally:
                if s.prefetch:  # a per-consumer prefetch applies to later consumers only
                    await s.consume.basic_qos(prefetch_count=s.prefetch, global_=False)
        await self._append(s, _ctl.marker_record(marker))
        read = log.next_offset
        while True:  # a long stream may take a while: wait as long as reading goes on
            try:
                await asyncio.wait_for(asyncio.shield(seen), self._timeout)
                break
            except asyncio.TimeoutError:
                if log.next_offset == read:
                    s.markers.pop(marker, None)
                    raise BrokerError("RabbitMQ stopped delivering the revocation stream") from None
                read = log.next_offset
        s.following = True


__all__ = ["StreamRevocations"]
