"""What Celery's events cost a celeriac worker: drain with task events on (``-E``) and
off, the median of K rounds each, alternating.

    python bench/events_bench.py [--n 20000] [--repeat 3] [--redis-url redis://host/db]
                                 [--amqp-url amqp://guest:guest@host:5672] [--listen]

Each round enqueues N no-op tasks, starts ``celeriac worker -P prefork -c 2`` (with or
without ``-E``; worker heartbeats are on in both), and times from "ready." until every
result is stored. SQLite runs in a temporary directory; with ``--redis-url`` (a database
of its own: it is flushed) Redis runs too; with ``--amqp-url`` RabbitMQ too, on a vhost
made for the run (``rabbitmqctl``) and deleted at the end, results in the Redis database
(``--redis-url`` is then needed). With ``--listen``, a receiver in this process reads
every event while events are on (as a monitor would; on a 2-core machine it takes CPU
from the worker it measures).

Besides tasks/s it reports the CPU time (user + system, from ``/proc``) that the worker's
processes spent per task over the same span: on a shared, loaded machine wall-clock
rates swing by 2x while CPU per task stays within a few per cent, so the CPU ratio is
what says what events cost the worker (the receiver's own CPU is not in it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TASKS = """
import os
from celeriac import Celery
app = Celery("benchev", broker=os.environ["BENCH_URL"], backend=os.environ.get("BENCH_BACKEND"))

@app.task(name="benchev.noop")
def noop():
    return None
"""


def pythonpath() -> str:
    """The tasks' directory, before what PYTHONPATH already holds (a celeriac to test)."""
    return os.pathsep.join(p for p in (os.environ["BENCH_DIR"], os.environ.get("PYTHONPATH")) if p)


def enqueue(url: str, n: int) -> None:
    code = f"import benchev\nfor _ in range({n}):\n    benchev.app.send_task('benchev.noop')\n"
    run_python(url, code)


def run_python(url: str, code: str) -> None:
    env = {**os.environ, "BENCH_URL": url, "PYTHONPATH": pythonpath()}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def backend_of(url: str) -> str | None:
    """Where results go: the broker itself (SQLite, Redis) or, on RabbitMQ, Redis."""
    return os.environ["BENCH_REDIS"] if url.startswith("amqp") else None


def counter(url: str, n: int):  # type: ignore[no-untyped-def]
    url = backend_of(url) or url
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[1]
        conn = sqlite3.connect(path)
        return lambda: conn.execute("SELECT count(*) FROM celeriac_results").fetchone()[0]
    import redis

    client = redis.Redis.from_url(url)

    def count() -> int:  # dbsize is cheap; it counts a few other keys: then look closer
        if client.dbsize() < n:
            return 0
        return sum(1 for _ in client.scan_iter("celery-task-meta-*", count=5000))

    return count


def listen(url: str, ready: threading.Event, stop: threading.Event, seen: list[int]) -> None:
    from celeriac import Celery
    from celeriac.events import EventReceiver

    app = Celery("listener", broker=url)  # (one per round: each broker its own)

    def on_event(event: dict[str, object]) -> None:
        seen[0] += 1

    async def main() -> None:
        receiver = EventReceiver(app, {"*": on_event})
        task = asyncio.create_task(receiver.acapture(listening=ready.set))
        await asyncio.to_thread(stop.wait)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await app.close_clients()

    asyncio.run(main())


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) spent so far by ``pid`` and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # from field 3 (state) on
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, grown = {pid}, True
    while grown:
        more = {p for p, pp in parent.items() if pp in tree} - tree
        grown = bool(more)
        tree |= more
    return sum(cpu.get(p, 0.0) for p in tree)


def drain(url: str, n: int, events: bool, listening: bool) -> tuple[float, float, int]:
    if backend_of(url):
        os.environ["BENCH_BACKEND"] = backend_of(url) or ""
    else:
        os.environ.pop("BENCH_BACKEND", None)
    enqueue(url, n)
    count = counter(url, n)
    argv = [sys.executable, "-m", "celeriac", "-A", "benchev", "worker", "-c", "2", "-l", "WARNING"]
    if events:
        argv.append("-E")
    env = {**os.environ, "BENCH_URL": url, "PYTHONPATH": pythonpath()}
    ready, stop, seen = threading.Event(), threading.Event(), [0]
    listener = threading.Thread(target=listen, args=(url, ready, stop, seen), daemon=True)
    if events and listening:
        listener.start()
        if not ready.wait(30):
            raise RuntimeError("the event receiver did not start listening")
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "ready." in line:
                break
        t0, c0, cpu0 = time.time(), count(), tree_cpu(proc.pid)
        while count() < n:
            time.sleep(0.005)
        t1, cpu1 = time.time(), tree_cpu(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        stop.set()
        if listener.is_alive():
            listener.join(30)
    return (n - c0) / (t1 - t0), (cpu1 - cpu0) / (n - c0) * 1e6, seen[0]


def reset(url: str) -> None:
    if url.startswith("sqlite"):
        path = Path(url.split("sqlite:///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    elif url.startswith("amqp"):
        ctl = os.environ.get("RABBITMQCTL", "rabbitmqctl")
        vhost = url.rsplit("/", 1)[1]
        subprocess.run([ctl, "-q", "delete_vhost", vhost], capture_output=True, check=False)
        subprocess.run([ctl, "-q", "add_vhost", vhost], capture_output=True, check=True)
        subprocess.run(
            [ctl, "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            capture_output=True,
            check=True,
        )
        reset(os.environ["BENCH_REDIS"])
    else:
        import redis

        redis.Redis.from_url(url).flushdb()


def drop(url: str) -> None:
    if url.startswith("amqp"):
        ctl = os.environ.get("RABBITMQCTL", "rabbitmqctl")
        vhost = url.rsplit("/", 1)[1]
        subprocess.run([ctl, "-q", "delete_vhost", vhost], capture_output=True, check=False)
        reset(os.environ["BENCH_REDIS"])
    else:
        reset(url)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--amqp-url", default=None, help="amqp://user:pass@host:port")
    parser.add_argument("--listen", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BENCH_DIR"] = tmp
        Path(tmp, "benchev.py").write_text(TASKS)
        urls = [] if args.skip_sqlite else [f"sqlite:///{tmp}/bench.db"]
        urls += [args.redis_url] if args.redis_url else []
        if args.amqp_url:
            if not args.redis_url:
                parser.error("--amqp-url stores results in --redis-url's database")
            os.environ["BENCH_REDIS"] = args.redis_url
            urls.append(f"{args.amqp_url.rstrip('/')}/celeriac-events-bench-{os.getpid()}")
        for url in urls:
            rates: dict[bool, list[float]] = {False: [], True: []}
            cpus: dict[bool, list[float]] = {False: [], True: []}
            for round_ in range(args.repeat):
                for events in (False, True) if round_ % 2 == 0 else (True, False):
                    reset(url)
                    rate, cpu, seen = drain(url, args.n, events, args.listen)
                    rates[events].append(rate)
                    cpus[events].append(cpu)
                    label = "on " if events else "off"
                    print(
                        f"{url.split(':')[0]} events {label} round {round_ + 1}: "
                        f"{rate:,.0f} tasks/s, worker CPU {cpu:.0f} us/task "
                        f"({seen} events received; load {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
            off, on = statistics.median(rates[False]), statistics.median(rates[True])
            cpu_off, cpu_on = statistics.median(cpus[False]), statistics.median(cpus[True])
            print(
                f"{url.split(':')[0]}: median off {off:,.0f}/s, on {on:,.0f}/s, "
                f"on/off {on / off:.2f}; worker CPU per task off {cpu_off:.0f} us, "
                f"on {cpu_on:.0f} us, off/on {cpu_off / cpu_on:.2f}",
                flush=True,
            )
            drop(url)


if __name__ == "__main__":
    main()
