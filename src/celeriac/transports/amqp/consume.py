"""Consuming from RabbitMQ: ``basic.consume`` with a per-consumer prefetch sized to the
caller's window, the fast lane's deliveries buffered per session, acks (one with
``multiple`` when deliveries finish in order), requeues and releases as republished
copies carrying the delivery count, and the dead-letter queue. The design:
docs/internals/amqp.md, "Consuming" and "Delivery count"."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Sequence

from celeriac.exceptions import BrokerError, CeleriacError
from celeriac.transports.amqp.codec import GetEmpty, copy_properties
from celeriac.transports.amqp.connection import (
    ERRORS,
    DeliveredMessage,
    Incoming,
    Session,
    gather,
    peek,
    take_first,
)
from celeriac.transports.amqp.messages import (
    H_COUNT,
    H_FAILED_AT,
    H_NOT_BEFORE,
    H_QUEUE,
    H_REASON,
    clean_headers,
    delivery_tag,
    header_number,
    needs_recount,
    to_delivery,
)
from celeriac.transports.amqp.revocations import StreamRevocations
from celeriac.transports.broker import DeadLetter, Delivery

#: after consumers start, how long a fetch waits for more of the burst RabbitMQ sends
FILL_WINDOW = 0.005
DEAD_LETTER_SCAN = 10_000


class Consuming(StreamRevocations):
    """Fetch, ack, requeue, dead-letter (the consumers follow the revocation stream
    first: it shares their channel)."""

    async def close(self) -> None:
        """Cancel the consumers, return the prefetched messages never handed out (as
        copies, without counting a delivery) and close the connection."""
        s = self._s
        if s is None:
            return
        if s.error is None:
            with contextlib.suppress(*ERRORS, CeleriacError):
                for tag in list(s.consumers.values()):
                    await s.consume.basic_cancel(tag)
                await asyncio.sleep(0)  # deliveries before the CancelOk reach the buffer
                items, s.buffer = list(s.buffer), deque()
                await self._release(s, items)
        self._s = None
        s.fail(None)
        with contextlib.suppress(Exception):
            await s.conn.close()

    # -- consuming --------------------------------------------------------
    async def fetch(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        return await self.ack_and_fetch((), queues, max_count, timeout)

    async def ack_and_fetch(
        self, acks: Sequence[Delivery], queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        async with self._errors():
            s = await self._session()
            await self._ack(s, acks)
            if max_count <= 0 or not queues:
                return []
            await self._consume(s, list(dict.fromkeys(queues)), max_count)
            return await self._collect(s, queues, max_count, timeout)

    async def _consume(self, s: Session, queues: list[str], max_count: int) -> None:
        """Consume exactly ``queues``, each with a prefetch of what the caller holds plus
        ``max_count`` (RabbitMQ applies a per-consumer prefetch to new consumers only)."""
        for queue in queues:
            await self._declare(s, queue)
        need = min(s.held + max_count, 65535)
        restart = need > s.prefetch
        stale = [q for q in s.consumers if restart or q not in queues]
        for queue in stale:
            await s.consume.basic_cancel(s.consumers.pop(queue))
        if stale:
            await asyncio.sleep(0)
            gone = [(q, m) for q, m in s.buffer if q not in queues]
            if gone:
                s.buffer = deque((q, m) for q, m in s.buffer if q in queues)
                await self._release(s, gone)
        if not restart and all(q in s.consumers for q in queues):
            return

        def on_message(message: Incoming) -> None:
            tag = getattr(message.delivery, "consumer_tag", None) or ""
            s.outstanding.add(delivery_tag(message))
            s.buffer.append((s.queue_of.get(tag, ""), message))
            s.wake.set()

        async def on_message_slow(message: DeliveredMessage) -> None:
            on_message(message)  # were the fast lane (s.tap) ever to pass one on

        # The revocation stream shares this channel: follow it before taking deliveries.
        # Right after RabbitMQ restarts the stream may not be up yet; failing now (and
        # retrying) costs nothing, while failing later would close the channel under
        # deliveries already running, which RabbitMQ would then deliver again.
        if not s.following:
            async with self._follow_lock:
                if not s.following:
                    await self._follow(s)
        async with self._qos_lock:  # the revocation stream sets its own prefetch
            if restart:
                await s.consume.basic_qos(prefetch_count=need, global_=False)
                s.prefetch = need
            for queue in queues:
                if queue not in s.consumers:  # tag known first: deliveries precede ConsumeOk
                    tag = f"celeriac.{s.number}.{len(s.queue_of)}"
                    s.consumers[queue], s.queue_of[tag] = tag, queue
                    s.tap.callbacks[tag] = on_message
                    await s.consume.basic_consume(
                        queue, on_message_slow, no_ack=False, consumer_tag=tag
                    )
                    s.fresh = True

    async def _collect(
        self, s: Session, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        probed = False
        while True:
            s.wake.clear()
            out = await self._take(s, queues, max_count)
            while out and s.fresh and len(out) < max_count:  # the rest of the burst
                s.wake.clear()
                more = await self._take(s, queues, max_count - len(out))
                if not more:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(s.wake.wait(), FILL_WINDOW)
                    more = await self._take(s, queues, max_count - len(out))
                    if not more:
                        break
                out += more
            if out:
                s.fresh = False
                return out
            if s.error is not None:
                raise BrokerError(f"RabbitMQ connection lost: {s.error!r}")
            left = deadline - loop.time()
            if left <= 0:
                if probed:
                    s.fresh = False
                    return []
                # before giving up, ask the queues: what RabbitMQ was already dispatching
                # to our consumers arrives before the answer
                probed = True
                await self._probe(s, queues, max_count)
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(s.wake.wait(), left)

    async def _probe(self, s: Session, queues: Sequence[str], max_count: int) -> None:
        for queue in queues:
            while len(s.buffer) < max_count:
                got = await s.consume.basic_get(queue, no_ack=False)
                if isinstance(got.delivery, GetEmpty):
                    break
                s.outstanding.add(delivery_tag(got))
                s.buffer.append((queue, got))
        await asyncio.sleep(0)

    async def _take(self, s: Session, queues: Sequence[str], max_count: int) -> list[Delivery]:
        out: list[Delivery] = []
        keep: list[tuple[str, Incoming]] = []
        now = time.time()
        while s.buffer and len(out) < max_count:
            queue, message = s.buffer.popleft()
            if queue not in queues:
                keep.append((queue, message))
                continue
            delivery = self._delivery(s, queue, message)
            not_before = header_number(message, H_NOT_BEFORE)
            early = not_before is not None and not_before - now > 0.01
            # early: a delay beyond the cascade's range, sent round again; recount: a
            # classic queue's redelivery, whose flag cannot count a second loss, goes back
            # as a copy carrying its count, so a message that keeps killing workers ends
            if early or needs_recount(message):
                s.held += 1
                due = not_before if early else None
                await self._republish(s, [delivery], delivery.delivery_count - 1, due)
                continue
            out.append(delivery)
        s.buffer.extendleft(reversed(keep))
        s.held += len(out)
        return out

    @staticmethod
    def _delivery(s: Session, queue: str, message: Incoming) -> Delivery:
        delivery = to_delivery(queue, f"{s.number}.", message)
        delivery.extra["amqp"] = (s, message)
        return delivery

    @staticmethod
    def _live(s: Session, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Deliveries of session ``s`` not settled yet. Those of a lost connection went
        back to their queue when it closed: acking them is neither needed nor possible."""
        if s.error is not None:
            return []
        return [
            d
            for d in deliveries
            if d.extra.get("amqp", (None,))[0] is s and "settled" not in d.extra
        ]

    async def _ack(self, s: Session, deliveries: Sequence[Delivery]) -> None:
        """One ``basic.ack`` with ``multiple`` for the tags below every tag still
        outstanding on the channel (the usual case: tasks finish in order), one each for
        the others."""
        live = self._live(s, deliveries)
        if not live:
            return
        tags = []
        for d in live:
            d.extra["settled"] = True
            s.held -= 1
            tags.append(delivery_tag(d.extra["amqp"][1]))
        s.outstanding.difference_update(tags)
        low = min(s.outstanding, default=math.inf)
        rest = sorted(t for t in tags if t > low)
        covered = max((t for t in tags if t < low), default=0)
        if covered:
            await s.consume.basic_ack(covered, multiple=True, wait=not rest)
        for i, tag in enumerate(rest):
            await s.consume.basic_ack(tag, wait=i == len(rest) - 1)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        async with self._errors():
            await self._ack(await self._session(), deliveries)

    async def _republish(
        self, s: Session, deliveries: Sequence[Delivery], base: int, not_before: float | None
    ) -> None:
        """Publish copies whose delivery count starts at ``base``, then ack these."""
        live = self._live(s, deliveries)
        await self._prepare(s, [d.queue for d in live])
        sends = []
        for d in live:
            message: Incoming = d.extra["amqp"][1]
            props = message.header.properties
            headers = clean_headers(props.headers)
            if base > 0:
                headers[H_COUNT] = base
            copy = copy_properties(props, headers=headers)
            sends.append(self._send(s, d.queue, message.body, copy, not_before))
        await gather(sends)
        await self._ack(s, live)

    async def _release(self, s: Session, items: list[tuple[str, Incoming]]) -> None:
        """Return prefetched messages never handed out, without counting a delivery."""
        for queue, message in items:
            delivery = self._delivery(s, queue, message)
            s.held += 1
            await self._republish(
                s,
                [delivery],
                delivery.delivery_count - 1,
                header_number(message, H_NOT_BEFORE),
            )

    async def requeue(
        self,
        deliveries: Sequence[Delivery],
        *,
        not_before: float | None = None,
        count_delivery: bool = False,
    ) -> None:
        async with self._errors():
            s = await self._session()
            for d in deliveries:  # one at a time: each carries its own count
                base = d.delivery_count if count_delivery else d.delivery_count - 1
                await self._republish(s, [d], base, not_before)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        async with self._errors():
            s = await self._session()
            if not self._live(s, [delivery]):
                return
            message: Incoming = delivery.extra["amqp"][1]
            props = message.header.properties
            headers = clean_headers(props.headers)
            headers.update(
                {
                    H_REASON: reason,
                    H_QUEUE: delivery.queue,
                    H_FAILED_AT: time.time(),
                }
            )
            props = copy_properties(props, headers=headers, expiration=None, delivery_mode=2)
            await self._send(s, self._dlq, message.body, props, None)
            await self._ack(s, [delivery])

    async def extend(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Nothing to do: RabbitMQ keeps a delivery until its channel closes."""

    @property
    def lease_seconds(self) -> float:
        return 3600.0

    # -- the dead-letter queue ---------------------------------------------
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest of the first ``DEAD_LETTER_SCAN`` messages of the dead-letter queue
        (read with ``basic.get``, then put back in place)."""
        async with self._errors():
            s = await self._session()
            await self._declare(s, self._dlq)
            letters = await peek(s.conn, self._dlq, DEAD_LETTER_SCAN)
            found = []
            for letter in reversed(letters[-limit:]):
                h = letter.header.properties.headers or {}
                queue = str(h.get(H_QUEUE, ""))
                found.append(
                    DeadLetter(
                        queue,
                        letter.body,
                        str(h.get(H_REASON)),
                        float(h.get(H_FAILED_AT) or 0.0),  # type: ignore[arg-type]
                        message=to_delivery(queue, "", letter).message,
                    )
                )
            return found

    async def remove_dead_letter(self, letter: DeadLetter) -> bool:
        """Take the first dead letter equal to ``letter`` (queue, time, bytes) out of the
        first ``DEAD_LETTER_SCAN`` of the queue; the others stay in place."""

        def same(headers: dict[str, object], body: bytes) -> bool:
            failed_at = headers.get(H_FAILED_AT) or 0.0
            return (
                body == letter.raw
                and str(headers.get(H_QUEUE, "")) == letter.queue
                and isinstance(failed_at, int | float)
                and float(failed_at) == letter.failed_at
            )

        async with self._errors():
            s = await self._session()
            await self._declare(s, self._dlq)
            return await take_first(s.conn, self._dlq, DEAD_LETTER_SCAN, same)


__all__ = ["DEAD_LETTER_SCAN", "FILL_WINDOW", "Consuming"]
