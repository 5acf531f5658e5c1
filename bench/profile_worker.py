"""Profile celeriac's drain (or enqueue) with py-spy and print the hot spots.

    python bench/profile_worker.py [--phase drain|enqueue] [--broker sqlite|redis|amqp]
                            [--n 30000] [--pool prefork] [--concurrency 2]

Needs py-spy (``pip install py-spy``). N no-op tasks are enqueued to a fresh SQLite file
in a temp dir (or Redis databases 10/11, flushed before and after; or, with ``--broker
amqp``, a RabbitMQ vhost made for the run with ``rabbitmqctl`` and deleted at the end,
results by ``rpc://`` as in ``run.py``); then the worker
(``-P prefork -c 2`` by default) starts, and once it is ready py-spy attaches to each of
its processes until every result is stored (``--whole``: the worker runs under py-spy
from its start). ``--phase enqueue`` profiles the ``delay()`` loop instead. The raw samples are kept
as ``bench/profile-<phase>-<broker>.txt`` (collapsed stacks, for flame graph tools) and
summarised: the functions with the most samples on top of the stack (self) and anywhere
on it (total), as a share of all non-idle samples of the worker processes.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _procs  # noqa: E402
import _source  # noqa: E402
import _systems  # noqa: E402

#: leaf frames where a thread blocks in C (queue get, epoll, select, sleep): py-spy counts
#: them as active when attached, so they are reported apart as waiting
WAIT_LEAVES = (
    "ThreadPool._work (",
    "EpollSelector.select (",
    "Supervisor.run (",
    "Transaction._wait_for_writer (",
    "Event.wait (threading.py)",
    "Condition.wait (threading.py)",
)


def summarise(raw: Path, top: int) -> str:
    """Self and total sample shares per function from py-spy's collapsed stacks, with
    blocking waits counted apart."""
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    waits: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        if frames[-1].startswith(WAIT_LEAVES):
            waits[frames[-1]] += count
            continue
        self_counts[frames[-1]] += count
        for frame in set(frames):
            total_counts[frame] += count
    busy = samples - sum(waits.values())
    if not busy:
        return "no samples"
    out = [f"{samples} samples; blocked waits (left out below):"]
    out += [f"  {c / samples:6.1%}  {f}" for f, c in waits.most_common()]
    out += ["", f"{busy} busy samples; top {top} by self time:"]
    out += [f"  {c / busy:6.1%}  {f}" for f, c in self_counts.most_common(top)]
    entry = ("celeriac/cli.py", "celeriac/__main__.py", "celeriac/worker/supervisor.py")
    mine = [
        (f, c)
        for f, c in total_counts.most_common()
        if "(celeriac/" in f and not any(e in f for e in entry) and "Worker.run" not in f
    ]
    out += ["", f"top {top} celeriac functions by total time (inclusive, busy samples):"]
    out += [f"  {c / busy:6.1%}  {f}" for f, c in mine[:top]]
    return "\n".join(out)


def _short(frame: str) -> str:
    """``fn (/long/path/site-packages/pkg/mod.py:12)`` -> ``fn (pkg/mod.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("/site-packages/", "/src/", "/lib/python3.11/", "/lib/python3.12/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", choices=["drain", "enqueue"], default="drain")
    parser.add_argument("--broker", choices=["sqlite", "redis", "amqp"], default="sqlite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument(
        "--amqp-url", default="amqp://guest:guest@127.0.0.1:5672", help="RabbitMQ (no vhost)"
    )
    parser.add_argument("--rabbitmqctl", default="rabbitmqctl", help="adds/deletes the vhost")
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--native", action="store_true", help="include C frames (py-spy)")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    parser.add_argument("--celeriac-ref", default=None, help="profile this git commit")
    parser.add_argument(
        "--whole", action="store_true", help="profile the worker from start-up (not attached)"
    )
    parser.add_argument("--events", action="store_true", help="worker with -E (task events)")
    parser.add_argument(
        "--listen", action="store_true", help="with --events: `celeriac events --dump` listens"
    )
    args = parser.parse_args()
    args.py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(args.py_spy).exists():
        parser.error("py-spy not found: pip install py-spy")
    return args


def wait_drained(system: _systems.System, n: int, worker: _procs.Worker) -> float:
    count = system.counter(n)
    start = time.time()
    while count() < n:
        worker.check_alive()
        if time.time() - start > 600:
            raise TimeoutError("drain took over 600 s")
        time.sleep(0.01)
    return time.time() - start


def profile_drain(
    args: argparse.Namespace,
    system: _systems.System,
    spy: list[str],
    workdir: Path,
    env: dict[str, str],
    raw: Path,
) -> None:
    """Profile the worker while it drains ``args.n`` tasks.

    By default py-spy attaches to each worker process once the worker is ready, so
    start-up is left out; ``--whole`` runs the whole worker under py-spy instead."""
    worker_argv = [sys.executable, "-m", "celeriac", "-A", system.module, "worker"]
    worker_argv += ["-P", args.pool, "-c", str(args.concurrency)]
    worker_argv += ["-E"] if args.events else []
    ready = r"ready\.\s*$"
    listener = None
    if args.events and args.listen:  # a monitor reading every event (output dropped)
        dump = [sys.executable, "-m", "celeriac", "-A", system.module, "events", "--dump"]
        listener = subprocess.Popen(dump, cwd=workdir, env=env, stdout=subprocess.DEVNULL)
        time.sleep(2.0)  # its import and subscribe (no signal to wait for)
    log = workdir / "worker.log"
    if args.whole:
        argv = [*spy, "-o", str(raw), "--subprocesses", "--", *worker_argv]
        worker = _procs.Worker("profiled worker", argv, cwd=workdir, env=env, log_path=log,
                               ready_pattern=ready)  # fmt: skip
        worker.wait_ready(120)
        seconds = wait_drained(system, args.n, worker)
        # stop the worker, not py-spy: py-spy writes its file when its target exits
        for pid in _procs.descendants(worker.pid)[:1]:
            os.kill(pid, signal.SIGTERM)
        worker.proc.wait(timeout=60)
        worker.stop()
    else:
        worker = _procs.Worker("worker", worker_argv, cwd=workdir, env=env, log_path=log,
                               ready_pattern=ready)  # fmt: skip
        worker.wait_ready(120)
        pids = [worker.pid, *_procs.descendants(worker.pid)]
        spies = [
            subprocess.Popen(
                [*spy, "-o", f"{raw}.{pid}", "--pid", str(pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for pid in pids
        ]
        try:
            seconds = wait_drained(system, args.n, worker)
        finally:
            for proc in spies:
                proc.send_signal(signal.SIGINT)
            for proc in spies:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            worker.stop()
        with raw.open("w") as out:
            for pid in pids:
                part = Path(f"{raw}.{pid}")
                if part.exists():
                    out.write(part.read_text())
                    part.unlink()
    if listener is not None:
        listener.terminate()
        listener.wait(30)
    print(f"drained {args.n} tasks in {seconds:.2f}s (under py-spy)")


def _reply_queue(stdout: str) -> str | None:
    """The reply queue the enqueuing driver reported (``rpc://`` results)."""
    for line in stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            found = json.loads(line.split(" ", 1)[1]).get("reply_queue")
            return str(found) if found else None
    return None


def main() -> int:
    args = parse_args()
    vhost = None
    if args.broker == "amqp":
        vhost = f"celeriac-profile-{dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
        user = unquote(urlsplit(args.amqp_url).username or "guest")
        _systems.add_vhost(args.rabbitmqctl, vhost, user)
    try:
        return _main(args, vhost)
    finally:
        if vhost is not None:
            _systems.delete_vhost(args.rabbitmqctl, vhost)


def _main(args: argparse.Namespace, vhost: str | None) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-profile-"))
    sqlite_dir = workdir if args.broker == "sqlite" else None
    redis_base = args.redis_url if args.broker == "redis" else None
    amqp_url = _systems.amqp_vhost_url(args.amqp_url, vhost) if vhost else None
    system = _systems.celeriac(
        sys.executable, redis_base=redis_base, sqlite_dir=sqlite_dir, amqp_url=amqp_url
    )
    (workdir / f"{system.module}.py").write_text(system.source)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERIAC_", "PYTHON"))}
    paths = [str(workdir)]
    if args.celeriac_ref:
        src, sha = _source.export_ref(args.celeriac_ref, workdir / "celeriac-ref")
        paths.insert(0, str(src))
        print(f"profiling celeriac at {sha[:12]} ({args.celeriac_ref})")
    env.update(system.prepare(), PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")
    raw = HERE / f"profile-{args.phase}-{args.broker}.txt"
    spy = [args.py_spy, "record", "--format", "raw", "--rate", str(args.rate)]
    spy += ["--native"] * args.native + ["--gil"] * args.gil
    driver = [sys.executable, str(HERE / "_driver.py"), "celeriac", system.module]
    enqueue = [*driver, "enqueue", system.noop_task, str(args.n)]
    try:
        if args.phase == "enqueue":
            argv = [*spy, "-o", str(raw), "--", *enqueue]
            done = _procs.run_driver(argv, cwd=workdir, env=env, timeout=600)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH-RESULT")]
            print(lines[0] if lines else done.stderr.strip())
        else:
            done = _procs.run_driver(enqueue, cwd=workdir, env=env, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"enqueue failed: {done.stderr.strip()[-2000:]}")
            system.reply_queue = _reply_queue(done.stdout)
            profile_drain(args, system, spy, workdir, env, raw)
    finally:
        _procs.stop_all()
        system.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"raw samples: {raw}\n")
    print(summarise(raw, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
