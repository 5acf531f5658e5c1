"""SQLite plumbing shared by the SQLite broker and result backend.

URL parsing, opening a tuned connection, named queries parsed once from the ``.sql``
files beside this module, versioned schema migrations (``migrations/NNNN_name.sql``,
applied in order inside one transaction) and :class:`ChangeWatcher`, the cheap way to
wait for another connection's commit (``PRAGMA data_version``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from importlib import resources
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.sqlite.filewatch import FileWatch

DEFAULT_PATH = "celeriac.sqlite3"
logger = logging.getLogger("celeriac.transports.sqlite")
_NAME_RE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


# --------------------------------------------------------------------------- URLs


def parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """``sqlite:///rel.db`` -> ``rel.db``, ``sqlite:////abs.db`` -> ``/abs.db``,
    ``sqlite://`` -> ``celeriac.sqlite3``; a query string gives options."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise ImproperlyConfigured(f"{url!r} is not a sqlite:// URL")
    rest, _, query = rest.partition("?")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query):
        try:
            options[key] = float(value)
        except ValueError:
            options[key] = value
    if rest and not rest.startswith("/"):
        raise ImproperlyConfigured(
            f"SQLite URL {url!r} has a host part; use sqlite:///relative.db or "
            f"sqlite:////absolute/path.db"
        )
    path = rest[1:] if rest else DEFAULT_PATH
    if not path:
        path = DEFAULT_PATH
    if path == ":memory:":
        raise ImproperlyConfigured(
            f"{url!r}: an in-memory SQLite database is private to one connection; "
            f"use memory:// for an in-process broker"
        )
    return path, options


def connect(path: str, *, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """Open ``path`` in WAL mode, autocommit (explicit ``BEGIN IMMEDIATE`` for writes),
    and bring its schema up to date."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ImproperlyConfigured(
            f"SQLite database {path!r}: directory {directory!r} does not exist "
            f"(celeriac does not create it; create it or change the URL)"
        )
    created = not os.path.exists(path)
    conn = sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
        factory=_Connection,
    )
    if isinstance(conn, _Connection):
        conn.wal_path = os.path.abspath(path) + "-wal"
    try:
        _use_wal(conn, busy_timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        # checkpoints are run by Transaction at most once a CHECKPOINT_INTERVAL: SQLite's
        # automatic one retries on every commit while other processes keep the WAL busy,
        # which halved the throughput of two worker processes (measured)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        migrate(conn)
        # from now on a write transaction waits for other writers in Transaction, in
        # steps far shorter than SQLite's busy handler takes (it sleeps 1 ms and more)
        conn.execute("PRAGMA busy_timeout = 0")
    except BaseException:
        conn.close()
        raise
    if created and os.path.abspath(path) not in _announced:
        _announced.add(os.path.abspath(path))
        logger.warning(
            "Created the SQLite database %s (a relative sqlite:/// URL is relative to the "
            "current folder: a worker or client started elsewhere uses another file)",
            os.path.abspath(path),
        )
    return conn


def describe(url: str) -> str:
    """Where a ``sqlite://`` URL's file is (its absolute path), for the worker's banner;
    "" for another URL or a bad one."""
    try:
        path, _ = parse_url(url)
    except ImproperlyConfigured:
        return ""
    return os.path.abspath(path)


#: the databases this process created (and said so)
_announced: set[str] = set()


#: Seconds between two WAL checkpoints made by one connection.
CHECKPOINT_INTERVAL = 1.0


class _Connection(sqlite3.Connection):
    """A connection that remembers when it last checkpointed the WAL."""

    last_checkpoint = 0.0
    wal_path = ""


#: A WAL larger than this is copied back into the database file at the next check.
CHECKPOINT_WAL_BYTES = 8 * 1024 * 1024


def checkpoint_if_due(conn: sqlite3.Connection) -> None:
    """At most once a CHECKPOINT_INTERVAL, copy the WAL back into the database file
    (PASSIVE: never waits) when it has grown past CHECKPOINT_WAL_BYTES."""
    now = time.monotonic()
    if now - getattr(conn, "last_checkpoint", 0.0) < CHECKPOINT_INTERVAL:
        return
    if isinstance(conn, _Connection):
        conn.last_checkpoint = now
        try:
            if os.stat(conn.wal_path).st_size < CHECKPOINT_WAL_BYTES:
                return
        except OSError:
            return
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


#: Connections inherited across ``fork``: the child never uses or closes them.
_ABANDONED: list[sqlite3.Connection] = []


class Database:
    """A lazily opened, fork-aware connection to one SQLite file; sqlite3 errors while
    opening become ``error`` (the caller's BrokerError or BackendError)."""

    def __init__(self, path: str, *, busy_timeout: float, error: type[Exception]) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.error = error
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def get(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is not None and self._pid == os.getpid():
            return conn
        if conn is not None:  # inherited across fork: leave it alone
            _ABANDONED.append(conn)
        try:
            conn = connect(self.path, busy_timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise self.error(f"SQLite database {self.path!r}: {exc}") from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()

    def __del__(self) -> None:
        # a broker or backend dropped without close() (a script's sync facade, a test):
        # close the connection rather than leave it to the garbage collector's warning
        with contextlib.suppress(Exception):  # never raise from a finalizer
            self.close()


class Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error); sqlite3 errors become
    ``error``.

    Waiting for another writer is done here, not by SQLite's default busy handler: that
    one sleeps at least 1 ms per try, which caps a busy file at a few hundred write
    transactions per second per process. Here a try is retried after 50 us, backing off to
    1 ms, until ``busy_timeout``.
    """

    __slots__ = ("busy_timeout", "conn", "error")

    def __init__(
        self, conn: sqlite3.Connection, error: type[Exception], busy_timeout: float = 5.0
    ) -> None:
        self.conn = conn
        self.error = error
        self.busy_timeout = busy_timeout

    def __enter__(self) -> sqlite3.Connection:
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise self.error(f"SQLite: cannot start a write transaction: {exc}") from exc
            self._wait_for_writer()
        except sqlite3.Error as exc:
            raise self.error(f"SQLite: cannot start a write transaction: {exc}") from exc
        return conn

    def _wait_for_writer(self) -> None:
        conn = self.conn
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.00005
        while True:
            time.sleep(delay)
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise self.error(f"SQLite: cannot start a write transaction: {exc}") from exc
            delay = min(delay * 1.5, 0.001)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            try:
                self.conn.execute("COMMIT")
                checkpoint_if_due(self.conn)
            except sqlite3.Error as error:
                if self.conn.in_transaction:
                    self.conn.rollback()
                raise self.error(f"SQLite: commit failed: {error}") from error
            return
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise self.error(f"SQLite: {exc}") from exc


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL (a persistent setting). The switch takes an exclusive lock
    without waiting on the busy handler, so a fresh file opened by several processes at
    once needs a few tries."""
    deadline = time.monotonic() + busy_timeout
    delay = 0.001
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        else:
            if str(mode).lower() == "wal":
                return
            raise ImproperlyConfigured(f"SQLite refused WAL mode (journal_mode={mode!r})")
        time.sleep(delay)  # only while opening a brand-new file
        delay = min(delay * 2, 0.05)


# --------------------------------------------------------------------------- queries


def parse_queries(text: str) -> dict[str, str]:
    """Split a ``-- name: foo`` annotated SQL file into ``{name: statement}``."""
    parts = _NAME_RE.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        statement = "\n".join(lines).strip().rstrip(";").strip()
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = statement
    return queries


@functools.cache
def load_queries(filename: str) -> dict[str, str]:
    """The named queries of ``filename`` in this package, parsed once per process."""
    text = (
        resources.files(__package__).joinpath("sql").joinpath(filename).read_text(encoding="utf-8")
    )
    return parse_queries(text)


# --------------------------------------------------------------------------- migrations


@functools.cache
def migrations() -> tuple[tuple[int, str], ...]:
    """``(version, sql)`` for every ``migrations/NNNN_*.sql`` file, in order."""
    folder = resources.files(__package__).joinpath("sql").joinpath("migrations")
    steps: list[tuple[int, str]] = []
    for item in folder.iterdir():
        match = re.match(r"^(\d+)_\w+\.sql$", item.name)
        if match:
            steps.append((int(match.group(1)), item.read_text(encoding="utf-8")))
    steps.sort()
    return tuple(steps)


def schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in the file (0 for a fresh file)."""
    try:
        row = conn.execute(load_queries("schema_queries.sql")["schema_version"]).fetchone()
    except sqlite3.OperationalError:  # no celeriac_schema table yet
        return 0
    return int(row[0] or 0)


def latest_version() -> int:
    """The schema version this celeriac writes (its newest migration)."""
    return max((v for v, _ in migrations()), default=0)


def split_statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (``executescript`` would commit)."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            body = "\n".join(
                ln for ln in pending.splitlines() if not ln.lstrip().startswith("--")
            ).strip()
            if body.strip(";").strip():
                statements.append(body)
            pending = ""
    return statements


def migrate(conn: sqlite3.Connection, steps: Sequence[tuple[int, str]] | None = None) -> int:
    """Apply the migrations newer than the file's version, in one write transaction.

    Returns how many were applied; a file already at the current version costs one read.
    """
    steps = migrations() if steps is None else steps
    target = max((v for v, _ in steps), default=0)
    if schema_version(conn) >= target:
        return 0
    q = load_queries("schema_queries.sql")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(q["create_schema_table"])
        current = schema_version(conn)  # another process may have migrated meanwhile
        applied = 0
        for version, script in steps:
            if version <= current:
                continue
            for statement in split_statements(script):
                conn.execute(statement)
            current = version
            applied += 1
        if applied:
            conn.execute(q["clear_schema_version"])
            conn.execute(q["set_schema_version"], {"version": current})
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied


# --------------------------------------------------------------------------- waiting


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ChangeWatcher:
    """Waits until the database changed: a commit by another connection (seen through
    ``PRAGMA data_version``, a read that takes no lock) or a local :meth:`bump`.

    Polls every ``min_interval`` at first, backing off by a quarter per idle poll to
    ``max_interval``, so a busy system answers within a millisecond and an idle one
    costs little. Given the database's ``path``, where the platform can (Linux),
    another process's write to the database wakes it instead
    (:mod:`~celeriac.transports.sqlite.filewatch`): it then polls that way only for
    ``WRITE_BURST`` seconds after a write, and otherwise looks once every ``IDLE_CHECK``
    seconds.
    """

    WRITE_BURST = 0.05
    IDLE_CHECK = 1.0

    def __init__(
        self, min_interval: float = 0.001, max_interval: float = 0.05, path: str | None = None
    ) -> None:
        self.min_interval = min_interval
        self.max_interval = max(max_interval, min_interval)
        self._local = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._path = path
        self._files: tuple[asyncio.AbstractEventLoop, int, FileWatch | None] | None = None
        self._writes = 0
        self._written_at = 0.0

    def bump(self) -> None:
        """Record a change made through this instance's own connection."""
        self._local += 1
        for fut in self._waiters:
            _wake(fut)

    def _written(self) -> None:
        self._writes += 1
        self._written_at = time.monotonic()
        for fut in self._waiters:
            _wake(fut)

    def _file_watch(self, loop: asyncio.AbstractEventLoop) -> FileWatch | None:
        files = self._files
        if files is not None and files[0] is loop and files[1] == os.getpid():
            return files[2]
        if files is not None and files[2] is not None and files[1] == os.getpid():
            files[2].close()  # made on another event loop
        watch = FileWatch.start(self._path, loop) if self._path else None
        if watch is not None:
            watch.subscribe(self._written)
        self._files = (loop, os.getpid(), watch)
        return watch

    def close(self) -> None:
        """Stop watching the database's files (the next wait watches again)."""
        files, self._files = self._files, None
        if files is not None and files[2] is not None and files[1] == os.getpid():
            files[2].close()

    def snapshot(self, conn: sqlite3.Connection) -> tuple[int, int]:
        row = conn.execute("PRAGMA data_version").fetchone()
        return (int(row[0]), self._local)

    async def wait(
        self, conn: sqlite3.Connection, since: tuple[int, int], until: float
    ) -> tuple[int, int] | None:
        """Return the new snapshot once it differs from ``since``, or None when the
        wall-clock time ``until`` has come."""
        loop = asyncio.get_running_loop()
        files = self._file_watch(loop)
        interval = self.min_interval
        writes = self._writes
        while True:
            remaining = until - time.time()
            if remaining <= 0:
                return None
            if files is not None and writes != self._writes:
                writes, interval = self._writes, self.min_interval  # a write: look again soon
            pause = interval
            if files is not None and time.monotonic() - self._written_at > self.WRITE_BURST:
                pause = self.IDLE_CHECK  # no write lately: the next one wakes us
            fut: asyncio.Future[None] = loop.create_future()
            handle = loop.call_later(min(pause, remaining), _wake, fut)
            self._waiters.add(fut)
            try:
                await fut
            finally:
                handle.cancel()
                self._waiters.discard(fut)
            now = self.snapshot(conn)
            if now != since:
                return now
            interval = min(interval * 1.25, self.max_interval)


__all__ = [
    "ChangeWatcher",
    "Database",
    "Transaction",
    "connect",
    "latest_version",
    "load_queries",
    "migrate",
    "migrations",
    "parse_queries",
    "parse_url",
    "schema_version",
    "split_statements",
]
