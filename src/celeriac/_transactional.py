"""Which connection a send goes through when it is transactional (``connection=`` or
``app.transaction(conn)``); the PostgreSQL part is
:mod:`celeriac.transports.postgres.enqueue`, imported only when one is used."""

from __future__ import annotations

import contextvars
from typing import Any

#: (app, connection) of the innermost ``app.transaction(...)`` block
current: contextvars.ContextVar[tuple[Any, Any] | None] = contextvars.ContextVar(
    "celeriac_transaction", default=None
)


def connection_of(app: Any, options: dict[str, Any]) -> Any:
    """The connection a send of ``app`` goes through: ``connection=`` (taken out of
    ``options``) or the innermost ``app.transaction(...)`` of this app; None if none."""
    conn = options.pop("connection", None)
    if conn is not None:
        return conn
    found = current.get()
    if found is not None and found[0] is app:
        return found[1]
    return None


def publish(app: Any, conn: Any, *args: Any) -> None:
    from celeriac.transports.postgres import enqueue  # noqa: PLC0415

    enqueue.publish_sync(app, conn, *args)


async def apublish(app: Any, conn: Any, *args: Any) -> None:
    from celeriac.transports.postgres import enqueue  # noqa: PLC0415

    await enqueue.publish_async(app, conn, *args)


def transaction(app: Any, conn: Any) -> Any:
    from celeriac.transports.postgres import enqueue  # noqa: PLC0415

    return enqueue.Transaction(app, conn)


__all__ = ["apublish", "connection_of", "current", "publish", "transaction"]
