"""How much memory the dashboard's own state holds after 100,000 tasks.

Two measurements:

* ``state``: 100,000 tasks' events (task-sent, received, started, then succeeded, or
  failed with a traceback for one in ten) fed to :class:`DashboardState`, as the event
  receiver feeds it; ``tracemalloc`` gives the bytes the state holds, for the default
  window (``--max-tasks 10000``) and, to show what the bound buys, an unbounded one;
* ``live``: a real worker and a real ``celeriac dashboard`` process on SQLite, the tasks
  sent in batches; the dashboard's RSS (``/proc/<pid>/status``) before and after.

Run: ``flock /tmp/celeriac-bench.lock .venv/bin/python bench/dashboard_memory.py``
(``--live`` adds the second, slower measurement; ``--tasks N`` changes the count).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
import urllib.request
from pathlib import Path

from celeriac.dashboard import DashboardState

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/tasks.py", line 12, in work\n'
    "    raise ValueError(value)\n"
    "ValueError: " + "x" * 200 + "\n"
) * 4


def events(n: int) -> list[list[dict[str, object]]]:
    """One task's events, for task ``n``."""
    uuid = f"{n:08d}-0000-4000-8000-{n:012d}"
    host = f"worker{n % 8}@host"
    now = time.time()
    done: dict[str, object] = (
        {"type": "task-failed", "exception": f"ValueError({n})", "traceback": f"{TRACEBACK}#{n}"}
        if n % 10 == 0
        else {"type": "task-succeeded", "result": repr(n * 2), "runtime": 0.001}
    )
    return [
        [
            {"type": "task-sent", "uuid": uuid, "name": "bench.work", "queue": "celery"},
            {
                "type": "task-received",
                "uuid": uuid,
                "name": "bench.work",
                "args": repr((n, "payload" * 4)),
                "kwargs": "{}",
                "root_id": uuid,
            },
            {"type": "task-started", "uuid": uuid},
            done,
        ],
        [{"hostname": host, "timestamp": now}],
    ]


def measure_state(tasks: int, max_tasks: int) -> tuple[int, int, float]:
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    state = DashboardState(max_tasks=max_tasks)
    for n in range(tasks):
        task_events, (sender,) = events(n)
        for event in task_events:
            state.event({**event, **sender})
        if n % 1000 == 0:
            state.event({"type": "worker-heartbeat", "active": 1, "processed": n, **sender})
    elapsed = time.perf_counter() - start
    gc.collect()
    held, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(state.tasks) == min(tasks, max_tasks)
    return held, len(state.tasks), elapsed


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


LIVE_TASKS = """
import pathlib
from celeriac import Celery
app = Celery("memtasks", broker=f"sqlite:///{pathlib.Path(__file__).resolve().parent / 'b.db'}")
app.conf.result_expires = None

@app.task(name="mem.work")
def work(n):
    if n % 10 == 0:
        raise ValueError(f"bad {n}")
    return n * 2
"""


def measure_live(tasks: int, max_tasks: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        cwd = Path(scratch)
        (cwd / "memtasks.py").write_text(textwrap.dedent(LIVE_TASKS))
        env = {**os.environ, "PYTHONPATH": str(cwd)}
        base = [sys.executable, "-m", "celeriac", "-A", "memtasks"]
        worker = subprocess.Popen(
            [*base, "worker", "-c", "2", "-P", "threads", "-l", "WARNING"],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        dash = subprocess.Popen(
            [*base, "dashboard", "--port", "0", "--max-tasks", str(max_tasks)],
            cwd=cwd,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert dash.stderr is not None
            url = dash.stderr.readline().split()[3]
            time.sleep(3)  # let both start (a bench, not a test: no event to await here)
            urllib.request.urlopen(url + "api/me").read()
            before = rss_kib(dash.pid)
            sys.path.insert(0, str(cwd))
            import memtasks  # type: ignore[import-not-found]

            app = memtasks.app
            start = time.perf_counter()
            samples = []
            step = max(1000, tasks // 4)
            for at in range(0, tasks, step):
                sent = []
                for chunk in range(at, min(at + step, tasks), 1000):
                    sent = [
                        app.send_task("mem.work", (n,))
                        for n in range(chunk, min(chunk + 1000, tasks))
                    ]
                seen(url, sent[-1].id)
                samples.append(f"{min(at + step, tasks)}: {rss_kib(dash.pid) / 1024:.1f}")
            elapsed = time.perf_counter() - start
            print(
                f"live: {tasks} tasks in {elapsed:.0f} s (--max-tasks {max_tasks}); dashboard "
                f"RSS {before / 1024:.1f} MiB at start, then after N tasks (MiB): "
                + ", ".join(samples)
            )
        finally:
            dash.terminate()
            worker.terminate()
            dash.wait(20)
            worker.wait(60)


def seen(url: str, task_id: str) -> None:
    """Until the dashboard shows ``task_id`` finished (the last of a batch)."""
    while True:
        with contextlib.suppress(OSError):
            body = urllib.request.urlopen(url + f"api/tasks/{task_id}").read()
            if b'"state":"SUCCESS"' in body or b'"state":"FAILURE"' in body:
                return
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--live", action="store_true")
    options = parser.parse_args()
    for max_tasks in (10_000, options.tasks):
        held, kept, elapsed = measure_state(options.tasks, max_tasks)
        print(
            f"state: {options.tasks} tasks, max_tasks={max_tasks}: keeps {kept}, holds "
            f"{held / 2**20:.1f} MiB ({held / kept:.0f} B a task); "
            f"{options.tasks * 4 / elapsed:,.0f} events/s"
        )
    if options.live:
        measure_live(options.tasks, 10_000)


if __name__ == "__main__":
    main()
