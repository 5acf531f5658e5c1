"""Beat's store on SQLite (:class:`~celeriac.transports.capabilities.ScheduleStore`),
shared by the broker (a claim and its message in one transaction) and the result
backend (claims alone, for a broker that cannot hold them). SQL: ``sql/beat_queries.sql``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from celeriac.transports.sqlite import db as _sql

_Q = _sql.load_queries("beat_queries.sql")


def runs(conn: sqlite3.Connection, names: Sequence[str]) -> dict[str, int]:
    if not names:
        return {}
    rows = conn.execute(_Q["runs"], {"names": json.dumps(list(names))}).fetchall()
    return {str(name): int(last) for name, last in rows}


def claim(
    conn: sqlite3.Connection,
    error: type[Exception],
    name: str,
    last: int | None,
    slot: int,
    publish: Callable[[sqlite3.Connection], Any] | None = None,
) -> bool:
    """Compare-and-set the last run of ``name``, and ``publish`` in the same transaction."""
    with _sql.Transaction(conn, error):
        row = conn.execute(_Q["run_of"], {"name": name}).fetchone()
        current = None if row is None else int(row[0])
        if current != last or (current is not None and slot <= current):
            return False
        conn.execute(_Q["set_run"], {"name": name, "slot": slot})
        if publish is not None:
            publish(conn)
    return True


def entries(conn: sqlite3.Connection) -> dict[str, bytes]:
    return {str(name): bytes(data) for name, data in conn.execute(_Q["entries"]).fetchall()}


def set_entry(
    conn: sqlite3.Connection, error: type[Exception], name: str, data: bytes | None
) -> None:
    with _sql.Transaction(conn, error):
        if data is None:
            conn.execute(_Q["forget_entry"], {"name": name})
            conn.execute(_Q["forget_run"], {"name": name})
        else:
            conn.execute(_Q["set_entry"], {"name": name, "data": data})


__all__ = ["claim", "entries", "runs", "set_entry"]
