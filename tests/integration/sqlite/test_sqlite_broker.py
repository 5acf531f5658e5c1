"""SQLite-specific behaviour: several processes on one file, schema versions and
migrations, URLs, dead letters, and the cheap idle wait (no write lock per poll)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol import result_meta
from celeriac.testing.conformance import message, number, opened, run
from celeriac.transports.sqlite import db as _sql
from celeriac.transports.sqlite.backend import SQLiteBackend
from celeriac.transports.sqlite.broker import SQLiteBroker

CONSUMER = """
import asyncio, json, os, sys, time
from celeriac.transports.sqlite.broker import SQLiteBroker
from celeriac.testing.conformance import number

async def main(url, barrier, parties):
    broker = SQLiteBroker(url)
    await broker.connect()
    print("ready", flush=True)
    sys.stdin.readline()  # the parent says go once every consumer is ready
    got = []
    while True:
        batch = await broker.fetch(["q"], 5, 1.0)
        if not got and batch:
            # hold the first batch until every consumer has one: they overlap for sure
            open(os.path.join(barrier, str(os.getpid())), "w").close()
            deadline = time.monotonic() + 30
            while len(os.listdir(barrier)) < parties and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        got += [(number(d), d.delivery_count) for d in batch]
        await broker.ack(batch)
        if not batch and await broker.size("q") == 0:
            break  # nothing waiting and nothing came: every message is taken
    await broker.close()
    print(json.dumps(got), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

PRODUCER = """
import asyncio, sys, time
from celeriac.transports.sqlite.broker import SQLiteBroker
from celeriac.testing.conformance import message

async def produce(url, total):
    broker = SQLiteBroker(url)
    for n in range(total - 1):
        await broker.publish("q", message(n))
    await broker.publish("q", message(total - 1), not_before=time.time() + 0.2)
    await broker.close()

asyncio.run(produce(sys.argv[1], int(sys.argv[2])))
"""


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def test_processes_fetching_one_file_get_each_message_once(tmp_path: Path) -> None:
    url, total = url_of(tmp_path / "q.db"), 1500
    run(_publish(url, total))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONSUMER, url, str(barrier), "3"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [0, 0, 0]
    per_process = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    seen = Counter(n for got in per_process for n, _ in got)
    assert sorted(seen) == list(range(total))
    assert set(seen.values()) == {1}
    assert {count for got in per_process for _, count in got} == {1}
    assert all(per_process), "every consumer held a batch while the others held theirs"


async def _publish(url: str, total: int) -> None:
    async with opened(SQLiteBroker(url)) as broker:
        await broker.publish_many([("q", message(n), 0, None) for n in range(total)])


def test_consumer_here_receives_from_producer_process(tmp_path: Path) -> None:
    url, total = url_of(tmp_path / "q.db"), 50

    async def main() -> list[int]:
        async with opened(SQLiteBroker(url)) as broker:
            first = asyncio.create_task(broker.fetch(["q"], 10, 10.0))  # waits first
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PRODUCER, url, str(total)
            )
            got = await first
            while len(got) < total:
                batch = await broker.fetch(["q"], 10, 10.0)
                assert batch, "a message from the producer never arrived"
                got += batch
            await broker.ack(got)
            assert await proc.wait() == 0
            return [number(d) for d in got]

    assert sorted(run(main())) == list(range(total))


def test_fresh_file_gets_current_schema_and_reconnect_is_a_noop(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    first = _sql.connect(path)
    observer = sqlite3.connect(path)
    try:
        assert _sql.latest_version() >= 1
        assert _sql.schema_version(first) == _sql.latest_version()
        tables = {r[0] for r in first.execute("SELECT name FROM sqlite_master")}
        assert {"celeriac_messages", "celeriac_dead_letters", "celeriac_results"} <= tables
        assert first.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert first.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        before = observer.execute("PRAGMA data_version").fetchone()[0]
        second = _sql.connect(path)
        assert second.total_changes == 0
        assert _sql.migrate(second) == 0
        assert observer.execute("PRAGMA data_version").fetchone()[0] == before  # no commit
        second.close()
    finally:
        first.close()
        observer.close()


def test_migrations_apply_in_order_in_one_transaction(tmp_path: Path) -> None:
    conn = _sql.connect(str(tmp_path / "s.db"))
    base = _sql.latest_version()
    try:
        broken = [(base + 1, "CREATE TABLE extra (x);\nINSERT INTO missing VALUES (1);")]
        with pytest.raises(sqlite3.OperationalError):
            _sql.migrate(conn, [*_sql.migrations(), *broken])
        assert _sql.schema_version(conn) == base
        assert (
            conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'extra'").fetchone()[0]
            == 0
        )
        steps = [(base + 1, "CREATE TABLE extra (x);"), (base + 2, "ALTER TABLE extra ADD y;")]
        assert _sql.migrate(conn, [*_sql.migrations(), *steps]) == 2
        assert _sql.schema_version(conn) == base + 2
        conn.execute("INSERT INTO extra (x, y) VALUES (1, 2)")
    finally:
        conn.close()


def test_concurrent_first_connects_migrate_once(tmp_path: Path) -> None:
    path, versions, errors = str(tmp_path / "s.db"), [], []
    barrier = threading.Barrier(4)

    def connect() -> None:
        try:
            barrier.wait(5)
            conn = _sql.connect(path)
            versions.append(_sql.schema_version(conn))
            conn.close()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert versions == [_sql.latest_version()] * 4


def test_named_queries_are_parsed_from_sql_files() -> None:
    queries = _sql.parse_queries(
        "-- name: one\n-- a comment\nSELECT 1;\n\n-- name: two\nSELECT\n 2;"
    )
    assert queries == {"one": "SELECT 1", "two": "SELECT\n 2"}
    broker = _sql.load_queries("broker_queries.sql")
    assert {"publish", "lease", "ack", "requeue", "dead_letter", "recover"} <= set(broker)
    assert _sql.load_queries("broker_queries.sql") is broker  # parsed once


def test_urls() -> None:
    assert _sql.parse_url("sqlite://") == ("celeriac.sqlite3", {})
    assert _sql.parse_url("sqlite:///rel/q.db") == ("rel/q.db", {})
    assert _sql.parse_url("sqlite:////abs/q.db") == ("/abs/q.db", {})
    assert _sql.parse_url("sqlite:///q.db?visibility_timeout=5") == (
        "q.db",
        {"visibility_timeout": 5.0},
    )
    for bad in ("sqlite:///:memory:", "sqlite://host/q.db"):
        with pytest.raises(ImproperlyConfigured):
            _sql.parse_url(bad)


def test_bare_url_means_celeriac_sqlite3_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run(_publish("sqlite://", 1))
    assert (tmp_path / "celeriac.sqlite3").is_file()


@pytest.mark.parametrize("cls", [SQLiteBroker, SQLiteBackend])
def test_missing_directory_is_a_configuration_error(
    tmp_path: Path, cls: type[SQLiteBroker] | type[SQLiteBackend]
) -> None:
    target = tmp_path / "absent" / "q.db"
    with pytest.raises(ImproperlyConfigured, match="absent"):
        run(cls(url_of(target)).connect())
    assert not target.parent.exists()


def test_dead_letters_persist_newest_first(tmp_path: Path) -> None:
    url = url_of(tmp_path / "q.db")

    async def main() -> None:
        async with opened(SQLiteBroker(url)) as broker:
            await broker.publish_many([("q", message(n), 0, None) for n in range(3)])
            for delivery in await broker.fetch(["q"], 3, 5.0):
                await broker.dead_letter(delivery, f"reason {number(delivery)}")
        async with opened(SQLiteBroker(url)) as other:
            letters = await other.dead_letters(limit=2)
            assert [x.reason for x in letters] == ["reason 2", "reason 1"]
            assert await other.size("q") == 0

    run(main())
    conn = sqlite3.connect(tmp_path / "q.db")
    assert conn.execute("SELECT count(*) FROM celeriac_messages").fetchone()[0] == 0
    conn.close()


def test_stale_delivery_cannot_ack_a_released_message(tmp_path: Path) -> None:
    async def main() -> None:
        url = url_of(tmp_path / "q.db")
        async with opened(SQLiteBroker(url, options={"visibility_timeout": 0.1})) as broker:
            await broker.publish("q", message(1))
            (stale,) = await broker.fetch(["q"], 1, 5.0)
            (fresh,) = await broker.fetch(["q"], 1, 5.0)  # after the lease expired
            await broker.ack([stale])
            await broker.requeue([stale])
            await broker.extend([fresh], 30.0)
            assert await broker.fetch(["q"], 1, 0.0) == []  # still leased by fresh
            await broker.ack([fresh])
            conn = sqlite3.connect(tmp_path / "q.db")
            assert conn.execute("SELECT count(*) FROM celeriac_messages").fetchone()[0] == 0
            conn.close()

    run(main())


def test_idle_fetch_polls_data_version_without_write_lock(tmp_path: Path) -> None:
    async def main() -> list[str]:
        async with opened(SQLiteBroker(url_of(tmp_path / "q.db"))) as broker:
            statements: list[str] = []
            broker._db().set_trace_callback(statements.append)
            assert await broker.fetch(["q"], 1, 0.2) == []
            broker._db().set_trace_callback(None)
            return statements

    statements = run(main())
    assert sum(s.startswith("BEGIN IMMEDIATE") for s in statements) == 1
    polls = sum(s == "PRAGMA data_version" for s in statements)
    assert 1 <= polls <= 60, polls  # never more than the 1 ms backoff to polling_interval


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_an_idle_fetch_wakes_on_another_connections_commit_without_polling(
    tmp_path: Path,
) -> None:
    """Linux: the waiting fetch is woken by the write to the database's files
    (filewatch.py), and in between looks once a second, not every 50 ms."""

    async def main() -> tuple[int, float]:
        url = url_of(tmp_path / "q.db")
        async with opened(SQLiteBroker(url)) as broker, opened(SQLiteBroker(url)) as other:
            await other.declare("q")
            statements: list[str] = []
            broker._db().set_trace_callback(statements.append)
            fetching = asyncio.ensure_future(broker.fetch(["q"], 1, 10.0))
            await asyncio.sleep(1.5)  # idle: what it does meanwhile is the point
            sent = time.monotonic()
            await other.publish("q", message(3))
            (got,) = await asyncio.wait_for(fetching, 10)
            woke = time.monotonic() - sent
            broker._db().set_trace_callback(None)
            assert number(got) == 3
            await broker.ack([got])
            return sum(s == "PRAGMA data_version" for s in statements), woke

    polls, woke = run(main())
    assert woke < 0.9, woke  # the idle check is once a second: this is the wake-up
    assert polls <= 25, polls  # polling every 50 ms would be over 40


def test_backend_wait_reads_rows_only_after_a_commit(tmp_path: Path) -> None:
    async def main() -> int:
        url = url_of(tmp_path / "r.db")
        async with opened(SQLiteBackend(url)) as backend, opened(SQLiteBackend(url)) as other:
            statements: list[str] = []
            backend._db().set_trace_callback(statements.append)
            assert await backend.wait(["t"], 0.15) == {}
            backend._db().set_trace_callback(None)
            waiting = asyncio.create_task(backend.wait(["t"], 10.0))
            await asyncio.sleep(0)  # let the wait start
            await other.store("t", result_meta("t", "SUCCESS", 1), None)
            assert await waiting == {"t": result_meta("t", "SUCCESS", 1)}
            return sum("celeriac_results" in s for s in statements)

    assert run(main()) == 1  # one read of the rows, then only PRAGMA data_version


def test_backend_deletes_expired_rows_lazily(tmp_path: Path) -> None:
    path = tmp_path / "r.db"

    async def main() -> None:
        backend = SQLiteBackend(url_of(path), options={"cleanup_interval": 0})
        async with opened(backend):
            await backend.store("old", result_meta("old", "SUCCESS", 1), 0.05)
            deadline = time.monotonic() + 5
            # expiry is the passing of time, not an event to wait on
            while await backend.get("old") is not None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            assert await backend.get("old") is None
            await backend.store("new", result_meta("new", "SUCCESS", 2), None)

    run(main())
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT task_id FROM celeriac_results")] == ["new"]
    conn.close()
