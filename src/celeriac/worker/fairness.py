"""Fair dispatch between prefork children: a message waits in one child's prefetch only
while no other child of the worker is free.

Each prefork child is a whole consumer that prefetches a few messages (its share of
``worker_prefetch_multiplier``), which is what lets short tasks come in batches. A burst
of long tasks would then queue up in the first child to fetch while its siblings idle.
So the children share a :class:`SlotBoard`, one byte each in memory shared with the
supervisor, set while the child holds nothing (it is then waiting in a fetch). A child
whose running task has run for ``BALANCE_AFTER`` seconds gives its unstarted messages
back to the broker, as many as there are free siblings, which fetch them at once (a
returned message wakes a waiting fetch on every broker), and fetches nothing itself for
``HOLD_OFF`` seconds. Should its own fetch, already waiting, take one back, it gives it
back again at the next look. Tasks shorter than ``BALANCE_AFTER`` never trigger any of
this, so their batching is untouched.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import time
from typing import TYPE_CHECKING

from celeriac.exceptions import BrokerError

if TYPE_CHECKING:
    from celeriac.worker.consumer import Consumer
    from celeriac.worker.core import Job

logger = logging.getLogger("celeriac.worker")

#: how long a task must have run before the messages waiting behind it move
BALANCE_AFTER = 0.05
#: how often a child with a running task and waiting messages looks at the board
BALANCE_INTERVAL = 0.025
#: how long a child that handed messages back leaves them to its siblings (it fetches
#: nothing meanwhile: a fetch of its own could take them back before a sibling's does)
HOLD_OFF = 0.1
_FREE = 1


class SlotBoard:
    """One byte per child index, shared across ``fork`` (anonymous shared memory)."""

    SIZE = 4096

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, self.SIZE)

    def mark(self, index: int, free: bool) -> None:
        if 0 <= index < self.SIZE:
            self._map[index] = _FREE if free else 0

    def free_besides(self, index: int) -> int:
        """How many children other than ``index`` are free now."""
        count = self._map[:].count(_FREE)
        if 0 <= index < self.SIZE and self._map[index] == _FREE:
            count -= 1
        return count

    def close(self) -> None:
        self._map.close()


class Balancer:
    """A prefork child's side of fair dispatch: it keeps the child's byte of the board,
    and hands unstarted messages back while a long task runs and a sibling is free."""

    def __init__(self, consumer: Consumer, board: SlotBoard, slot: int) -> None:
        self.consumer = consumer
        self.board = board
        self.slot = slot
        self.returned = 0
        self._given_at = -HOLD_OFF

    def hold_off(self) -> float:
        """Seconds to wait before fetching again (0: fetch now)."""
        return max(0.0, self._given_at + HOLD_OFF - time.monotonic())

    def mark(self, free: bool) -> None:
        self.board.mark(self.slot, free)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(BALANCE_INTERVAL)
            give = self._take_back()
            if give:
                await self._give_back(give)

    def _take_back(self) -> list[Job]:
        """The unstarted jobs to hand back now (none unless a task of ours has run for
        ``BALANCE_AFTER`` and some sibling is free): at most one per free sibling, the
        oldest first; the others stay queued here in their order."""
        consumer = self.consumer
        if consumer.stopping or len(consumer.held) <= consumer.pool.concurrency:
            return []
        now = time.monotonic()
        if not any(
            job is not None and job.running and now - job.started_at >= BALANCE_AFTER
            for job in consumer.held.values()
        ):
            return []
        free = self.board.free_besides(self.slot)
        if not free:
            return []
        waiting = consumer.pool.reclaim()
        if consumer.pool.outbox is not None:
            consumer.pool.outbox.flush()  # held while these were queued
        give: list[Job] = []
        for job in waiting:
            # a job acked before running (acks_late=False) cannot go back
            if len(give) < free and not job.delivery.extra.get("acked"):
                give.append(job)
            else:
                consumer.pool.submit(job)
        return give

    async def _give_back(self, jobs: list[Job]) -> None:
        consumer, broker = self.consumer, self.consumer.broker
        assert broker is not None
        self._given_at = time.monotonic()
        for job in jobs:
            consumer.held.pop(job.delivery, None)
        try:
            await broker.requeue([job.delivery for job in jobs])
        except (OSError, BrokerError) as exc:
            logger.warning("Could not hand %d waiting message(s) back: %s", len(jobs), exc)
            for job in jobs:  # they run here after all
                consumer.held[job.delivery] = job
                consumer.pool.submit(job)
            return
        consumer.unsubmit(len(jobs))
        self.returned += len(jobs)
        logger.debug("Handed %d waiting message(s) back for a free process", len(jobs))


__all__ = ["BALANCE_AFTER", "BALANCE_INTERVAL", "Balancer", "SlotBoard"]
