"""Beat's store on Redis (:class:`~celeriac.transports.capabilities.ScheduleStore`),
shared by the broker (claims that publish, in ``lua/schedule_claim.lua``) and the result
backend (claims alone, for a RabbitMQ broker).

Keys (``P`` = the global key prefix): ``Pceleriac.beat.runs``, a hash entry name -> last
run (whole milliseconds since the epoch); ``Pceleriac.beat.entries``, a hash entry name
-> the entry's JSON, for entries added at runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celeriac.transports.redis.resp_async import AsyncConnection
from celeriac.transports.redis.scripts import run_fast


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def runs(conn: AsyncConnection, prefix: str, names: Sequence[str]) -> dict[str, int]:
    if not names:
        return {}
    values = await conn.execute("HMGET", f"{prefix}celeriac.beat.runs", *names)
    return {n: int(_text(v)) for n, v in zip(names, values, strict=True) if v is not None}


async def claim(
    conn: AsyncConnection, prefix: str, name: str, last: int | None, slot: int, group: list[Any]
) -> bool:
    expected = "" if last is None else str(last)
    return bool(await run_fast(conn, "schedule_claim", prefix, name, expected, str(slot), *group))


async def entries(conn: AsyncConnection, prefix: str) -> dict[str, bytes]:
    reply = await conn.execute("HGETALL", f"{prefix}celeriac.beat.entries")
    if isinstance(reply, dict):  # RESP3: a map
        return {_text(k): bytes(v) for k, v in reply.items()}
    items = list(reply or [])
    return {_text(items[i]): bytes(items[i + 1]) for i in range(0, len(items), 2)}


async def set_entry(conn: AsyncConnection, prefix: str, name: str, data: bytes | None) -> None:
    if data is None:
        await conn.pipeline(
            [
                ("HDEL", f"{prefix}celeriac.beat.entries", name),
                ("HDEL", f"{prefix}celeriac.beat.runs", name),
            ]
        )
    else:
        await conn.execute("HSET", f"{prefix}celeriac.beat.entries", name, data)


__all__ = ["claim", "entries", "runs", "set_entry"]
