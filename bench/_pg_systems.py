"""The systems of ``run.py --broker postgres``: celeriac's PostgreSQL broker and result
backend, procrastinate, and Celery on kombu's SQLAlchemy transport with its database
result backend (``sqla+postgresql://``, ``db+postgresql://``), all on the machine's
PostgreSQL (``--postgres-url``, loopback only).

Each system gets a database of its own, ``celeriac_bench_<system>``, created empty
before each phase and dropped after it (``DROP DATABASE ... WITH (FORCE)``; no other
database is touched). Completion is counted from outside in the system's own tables:
celeriac's ``celeriac.results`` rows, procrastinate's succeeded jobs (procrastinate
stores no return values: a finished job is its result), Celery's ``celery_taskmeta``
rows.

The peers: procrastinate runs 2 worker processes (``procrastinate worker``, each with
``--concurrency 1`` for the no-op drain, 250 for the I/O workload's ``async`` task);
procrastinate has no call for a client to wait for a job, so the round trip's driver
polls the job's status every millisecond. Celery's
SQLAlchemy transport polls its tables (kombu's default ``polling_interval``, 1 s: its
transport options go to SQLAlchemy's ``create_engine``, which refuses that one) and
Celery's database backend polls for results (``get(interval=0.001)``).
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from _systems import CELERY_TASKS, READY_LINE, IoPool, System

#: what the peers' venv needs on top of run.py's PEER_REQUIREMENTS
PG_PEER_REQUIREMENTS = ["procrastinate", "sqlalchemy>=2", "psycopg[binary]"]
PG_PEER_PROBE = "import procrastinate, sqlalchemy, psycopg, kombu.transport.sqlalchemy"
PG_TARGETS = {"drain": 10_000.0, "rtt_p50": 2.0}
#: celeriac's drain must be at least this many times procrastinate's
PROCRASTINATE_FACTOR = 5.0

PROCRASTINATE_TASKS = """\
import asyncio
import os
import time

import procrastinate
import psycopg

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ["BENCH_PG_DSN"])
)


@app.task(name="noop")
def noop():
    return None


@app.task(name="sleepy")
async def sleepy():
    await asyncio.sleep(0.02)


_open = []


def bench_send(task):
    if not _open:
        app.open()
        _open.append(True)
    return globals()[task].defer


_poll = []


def bench_wait(job_id, timeout):
    if not _poll:
        _poll.append(psycopg.connect(os.environ["BENCH_PG_DSN"], autocommit=True))
    conn = _poll[0]
    deadline = time.monotonic() + timeout
    while True:
        (status,) = conn.execute(
            "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)
        ).fetchone()
        if status == "succeeded":
            return None
        if status in ("failed", "cancelled", "aborted"):
            raise RuntimeError(f"job {job_id} {status}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status} after {timeout}s")
        time.sleep(0.001)
"""

CELERY_SQLA_TASKS = CELERY_TASKS.replace(
    '    backend=os.environ["BENCH_RESULT_URL"],\n)\n',
    '    backend=os.environ["BENCH_RESULT_URL"],\n)\napp.conf.result_backend_always_retry = True\n',
)


def database_url(base: str, name: str, scheme: str = "postgresql") -> str:
    parts = urlsplit(base)
    return urlunsplit((scheme, parts.netloc, f"/{name}", "", ""))


@dataclass
class PgSystem(System):
    """A system whose broker and results live in a PostgreSQL database of its own."""

    pg_base: str = ""
    dbname: str = ""
    env_template: dict[str, str] | None = None
    count_sql: str = ""
    status_sql: str = ""
    schema_argv: list[str] | None = None
    workdir: Path | None = None

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(database_url(self.pg_base, "postgres"), autocommit=True)

    def prepare(self) -> dict[str, str]:
        self.cleanup()
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        self.env = {k: v.replace("{db}", self.dbname) for k, v in (self.env_template or {}).items()}
        if self.schema_argv is not None:
            import os

            env = {**os.environ, **self.env, "PYTHONPATH": str(self.workdir)}
            done = subprocess.run(
                self.schema_argv, cwd=self.workdir, env=env, capture_output=True, text=True,
                timeout=120, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"schema: {done.stderr.strip()[-300:]}")
        return dict(self.env)

    def cleanup(self) -> None:
        if not self.dbname:
            return
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def _query(self, sql: str) -> list[Any]:
        import psycopg

        url = database_url(self.pg_base, self.dbname)
        with psycopg.connect(url, autocommit=True) as conn:
            try:
                return conn.execute(sql).fetchall()
            except psycopg.errors.UndefinedTable:
                return []

    def counter(self, expected: int) -> Any:
        import psycopg

        conn = psycopg.connect(database_url(self.pg_base, self.dbname), autocommit=True)

        def count() -> int:
            try:
                return int(conn.execute(self.count_sql).fetchone()[0])
            except psycopg.errors.UndefinedTable:
                return 0

        return count

    def _inspect(self) -> dict[str, Any]:
        by_status = {str(k): int(v) for k, v in self._query(self.status_sql)}
        failed = sum(v for k, v in by_status.items() if k.upper() not in ("SUCCESS", "SUCCEEDED"))
        return {"by_status": by_status, "stored": sum(by_status.values()), "failed": failed}


def celeriac_pg(python: str, pg_base: str, query: str = "") -> PgSystem:
    from _systems import CELERIAC_TASKS

    mod = "bench_celeriac_tasks"
    base = [python, "-m", "celeriac", "-A", mod, "worker"]
    return PgSystem(
        name="celeriac",
        python=python,
        module=mod,
        source=CELERIAC_TASKS,
        noop_task="noop",
        io_task="asleep",
        cpu_argv=[[*base, "-P", "prefork", "-c", "2"]],
        io_pools=[
            IoPool(
                "asyncio",
                [[*base, "-P", "asyncio", "-c", "500"]],
                (r"ready\.\s*$", 1),
                "-P asyncio -c 500, async def task: await asyncio.sleep(0.02)",
            )
        ],
        cpu_ready=(r"ready\.\s*$", 1),
        cpu_desc="-P prefork -c 2" + (f", broker URL ?{query}" if query else ""),
        pg_base=pg_base,
        dbname="celeriac_bench_celeriac",
        env_template={
            "BENCH_BROKER_URL": database_url(pg_base, "{db}") + (f"?{query}" if query else "")
        },
        count_sql="SELECT count(*) FROM celeriac.results",
        status_sql="SELECT status, count(*) FROM celeriac.results GROUP BY status",
    )


def procrastinate(python: str, bin_dir: Path, pg_base: str, workdir: Path) -> PgSystem:
    mod = "bench_procrastinate_tasks"
    worker = [python, "-m", "procrastinate", "--log-level", "warning", f"--app={mod}.app", "worker"]
    ready = (r"Launching a worker", 1)  # printed as it starts (no log at warning level)
    return PgSystem(
        name="procrastinate",
        python=python,
        module=mod,
        source=PROCRASTINATE_TASKS,
        noop_task="noop",
        io_task="sleepy",
        cpu_argv=[[*worker, "--concurrency", "1"] for _ in range(2)],
        io_pools=[
            IoPool(
                "async",
                [[*worker, "--concurrency", "250"] for _ in range(2)],
                ready,
                "2 workers --concurrency 250, async task: await asyncio.sleep(0.02)",
            )
        ],
        cpu_ready=ready,
        cpu_desc="2 x `procrastinate worker --concurrency 1`",
        pg_base=pg_base,
        dbname="celeriac_bench_procrastinate",
        env_template={"BENCH_PG_DSN": database_url(pg_base, "{db}")},
        count_sql="SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
        status_sql="SELECT status, count(*) FROM procrastinate_jobs GROUP BY status",
        schema_argv=[python, "-m", "procrastinate", f"--app={mod}.app", "schema", "--apply"],
        workdir=workdir,
    )


def celery_sqla(python: str, pg_base: str) -> PgSystem:
    mod = "bench_celery_sqla_tasks"
    base = [python, "-m", "celery", "-A", mod, "worker", "-l", "warning"]
    return PgSystem(
        name="celery",
        python=python,
        module=mod,
        source=CELERY_SQLA_TASKS,
        noop_task="noop",
        io_task="sleepy",
        cpu_argv=[[*base, "-P", "prefork", "-c", "2"]],
        io_pools=[
            IoPool(
                "threads",
                [[*base, "-P", "threads", "-c", "100"]],
                (READY_LINE, 1),
                "-P threads -c 100, task: time.sleep(0.02)",
            )
        ],
        cpu_ready=(READY_LINE, 1),
        cpu_desc="-P prefork -c 2, sqla+postgresql:// (polls every 1 s), db+ results",
        pg_base=pg_base,
        dbname="celeriac_bench_celery",
        env_template={
            "BENCH_BROKER_URL": database_url(pg_base, "{db}", "sqla+postgresql+psycopg"),
            "BENCH_RESULT_URL": database_url(pg_base, "{db}", "db+postgresql+psycopg"),
        },
        count_sql="SELECT count(*) FROM celery_taskmeta",
        status_sql="SELECT status, count(*) FROM celery_taskmeta GROUP BY status",
    )


def ping(pg_base: str) -> None:
    import psycopg

    with contextlib.closing(psycopg.connect(database_url(pg_base, "postgres"))):
        pass


def targets_text(results: dict[str, Any]) -> str:
    """The issue's targets for celeriac on PostgreSQL, met or not, as Markdown lines."""

    def value(name: str, key: str) -> float | None:
        cell = results.get(name, {}).get("cells", {}).get(key)
        return float(cell["value"]) if cell and "error" not in cell else None

    drain, rtt = value("celeriac", "drain"), value("celeriac", "rtt_p50")
    theirs = value("procrastinate", "drain")
    ratio = drain / theirs if drain is not None and theirs else None
    checks = [
        ("drain with results >= 10,000 tasks/s", drain, drain is not None and drain >= 10_000),
        ("round trip p50 <= 2 ms", rtt, rtt is not None and rtt <= 2.0),
        (f"drain >= {PROCRASTINATE_FACTOR:g}x procrastinate's", ratio,
         ratio is not None and ratio >= PROCRASTINATE_FACTOR),
    ]  # fmt: skip
    lines = ["| target | celeriac | met |", "|---|---|---|"]
    for label, got, met in checks:
        shown = "-" if got is None else f"{got:,.2f}"
        lines.append(f"| {label} | {shown} | {'yes' if met else 'NO'} |")
    return "\n".join(lines)
