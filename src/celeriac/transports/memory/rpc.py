"""``rpc://`` results over a memory broker: replies wait in the broker's process-global
store (one queue per client's ``reply_to``, as JSON text, so they go through
serialisation), kept until their client takes them or the store is cleared
(``clear_stores``). A waiting client is woken by the push, never polls. The shared part
is :mod:`celeriac.transports.replies`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from celeriac.protocol import json_dumps
from celeriac.transports.memory.broker import _Store, _store_for, _wake
from celeriac.transports.replies import Reply, ReplyBackend


class MemoryRPCBackend(ReplyBackend):
    """Replies in the memory broker's store; see the module docstring."""

    def __init__(self, url: str = "rpc://", *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self._broker_url = str(self.options.get("broker_url") or "memory://")

    def _store(self) -> _Store:
        return _store_for(self._broker_url)  # cleared stores come back empty

    async def _push(self, replies: Sequence[Reply]) -> None:
        store = self._store()
        with store.lock:
            for reply_to, _, meta in replies:
                store.replies.setdefault(reply_to, deque()).append(json_dumps(meta))
            waiters, store.reply_waiters = store.reply_waiters, set()
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_wake, fut)

    async def _pull(self, queue: str, block: float) -> list[dict[str, Any]]:
        store = self._store()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            expired = loop.time() >= deadline
            with store.lock:
                texts = store.replies.pop(queue, None)
                if not texts and not expired:
                    store.reply_waiters.add((loop, fut))
            if texts or expired:
                metas = [self._decode(t.encode("utf-8"), "application/json") for t in texts or ()]
                return [m for m in metas if m is not None]
            handle = loop.call_later(max(deadline - loop.time(), 0.0), _wake, fut)
            try:
                await fut
            finally:
                handle.cancel()
                with store.lock:
                    store.reply_waiters.discard((loop, fut))


__all__ = ["MemoryRPCBackend"]
