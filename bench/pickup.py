"""Pick-up latency: how long after a producer sends a task an *idle* worker
starts it (issue 15), for a celeriac worker beside a Celery worker, from three producers
that are not celeriac: a real Celery client (the peers' venv, ``bench/.venvs/peers``),
celery-node and celery-ts (npm packages, installed on first use with the machine's npm
into ``bench/.node``, which is not committed).

Each worker (``-P prefork -c 2``, its own Redis database, flushed: celeriac 10, Celery 12)
gets the producers in turn; a producer sends one task at a time, after a random idle gap
(``--gap``, default 50-150 ms, so the worker is waiting when the task comes). The
producer notes the wall-clock time just before its ``apply_async``; the task's first
line RPUSHes ``time.time()`` to a list the driver BLPOPs; the difference is the pick-up
delay (send, publish, wake-up, fetch, hand-over to a child, task start). The first
``--warmup`` sends of each pair are dropped (connections being made).

    flock /tmp/celeriac-bench.lock python bench/pickup.py [--n 200] [--celeriac-ref REF]

``--broker amqp`` runs the same on RabbitMQ (a vhost made for the run, deleted after;
the task-start list stays on Redis); ``--broker sqlite``, a celeriac worker fed by a
celeriac producer in another process (nothing else speaks that broker). Writes
``bench/results-pickup-<broker>.json`` (every delay) and prints p50/p90/p99/max in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _procs  # noqa: E402
import _source  # noqa: E402
import _systems  # noqa: E402
import run as _run  # noqa: E402

NODE_DIR = HERE / ".node"
NODE_PACKAGES = ["celery-node@0.5.9", "celery-ts@1.2.3"]
STARTS = "pickup.starts"
TASK = "pickup.started"

CELERIAC_TASKS = f"""\
import os, time
import redis
from celeriac import Celery

app = Celery("pickup", broker=os.environ["BENCH_BROKER_URL"],
             backend=os.environ["BENCH_RESULT_URL"])
_starts = redis.Redis.from_url(os.environ["BENCH_RESULT_URL"])

@app.task(name="{TASK}")
def started():
    _starts.rpush("{STARTS}", repr(time.time()))
"""

CELERY_TASKS = f"""\
import os, sys, time
import redis
from celery import Celery
from celery.signals import worker_ready

app = Celery("pickup", broker=os.environ["BENCH_BROKER_URL"],
             backend=os.environ["BENCH_RESULT_URL"])
_starts = redis.Redis.from_url(os.environ["BENCH_RESULT_URL"])

@worker_ready.connect
def _announce(**_kwargs):
    print("BENCH-READY", os.getpid(), file=sys.stderr, flush=True)

@app.task(name="{TASK}")
def started():
    _starts.rpush("{STARTS}", repr(time.time()))
"""

# Producers: read a line per task from stdin, send it, print the send time (epoch s).
CELERY_PRODUCER = f"""\
import os, sys, time
from celery import Celery

app = Celery("pickup", broker=os.environ["BENCH_BROKER_URL"],
             backend=os.environ["BENCH_RESULT_URL"])
for _line in sys.stdin:
    sent = time.time()
    app.send_task("{TASK}")
    print(repr(sent), flush=True)
"""

CELERIAC_PRODUCER = f"""\
import os, sys, time
from celeriac import Celery

app = Celery("pickup", broker=os.environ["BENCH_BROKER_URL"])
for _line in sys.stdin:
    sent = time.time()
    app.send_task("{TASK}")
    print(repr(sent), flush=True)
"""

CELERY_NODE_PRODUCER = f"""\
const celery = require("celery-node");
const readline = require("readline");
const client = celery.createClient(process.env.BENCH_BROKER_URL, process.env.BENCH_RESULT_URL);
const task = client.createTask("{TASK}");
const now = () => (performance.timeOrigin + performance.now()) / 1000;
// its result listener PSUBSCRIBEs celery-task-meta-* on the whole server and throws on
// any message there it cannot parse (other tests' results): keep sending
process.on("uncaughtException", (e) => console.error(String(e)));
readline.createInterface({{input: process.stdin}}).on("line", () => {{
  const sent = now();
  task.applyAsync([]);
  console.log(String(sent));
}}).on("close", () => {{ client.disconnect(); process.exit(0); }});
"""

CELERY_TS_PRODUCER = f"""\
const Celery = require("celery-ts");
const readline = require("readline");
const client = Celery.createClient({{
  brokerUrl: process.env.BENCH_BROKER_URL, resultBackend: process.env.BENCH_RESULT_URL,
}});
const task = client.createTask("{TASK}");
const now = () => (performance.timeOrigin + performance.now()) / 1000;
// its result listener PSUBSCRIBEs celery-task-meta-* on the whole server and throws on
// any message there it cannot parse (other tests' results): keep sending
process.on("uncaughtException", (e) => console.error(String(e)));
readline.createInterface({{input: process.stdin}}).on("line", () => {{
  const sent = now();
  task.applyAsync({{args: [], kwargs: {{}}}});
  console.log(String(sent));
}}).on("close", () => {{ client.disconnect(); process.exit(0); }});
"""

PRODUCERS = ("celery", "celery-node", "celery-ts")
WORKERS = ("celeriac", "celery")
#: on SQLite only celeriac speaks the broker's protocol
SQLITE_PRODUCERS = ("celeriac",)


def ensure_node_packages() -> dict[str, str]:
    """celery-node and celery-ts in ``bench/.node`` (npm, first use); their versions."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("needs node and npm on PATH for celery-node and celery-ts")
    modules = NODE_DIR / "node_modules"
    if not all((modules / p.split("@")[0] / "package.json").exists() for p in NODE_PACKAGES):
        NODE_DIR.mkdir(exist_ok=True)
        print(f"installing {', '.join(NODE_PACKAGES)} into {NODE_DIR} ...", flush=True)
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR), *NODE_PACKAGES],
            check=True,
            timeout=600,
            stdout=subprocess.DEVNULL,
        )
    versions = {}
    for p in NODE_PACKAGES:
        name = p.split("@")[0]
        versions[name] = json.loads((modules / name / "package.json").read_text())["version"]
    return versions


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.peers_python = str(Path(args.peers_venv) / "bin" / "python")
        base = args.redis.rstrip("/")
        dbs = dict(zip(WORKERS, args.dbs, strict=True))
        # (broker, the Redis database of the results and of the task-start list)
        self.urls = {k: (f"{base}/{db}", f"{base}/{db}") for k, db in dbs.items()}
        if args.broker == "amqp":
            self.urls = {k: (args.amqp_vhost_url, r) for k, (_b, r) in self.urls.items()}
        elif args.broker == "sqlite":
            db_file = workdir / "broker.sqlite3"
            self.urls = {k: (f"sqlite:///{db_file}", r) for k, (_b, r) in self.urls.items()}
        (workdir / "pickup_celeriac_tasks.py").write_text(CELERIAC_TASKS)
        (workdir / "pickup_celery_tasks.py").write_text(CELERY_TASKS)
        (workdir / "celery_producer.py").write_text(CELERY_PRODUCER)
        (workdir / "celeriac_producer.py").write_text(CELERIAC_PRODUCER)
        (workdir / "celery_node_producer.js").write_text(CELERY_NODE_PRODUCER)
        (workdir / "celery_ts_producer.js").write_text(CELERY_TS_PRODUCER)

    def env(self, worker: str) -> dict[str, str]:
        broker, result = self.urls[worker]
        paths = [str(self.workdir)]
        if worker == "celeriac" and self.args.celeriac_src is not None:
            paths.insert(0, str(self.args.celeriac_src))
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(paths),
            "NODE_PATH": str(NODE_DIR / "node_modules"),
            "BENCH_BROKER_URL": broker,
            "BENCH_RESULT_URL": result,
        }

    def flush(self, worker: str) -> None:
        for url in self.urls[worker]:
            if url.startswith("redis"):
                with redis.Redis.from_url(url) as r:
                    r.flushdb()

    def start_worker(self, worker: str) -> _procs.Worker:
        if worker == "celeriac":
            argv = [sys.executable, "-m", "celeriac", "-A", "pickup_celeriac_tasks", "worker"]
            ready = r"ready\.\s*$"
        else:
            argv = [self.peers_python, "-m", "celery", "-A", "pickup_celery_tasks", "worker"]
            argv += ["-l", "warning", "--without-gossip", "--without-mingle"]
            ready = "BENCH-READY"
        argv += ["-P", "prefork", "-c", "2"]
        proc = _procs.Worker(
            worker,
            argv,
            cwd=self.workdir,
            env=self.env(worker),
            log_path=self.workdir / f"{worker}.log",
            ready_pattern=ready,
        )
        proc.wait_ready(_run.READY_TIMEOUT)
        return proc

    def producer_argv(self, producer: str) -> list[str]:
        if producer == "celery":
            return [self.peers_python, str(self.workdir / "celery_producer.py")]
        if producer == "celeriac":
            return [sys.executable, str(self.workdir / "celeriac_producer.py")]
        script = "celery_node_producer.js" if producer == "celery-node" else "celery_ts_producer.js"
        return ["node", str(self.workdir / script)]

    def measure(self, worker: str, producer: str) -> list[float]:
        """Pick-up delays (s) of ``--n`` tasks sent one at a time by ``producer``."""
        args = self.args
        starts = redis.Redis.from_url(self.urls[worker][1])
        proc = subprocess.Popen(
            self.producer_argv(producer),
            cwd=self.workdir,
            env=self.env(worker),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        delays: list[float] = []
        try:
            for i in range(args.warmup + args.n):
                time.sleep(random.uniform(*args.gap))  # the worker goes idle
                proc.stdin.write("go\n")
                proc.stdin.flush()
                sent = float(proc.stdout.readline())
                got = starts.blpop([STARTS], timeout=30)
                if got is None:
                    raise RuntimeError(f"{worker} ran no task of {producer}'s within 30 s")
                if i >= args.warmup:
                    delays.append(float(got[1]) - sent)
        finally:
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            starts.close()
        return delays

    def run(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for worker in self.args.workers:
            if self.args.broker == "sqlite" and worker != "celeriac":
                continue
            self.flush(worker)
            proc = self.start_worker(worker)
            try:
                for producer in self.args.producers:
                    delays = self.measure(worker, producer)
                    results[f"{worker}<-{producer}"] = delays
                    print(f"  {worker:8} <- {producer:11} {summary(delays)}", flush=True)
            finally:
                proc.stop()
                self.flush(worker)
        return results


def summary(delays: list[float]) -> str:
    ms = [d * 1000 for d in delays]
    return (
        f"p50 {percentile(ms, 0.5):7.2f} ms  p90 {percentile(ms, 0.9):7.2f}  "
        f"p99 {percentile(ms, 0.99):7.2f}  max {max(ms):7.2f}  (n={len(ms)})"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="tasks per producer and worker")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--gap", type=float, nargs=2, default=(0.05, 0.15), metavar=("MIN", "MAX"))
    parser.add_argument("--broker", choices=("redis", "amqp", "sqlite"), default="redis")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="server (no db)")
    parser.add_argument(
        "--amqp-url", default="amqp://guest:guest@127.0.0.1:5672", help="RabbitMQ (no vhost)"
    )
    parser.add_argument("--rabbitmqctl", default="rabbitmqctl", help="adds/deletes the vhost")
    parser.add_argument(
        "--dbs", default="10,12", help="the celeriac and Celery databases (flushed)"
    )
    parser.add_argument("--workers", default=",".join(WORKERS))
    parser.add_argument("--producers", default=None, help="default: all for the broker")
    parser.add_argument("--celeriac-ref", default=None, help="benchmark src/ of this commit")
    parser.add_argument("--peers-venv", default=str(HERE / ".venvs" / "peers"))
    parser.add_argument("--out", default=None, help="default: results-pickup-<broker>.json")
    args = parser.parse_args(argv)
    args.workers = [w for w in args.workers.split(",") if w]
    if args.producers is None:
        args.producers = ",".join(SQLITE_PRODUCERS if args.broker == "sqlite" else PRODUCERS)
    args.producers = [p for p in args.producers.split(",") if p]
    args.dbs = [int(db) for db in args.dbs.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-pickup-"))
    args.celeriac_src, sha = None, None
    if args.celeriac_ref:
        args.celeriac_src, sha = _source.export_ref(args.celeriac_ref, workdir / "celeriac-ref")
    versions = _run.ensure_peers_venv(Path(args.peers_venv))
    if any(p != "celery" for p in args.producers):
        versions.update(ensure_node_packages())
    load = os.getloadavg()
    print(f"pick-up latency on {args.broker}, n={args.n} per pair, load {load[0]:.1f}", flush=True)
    vhost = None
    if args.broker == "amqp":
        vhost = f"celeriac-pickup-{int(time.time())}"
        user = urlsplit(args.amqp_url).username or "guest"
        _systems.add_vhost(args.rabbitmqctl, vhost, unquote(user))
        args.amqp_vhost_url = _systems.amqp_vhost_url(args.amqp_url, vhost)
    try:
        results = Bench(args, workdir).run()
    finally:
        _procs.stop_all()
        if vhost is not None:
            _systems.delete_vhost(args.rabbitmqctl, vhost)
    report = {
        "broker": args.broker,
        "celeriac_ref": args.celeriac_ref,
        "celeriac_sha": sha,
        "versions": versions,
        "python": platform.python_version(),
        "load_before": load,
        "load_after": os.getloadavg(),
        "summary_ms": {
            k: {
                "p50": percentile(v, 0.5) * 1000,
                "p90": percentile(v, 0.9) * 1000,
                "p99": percentile(v, 0.99) * 1000,
                "max": max(v) * 1000,
                "mean": statistics.fmean(v) * 1000,
            }
            for k, v in results.items()
        },
        "delays_s": results,
    }
    out = Path(args.out or HERE / f"results-pickup-{args.broker}.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
