"""Conformance mixins for beat's store (:class:`ScheduleStore`): on a broker, claims
that publish in the same atomic step; on a result backend, claims alone. See
:mod:`celeriac.testing.conformance`."""

from __future__ import annotations

import asyncio
import uuid

from celeriac.testing._support import (
    QUEUE,
    BackendFactory,
    BrokerFactory,
    message,
    number,
    opened,
    run,
)
from celeriac.transports.capabilities import ScheduleStore


class _Claims:
    """The compare-and-set rules, for a store made by ``make`` (broker or backend)."""

    @staticmethod
    async def check_claims(a: ScheduleStore, b: ScheduleStore) -> None:
        name = f"conformance.beat.{uuid.uuid4().hex}"
        assert await a.schedule_runs([name]) == {}
        assert await a.schedule_claim(name, None, 1_000)
        assert not await b.schedule_claim(name, None, 1_500)  # another got there first
        assert not await b.schedule_claim(name, 1_000, 1_000)  # not later: refused
        assert not await b.schedule_claim(name, 999, 2_000)  # not what is stored
        assert await b.schedule_runs([name, "conformance.none"]) == {name: 1_000}
        assert await b.schedule_claim(name, 1_000, 2_000)
        assert await a.schedule_runs([name]) == {name: 2_000}

    @staticmethod
    async def check_race(a: ScheduleStore, b: ScheduleStore) -> int:
        """Twenty claims of one transition from two instances at once: one wins."""
        name = f"conformance.beat.{uuid.uuid4().hex}"
        assert await a.schedule_claim(name, None, 5)
        won = await asyncio.gather(
            *(s.schedule_claim(name, 5, 10) for s in (a, b) * 10), return_exceptions=False
        )
        return sum(bool(w) for w in won)

    @staticmethod
    async def check_entries(a: ScheduleStore, b: ScheduleStore) -> None:
        name = f"conformance.entry.{uuid.uuid4().hex}"
        await a.schedule_set_entry(name, b'{"task": "t"}')
        assert (await b.schedule_entries()).get(name) == b'{"task": "t"}'
        await a.schedule_set_entry(name, b'{"task": "u"}')
        assert (await b.schedule_entries())[name] == b'{"task": "u"}'
        assert await a.schedule_claim(name, None, 7)
        await b.schedule_set_entry(name, None)
        assert name not in await a.schedule_entries()
        assert await a.schedule_runs([name]) == {}  # deleting an entry forgets its runs
        await b.schedule_set_entry(name, None)  # deleting a missing entry does nothing


class ScheduleStoreConformance(_Claims):
    """:class:`ScheduleStore` on a broker: a claim publishes its message atomically."""

    def test_schedule_store_is_implemented(self, broker_factory: BrokerFactory) -> None:
        assert isinstance(broker_factory(), ScheduleStore)

    def _pair(self, broker_factory: BrokerFactory) -> tuple[ScheduleStore, ScheduleStore]:
        a, b = broker_factory(), broker_factory()
        assert isinstance(a, ScheduleStore) and isinstance(b, ScheduleStore)
        return a, b

    def test_a_claim_is_a_compare_and_set_seen_by_every_instance(
        self, broker_factory: BrokerFactory
    ) -> None:
        async def main() -> None:
            a, b = self._pair(broker_factory)
            async with opened(a), opened(b):  # type: ignore[type-var]
                await self.check_claims(a, b)

        run(main())

    def test_a_claim_publishes_its_message_and_a_lost_claim_does_not(
        self, broker_factory: BrokerFactory
    ) -> None:
        async def main() -> None:
            a, b = self._pair(broker_factory)
            async with opened(a) as broker, opened(b):  # type: ignore[type-var]
                name = f"conformance.beat.{uuid.uuid4().hex}"
                assert await a.schedule_claim(name, None, 1, (QUEUE, message(1), 0, None))
                assert not await b.schedule_claim(name, None, 1, (QUEUE, message(2), 0, None))
                got = await broker.fetch([QUEUE], 10, 5.0)  # type: ignore[attr-defined]
                assert [number(d) for d in got] == [1]
                await broker.ack(got)  # type: ignore[attr-defined]

        run(main())

    def test_racing_claims_send_one_message(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            a, b = self._pair(broker_factory)
            async with opened(a) as broker, opened(b):  # type: ignore[type-var]
                name = f"conformance.beat.{uuid.uuid4().hex}"
                assert await a.schedule_claim(name, None, 5)
                sends = [
                    s.schedule_claim(name, 5, 10, (QUEUE, message(i), 0, None))
                    for i, s in enumerate((a, b) * 10)
                ]
                assert sum(await asyncio.gather(*sends)) == 1
                got = await broker.fetch([QUEUE], 30, 5.0)  # type: ignore[attr-defined]
                assert len(got) == 1
                await broker.ack(got)  # type: ignore[attr-defined]

        run(main())

    def test_runtime_entries_are_stored_and_deleted(self, broker_factory: BrokerFactory) -> None:
        async def main() -> None:
            a, b = self._pair(broker_factory)
            async with opened(a), opened(b):  # type: ignore[type-var]
                await self.check_entries(a, b)

        run(main())


class BackendScheduleStoreConformance(_Claims):
    """:class:`ScheduleStore` on a result backend (claims without a send)."""

    def _pair(self, backend_factory: BackendFactory) -> tuple[ScheduleStore, ScheduleStore]:
        a, b = backend_factory(), backend_factory()
        assert isinstance(a, ScheduleStore) and isinstance(b, ScheduleStore)
        return a, b

    def test_backend_claims_are_a_compare_and_set(self, backend_factory: BackendFactory) -> None:
        async def main() -> None:
            a, b = self._pair(backend_factory)
            async with opened(a), opened(b):  # type: ignore[type-var]
                await self.check_claims(a, b)
                assert await self.check_race(a, b) == 1
                await self.check_entries(a, b)

        run(main())


__all__ = ["BackendScheduleStoreConformance", "ScheduleStoreConformance"]
