"""What a listened-to task event costs a celeriac worker, in instructions (callgrind):
repeatable on a loaded machine where CPU seconds are not.

    python bench/events_callgrind.py [--n 2000] [--redis-url redis://127.0.0.1:6379/13]
                                     [--pool solo] [--keep]

Runs ``celeriac worker -P solo`` (one process) under ``valgrind --tool=callgrind`` twice
on Redis, each time draining N no-op tasks: without ``-E``, then with ``-E`` while a
subscriber (``redis-cli PSUBSCRIBE``, outside the worker: it takes no instructions of
it) receives every event. Each run stops once every result is stored; the difference of
the two totals over N is what the events cost per task (start-up and shutdown are the
same in both runs). The database is flushed before and after. ``--keep`` leaves the
``callgrind.out.*`` files in the working directory (``callgrind_annotate`` them).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = """
import os
from celeriac import Celery
app = Celery("benchcg", broker=os.environ["BENCH_URL"])

@app.task(name="benchcg.noop")
def noop():
    return None
"""


def run(url: str, n: int, pool: str, events: bool, out: Path, env: dict[str, str]) -> int:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    code = f"import benchcg\nfor _ in range({n}):\n    benchcg.app.send_task('benchcg.noop')\n"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    db = url.rsplit("/", 1)[1]
    sub = None
    if events:  # a monitor: every event of this database's celeryev channels
        sub = subprocess.Popen(
            ["redis-cli", "--no-raw", "PSUBSCRIBE", f"/{db}.celeryev/*"],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # redis-cli gives no sign that it subscribed; counted below
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    argv += [sys.executable, "-m", "celeriac", "-A", "benchcg", "worker", "-P", pool]
    argv += ["-l", "WARNING", "--without-heartbeat"]
    if events:
        argv.append("-E")
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 1200
        while sum(1 for _ in client.scan_iter("celery-task-meta-*", count=5000)) < n:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker stopped (or hung) before draining")
            time.sleep(0.5)
        if events:
            listeners = client.execute_command("PUBSUB", "NUMPAT")
            if not listeners:
                raise RuntimeError("nobody listened")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(120)
        if sub is not None:
            sub.terminate()
            sub.wait(10)
        client.flushdb()
    text = out.read_text(errors="replace")
    found = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
    assert found, "no totals in the callgrind output"
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--pool", default="solo")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "benchcg.py").write_text(TASKS)
        path = os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "BENCH_URL": args.redis_url, "PYTHONPATH": path}
        where = Path.cwd() if args.keep else Path(tmp)
        off = run(args.redis_url, args.n, args.pool, False, where / "callgrind.out.off", env)
        on = run(args.redis_url, args.n, args.pool, True, where / "callgrind.out.on", env)
    print(f"{args.n} tasks, -P {args.pool}, Redis, instructions (Ir)")
    print(f"  events off:            {off:>14,}  ({off / args.n:,.0f} per task, with start-up)")
    print(f"  events on, listened:   {on:>14,}  ({on / args.n:,.0f} per task, with start-up)")
    print(f"  events cost per task:  {(on - off) / args.n:>14,.0f}")


if __name__ == "__main__":
    main()
