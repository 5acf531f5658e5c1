"""The broker half of the conformance suite; see :mod:`celeriac.testing.conformance`."""

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
from celeriac.transports.broker import Broker, Delivery, Revocation
from celeriac.transports.capabilities import DeadLetterStore, LeaseRecovery, RevocationStore


class BrokerConformance:
    """Behaviour every broker shows. Needs a ``broker_factory`` fixture."""

    supports_recover = True
    supports_publish_raw = True
    supports_lease_expiry = True

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

    def test_expired_lease_redelivers_with_next_count(self, broker_factory: BrokerFactory) -> None:
        if not self.supports_lease_expiry:
            pytest.skip("broker has no leases: unacked messages return when the channel closes")

        async def main() -> None:
            async with opened(broker_factory({"visibility_timeout": 0.2})) as broker:
                await broker.publish(QUEUE, message(1))
                first = await broker.fetch([QUEUE], 1, 5.0)
                leased_at = time.monotonic()
                again = await broker.fetch([QUEUE], 1, 5.0)
                assert time.monotonic() - leased_at >= 0.15
                assert [(number(d), d.delivery_count) for d in first] == [(1, 1)]
                assert [(number(d), d.delivery_count) for d in again] == [(1, 2)]
                await broker.ack(again)

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

    def test_dead_letter_keeps_bytes_and_reason(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as broker:
                await broker.publish(QUEUE, message(1))
                (got,) = await broker.fetch([QUEUE], 1, 5.0)
                await broker.dead_letter(got, "conformance: poison")
                assert await broker.fetch([QUEUE], 1, 0.0) == []
                assert await broker.size(QUEUE) == 0
                assert isinstance(broker, DeadLetterStore)
                letters = await broker.dead_letters()
                assert [(x.queue, x.raw, x.reason) for x in letters] == [
                    (QUEUE, got.raw, "conformance: poison")
                ]
                assert abs(letters[0].failed_at - time.time()) < 60

        run(main())

    def test_recover_returns_only_that_consumers_messages(
        self, broker_factory: BrokerFactory
    ) -> None:
        if not self.supports_recover:
            pytest.skip("broker tracks unacked messages natively")

        async def main() -> None:
            async with opened(broker_factory()) as a, opened(broker_factory()) as b:
                assert isinstance(a, LeaseRecovery)
                a.consumer_id, b.consumer_id = "conformance-a", "conformance-b"
                await a.publish_many([(QUEUE, message(n), 0, None) for n in range(4)])
                mine = await a.fetch([QUEUE], 2, 5.0)
                theirs = await b.fetch([QUEUE], 2, 5.0)
                assert await a.recover("conformance-b") == 2
                back = await a.fetch([QUEUE], 4, 5.0)
                assert sorted(number(d) for d in back) == sorted(number(d) for d in theirs)
                assert {d.delivery_count for d in back} == {2}  # worker loss counts
                assert await a.fetch([QUEUE], 4, 0.0) == []
                await a.ack([*mine, *back])

        run(main())

    def test_revocations_reach_fetched_batches_until_they_expire(
        self, broker_factory: BrokerFactory
    ) -> None:
        async def main() -> None:
            async with opened(broker_factory()) as b:
                if not isinstance(b, RevocationStore):
                    pytest.skip("broker keeps no revocations")
                first, second = message(1), message(2)
                ids = [first.task_id or "", second.task_id or ""]
                await b.publish_many([(QUEUE, first, 0, None), (QUEUE, second, 0, None)])
                batch = await b.fetch([QUEUE], 2, 5.0)
                assert len(batch) == 2
                assert await b.revoked_among(batch) == {}
                await b.requeue(batch)
                await b.revoke(ids[:1], 60.0, terminate=True, signal="SIGKILL")
                await b.revoke(ids[1:], 0.5)
                batch = await b.fetch([QUEUE], 2, 5.0)
                found = await b.revoked_among(batch)
                assert found.get(ids[0]) == Revocation(True, "SIGKILL")
                assert await b.revoked(ids[:1]) == {ids[0]: Revocation(True, "SIGKILL")}
                # the short one expires (time passing is the event here: poll, bounded)
                deadline = time.monotonic() + 10
                while ids[1] in await b.revoked(ids) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                assert await b.revoked(ids) == {ids[0]: Revocation(True, "SIGKILL")}
                await b.ack(batch)

        run(main())

    def test_recover_keeps_the_deliveries_a_live_consumer_names(
        self, broker_factory: BrokerFactory
    ) -> None:
        if not self.supports_recover:
            pytest.skip("broker tracks unacked messages natively")

        async def main() -> None:
            async with opened(broker_factory()) as a:
                assert isinstance(a, LeaseRecovery)
                a.consumer_id = "conformance-live"
                await a.publish_many([(QUEUE, message(n), 0, None) for n in range(3)])
                held = await a.fetch([QUEUE], 3, 5.0)
                assert len(held) == 3
                # the consumer knows of the first two; the third's fetch reply was "lost"
                assert await a.recover("conformance-live", held[:2]) == 1
                back = await a.fetch([QUEUE], 3, 5.0)
                assert [number(d) for d in back] == [number(held[2])]
                await a.ack(held[:2])  # the kept leases are still valid: the acks count
                await a.ack(back)
                assert await a.recover("conformance-live") == 0  # nothing left leased
                assert await a.fetch([QUEUE], 3, 0.0) == []

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

    def test_garbage_bytes_yield_delivery_with_error(self, broker_factory: BrokerFactory) -> None:
        if not self.supports_publish_raw:
            pytest.skip("broker has no publish_raw helper")
        garbage = b"\xff\x00 this is not an envelope"

        async def main() -> None:
            async with opened(broker_factory()) as broker:
                pending = broker.publish_raw(QUEUE, garbage)  # type: ignore[attr-defined]
                if inspect.isawaitable(pending):
                    await pending
                (got,) = await broker.fetch([QUEUE], 1, 5.0)
                assert got.message is None and got.error
                assert got.raw == garbage and got.queue == QUEUE
                await broker.dead_letter(got, got.error)
                assert isinstance(broker, DeadLetterStore)
                assert (await broker.dead_letters())[0].raw == garbage

        run(main())


__all__ = ["BrokerConformance"]
