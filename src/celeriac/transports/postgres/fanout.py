"""Remote control and events on PostgreSQL: each publication is a NOTIFY on the
schema's fanout channel, delivered to the sessions that LISTEN at its commit (a
pub/sub, as on Redis: nothing is kept for later listeners). The payload is
``<channel>\\n<envelope>``; an envelope too large for NOTIFY (8000 bytes) is kept in the
``fanout`` table for a minute and the payload names its row (``<channel>\\n@<id>``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Callable, Sequence

from celeriac.transports.fanout import Fanout, Listener
from celeriac.transports.postgres.db import Connection
from celeriac.transports.postgres.listen import Listener as PgListener

#: the largest envelope sent in the notification itself
INLINE = 7000
#: large publications are kept this long (seconds)
KEEP = 60.0


class PostgresFanout(Fanout):
    _db: Connection
    _listener: PgListener
    _fan_channel: str
    _trimmed = 0.0

    def _fq(self) -> dict[str, str]:
        raise NotImplementedError

    async def fan_publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        if not items:
            return
        q, now = self._fq(), time.time()
        payloads = []
        async with self._db.use() as conn:
            for channel, raw in items:
                text = _inline(raw)
                if text is None:
                    cur = await conn.execute(q["fan_store"], (raw, now))
                    row = await cur.fetchone()
                    assert row is not None
                    text = f"@{row[0]}"
                payloads.append(f"{channel}\n{text}")
            await conn.execute(q["fan_notify"], (self._fan_channel, payloads))
            if now - self._trimmed > 10.0:
                self._trimmed = now
                await conn.execute(q["fan_trim"], (now - KEEP,))

    async def fan_listen(
        self, globs: Sequence[str], handler: Listener, listening: Callable[[], None] | None
    ) -> None:
        inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

        def on_note(payload: str | None) -> None:
            if payload is None:
                return  # a reconnect: publications meanwhile are gone, as on any pub/sub
            channel, _, body = payload.partition("\n")
            if any(fnmatch.fnmatchcase(channel, g) for g in globs):
                inbox.put_nowait((channel, body))

        await self._listener.subscribe(self._fan_channel, on_note)
        try:
            if listening is not None:
                listening()
            while True:
                channel, body = await inbox.get()
                if body.startswith("@"):
                    rows = await self._db.fetchall(self._fq()["fan_get"], (int(body[1:]),))
                    if not rows:
                        continue
                    raw = bytes(rows[0][0])
                else:
                    raw = body.encode("utf-8")
                await handler(channel, raw)
        finally:
            await self._listener.unsubscribe(self._fan_channel, on_note)


def _inline(raw: bytes) -> str | None:
    """``raw`` as NOTIFY text, or None when it must go through the table."""
    if len(raw) > INLINE or b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


__all__ = ["PostgresFanout"]
