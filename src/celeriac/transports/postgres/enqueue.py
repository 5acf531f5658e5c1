"""Transactional enqueue on a PostgreSQL broker: the message is written by the
caller's own database connection, in the caller's transaction. Rolled back, the task
never existed; committed, it is queued (and the consumers' NOTIFY is sent at that
commit, by PostgreSQL itself).

``app.transaction(conn)`` makes a block one transaction on ``conn`` (a savepoint when
``conn`` is already in one) in which every task this app sends is written through
``conn``; ``apply_async(..., connection=conn)`` writes one task through ``conn`` in
whatever transaction it is in. ``conn`` may be a psycopg 3 connection (sync or async),
a Django database connection (``django.db.connection`` or ``connections[alias]``), an
SQLAlchemy ``Session`` or ``Connection``, or any DB-API connection with ``%s``
parameters (psycopg2). It must reach the broker's database; the schema is created
through the broker's own connection first, if it is not there yet.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from types import TracebackType
from typing import Any

from celeriac._transactional import current as _current
from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol import Message, encode_envelope
from celeriac.transports.postgres import db as _db

_ready: set[tuple[int, str, str]] = set()  # (app id, conninfo, schema) known migrated


def _target(app: Any) -> tuple[str, str]:
    url = app.broker_url
    if _db_scheme(url) not in ("postgres", "postgresql"):
        raise ImproperlyConfigured(
            f"transactional enqueue (connection=, app.transaction) needs a postgresql:// "
            f"broker, not {url.split('://', 1)[0]}://"
        )
    conninfo, options = _db.parse_url(url, app.broker_options())
    return conninfo, str(options["schema"])


def _db_scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _statement(
    schema: str, queue: str, message: Message, priority: int, nb: float | None
) -> tuple[str, tuple[Any, ...]]:
    now = time.time()
    eta = nb if nb is not None and nb > now else None
    params = (
        _db.channel(schema, "q"),
        queue,
        max(-32768, min(32767, int(priority))),
        encode_envelope(message, queue=queue),
        eta,
        now,
    )
    return f'SELECT "{schema}".enqueue(%s, %s, %s, %s, %s, %s)', params


def _kind(conn: Any) -> str:
    module = type(conn).__module__
    if module.startswith("psycopg"):
        import psycopg  # noqa: PLC0415

        if isinstance(conn, psycopg.AsyncConnection):
            return "psycopg-async"
        if isinstance(conn, psycopg.Connection):
            return "psycopg"
    if module.startswith("sqlalchemy"):
        return "sqlalchemy"
    if module.startswith("django") or (hasattr(conn, "alias") and hasattr(conn, "vendor")):
        vendor = getattr(conn, "vendor", "")
        if vendor != "postgresql":
            raise ImproperlyConfigured(
                f"transactional enqueue needs a PostgreSQL Django database, not {vendor!r}"
            )
        return "dbapi"
    if hasattr(conn, "cursor"):
        return "dbapi"
    raise TypeError(
        f"connection= takes a psycopg, Django, SQLAlchemy or DB-API connection, "
        f"not {type(conn).__name__}"
    )


def _execute_sync(conn: Any, query: str, params: tuple[Any, ...]) -> None:
    kind = _kind(conn)
    if kind == "psycopg-async":
        raise TypeError("an async psycopg connection: send with apply_async in aapply_async")
    if kind == "psycopg":
        conn.execute(query, params)
    elif kind == "sqlalchemy":
        from sqlalchemy import text  # noqa: PLC0415

        names = [f"p{i}" for i in range(len(params))]
        named = query.replace("%s", "{}").format(*(f":{n}" for n in names))
        conn.execute(text(named), dict(zip(names, params, strict=True)))
    else:
        with contextlib.closing(conn.cursor()) as cur:
            cur.execute(query, params)


def publish_sync(
    app: Any, conn: Any, queue: str, message: Message, priority: int, not_before: float | None
) -> None:
    conninfo, schema = _target(app)
    key = (id(app), conninfo, schema)
    if key not in _ready:
        from celeriac._loop import run_sync  # noqa: PLC0415

        run_sync(app.get_broker())  # its first connection creates the schema
        _ready.add(key)
    _execute_sync(conn, *_statement(schema, queue, message, priority, not_before))


async def publish_async(
    app: Any, conn: Any, queue: str, message: Message, priority: int, not_before: float | None
) -> None:
    conninfo, schema = _target(app)
    key = (id(app), conninfo, schema)
    if key not in _ready:
        await app.get_broker()
        _ready.add(key)
    query, params = _statement(schema, queue, message, priority, not_before)
    if _kind(conn) == "psycopg-async":
        await conn.execute(query, params)
    else:
        _execute_sync(conn, query, params)


class Transaction:
    """``app.transaction(conn)``: ``with`` (sync connections) or ``async with`` (an
    async psycopg connection)."""

    def __init__(self, app: Any, conn: Any) -> None:
        self.app, self.conn = app, conn
        self._block: Any = None
        self._token: contextvars.Token[tuple[Any, Any] | None] | None = None

    def _transaction_block(self) -> Any:
        kind = _kind(self.conn)
        if kind in ("psycopg", "psycopg-async"):
            return self.conn.transaction()
        if kind == "sqlalchemy":
            in_tx = self.conn.in_transaction()
            return self.conn.begin_nested() if in_tx else self.conn.begin()
        if hasattr(self.conn, "alias") and hasattr(self.conn, "vendor"):
            from django.db import transaction  # noqa: PLC0415

            return transaction.atomic(using=self.conn.alias)
        raise TypeError(
            f"app.transaction() cannot begin a transaction on {type(self.conn).__name__}; "
            f"pass it as apply_async(connection=...) inside your own transaction"
        )

    def __enter__(self) -> Any:
        if _kind(self.conn) == "psycopg-async":
            raise TypeError("an async psycopg connection: use 'async with app.transaction(conn)'")
        self._block = self._transaction_block()
        self._block.__enter__()
        self._token = _current.set((self.app, self.conn))
        return self.conn

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        if self._token is not None:
            _current.reset(self._token)
        return bool(self._block.__exit__(et, exc, tb))

    async def __aenter__(self) -> Any:
        self._block = self._transaction_block()
        await self._block.__aenter__()
        self._token = _current.set((self.app, self.conn))
        return self.conn

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        if self._token is not None:
            _current.reset(self._token)
        return bool(await self._block.__aexit__(et, exc, tb))


__all__ = ["Transaction", "publish_async", "publish_sync"]
