"""The memory broker's pub/sub (remote control and events): listeners of one URL, in
this process, on whatever event loop they run; a publication is handed to each matching
listener's loop (``call_soon_threadsafe``), none is kept."""

from __future__ import annotations

import asyncio
import fnmatch
import threading
from collections.abc import Callable, Sequence

from celeriac.transports.fanout import Fanout, Listener

_Sub = tuple[tuple[str, ...], asyncio.AbstractEventLoop, "asyncio.Queue[tuple[str, bytes]]"]
_HUBS: dict[str, list[_Sub]] = {}
_LOCK = threading.Lock()


class MemoryFanout(Fanout):
    url: str

    def _hub_key(self) -> str:
        return self.url.partition("?")[0].rstrip("/")

    async def fan_publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        with _LOCK:
            subs = list(_HUBS.get(self._hub_key(), ()))
        for globs, loop, queue in subs:
            for channel, raw in items:
                if any(fnmatch.fnmatchcase(channel, g) for g in globs):
                    try:
                        loop.call_soon_threadsafe(queue.put_nowait, (channel, raw))
                    except RuntimeError:  # its loop is closed: it has gone
                        break

    async def fan_listen(
        self, globs: Sequence[str], handler: Listener, listening: Callable[[], None] | None
    ) -> None:
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        sub: _Sub = (tuple(globs), asyncio.get_running_loop(), queue)
        key = self._hub_key()
        with _LOCK:
            _HUBS.setdefault(key, []).append(sub)
        try:
            if listening is not None:
                listening()
            while True:
                channel, raw = await queue.get()
                await handler(channel, raw)
        finally:
            with _LOCK:
                subs = _HUBS.get(key, [])
                if sub in subs:
                    subs.remove(sub)


__all__ = ["MemoryFanout"]
