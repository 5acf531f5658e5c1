"""The PostgreSQL transport beyond the conformance suite: URLs and schema migrations,
wake-ups without polling, kill -9 of a prefork child and of a whole worker, and
transactional enqueue (psycopg sync and async, SQLAlchemy, Django).

Each test has a schema of its own on the test server (dropped afterwards)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from celeriac import Celery
from celeriac._loop import run_sync
from celeriac.exceptions import ImproperlyConfigured
from celeriac.testing.conformance import message, number
from celeriac.testing.worker import TestWorker
from celeriac.transports.postgres import db as _db
from celeriac.transports.postgres.broker import PostgresBroker
from servers import POSTGRES_URL, postgres_schema
from support import WorkerProcess, wait_until, write_module


@pytest.fixture
def url() -> Iterator[str]:
    with postgres_schema("pgtest") as schema_url:
        yield schema_url


def schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1]


def test_url_options_go_to_celeriac_and_the_rest_to_libpq() -> None:
    conninfo, options = _db.parse_url(
        "postgres://u:pw@db:5433/jobs?sslmode=disable&schema=q1&visibility_timeout=5"
    )
    assert conninfo == "postgresql://u:pw@db:5433/jobs?sslmode=disable"
    assert options == {"schema": "q1", "visibility_timeout": "5"}
    assert _db.parse_url("postgresql:///x", {"schema": "s2"})[1]["schema"] == "s2"
    assert _db.parse_url("postgresql:///x")[1]["schema"] == "celeriac"
    with pytest.raises(ImproperlyConfigured, match="schema"):
        _db.parse_url("postgresql:///x?schema=bad-name")
    assert len(_db.channel("a" * 63, "q")) <= 63


def test_concurrent_first_connects_migrate_once(url: str) -> None:
    async def main() -> list[int]:
        conns = [await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)]
        conns.append(await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True))
        try:
            return list(await asyncio.gather(*(_db.migrate(c, schema_of(url)) for c in conns)))
        finally:
            for c in conns:
                await c.close()

    assert sorted(run_sync(main())) == [0, 1]
    with psycopg.connect(POSTGRES_URL) as conn:
        rows = conn.execute(f'SELECT version FROM "{schema_of(url)}".schema_version').fetchall()
    assert rows == [(_db.latest_version(),)]


def test_migrate_command_creates_the_schema(url: str, tmp_path: Path) -> None:
    write_module(tmp_path, "mapp", f"from celeriac import Celery\napp = Celery(broker={url!r})\n")
    cmd = [sys.executable, "-m", "celeriac", "-A", "mapp", "migrate"]
    first = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert first.returncode == 0, first.stderr
    version = _db.latest_version()
    assert f"version {version} (1 migration applied)" in first.stdout
    again = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert "(0 migrations applied)" in again.stdout


def test_an_idle_consumer_wakes_on_notify_without_polling(url: str) -> None:
    """A waiting fetch issues no query until a publish wakes it, then answers at once."""

    async def main() -> tuple[int, float]:
        consumer, producer = PostgresBroker(url), PostgresBroker(url)
        await consumer.connect()
        await producer.connect()
        calls = 0
        real = consumer._db.fetchall
        waiting = asyncio.Event()

        async def counting(*args: Any) -> list[Any]:
            nonlocal calls
            calls += 1
            if calls == 3:  # lease, (LISTEN,) lease again, the look at what comes due
                waiting.set()
            return await real(*args)

        consumer._db.fetchall = counting  # type: ignore[method-assign,assignment]
        try:
            fetching = asyncio.create_task(consumer.fetch(["idle"], 10, 10.0))
            await asyncio.wait_for(waiting.wait(), 10)
            await asyncio.sleep(0.5)  # idle time passing is what is tested
            idle_calls = calls
            start = time.monotonic()
            await producer.publish("idle", message(3))
            got = await fetching
            elapsed = time.monotonic() - start
            assert [number(d) for d in got] == [3]
            await consumer.ack(got)
            return idle_calls, elapsed
        finally:
            await consumer.close()
            await producer.close()

    idle_calls, elapsed = run_sync(main())
    assert idle_calls == 3  # nothing while idle for half a second
    assert elapsed < 1.0


WORKER_TASKS = """
import os, pathlib, time
from celeriac import Celery

DIR = pathlib.Path(__file__).resolve().parent
app = Celery("pgtasks")

@app.task
def add(x, y):
    return x + y

@app.task
def hold(name):
    path = DIR / f"{name}.attempts"
    with path.open("a") as f:
        f.write(f"{os.getpid()}\\n")
    if len(path.read_text().split()) == 1:
        time.sleep(60)
    return "again"
"""


def _worker(directory: Path, url: str, *args: str) -> WorkerProcess:
    write_module(directory, "pgtasks", WORKER_TASKS)
    env = {"CELERIAC_BROKER_URL": url}
    return WorkerProcess(directory, "pgtasks", "-l", "info", *args, env=env)


def _attempts(directory: Path, name: str) -> list[str]:
    path = directory / f"{name}.attempts"
    return path.read_text().split() if path.exists() else []


def test_kill_9_of_a_prefork_child_redelivers_its_task(url: str, tmp_path: Path) -> None:
    app = Celery("pgtasks", broker=url, set_as_current=False)
    try:
        with _worker(tmp_path, url, "-P", "prefork", "-c", "2") as worker:
            result = app.send_task("pgtasks.hold", ("child",))
            first = wait_until(lambda: _attempts(tmp_path, "child"), what="the task to start")
            os.kill(int(first[0]), signal.SIGKILL)
            assert result.get(timeout=20) == "again"
            worker.wait_for(r"Returned 1 message\(s\) held by ForkPoolWorker")
            assert app.send_task("pgtasks.add", (1, 2)).get(timeout=10) == 3
    finally:
        app.close()


def test_kill_9_of_a_whole_worker_loses_nothing(url: str, tmp_path: Path) -> None:
    """The worker and its children die at once: their leases expire (nobody extends
    them) and the next worker runs every task, the interrupted one included."""
    short = f"{url}&visibility_timeout=1"
    app = Celery("pgtasks", broker=short, set_as_current=False)
    try:
        with _worker(tmp_path, short, "-P", "prefork", "-c", "2") as worker:
            held = app.send_task("pgtasks.hold", ("whole",))
            wait_until(lambda: _attempts(tmp_path, "whole"), what="the task to start")
            sums = [app.send_task("pgtasks.add", (n, n)) for n in range(20)]
            assert worker.proc is not None
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait(10)
        with _worker(tmp_path, short, "-P", "threads", "-c", "4"):
            assert held.get(timeout=30) == "again"
            assert [r.get(timeout=30) for r in sums] == [2 * n for n in range(20)]
        assert len(_attempts(tmp_path, "whole")) == 2
    finally:
        app.close()


# -- transactional enqueue ---------------------------------------------------------


def _app(url: str) -> tuple[Celery, Any]:
    app = Celery("txn", broker=url, set_as_current=False)
    add = app.task(name="txn.add")(lambda x, y: x + y)
    return app, add


def _sizes(app: Celery) -> int:
    async def size() -> int:
        return await (await app.get_broker()).size("celery")

    return run_sync(size())


def test_psycopg_rollback_leaves_no_task_and_commit_runs_it(url: str) -> None:
    app, add = _app(url)
    try:
        with psycopg.connect(POSTGRES_URL) as conn:
            with contextlib.suppress(RuntimeError), app.transaction(conn):
                add.delay(1, 1)
                raise RuntimeError("rolled back")
            assert _sizes(app) == 0
            with app.transaction(conn):
                committed = add.delay(2, 3)
                assert _sizes(app) == 0  # not visible before the commit
            conn.execute("SELECT 1")
            plain = add.apply_async((4, 4), connection=conn)  # in conn's own transaction
            assert _sizes(app) == 1
            conn.commit()
        assert _sizes(app) == 2
        with TestWorker(app, concurrency=2):
            assert committed.get(timeout=10) == 5
            assert plain.get(timeout=10) == 8
    finally:
        app.close()


def test_async_psycopg_transaction(url: str) -> None:
    app, add = _app(url)

    async def main() -> tuple[int, int]:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            with contextlib.suppress(RuntimeError):
                async with app.transaction(conn):
                    await add.adelay(1, 1)
                    raise RuntimeError("rolled back")
            broker = await app.get_broker()
            after_rollback = await broker.size("celery")
            async with app.transaction(conn):
                await add.adelay(2, 2)
            after_commit = await broker.size("celery")
            await app.close_clients()
            return after_rollback, after_commit

    try:
        assert asyncio.run(main()) == (0, 1)
    finally:
        app.close()


def test_a_non_postgres_broker_is_a_clear_error(tmp_path: Path) -> None:
    app = Celery("txn", broker=f"sqlite:///{tmp_path / 'b.db'}", set_as_current=False)
    with (
        psycopg.connect(POSTGRES_URL) as conn,
        pytest.raises(ImproperlyConfigured, match="needs a postgresql:// broker"),
    ):
        app.send_task("txn.add", (1, 1), connection=conn)


def test_sqlalchemy_session(url: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.orm import Session

    engine = sqlalchemy.create_engine(
        POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://")
    )
    app, add = _app(url)
    try:
        with Session(engine) as session:
            with contextlib.suppress(RuntimeError), app.transaction(session):
                add.delay(1, 1)
                raise RuntimeError("rolled back")
            assert _sizes(app) == 0
            add.apply_async((2, 2), connection=session)
            session.commit()
        assert _sizes(app) == 1
    finally:
        app.close()
        engine.dispose()


DJANGO_SCRIPT = """
import os, sys
import django
from django.conf import settings

settings.configure(DATABASES={"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": os.environ["PGDATABASE"],
    "USER": os.environ["PGUSER"], "HOST": os.environ["PGHOST"], "PORT": os.environ["PGPORT"],
}})
django.setup()
from django.db import connection, transaction
from celeriac import Celery

app = Celery("txn", broker=os.environ["BROKER"], set_as_current=False)
add = app.task(name="txn.add")(lambda x, y: x + y)
try:
    with transaction.atomic():
        add.apply_async((1, 1), connection=connection)
        raise RuntimeError("rolled back")
except RuntimeError:
    pass
with transaction.atomic():
    add.apply_async((2, 3), connection=connection)
with app.transaction(connection):
    add.delay(4, 4)
try:
    with app.transaction(connection):
        add.delay(9, 9)
        raise RuntimeError("rolled back")
except RuntimeError:
    pass
app.close()
print("sent")
"""


def test_django_atomic_commit_and_rollback(url: str, tmp_path: Path) -> None:
    """Django's ``transaction.atomic()`` with ``connection=``, and ``app.transaction``
    on a Django connection, in a Django process of its own."""
    from urllib.parse import urlsplit

    parts = urlsplit(POSTGRES_URL)
    script = tmp_path / "django_txn.py"
    script.write_text(textwrap.dedent(DJANGO_SCRIPT))
    env = {
        **os.environ,
        "BROKER": url,
        "PGDATABASE": parts.path.lstrip("/") or "postgres",
        "PGUSER": parts.username or "postgres",
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "sent" in done.stdout, done.stderr
    app, _add = _app(url)
    schema = schema_of(url)

    def stored() -> list[Any]:
        with psycopg.connect(POSTGRES_URL) as conn:
            return conn.execute(f'SELECT meta FROM "{schema}".results').fetchall()

    try:
        with TestWorker(app, concurrency=2):
            wait_until(lambda: len(stored()) >= 2, 10, "both committed tasks to run")
        assert sorted('"result": 5' in m or '"result": 8' in m for (m,) in stored()) == [
            True,
            True,
        ]
        assert _sizes(app) == 0  # the rolled back ones never existed
    finally:
        app.close()


def test_a_client_listens_only_while_it_waits(url: str) -> None:
    """A client's loop runs only during its calls: a LISTEN left behind would hold back
    the server's notification queue, so a wait ends with UNLISTEN."""
    from celeriac.transports.postgres.backend import PostgresBackend

    async def channels(listener: Any) -> list[Any]:
        assert listener._conn is not None, "the wait never listened"
        cur = await listener._conn.execute("SELECT pg_listening_channels()")
        return list(await cur.fetchall())

    async def main() -> tuple[list[Any], list[Any]]:
        backend, broker = PostgresBackend(url), PostgresBroker(url)
        try:
            await backend.connect()  # the schema is made before the waits start
            await broker.connect()
            assert await backend.wait(["never-stored"], 0.2) == {}
            assert await broker.fetch(["nothing"], 1, 0.2) == []
            return await channels(backend._listener), await channels(broker._listener)
        finally:
            await backend.close()
            await broker.close()

    assert run_sync(main()) == ([], [])


def test_a_large_control_message_goes_through_the_table(url: str) -> None:
    """NOTIFY carries at most 8000 bytes: a larger envelope (a big inspect reply) is
    kept in the fanout table and the notification names its row."""
    from celeriac.protocol import control_message

    big = {"marker": "x" * 20_000}

    async def main() -> Any:
        worker, client = PostgresBroker(url), PostgresBroker(url)
        got: asyncio.Queue[Any] = asyncio.Queue()
        ready = asyncio.Event()

        async def handler(request: Any) -> None:
            await got.put(request)

        try:
            listener = asyncio.create_task(worker.listen_control("pg@x", handler, ready.set))
            await asyncio.wait_for(ready.wait(), 10)
            await client.broadcast_control(control_message("conformance_big", big))
            request = await asyncio.wait_for(got.get(), 10)
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            return request
        finally:
            await worker.close()
            await client.close()

    from celeriac.protocol import parse_control

    request = parse_control(run_sync(main()))
    assert request.arguments == big
