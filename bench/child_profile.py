"""One prefork child's drain, alone, for profiles that repeat under load.

    python bench/child_profile.py [--task incr|noop|http|cpu] [--n 2000]
                                  [--callgrind] [--switch-interval S] [--src DIR]

N tasks are enqueued on a Redis database leased as the tests lease theirs (1-9, a lock
file each; flushed before and after, so no benchmark's database is touched), then one
prefork child's consumer (the loop thread plus the task-running main thread, exactly as
``Supervisor._child_main`` builds it) drains them and stops after N
(``max_tasks_per_child``). Prints wall time, CPU time, tasks/s and, with
``--callgrind``, the instruction count of the whole child process (``valgrind
--tool=callgrind``). Two runs of different N give instructions per task from the
difference (start-up cancels out), which is what to
compare between two versions of the code (``--src``: another checkout's ``src/``): it
does not move with the machine's load as seconds do.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _systems  # noqa: E402
import _work  # noqa: E402

CHILD = """
import asyncio, os, resource, sys, threading, time
sys.path.insert(0, os.getcwd())
interval = float(os.environ.get("PROFILE_SWITCH_INTERVAL") or 0)
if interval:
    sys.setswitchinterval(interval)
import bench_celeriac_tasks as tasks
from celeriac.worker import Worker

n = int(sys.argv[1])
worker = Worker(tasks.app, pool="prefork", concurrency=1, max_tasks_per_child=n, banner=False)
consumer = worker.consumer_for_child("profile:%d" % os.getpid())
pool = consumer.pool
times = {}

def started():
    times["t0"] = time.perf_counter()
    times["r0"] = resource.getrusage(resource.RUSAGE_SELF)

PROFILE = os.environ.get("PROFILE_CPROFILE")
if PROFILE:
    import cProfile, pstats
    profiles = {"loop": cProfile.Profile(), "task": cProfile.Profile()}

def run_loop():
    if PROFILE:
        profiles["loop"].enable()
    asyncio.run(consumer.run(on_ready=started))
    if PROFILE:
        profiles["loop"].disable()
    times["t1"] = time.perf_counter()
    times["r1"] = resource.getrusage(resource.RUSAGE_SELF)
    pool.stop()

samples = []
if os.environ.get("PROFILE_SAMPLE"):
    def sample():
        while "t1" not in times:
            samples.append((pool._queue.qsize(), len(consumer.held), consumer.limit))
            time.sleep(0.0005)
    threading.Thread(target=sample, daemon=True).start()

thread = threading.Thread(target=run_loop, name="celeriac-consumer")
thread.start()
if PROFILE:
    profiles["task"].enable()
pool.serve()
if PROFILE:
    profiles["task"].disable()
thread.join()
if PROFILE:
    for name, prof in profiles.items():
        print("=== %s thread" % name)
        stats = pstats.Stats(prof, stream=sys.stdout).sort_stats(PROFILE)
        stats.print_stats(int(os.environ.get("PROFILE_TOP") or 25))
        if os.environ.get("PROFILE_CALLERS"):
            stats.print_callers(os.environ["PROFILE_CALLERS"])
if samples:
    import collections
    queued = collections.Counter(min(q, 10) for q, _, _ in samples)
    print("queued (capped at 10):", sorted(queued.items()))
    print("held/limit, every 50th sample:", [(h, lim) for _, h, lim in samples[::50]][:40])
r0, r1 = times["r0"], times["r1"]
wall = times["t1"] - times["t0"]
cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
switches = r1.ru_nivcsw + r1.ru_nvcsw - r0.ru_nivcsw - r0.ru_nvcsw
print("PROFILE %d %.6f %.6f %d" % (consumer.processed, wall, cpu, switches), flush=True)
os._exit(0)
"""


@contextlib.contextmanager
def leased_db(base: str) -> Iterator[str]:
    for db in range(1, 10):
        lock = Path(tempfile.gettempdir(), f"celeriac-test-redis-db-{db}.lock").open("a")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        url = _systems.redis_db_url(base, db)
        client = _systems._redis(url)
        client.flushdb()
        try:
            yield url
        finally:
            client.flushdb()
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
        return
    raise SystemExit("no free test Redis database (1-9)")


def enqueue(python: str, workdir: Path, env: dict[str, str], task: str, n: int) -> None:
    argv = [python, str(HERE / "_driver.py"), "celeriac", "bench_celeriac_tasks"]
    subprocess.run([*argv, "enqueue", task, str(n)], cwd=workdir, env=env, check=True,
                   capture_output=True, timeout=300)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="incr")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--switch-interval", type=float, default=0.0)
    parser.add_argument("--src", type=Path, default=None, help="celeriac src/ to profile")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument(
        "--cprofile", default="", help="cProfile each thread, sorted by this (tottime, ncalls)"
    )
    parser.add_argument("--out", type=Path, default=None, help="keep callgrind's file here")
    args = parser.parse_args()
    python = sys.executable
    with (
        tempfile.TemporaryDirectory(prefix="celeriac-child-") as tmp,
        leased_db(args.redis_url) as url,
    ):
        workdir = Path(tmp)
        source = _work.with_work_tasks("celeriac", _systems.CELERIAC_TASKS)
        (workdir / "bench_celeriac_tasks.py").write_text(source)
        (workdir / "child.py").write_text(CHILD)
        http = _work.HttpServer() if args.task == "http" else None
        env = dict(os.environ)  # CELERIAC_* settings reach the child (to try them)
        paths = [str(workdir)] + ([str(args.src)] if args.src else [])
        env.update(
            PYTHONPATH=os.pathsep.join(paths),
            BENCH_BROKER_URL=url,
            BENCH_RESULT_URL=url,
            BENCH_WORK_REDIS_URL=url,
            BENCH_WORK_HTTP=http.address if http else "",
            BENCH_CPU_LOOPS=str(_work.calibrate_cpu()),
            PROFILE_SWITCH_INTERVAL=str(args.switch_interval or ""),
            PROFILE_CPROFILE=args.cprofile or "",
        )
        try:
            enqueue(python, workdir, env, args.task, args.n)
            argv = [python, str(workdir / "child.py"), str(args.n)]
            if args.callgrind:
                out = args.out.resolve() if args.out else workdir / "callgrind.out"
                argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv]
            started = time.perf_counter()
            done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True,
                                  timeout=1800, check=False)  # fmt: skip
            elapsed = time.perf_counter() - started
        finally:
            if http is not None:
                http.stop()
        line = next((x for x in done.stdout.splitlines() if x.startswith("PROFILE ")), None)
        if line is None:
            raise SystemExit(f"the child failed:\n{done.stdout}\n{done.stderr[-3000:]}")
        _, processed, wall, cpu, switches = line.split()
        report = (
            f"{args.task}: {processed} tasks in {float(wall):.3f}s wall, {float(cpu):.3f}s CPU "
            f"({int(processed) / float(wall):,.0f} tasks/s; {float(cpu) / int(processed) * 1e6:.0f}"
            f" us CPU/task; {int(switches) / int(processed):.1f} context switches/task; "
            f"process {elapsed:.1f}s)"
        )
        if args.callgrind:
            found = re.search(r"Collected : (\d+)", done.stderr)
            total = int(found[1]) if found else 0
            report += f"; callgrind {total:,} instructions (whole process)"
        if args.cprofile or os.environ.get("PROFILE_SAMPLE"):
            print(done.stdout)
        print(report, flush=True)


if __name__ == "__main__":
    main()
