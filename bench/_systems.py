"""The systems under test: their task modules, worker commands, and how to count finished
tasks without asking the workers.

Each system gets its own Redis database numbers (10-15 of the shared Redis, flushed
before and after each phase; no other database is touched):

    celeriac  broker 10, results 11      celery    broker 12, results 13
    dramatiq  broker + results 14        rq        queue + results 15

Completion is counted from outside, cheaply, where each system stores its results:
celeriac/Celery count result keys (DBSIZE of the results database) or result rows
(SQLite); Dramatiq counts acknowledged messages (its ``.msgs`` hash shrinks on ack, which
comes after the Results middleware stored the result); RQ counts its finished registry.

On RabbitMQ (celeriac and Celery only) both systems share one private vhost made for the
run (``run.py`` adds and deletes it), with ``rpc://`` results: each result is a message
in the reply queue of the client that sent the task, which nobody consumes during a drain
(the enqueuing client has exited; the queue stays, as it was never consumed). The driver
reports that queue's name; completion is its message count (a passive ``queue.declare``).
Between phases the task queue ``celery`` and every reply queue seen are deleted.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

READY_LINE = "BENCH-READY"

# -- task modules, written to the run's temp dir ---------------------------------------

CELERIAC_TASKS = """\
import asyncio
import os
import time

from celeriac import Celery

app = Celery(
    "bench_celeriac",
    broker=os.environ["BENCH_BROKER_URL"],
    backend=os.environ.get("BENCH_RESULT_URL") or None,
)


@app.task
def noop():
    return None


@app.task
def sleepy():
    time.sleep(0.02)


@app.task
async def asleep():
    await asyncio.sleep(0.02)
"""

CELERY_TASKS = """\
import os
import sys
import time

from celery import Celery
from celery.signals import worker_ready

app = Celery(
    "bench_celery",
    broker=os.environ["BENCH_BROKER_URL"],
    backend=os.environ["BENCH_RESULT_URL"],
)


@worker_ready.connect
def _announce(**_kwargs):
    print("BENCH-READY", os.getpid(), file=sys.stderr, flush=True)


@app.task
def noop():
    return None


@app.task
def sleepy():
    time.sleep(0.02)
"""

DRAMATIQ_TASKS = """\
import os
import sys
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend


class _Ready(Middleware):
    def after_worker_boot(self, broker, worker):
        print("BENCH-READY", os.getpid(), file=sys.stderr, flush=True)


# redis-py's default pool stops at 100 connections, too few for 500 greenlets
_pool = redis.ConnectionPool.from_url(os.environ["BENCH_BROKER_URL"], max_connections=2000)
broker = RedisBroker(client=redis.Redis(connection_pool=_pool))
result_backend = RedisBackend(client=redis.Redis(connection_pool=_pool))
broker.add_middleware(Results(backend=result_backend))
broker.add_middleware(_Ready())
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def noop():
    return None


@dramatiq.actor(store_results=True)
def sleepy():
    time.sleep(0.02)
"""

RQ_TASKS = """\
import os
import sys
import time

from redis import Redis
from rq import Queue, SimpleWorker, Worker

connection = Redis.from_url(os.environ["BENCH_BROKER_URL"])
queue = Queue("default", connection=connection)


class _Announce:
    def bootstrap(self, *args, **kwargs):
        super().bootstrap(*args, **kwargs)
        print("BENCH-READY", os.getpid(), file=sys.stderr, flush=True)


class BenchWorker(_Announce, Worker):  # RQ's default: each job in a forked work horse
    pass


class BenchSimpleWorker(_Announce, SimpleWorker):  # jobs run in the worker process
    pass


def noop():
    return None


def sleepy():
    time.sleep(0.02)
"""


HUEY_TASKS = """\
import os
import sys
import time

from huey import RedisHuey
from redis import ConnectionPool

# results stored for None too (the other systems store every result); results announced
# on pub/sub, so a blocking get() wakes at once instead of polling; a pool big enough for
# 500 greenlets
_pool = ConnectionPool.from_url(os.environ["BENCH_BROKER_URL"], max_connections=2000)
huey = RedisHuey("bench", connection_pool=_pool, store_none=True, notify_result=True)


@huey.on_startup()
def _announce():
    print("BENCH-READY", os.getpid(), file=sys.stderr, flush=True)


@huey.task()
def noop():
    return None


@huey.task()
def sleepy():
    time.sleep(0.02)
"""


# -- helpers ---------------------------------------------------------------------------


def redis_db_url(base: str, db: int) -> str:
    """``redis://host:port`` (any path) -> ``redis://host:port/db``."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=10)


Counter = Callable[[], int]


def delete_key(url: str, key: str) -> None:
    _redis(url).delete(key)


def ping_redis(base: str) -> None:
    _redis(redis_db_url(base, 10)).ping()


# -- RabbitMQ --------------------------------------------------------------------------


def amqp_vhost_url(base: str, vhost: str) -> str:
    """``amqp://user:pass@host:port`` (any path) -> the same server, vhost ``vhost``."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{vhost}", parts.query, ""))


def _amqp(url: str) -> Any:
    """A connected py-amqp connection (sync; the harness's own client) to ``url``."""
    import amqp

    parts = urlsplit(url)
    conn = amqp.Connection(
        host=f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}",
        userid=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        virtual_host=unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
        connect_timeout=10,
    )
    conn.connect()
    return conn


def ping_amqp(base: str) -> None:
    _amqp(base).close()


def rabbitmqctl(ctl: str, *args: str) -> str:
    done = subprocess.run([ctl, *args], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {tail}")
    return done.stdout


def add_vhost(ctl: str, vhost: str, user: str) -> None:
    rabbitmqctl(ctl, "add_vhost", vhost)
    rabbitmqctl(ctl, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")


def delete_vhost(ctl: str, vhost: str) -> None:
    rabbitmqctl(ctl, "delete_vhost", vhost)


def rabbitmq_version(ctl: str) -> str:
    return rabbitmqctl(ctl, "version").strip()


def _queue_size(channel: Any, queue: str) -> int:
    import amqp

    try:
        return int(channel.queue_declare(queue, passive=True).message_count)
    except amqp.exceptions.NotFound:
        raise RuntimeError(f"reply queue {queue} is gone") from None


def _amqp_counter(url: str, queue: str | None) -> Counter:
    if not queue:
        raise RuntimeError("the client did not report its reply queue")
    conn = _amqp(url)
    channel = conn.channel()
    return lambda: _queue_size(channel, queue)


def _sample_amqp_replies(url: str, queue: str | None, sample: int = 200) -> dict[str, Any]:
    """How many replies wait in ``queue``, and the statuses of up to ``sample`` of them
    (taken off the queue: the phase is over)."""
    if not queue:
        raise RuntimeError("the client did not report its reply queue")
    conn = _amqp(url)
    try:
        channel = conn.channel()
        stored = _queue_size(channel, queue)
        statuses: dict[str, int] = {}
        for _ in range(min(sample, stored)):
            message = channel.basic_get(queue, no_ack=True)
            if message is None:
                break
            body = message.body
            status = json.loads(body).get("status", "?") if body else "missing"
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        conn.close()
    failed = sum(v for k, v in statuses.items() if k != "SUCCESS")
    return {"stored": stored, "sampled_status": statuses, "failed": failed}


@dataclass
class IoPool:
    """One way to run the I/O workload; the best of a system's pools is reported."""

    label: str
    argv: list[list[str]]
    ready: tuple[str, int]
    desc: str


@dataclass
class System:
    """One system under test on one broker."""

    name: str
    python: str
    module: str
    source: str
    noop_task: str
    io_task: str
    cpu_argv: list[list[str]]
    io_pools: list[IoPool]
    cpu_ready: tuple[str, int]
    cpu_desc: str
    #: broker/result URLs per phase; set up by ``prepare``
    env: dict[str, str] = field(default_factory=dict)
    redis_dbs: tuple[int, ...] = ()
    redis_base: str = ""
    sqlite_dir: Path | None = None
    #: RabbitMQ: the run's vhost URL; the reply queue of the last enqueuing client, and
    #: every queue to delete between phases
    amqp_url: str = ""
    reply_queue: str | None = None
    amqp_queues: set[str] = field(default_factory=lambda: {"celery"})
    _phase_no: int = 0

    # -- life cycle of one phase -------------------------------------------------
    def prepare(self) -> dict[str, str]:
        """Fresh, empty broker and result store for the next phase; returns the env."""
        self.cleanup()
        if self.sqlite_dir is not None:
            self._phase_no += 1
            path = self.sqlite_dir / f"{self.name}-{self._phase_no}.sqlite3"
            self.env = {"BENCH_BROKER_URL": f"sqlite:///{path}"}
        return dict(self.env)

    def cleanup(self) -> None:
        for db in self.redis_dbs:
            _redis(redis_db_url(self.redis_base, db)).flushdb()
        if self.amqp_url:
            if self.reply_queue:
                self.amqp_queues.add(self.reply_queue)
            self.reply_queue = None
            conn = _amqp(self.amqp_url)
            try:
                for queue in sorted(self.amqp_queues):
                    conn.channel().queue_delete(queue)  # no-op when absent
            finally:
                conn.close()
        if self.sqlite_dir is not None and self._phase_no:
            path = self.sqlite_dir / f"{self.name}-{self._phase_no}.sqlite3"
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").unlink()

    # -- counting ----------------------------------------------------------------
    def counter(self, expected: int) -> Counter:
        """A cheap callable returning how many tasks have finished (results stored)."""
        if self.sqlite_dir is not None:
            return _sqlite_counter(self.env["BENCH_BROKER_URL"])
        if self.amqp_url:
            return _amqp_counter(self.amqp_url, self.reply_queue)
        if self.name in {"celeriac", "celery"}:
            client = _redis(self.env["BENCH_RESULT_URL"])
            return lambda: int(client.dbsize())
        if self.name == "dramatiq":
            client = _redis(self.env["BENCH_BROKER_URL"])
            return lambda: expected - int(client.hlen("dramatiq:default.msgs"))
        if self.name == "rq":
            client = _redis(self.env["BENCH_BROKER_URL"])
            return lambda: int(client.zcard("rq:finished:default"))
        if self.name == "huey":
            client = _redis(self.env["BENCH_BROKER_URL"])
            return lambda: int(client.hlen("huey.results.bench"))
        raise ValueError(self.name)

    def verify(self, expected: int) -> dict[str, Any]:
        """After a phase (untimed): what is stored; raises if results are missing or
        tasks failed."""
        found = self._inspect()
        stored = found.get("stored")
        if stored is not None and stored < expected:
            raise RuntimeError(f"only {stored} of {expected} results stored: {found}")
        if found.get("failed"):
            raise RuntimeError(f"{found['failed']} task(s) failed: {found}")
        return found

    def _inspect(self) -> dict[str, Any]:
        if self.sqlite_dir is not None:
            path = _sqlite_path(self.env["BENCH_BROKER_URL"])
            with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
                rows = conn.execute(
                    "SELECT status, count(*) FROM celeriac_results GROUP BY status"
                ).fetchall()
            by_status = dict(rows)
            failed = sum(v for k, v in by_status.items() if k != "SUCCESS")
            return {"by_status": by_status, "stored": sum(by_status.values()), "failed": failed}
        if self.amqp_url:
            return _sample_amqp_replies(self.amqp_url, self.reply_queue)
        if self.name in {"celeriac", "celery"}:
            return _sample_redis_meta(self.env["BENCH_RESULT_URL"])
        if self.name == "dramatiq":
            client = _redis(self.env["BENCH_BROKER_URL"])
            results = sum(
                1 for key in client.scan_iter(count=1000) if not key.startswith(b"dramatiq:")
            )
            dead = int(client.hlen("dramatiq:default.XQ.msgs"))
            return {"stored": results, "failed": dead}
        if self.name == "rq":
            client = _redis(self.env["BENCH_BROKER_URL"])
            return {
                "stored": int(client.zcard("rq:finished:default")),
                "failed": int(client.zcard("rq:failed:default")),
            }
        if self.name == "huey":
            client = _redis(self.env["BENCH_BROKER_URL"])
            return {"stored": int(client.hlen("huey.results.bench"))}
        raise ValueError(self.name)


def _sqlite_path(url: str) -> str:
    return url.split("sqlite://", 1)[1][1:]


def _sqlite_counter(url: str) -> Counter:
    path = _sqlite_path(url)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)

    def count() -> int:
        try:
            return int(conn.execute("SELECT count(*) FROM celeriac_results").fetchone()[0])
        except sqlite3.OperationalError as exc:  # table not created yet
            if "no such table" in str(exc):
                return 0
            raise

    return count


def _sample_redis_meta(url: str, sample: int = 200) -> dict[str, Any]:
    """Statuses of up to ``sample`` stored results (Celery's result keys)."""
    client = _redis(url)
    statuses: dict[str, int] = {}
    keys = []
    for key in client.scan_iter(match="celery-task-meta-*", count=1000):
        keys.append(key)
        if len(keys) >= sample:
            break
    for raw in client.mget(keys) if keys else []:
        status = json.loads(raw).get("status", "?") if raw else "missing"
        statuses[status] = statuses.get(status, 0) + 1
    failed = sum(v for k, v in statuses.items() if k != "SUCCESS")
    return {"stored": int(client.dbsize()), "sampled_status": statuses, "failed": failed}


# -- the systems -----------------------------------------------------------------------


def celeriac(
    python: str, *, redis_base: str | None, sqlite_dir: Path | None, amqp_url: str | None = None
) -> System:
    mod = "bench_celeriac_tasks"
    base = [python, "-m", "celeriac", "-A", mod, "worker"]
    system = System(
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
        cpu_desc="-P prefork -c 2",
        sqlite_dir=sqlite_dir,
    )
    if redis_base is not None:
        system.redis_base = redis_base
        system.redis_dbs = (10, 11)
        system.env = {
            "BENCH_BROKER_URL": redis_db_url(redis_base, 10),
            "BENCH_RESULT_URL": redis_db_url(redis_base, 11),
        }
    if amqp_url is not None:
        system.amqp_url = amqp_url
        system.env = {"BENCH_BROKER_URL": amqp_url, "BENCH_RESULT_URL": "rpc://"}
    return system


def celery(python: str, redis_base: str, *, gevent: bool, amqp_url: str | None = None) -> System:
    mod = "bench_celery_tasks"
    base = [python, "-m", "celery", "-A", mod, "worker", "-l", "warning"]
    pools = [
        IoPool(
            "threads",
            [[*base, "-P", "threads", "-c", "100"]],
            (READY_LINE, 1),
            "-P threads -c 100, task: time.sleep(0.02)",
        )
    ]
    if gevent:
        pools.append(
            IoPool(
                "gevent",
                [[*base, "-P", "gevent", "-c", "500"]],
                (READY_LINE, 1),
                "-P gevent -c 500, task: time.sleep(0.02)",
            )
        )
    system = System(
        name="celery",
        python=python,
        module=mod,
        source=CELERY_TASKS,
        noop_task="noop",
        io_task="sleepy",
        cpu_argv=[[*base, "-P", "prefork", "-c", "2"]],
        io_pools=pools,
        cpu_ready=(READY_LINE, 1),
        cpu_desc="-P prefork -c 2",
        redis_base=redis_base,
        redis_dbs=(12, 13),
        env={
            "BENCH_BROKER_URL": redis_db_url(redis_base, 12),
            "BENCH_RESULT_URL": redis_db_url(redis_base, 13),
        },
    )
    if amqp_url is not None:
        system.redis_base, system.redis_dbs, system.amqp_url = "", (), amqp_url
        system.env = {"BENCH_BROKER_URL": amqp_url, "BENCH_RESULT_URL": "rpc://"}
    return system


def dramatiq(
    python: str, bin_dir: Path, redis_base: str, *, gevent: bool, threads: int = 1
) -> System:
    mod = "bench_dramatiq_tasks"
    opts = [mod, "--worker-shutdown-timeout", "3000"]
    cpu = [python, "-m", "dramatiq", *opts, "-p", "2", "-t", str(threads)]
    pools = [
        IoPool(
            "threads",
            [[python, "-m", "dramatiq", *opts, "-p", "1", "-t", "100"]],
            (READY_LINE, 1),
            "-p 1 -t 100 (threads), task: time.sleep(0.02)",
        )
    ]
    if gevent:
        pools.append(
            IoPool(
                "gevent",
                [[str(bin_dir / "dramatiq-gevent"), *opts, "-p", "1", "-t", "500"]],
                (READY_LINE, 1),
                "dramatiq-gevent -p 1 -t 500, task: time.sleep(0.02)",
            )
        )
    url = redis_db_url(redis_base, 14)
    return System(
        name="dramatiq",
        python=python,
        module=mod,
        source=DRAMATIQ_TASKS,
        noop_task="noop",
        io_task="sleepy",
        cpu_argv=[cpu],
        io_pools=pools,
        cpu_ready=(READY_LINE, 2),
        cpu_desc=f"-p 2 -t {threads} (2 processes x {threads} thread(s)), Results middleware",
        redis_base=redis_base,
        redis_dbs=(14,),
        env={"BENCH_BROKER_URL": url, "BENCH_RESULT_URL": url},
    )


def rq(python: str, bin_dir: Path, redis_base: str, *, io_workers: int, simple: bool) -> System:
    mod = "bench_rq_tasks"
    url = redis_db_url(redis_base, 15)

    def workers(count: int, cls: str) -> list[list[str]]:
        one = [str(bin_dir / "rq"), "worker", "-w", f"{mod}.{cls}", "-u", url, "-q", "default"]
        return [list(one) for _ in range(count)]

    cpu_class = "BenchSimpleWorker" if simple else "BenchWorker"
    cpu_desc = (
        "2 x `rq worker -w SimpleWorker` (jobs run in the worker process)"
        if simple
        else "2 x `rq worker` (default Worker: one forked work horse per job)"
    )
    return System(
        name="rq",
        python=python,
        module=mod,
        source=RQ_TASKS,
        noop_task="noop",
        io_task="sleepy",
        cpu_argv=workers(2, cpu_class),
        io_pools=[
            IoPool(
                f"{io_workers} workers",
                workers(io_workers, "BenchWorker"),
                (READY_LINE, 1),
                f"{io_workers} x `rq worker` (default Worker, fork per job; RQ has no "
                "in-process concurrency), task: time.sleep(0.02)",
            ),
            IoPool(
                f"{io_workers} SimpleWorkers",
                workers(io_workers, "BenchSimpleWorker"),
                (READY_LINE, 1),
                f"{io_workers} x `rq worker -w SimpleWorker` (no fork), task: time.sleep(0.02)",
            ),
        ],
        cpu_ready=(READY_LINE, 1),
        cpu_desc=cpu_desc,
        redis_base=redis_base,
        redis_dbs=(15,),
        env={"BENCH_BROKER_URL": url},
    )


def huey(python: str, bin_dir: Path, redis_base: str, *, gevent: bool) -> System:
    mod = "bench_huey_tasks"
    consumer = [str(bin_dir / "huey_consumer"), f"{mod}.huey"]
    pools = [
        IoPool(
            "threads",
            [[*consumer, "-k", "thread", "-w", "100"]],
            (READY_LINE, 1),  # the consumer starts its workers together
            "-k thread -w 100, task: time.sleep(0.02)",
        )
    ]
    if gevent:
        pools.append(
            IoPool(
                "greenlets",
                [[*consumer, "-k", "greenlet", "-w", "500"]],
                (READY_LINE, 1),
                "-k greenlet -w 500, task: time.sleep(0.02)",
            )
        )
    url = redis_db_url(redis_base, 13)  # Celery's result db: systems run one at a time
    return System(
        name="huey",
        python=python,
        module=mod,
        source=HUEY_TASKS,
        noop_task="noop",
        io_task="sleepy",
        cpu_argv=[[*consumer, "-k", "process", "-w", "2"]],
        io_pools=pools,
        cpu_ready=(READY_LINE, 2),
        cpu_desc="-k process -w 2 (2 worker processes), results stored and notified",
        redis_base=redis_base,
        redis_dbs=(13,),
        env={"BENCH_BROKER_URL": url},
    )


def python_of_venv(venv: Path) -> str:
    return str(venv / "bin" / "python")
