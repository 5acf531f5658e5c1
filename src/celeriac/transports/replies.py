"""What the ``rpc://`` result backends share when replies travel on the broker's own store
(Redis lists, a SQLite table, the memory broker's process store); AMQP's reply queues are
in :mod:`celeriac.transports.amqp.rpc`.

As Celery's ``rpc://``: a worker sends each result to the reply queue named by its task
message's ``reply_to`` (the sending client's ``app.reply_to``, which a frozen signature
carries too, so a chain step a worker sends still answers the client), and only that
client reads the queue. The client keeps what arrives in memory by task id (the newest
``max_results``); a state never seen is PENDING. Replies come in the order they were sent.

Receiving happens only while someone asks, one pull at a time (so replies are taken in
the order sent): ``wait`` starts a pull, shared by every wait of the instance, that takes
what is queued or blocks up to ``block_seconds`` for the first reply; a wait that gives up
(timeout, cancel) leaves the pull to finish, so a reply taken from the queue is never
dropped. ``get`` (a state) pulls without blocking, unless a blocking pull is in flight
(the queue was empty when it started, and it takes what comes).

A transport implements :meth:`ReplyBackend._push` and :meth:`ReplyBackend._pull`.
Options (``result_backend_transport_options``): ``max_results`` (100000),
``reply_queue_expires`` (seconds a reply waits for its client, default a day).
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

from celeriac import states
from celeriac.exceptions import MessageError
from celeriac.protocol import deserialize
from celeriac.transports.backend import ResultBackend

logger = logging.getLogger("celeriac.transports.rpc")

Reply = tuple[str, str, dict[str, Any]]  # (reply_to, task_id, meta)


class ReplyBackend(ResultBackend):
    """Results by reply queue on the broker's store; see the module docstring."""

    schemes: ClassVar[tuple[str, ...]] = ("rpc",)
    needs_reply_to: ClassVar[bool] = True
    #: the longest one pull blocks (s): a close never waits longer for it
    block_seconds: ClassVar[float] = 1.0

    def __init__(self, url: str = "rpc://", *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        opts = self.options
        self.reply_to: str | None = opts.get("reply_to") or None
        self.reply_expires = float(opts.get("reply_queue_expires", 86400))
        self._max = int(opts.get("max_results", 100_000))
        self._accept = frozenset(opts.get("accept_content") or ["json", "msgpack"])
        self._results: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # the one pull at a time (so replies are taken in order), and whether it blocks
        self._reading: asyncio.Task[None] | None = None
        self._reading_blocks = False

    # -- what a transport implements -----------------------------------------------
    @abc.abstractmethod
    async def _push(self, replies: Sequence[Reply]) -> None:
        """Put each meta on its ``reply_to`` queue (raise BackendError on failure)."""

    @abc.abstractmethod
    async def _pull(self, queue: str, block: float) -> list[dict[str, Any]]:
        """Take every reply waiting in ``queue``, oldest first, waiting up to ``block``
        seconds for one when there is none; the metas (see :meth:`_decode`)."""

    async def _close(self) -> None:
        """Close the transport's connections."""

    # -- decoding ------------------------------------------------------------------
    def _decode(
        self, body: bytes, content_type: str, correlation_id: str | None = None
    ) -> dict[str, Any] | None:
        """A reply's meta, or None (logged) when it cannot be read or is not a result."""
        try:
            meta = deserialize(body, content_type or "application/json", self._accept)
        except MessageError as exc:
            logger.warning("Dropping a reply that cannot be read: %s", exc.reason)
            return None
        if not isinstance(meta, dict) or not (meta.get("task_id") or correlation_id):
            logger.warning("Dropping a reply that is not a result: %r", body[:200])
            return None
        if not meta.get("task_id"):
            meta["task_id"] = correlation_id
        return meta

    # -- the contract ----------------------------------------------------------------
    async def connect(self) -> None:
        """Nothing to declare: a reply queue exists once something is put in it."""

    async def close(self) -> None:
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()
        self._reading = None
        await self._close()

    async def store_replies(self, items: Sequence[tuple[str | None, str, dict[str, Any]]]) -> None:
        replies = [(r, t, m) for r, t, m in items if r]
        if len(replies) < len(items):
            logger.debug("%d result(s) had no reply_to; not sent", len(items) - len(replies))
        if replies:
            await self._push(replies)

    async def store(self, task_id: str, meta: dict[str, Any], ttl: float | None) -> None:
        """Without a task's ``reply_to``, a result can only go to this app's own queue."""
        if self.reply_to:
            self._remember(task_id, meta)
            await self._push([(self.reply_to, task_id, meta)])

    async def get(self, task_id: str) -> dict[str, Any] | None:
        if self.reply_to:
            pull = self._reading
            if pull is None or pull.done():
                pull = self._start(0.0)
            # a blocking pull in flight found the queue empty and takes what comes
            if not self._reading_blocks:
                await asyncio.shield(pull)
        return self._results.get(task_id)

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if task_ids:
            await self.get(task_ids[0])
        return {t: self._results[t] for t in task_ids if t in self._results}

    async def wait(
        self, task_ids: Sequence[str], timeout: float | None, interval: float = 0.005
    ) -> dict[str, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            ready = {
                t: meta
                for t in task_ids
                if (meta := self._results.get(t)) and meta.get("status") in states.READY_STATES
            }
            left = None if deadline is None else deadline - loop.time()
            if ready or (left is not None and left <= 0) or not self.reply_to:
                return ready
            pull = self._reading
            if pull is None or pull.done():
                block = self.block_seconds if left is None else min(left, self.block_seconds)
                pull = self._start(block)
            await asyncio.wait({pull}, timeout=left)  # on timeout or cancel, it carries on
            error = pull.exception() if pull.done() and not pull.cancelled() else None
            if error is not None:
                raise error

    async def forget(self, task_id: str) -> None:
        self._results.pop(task_id, None)

    # -- receiving -------------------------------------------------------------------
    def _start(self, block: float) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._receive(block))
        task.add_done_callback(_retrieve)
        self._reading, self._reading_blocks = task, block > 0
        return task

    async def _receive(self, block: float) -> None:
        assert self.reply_to
        for meta in await self._pull(self.reply_to, block):
            self._remember(str(meta["task_id"]), meta)

    def _remember(self, task_id: str, meta: dict[str, Any]) -> None:
        known = self._results.get(task_id) or {}
        if known.get("status") in states.READY_STATES and meta.get("status") not in (
            states.READY_STATES
        ):
            return  # a late progress report never hides the final state
        self._results[task_id] = meta
        self._results.move_to_end(task_id)
        while len(self._results) > self._max:
            self._results.popitem(last=False)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a pull's error as seen (its waiters raise it; nobody may be left to)."""
    if not task.cancelled() and task.exception() is not None:
        logger.debug("rpc reply pull failed: %s", task.exception())


__all__ = ["Reply", "ReplyBackend"]
