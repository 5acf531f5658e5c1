"""Memory-broker specifics: the ``join`` drain primitive, wake-ups across threads and
event loops, and one store per URL."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from celeriac.exceptions import TimeoutError
from celeriac.testing.conformance import message, number, opened, run
from celeriac.transports.memory.broker import MemoryBroker, clear_stores


@pytest.fixture
def url() -> Iterator[str]:
    url = f"memory://test-{uuid.uuid4().hex}"
    yield url
    clear_stores(url)


def test_join_returns_once_another_thread_drains_the_queue(url: str) -> None:
    started = threading.Event()

    async def consume() -> None:
        async with opened(MemoryBroker(url)) as broker:
            started.set()
            for _ in range(5):
                got = await broker.fetch(["q"], 1, 5.0)
                await broker.ack(got)

    async def main() -> None:
        async with opened(MemoryBroker(url)) as broker:
            await broker.publish_many([("q", message(n), 0, None) for n in range(5)])
            worker = threading.Thread(target=run, args=(consume(),))
            worker.start()
            await broker.join("q", timeout=10)
            assert await broker.size("q") == 0
            worker.join(5)
            assert started.is_set()

    run(main())


def test_join_waits_for_leased_and_delayed_messages(url: str) -> None:
    async def main() -> None:
        async with opened(MemoryBroker(url)) as broker:
            await broker.join("q", timeout=0)  # empty: returns at once
            await broker.publish("q", message(1), not_before=time.time() + 60)
            with pytest.raises(TimeoutError, match="'q'"):
                await broker.join("q", timeout=0.05)
            await broker.purge("q")
            await broker.publish("q", message(2))
            leased = await broker.fetch(["q"], 1, 1.0)
            with pytest.raises(TimeoutError):
                await broker.join("q", timeout=0.05)
            await broker.ack(leased)
            await broker.join("q", timeout=0)

    run(main())


def test_publish_from_another_thread_wakes_a_waiting_fetch(url: str) -> None:
    async def produce() -> None:
        async with opened(MemoryBroker(url)) as broker:
            await broker.publish("q", message(3))

    async def main() -> None:
        async with opened(MemoryBroker(url)) as broker:
            fetching = asyncio.create_task(broker.fetch(["q"], 1, 10.0))
            await asyncio.sleep(0)  # let the fetch start waiting
            start = time.monotonic()
            await asyncio.to_thread(run, produce())
            got = await fetching
            assert [number(d) for d in got] == [3]
            assert time.monotonic() - start < 1.0

    run(main())


def test_one_store_per_url(url: str) -> None:
    other = f"{url}-other"

    async def main() -> None:
        async with opened(MemoryBroker(url)) as a, opened(MemoryBroker(f"{url}/")) as same:
            await a.publish("q", message(1))
            assert await same.size("q") == 1
            async with opened(MemoryBroker(other)) as b:
                assert await b.size("q") == 0
        clear_stores(url)
        async with opened(MemoryBroker(url)) as again:
            assert await again.size("q") == 0

    run(main())
    clear_stores(other)
