"""Beat's store on PostgreSQL (:class:`~celeriac.transports.capabilities.ScheduleStore`),
shared by the broker (a claim and its message in one transaction) and the result
backend (claims alone). A claim is one compare-and-set statement (an insert that does
nothing on conflict, or an update guarded by the stored value), so any number of beats
claim each slot once. SQL: ``sql/beat_queries.sql``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg

from celeriac.transports.postgres.db import Connection, load_queries

Publish = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]


def _q(db: Connection) -> dict[str, str]:
    return load_queries("beat_queries.sql", db.schema)


async def runs(db: Connection, names: Sequence[str]) -> dict[str, int]:
    if not names:
        return {}
    rows = await db.fetchall(_q(db)["runs"], (list(names),))
    return {str(name): int(last) for name, last in rows}


async def claim(
    db: Connection, name: str, last: int | None, slot: int, publish: Publish | None = None
) -> bool:
    q = _q(db)
    async with db.use() as conn, conn.transaction():
        if last is None:
            cur = await conn.execute(q["claim_first"], (name, slot))
        else:
            cur = await conn.execute(q["claim_next"], (slot, name, last, slot))
        if cur.rowcount != 1:
            return False
        if publish is not None:
            await publish(conn)
    return True


async def entries(db: Connection) -> dict[str, bytes]:
    return {str(n): bytes(d) for n, d in await db.fetchall(_q(db)["entries"])}


async def set_entry(db: Connection, name: str, data: bytes | None) -> None:
    q = _q(db)
    async with db.use() as conn, conn.transaction():
        if data is None:
            await conn.execute(q["forget_entry"], (name,))
            await conn.execute(q["forget_run"], (name,))
        else:
            await conn.execute(q["set_entry"], (name, data))


__all__ = ["claim", "entries", "runs", "set_entry"]
