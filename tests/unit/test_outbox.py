"""The outbox between pool threads and the consumer's loop: outcomes come in batches
while the pool has queued jobs, at once when it has none (a wake-up of the loop is a
hand-off of the GIL between threads: fewer of them is what makes I/O tasks fast)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from celeriac._outcome import Action, Outcome
from celeriac.transports.broker import Delivery
from celeriac.worker.pools import Outbox


def outcome(n: int) -> Outcome:
    return Outcome(Delivery("q", str(n), b"", None), Action.ACK)


def batches(queued: Callable[[], bool] | None, count: int, batch: int, hold: float) -> list[int]:
    """Put ``count`` outcomes from another thread, then flush (as the consumer does when
    it takes jobs back); the sizes of the batches the loop got, in order."""

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        sizes: list[int] = []
        everything = asyncio.Event()

        def deliver(items: list[Outcome]) -> None:
            sizes.append(len(items))
            if sum(sizes) == count:
                everything.set()

        box = Outbox(loop, deliver, queued, hold=hold)
        box.batch = batch

        def put_all() -> None:
            for n in range(count):
                box.put(outcome(n))

        putter = threading.Thread(target=put_all)
        putter.start()
        await asyncio.to_thread(putter.join)
        box.flush()
        await asyncio.wait_for(everything.wait(), 10)
        return sizes

    return asyncio.run(main())


def alone(queued: Callable[[], bool], hold: float) -> list[int]:
    """One outcome put from another thread, the batch limit far: what reaches the loop
    with no flush."""

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[int] = loop.create_future()
        box = Outbox(loop, lambda items: got.set_result(len(items)), queued, hold=hold)
        box.batch = 100
        await asyncio.to_thread(box.put, outcome(1))
        return [await asyncio.wait_for(got, 10)]

    return asyncio.run(main())


def test_an_outcome_reaches_the_loop_by_itself_when_nothing_is_queued() -> None:
    assert alone(lambda: False, hold=60) == [1]


def test_a_held_outcome_waits_no_longer_than_hold() -> None:
    assert alone(lambda: True, hold=0) == [1]


def test_outcomes_are_held_in_batches_while_jobs_are_queued() -> None:
    sizes = batches(lambda: True, count=45, batch=10, hold=60)
    assert sum(sizes) == 45
    assert all(size >= 10 for size in sizes[:-1]), sizes  # each wake-up brings a batch
    assert len(sizes) <= 5


def test_a_held_outcome_is_delivered_by_flush() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        sizes: list[int] = []
        box = Outbox(loop, lambda items: sizes.append(len(items)), lambda: True, hold=60)
        box.batch = 100
        await asyncio.to_thread(box.put, outcome(1))
        await asyncio.sleep(0)
        assert sizes == []  # held: the pool said more jobs are queued
        box.flush()
        return sizes

    assert asyncio.run(main()) == [1]
