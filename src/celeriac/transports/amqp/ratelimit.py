"""Global (all-worker) token buckets on RabbitMQ: per key a bounded token queue, refilled
on a wall-clock grid by one worker elected through a single-active-consumer queue. The
names and the bookkeeping are in :mod:`.control`; the design and its bound:
docs/internals/amqp.md, "Global rate limits"."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from celeriac.exceptions import BrokerError
from celeriac.transports.amqp import control as _ctl
from celeriac.transports.amqp.codec import Cancel, GetOk
from celeriac.transports.amqp.connection import (
    ERRORS,
    Channel,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveredMessage,
    Session,
)
from celeriac.transports.amqp.core import AMQPCore
from celeriac.transports.amqp.messages import delivery_tag


class TokenBuckets(AMQPCore):
    """``take_token`` on a bucket shared by every worker."""

    async def take_token(self, key: str, rate: float, capacity: float) -> float:
        """``basic.get`` a token from the bucket's queue (joining its leader election on
        first use); without one, the seconds until just after the next refill."""
        async with self._errors():
            s = await self._session()
            for attempt in (1, 2):
                ch = await self._rate_channel(s)
                try:
                    bucket = s.buckets.get(key)
                    if bucket is None:
                        async with self._join_lock:  # one candidate per key and connection
                            bucket = s.buckets.get(key)
                            if bucket is None:
                                bucket = await self._join(s, ch, key, rate, capacity)
                    bucket.rate, bucket.used = rate, time.monotonic()
                    got = await ch.basic_get(_ctl.tokens_queue(key), no_ack=True)
                    break
                except (ChannelNotFoundEntity, ChannelPreconditionFailed) as exc:
                    # a queue expired or was deleted: the channel closed; declare again
                    s.drop_buckets()
                    if attempt == 2:
                        raise BrokerError(f"RabbitMQ token bucket {key!r}: {exc!r}") from exc
        if isinstance(got.delivery, GetOk):
            return 0.0
        return _ctl.token_wait(rate, time.time())

    async def _rate_channel(self, s: Session) -> Channel:
        ch = s.rate
        if ch is None or ch.is_closed:
            s.drop_buckets()
            ch = s.rate = await s.conn.channel(publisher_confirms=False)
            opened = ch

            def closed(_: object) -> None:
                if s.rate is opened:  # its consumers are gone: RabbitMQ requeued batons
                    s.drop_buckets()

            ch.closing.add_done_callback(closed)
            ch.on_consumer_cancel_callbacks.add(lambda frame: self._bucket_gone(s, frame))
            await ch.basic_qos(prefetch_count=10, global_=False)
        return ch

    @staticmethod
    def _bucket_gone(s: Session, frame: Cancel) -> None:
        """RabbitMQ cancelled a leader-queue consumer (the queue went): forget it."""
        for key, bucket in list(s.buckets.items()):
            if bucket.tag == frame.consumer_tag:
                s.buckets.pop(key)
                if bucket.refill is not None:
                    bucket.refill.cancel()

    async def _join(
        self, s: Session, ch: Channel, key: str, rate: float, capacity: float
    ) -> _ctl.Bucket:
        """Declare the bucket's queues, consume its leader queue and add a baton."""
        leader = _ctl.leader_queue(key)
        await ch.queue_declare(_ctl.tokens_queue(key), arguments=_ctl.tokens_arguments(capacity))
        await ch.queue_declare(leader, arguments=_ctl.leader_arguments())
        self._buckets_made += 1
        bucket = _ctl.Bucket(
            key, rate, capacity, tag=f"celeriac.{s.number}.rate.{self._buckets_made}"
        )
        s.buckets[key] = bucket

        async def on_baton(message: DeliveredMessage) -> None:
            tag = delivery_tag(message)
            with contextlib.suppress(*ERRORS):
                if s.buckets.get(key) is not bucket:  # resigned meanwhile: pass it on
                    await ch.basic_reject(tag, requeue=True)
                elif bucket.baton is not None:  # one is enough
                    await ch.basic_ack(tag)
                else:
                    bucket.baton = tag
                    bucket.refill = asyncio.get_running_loop().create_task(
                        self._refill(s, ch, bucket)
                    )

        await ch.basic_consume(leader, on_baton, no_ack=False, consumer_tag=bucket.tag)
        await ch.basic_publish(b"", routing_key=leader)
        return bucket

    async def _refill(self, s: Session, ch: Channel, bucket: _ctl.Bucket) -> None:
        """The leader's clock: one token at each grid point of ``1/rate`` seconds."""
        queue = _ctl.tokens_queue(bucket.key)
        rate = bucket.rate
        index = math.floor(time.time() * rate)
        try:
            while True:
                if time.monotonic() - bucket.used > _ctl.RESIGN_AFTER:
                    await self._resign(s, ch, bucket)
                    return
                if bucket.rate != rate:
                    rate, index = bucket.rate, math.floor(time.time() * bucket.rate)
                await asyncio.sleep(max(0.0, (index + 1) / rate - time.time()))
                now = math.floor(time.time() * rate)
                if now <= index:
                    continue
                index = now  # one token per grid point, never a backlog
                await ch.basic_publish(b"", routing_key=queue)
        except ERRORS:
            return  # the channel closed: RabbitMQ requeued the baton

    @staticmethod
    async def _resign(s: Session, ch: Channel, bucket: _ctl.Bucket) -> None:
        """Idle: leave the election and hand the baton to the next candidate."""
        if s.buckets.get(bucket.key) is bucket:
            del s.buckets[bucket.key]
        await ch.basic_cancel(bucket.tag)
        if bucket.baton is not None:
            await ch.basic_reject(bucket.baton, requeue=True)


__all__ = ["TokenBuckets"]
