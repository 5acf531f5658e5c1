"""The core broker contract's conformance tests (every broker passes them); the
capabilities' are in :mod:`celeriac.testing._capability_suites`. See
:mod:`celeriac.testing.conformance`."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import Counter

import pytest

from celeriac.protocol import build_task_message
from celeriac.testing._support import (
    QUEUE,
    BrokerFactory,
    message,
    number,
    opened,
    run,
    run_in_threads,
)
from celeriac.transports.broker import Broker, Delivery


async def publish_raw(broker: Broker, queue: str, raw: bytes) -> None:
    """Put ``raw`` bytes on ``queue`` as they are, through the broker's ``publish_raw``
    test helper (not part of the contract: sync or async, whichever it is); skips the
    test for a broker without one."""
    helper = getattr(broker, "publish_raw", None)
    if helper is None:
        pytest.skip(f"{type(broker).__name__} has no publish_raw(queue, raw) test helper")
    pending = helper(queue, raw)
    if inspect.isawaitable(pending):
        await pending


class BrokerConformance:
    """Behaviour every broker shows (the core contract). Needs a ``broker_factory``
    fixture; compose it with the mixins of the capabilities the broker offers."""

    def test_claimed_capabilities_match_the_broker(self, broker_factory: BrokerFactory) -> None:
        """The test class composes the mixin of exactly the capabilities the broker
        class implements: none goes untested, none is claimed without its methods."""
        from celeriac.testing._registry import BROKER_MIXINS  # noqa: PLC0415

        cls = type(broker_factory())
        offered = {p.__name__ for p in BROKER_MIXINS if issubclass(cls, p)}
        tested = {p.__name__ for p, mixin in BROKER_MIXINS.items() if isinstance(self, mixin)}
        assert tested == offered, f"{cls.__name__}: mixins for {offered}, not {tested}"

    def test_round_trip_preserves_message(self, broker_factory: BrokerFactory) -> None:
        sent = build_task_message(
            "conformance.täsk",
            ("ünï", 1.5, None),
            {"k": [1, 2]},
            extra_headers={"x-custom": {"nested": True}},
            priority=3,
            reply_to="replies",
            queue=QUEUE,
        )

        async def main() -> Delivery:
            async with opened(broker_factory()) as broker:
                await broker.publish(QUEUE, sent, priority=3)
                got = await broker.fetch([QUEUE], 1, 5.0)
                await broker.ack(got)
                return got[0]

        got = run(main())
        assert got.error is None and got.message is not None
        assert got.queue == QUEUE and got.delivery_count == 1
        assert got.message.headers == sent.headers
        assert got.message.body == sent.body
        assert (got.message.content_type, got.message.content_encoding) == (
            sent.content_type,
            sent.content_encoding,
        )
        for key, value in sent.properties.items():
            assert got.message.properties[key] == value, key

    def test_fifo_within_priority_higher_priority_first(
        self, broker_factory: BrokerFactory
    ) -> None:
        async def main() -> list[int]:
            async with opened(broker_factory()) as broker:
                for n, priority in [(1, 0), (2, 0), (3, 9), (4, 5), (5, 9), (6, 0)]:
                    await broker.publish(QUEUE, message(n), priority=priority)
                order = []
                for _ in range(6):
                    got = await broker.fetch([QUEUE], 1, 5.0)
                    order += [number(d) for d in got]
                    await broker.ack(got)
                return order

        assert run(main()) == [3, 5, 4, 1, 2, 6]

    def test_delayed_message_invisible_until_due(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker:
                due = time.time() + 0.2
                await broker.publish(QUEUE, message(1), not_before=due)
                assert await broker.fetch([QUEUE], 1, 0.0) == []
                assert await broker.size(QUEUE) == 1
                got = await broker.fetch([QUEUE], 1, 5.0)
                assert [number(d) for d in got] == [1]
                assert time.time() >= due - 0.02
                await broker.ack(got)

        run(main())

    def test_fetch_timeout_returns_empty_list(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker:
                start = time.monotonic()
                assert await broker.fetch([QUEUE], 10, 0.1) == []
                assert 0.08 <= time.monotonic() - start < 2.0

        run(main())

    def test_fetch_wakes_on_publish_from_another_instance(
        self, broker_factory: BrokerFactory
    ) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as consumer, opened(broker_factory()) as prod:
                fetching = asyncio.create_task(consumer.fetch([QUEUE], 1, 10.0))
                await asyncio.sleep(0)  # let the fetch start waiting
                start = time.monotonic()
                await prod.publish(QUEUE, message(7))
                got = await fetching
                assert [number(d) for d in got] == [7]
                assert time.monotonic() - start < 1.0
                await consumer.ack(got)

        run(main())

    def test_max_count_respected(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker:
                await broker.publish_many([(QUEUE, message(n), 0, None) for n in range(5)])
                first = await broker.fetch([QUEUE], 3, 5.0)
                second = await broker.fetch([QUEUE], 3, 5.0)
                assert [number(d) for d in first] == [0, 1, 2]
                assert [number(d) for d in second] == [3, 4]
                await broker.ack([*first, *second])

        run(main())

    def test_queues_are_separate(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker:
                await broker.publish("conformance-a", message(1))
                await broker.publish("conformance-b", message(2))
                assert await broker.fetch(["conformance-c"], 5, 0.0) == []
                got = await broker.fetch(["conformance-b"], 5, 5.0)
                assert [(d.queue, number(d)) for d in got] == [("conformance-b", 2)]
                both = await broker.fetch(["conformance-b", "conformance-a"], 5, 5.0)
                assert [(d.queue, number(d)) for d in both] == [("conformance-a", 1)]
                await broker.ack([*got, *both])

        run(main())

    def test_extend_prevents_redelivery(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory({"visibility_timeout": 0.2})) as broker:
                await broker.publish(QUEUE, message(1))
                got = await broker.fetch([QUEUE], 1, 5.0)
                await broker.extend(got, 30.0)
                assert await broker.fetch([QUEUE], 1, 0.5) == []
                await broker.ack(got)

        run(main())

    def test_ack_removes_message(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory({"visibility_timeout": 0.2})) as broker:
                await broker.publish_many([(QUEUE, message(n), 0, None) for n in range(3)])
                got = await broker.fetch([QUEUE], 3, 5.0)
                await broker.ack(got)
                assert await broker.size(QUEUE) == 0
                assert await broker.fetch([QUEUE], 3, 0.4) == []  # past the lease

        run(main())

    def test_requeue_returns_without_counting(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker:
                await broker.publish(QUEUE, message(1))
                got = await broker.fetch([QUEUE], 1, 5.0)
                await broker.requeue(got)
                again = await broker.fetch([QUEUE], 1, 0.0)
                assert [(number(d), d.delivery_count) for d in again] == [(1, 1)]
                await broker.requeue(again, count_delivery=True)
                third = await broker.fetch([QUEUE], 1, 0.0)
                assert [(number(d), d.delivery_count) for d in third] == [(1, 2)]
                await broker.ack(third)

        run(main())

    def test_requeue_with_not_before_delays(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker:
                await broker.publish(QUEUE, message(1))
                got = await broker.fetch([QUEUE], 1, 5.0)
                due = time.time() + 0.2
                await broker.requeue(got, not_before=due)
                assert await broker.fetch([QUEUE], 1, 0.0) == []
                assert await broker.size(QUEUE) == 1
                again = await broker.fetch([QUEUE], 1, 5.0)
                assert time.time() >= due - 0.02
                assert [(number(d), d.delivery_count) for d in again] == [(1, 1)]
                await broker.ack(again)

        run(main())

    def test_purge_and_size(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker:
                await broker.publish_many([(QUEUE, message(n), 0, None) for n in range(3)])
                await broker.publish(QUEUE, message(9), not_before=time.time() + 60)
                await broker.publish("conformance-other", message(5))
                assert await broker.size(QUEUE) == 4  # ready and delayed
                leased = await broker.fetch([QUEUE], 1, 5.0)
                assert await broker.size(QUEUE) == 3  # not leased
                assert await broker.purge(QUEUE) == 3
                assert await broker.size(QUEUE) == 0
                assert await broker.size("conformance-other") == 1
                await broker.ack(leased)

        run(main())

    def test_two_consumers_never_share_a_message(self, broker_factory: BrokerFactory) -> None:
        total = 200
        run(self._publish_numbers(broker_factory(), total))
        consumers = [broker_factory(), broker_factory()]
        seen: list[list[Delivery]] = [[], []]
        done = Counter[str]()
        lock, barrier = threading.Lock(), threading.Barrier(len(consumers))

        async def consume(broker: Broker, out: list[Delivery]) -> None:
            async with opened(broker):
                barrier.wait(5)
                deadline = time.monotonic() + 20
                while done["acked"] < total and time.monotonic() < deadline:
                    got = await broker.fetch([QUEUE], 7, 0.05)
                    out += got
                    await broker.ack(got)
                    with lock:
                        done["acked"] += len(got)

        run_in_threads(*(consume(c, out) for c, out in zip(consumers, seen, strict=True)))
        numbers = Counter(number(d) for d in [*seen[0], *seen[1]])
        assert sorted(numbers) == list(range(total))
        assert set(numbers.values()) == {1}
        assert {d.delivery_count for d in [*seen[0], *seen[1]]} == {1}

    @staticmethod
    async def _publish_numbers(broker: Broker, total: int) -> None:
        async with opened(broker):
            await broker.publish_many([(QUEUE, message(n), 0, None) for n in range(total)])

    def test_dead_letter_takes_the_message_off_its_queue(
        self, broker_factory: BrokerFactory
    ) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker:
                await broker.publish(QUEUE, message(1))
                (got,) = await broker.fetch([QUEUE], 1, 5.0)
                await broker.dead_letter(got, "conformance: poison")
                assert await broker.fetch([QUEUE], 1, 0.0) == []
                assert await broker.size(QUEUE) == 0

        run(main())

    def test_garbage_bytes_yield_delivery_with_error(self, broker_factory: BrokerFactory) -> None:
        garbage = b"\xff\x00 this is not an envelope"

        async def main() -> None:
            async with opened(broker_factory()) as broker:
                await publish_raw(broker, QUEUE, garbage)
                (got,) = await broker.fetch([QUEUE], 1, 5.0)
                assert got.message is None and got.error
                assert got.raw == garbage and got.queue == QUEUE
                await broker.dead_letter(got, got.error)
                assert await broker.fetch([QUEUE], 1, 0.0) == []

        run(main())


__all__ = ["BrokerConformance", "publish_raw"]
