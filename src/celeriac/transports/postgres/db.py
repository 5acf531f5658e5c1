"""PostgreSQL plumbing shared by the broker and the result backend.

URLs: ``postgresql://user:password@host:port/database?schema=name`` (``postgres://`` too).
``schema`` (default ``celeriac``) is celeriac's, taken out of the URL; every other query
parameter goes to libpq as it is (``sslmode``, ``connect_timeout``, ...). The schema
name may also come from ``broker_transport_options`` /
``result_backend_transport_options`` (``{"schema": "jobs"}``), which win over the URL.

The schema is created on first use (or by ``celeriac -A app migrate``) from the
``sql/migrations/NNNN_name.sql`` files, applied in order in one transaction under an
advisory lock, and recorded in ``<schema>.schema_version``. :class:`Connection` is one
psycopg ``AsyncConnection`` in autocommit mode, used by one coroutine at a time.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from celeriac.exceptions import ImproperlyConfigured

logger = logging.getLogger("celeriac.transports.postgres")

DEFAULT_SCHEMA = "celeriac"
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_NAME_RE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
#: the URL parameters that are celeriac's, not libpq's
CELERIAC_PARAMS = ("schema", "visibility_timeout", "synchronous_commit", "cleanup_interval")


def parse_url(url: str, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``(libpq conninfo URL, options)``: the URL without celeriac's parameters, and
    those parameters under ``options`` (which win)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured(f"{url!r} is not a postgresql:// URL")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in CELERIAC_PARAMS}
    rest = [(k, v) for k, v in query if k not in CELERIAC_PARAMS]
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    merged: dict[str, Any] = {**ours, **(options or {})}
    schema = str(merged.get("schema") or DEFAULT_SCHEMA)
    if not _SCHEMA_RE.match(schema):
        raise ImproperlyConfigured(
            f"PostgreSQL schema {schema!r}: use letters, digits and underscores (at most 63)"
        )
    merged["schema"] = schema
    return conninfo, merged


def channel(schema: str, kind: str) -> str:
    """The NOTIFY channel of ``kind`` (``q``: queues, ``r``: results, ``f``: fanout)."""
    name = f"celeriac.{schema}.{kind}"
    if len(name) > 63:
        name = "celeriac." + hashlib.sha1(name.encode()).hexdigest()[:40] + "." + kind
    return name


# --------------------------------------------------------------------------- queries


@functools.cache
def _text(filename: str) -> str:
    return resources.files(__package__).joinpath("sql").joinpath(filename).read_text("utf-8")


@functools.cache
def load_queries(filename: str, schema: str) -> dict[str, str]:
    """The ``-- name: foo`` queries of ``sql/filename`` with ``{schema}`` filled in."""
    quoted = f'"{schema}"'
    parts = _NAME_RE.split(_text(filename))
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";").replace("{schema}", quoted)
    return queries


# --------------------------------------------------------------------------- migrations


@functools.cache
def migrations() -> tuple[tuple[int, str], ...]:
    """``(version, sql)`` for every ``migrations/NNNN_*.sql`` file, in order."""
    folder = resources.files(__package__).joinpath("sql").joinpath("migrations")
    steps = []
    for item in folder.iterdir():
        match = re.match(r"^(\d+)_\w+\.sql$", item.name)
        if match:
            steps.append((int(match.group(1)), item.read_text(encoding="utf-8")))
    return tuple(sorted(steps))


def latest_version() -> int:
    return max((v for v, _ in migrations()), default=0)


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha1(f"celeriac:{schema}".encode()).digest()[:8], "big") >> 1


async def schema_version(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    """The version recorded in ``schema`` (0 when it has none yet)."""
    cur = await conn.execute("SELECT to_regclass(%s)", (f'"{schema}".schema_version',))
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return 0
    cur = await conn.execute(
        sql.SQL("SELECT max(version) FROM {}.schema_version").format(sql.Identifier(schema))
    )
    row = await cur.fetchone()
    return int(row[0] or 0) if row else 0


async def migrate(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    """Bring ``schema`` up to date; returns how many migrations were applied (a schema
    already current costs one read)."""
    target = latest_version()
    if await schema_version(conn, schema) >= target:
        return 0
    ident = sql.Identifier(schema)
    applied = 0
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_version "
                "(version integer NOT NULL, applied timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )
        current = await schema_version(conn, schema)  # another process may have done it
        for version, script in migrations():
            if version <= current:
                continue
            await conn.execute(script.replace("{schema}", f'"{schema}"').encode())
            await conn.execute(
                sql.SQL("INSERT INTO {}.schema_version (version) VALUES (%s)").format(ident),
                (version,),
            )
            applied += 1
    if applied:
        logger.info("PostgreSQL schema %r migrated to version %d", schema, target)
    return applied


async def connect(conninfo: str, error: type[Exception]) -> psycopg.AsyncConnection[Any]:
    try:
        return await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    except psycopg.Error as exc:
        raise error(f"PostgreSQL at {_safe(conninfo)}: {exc}".strip()) from exc


def _safe(conninfo: str) -> str:
    """The conninfo URL without its password, for messages."""
    parts = urlsplit(conninfo)
    netloc = parts.netloc
    if "@" in netloc:
        cred, host = netloc.rsplit("@", 1)
        netloc = f"{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else f"{cred}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Connection:
    """One autocommit connection, opened lazily (schema migrated on first open), used
    by one coroutine at a time (``async with db.use() as conn``). A psycopg error
    becomes ``error`` and drops the connection: the next use opens a new one."""

    def __init__(self, conninfo: str, schema: str, error: type[Exception]) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.error = error
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        conn = self.conn
        if conn is None or conn.closed:
            conn = await connect(self.conninfo, self.error)
            try:
                await migrate(conn, self.schema)
            except BaseException:
                await conn.close()
                raise
            self.conn = conn
        return conn

    async def open(self) -> None:
        async with self.use():
            pass

    @asynccontextmanager
    async def use(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._lock:
            try:
                yield await self._open()
            except psycopg.Error as exc:
                conn, self.conn = self.conn, None
                if conn is not None:
                    await _close_quietly(conn)
                raise self.error(f"PostgreSQL: {exc}") from exc
            except BaseException:  # cancelled mid-query: the session's state is unknown
                conn = self.conn
                idle = psycopg.pq.TransactionStatus.IDLE
                if conn is not None and conn.info.transaction_status != idle:
                    self.conn = None
                    await _close_quietly(conn)
                raise

    async def fetchall(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        async with self.use() as conn:
            cur = await conn.execute(query.encode(), params, prepare=True)
            return await cur.fetchall() if cur.description else []

    async def execute(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        async with self.use() as conn:
            cur = await conn.execute(query.encode(), params, prepare=True)
            return cur.rowcount

    async def close(self) -> None:
        async with self._lock:
            conn, self.conn = self.conn, None
            if conn is not None:
                await _close_quietly(conn)


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await conn.close()
    except Exception as exc:  # closing a broken connection
        logger.debug("Closing a PostgreSQL connection: %s", exc)


__all__ = [
    "DEFAULT_SCHEMA",
    "Connection",
    "channel",
    "connect",
    "latest_version",
    "load_queries",
    "migrate",
    "migrations",
    "parse_url",
    "schema_version",
]


async def migrate_url(url: str, options: dict[str, Any] | None = None) -> tuple[str, int, int]:
    """``celeriac migrate``: bring the schema of ``url`` up to date through a
    connection of its own; ``(schema, migrations applied, version now)``."""
    from celeriac.exceptions import BrokerError  # noqa: PLC0415

    conninfo, merged = parse_url(url, options)
    schema = str(merged["schema"])
    conn = await connect(conninfo, BrokerError)
    try:
        applied = await migrate(conn, schema)
        return schema, applied, await schema_version(conn, schema)
    except psycopg.Error as exc:
        raise BrokerError(f"PostgreSQL: cannot migrate schema {schema!r}: {exc}") from exc
    finally:
        await conn.close()
