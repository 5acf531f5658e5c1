"""Benchmark celeriac against Celery, Dramatiq, RQ and Huey, side by side, in one run.

    python bench/run.py [--broker sqlite|redis|amqp|postgres|all]
                        [--systems celeriac,celery,dramatiq,rq,huey,procrastinate]
                        [--workloads noop,incr,http,cpu,io] [--cpu-hog]
                        [--n 10000] [--work-n N] [--repeat K] [--quick]

Task bodies (``_work.py``): ``noop``; ``incr``, one sync Redis ``INCR`` with redis-py;
``http``, one ``GET`` to a local HTTP server the bench starts; ``cpu``, 1 ms of
pure-Python CPU (calibrated here, before the run). For each of them, per system:

- enqueue: one synchronous loop of N ``delay()`` calls of the task (tasks/s);
- drain: those N tasks waiting, a worker of 2 processes started (celeriac ``-P prefork
  -c 2``, Celery ``-P prefork -c 2``, Dramatiq ``-p 2 -t 1``, RQ 2 workers, Huey ``-k
  process -w 2``); timed from
  the moment the worker reports ready (tasks finished before that moment are counted
  and left out) until every result is stored (tasks/s);
- round trip: ``delay().get()`` one after the other against that running worker,
  after a warm-up; p50 and p99 (ms);
- with ``--cpu-hog``: the drain again, with a busy loop on every core (one process per
  core, started before the worker and stopped after the last task, each bounded to 300 s);
- I/O: 2,000 tasks that sleep 20 ms each, under each system's best I/O pool, timed
  like drain (tasks/s).

Results are stored by every system (celeriac/Celery result backends, Dramatiq's Results
middleware, RQ's own). On ``--broker sqlite`` only celeriac runs (the peers have no
SQLite broker), with its database in a temporary directory. On ``--broker redis`` the
peers run from their own virtual environment, ``bench/.venvs/peers``, created on first
use; each system uses its own Redis databases (10-15, flushed before and after; see
``_systems.py``). On ``--broker amqp`` celeriac and Celery run on the RabbitMQ at
``--amqp-url``, in a vhost made for the run (``celeriac-bench-<timestamp>``, added with
``rabbitmqctl`` and deleted at the end, on errors and on Ctrl-C too), both with ``rpc://``
results (celeriac's default on RabbitMQ; Celery's ``backend='rpc://'``). ``all`` is SQLite
and Redis. On ``--broker postgres`` celeriac (its PostgreSQL broker and result backend),
procrastinate and Celery on kombu's SQLAlchemy transport run on the PostgreSQL at
``--postgres-url``, each in a database of its own (see ``_pg_systems.py``).
Every worker is started in its own session and stopped by process
group at the end of its phase, on errors, and on Ctrl-C.

The 1-minute load average is recorded at the start and end of every drain (the machine
is shared: read the figures with it). Output: one line per measurement, a table per
broker, and ``bench/results-<broker>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _pg_systems  # noqa: E402
import _procs  # noqa: E402
import _source  # noqa: E402
import _systems  # noqa: E402
import _work  # noqa: E402

PEERS = ("celery", "dramatiq", "rq", "huey")
ALL_SYSTEMS = ("celeriac", *PEERS, "procrastinate")
#: hiredis too: celeriac's own venv has it, and redis-py uses it when present
PEER_REQUIREMENTS = [
    "celery[redis]==5.7.*", "dramatiq[redis]", "rq", "huey", "redis", "hiredis",
]  # fmt: skip
OPTIONAL_PEER_REQUIREMENTS = ["gevent"]
READY_TIMEOUT = 90.0
STALL_TIMEOUT = 30.0

#: the measurements of each work workload: (suffix, label, unit, higher_is_better)
MEASURES = (
    ("enqueue", "enqueue: sync delay() loop", "tasks/s", True),
    ("drain", "drain, 2 processes", "tasks/s", True),
    ("drain_hog", "drain under the CPU hog, 2 processes", "tasks/s", True),
    ("rtt_p50", "round trip delay().get() p50", "ms", False),
    ("rtt_p99", "round trip delay().get() p99", "ms", False),
)
IO_ROW = ("io", "I/O: tasks sleeping 20 ms, best I/O pool", "tasks/s", True)


def cell_key(workload: str, measure: str) -> str:
    """The no-op's cells keep their old names (``drain``); the others are prefixed."""
    return measure if workload == "noop" else f"{workload}.{measure}"


def table_rows(args: argparse.Namespace) -> list[tuple[str, str, str, bool]]:
    """(key, label, unit, higher_is_better) of every row this run measures."""
    rows = []
    for workload, _task, desc in _work.WORKLOADS:
        if workload not in args.workloads:
            continue
        for measure, label, unit, higher in MEASURES:
            if measure == "drain_hog" and not args.cpu_hog:
                continue
            rows.append((cell_key(workload, measure), f"{desc}: {label}", unit, higher))
    if "io" in args.workloads:
        rows.append(IO_ROW)
    return rows


SQLITE_TARGETS = {"drain": 5000.0, "rtt_p50": 5.0}

#: every system that ran, so an interrupted run still empties their databases
_TOUCHED: list[_systems.System] = []


class PhaseError(Exception):
    """A phase failed; the message says why (shown in the table's notes)."""


# -- peers' virtual environment -------------------------------------------------------


def ensure_peers_venv(venv: Path, postgres: bool = False) -> dict[str, Any]:
    """Create ``venv`` with Celery, Dramatiq and RQ on first use (and procrastinate and
    SQLAlchemy for ``postgres``); return their versions."""
    python = venv / "bin" / "python"
    wanted = _pg_systems.PG_PEER_PROBE + "\n" if postgres else ""
    probe = (
        "import json, importlib.metadata as m\n"
        "import celery, kombu.transport.redis, dramatiq.brokers.redis, rq, huey, redis\n"
        f"import hiredis\n{wanted}"
        "v = {n: m.version(n) for n in ('celery', 'dramatiq', 'rq', 'huey', 'redis', 'hiredis')}\n"
        "try:\n    v['gevent'] = m.version('gevent')\nexcept m.PackageNotFoundError:\n"
        "    v['gevent'] = None\n"
        "print(json.dumps(v))\n"
    )

    def versions() -> dict[str, Any] | None:
        if not python.exists():
            return None
        out = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
        )
        return json.loads(out.stdout) if out.returncode == 0 else None

    found = versions()
    if found is not None:
        return found
    print(f"installing the peers into {venv} (first run, or a package missing) ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    extra = _pg_systems.PG_PEER_REQUIREMENTS if postgres else []
    subprocess.run([*pip, *PEER_REQUIREMENTS, *extra], check=True, timeout=1200)
    for extra in OPTIONAL_PEER_REQUIREMENTS:
        if subprocess.run([*pip, extra], check=False, timeout=1200).returncode != 0:
            print(f"  (optional {extra} did not install; falling back to threads)", flush=True)
    found = versions()
    if found is None:
        raise RuntimeError(f"the peers' virtual environment {venv} is unusable")
    return found


# -- phases -----------------------------------------------------------------------------


def verify(system: _systems.System, expected: int) -> dict[str, Any]:
    try:
        return system.verify(expected)
    except RuntimeError as exc:
        raise PhaseError(f"finished, but {exc}") from None


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.errors = 0

    # -- subprocess helpers --------------------------------------------------------
    def _env(self, system: _systems.System, extra: dict[str, str]) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CELERIAC_", "CELERY_", "PYTHON", "VIRTUAL_ENV"))
        }
        env.update(extra)
        env.update(self.args.work_env)
        paths = [str(self.workdir)]
        if system.name == "celeriac" and self.args.celeriac_src is not None:
            paths.insert(0, str(self.args.celeriac_src))
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def driver(
        self, system: _systems.System, env: dict[str, str], args: list[str], timeout: float
    ) -> dict[str, Any]:
        argv = [system.python, str(HERE / "_driver.py"), system.name, system.module, *args]
        try:
            done = _procs.run_driver(argv, cwd=self.workdir, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PhaseError(f"client timed out after {timeout:.0f}s") from None
        for line in done.stdout.splitlines():
            if line.startswith("BENCH-RESULT "):
                result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
                return result
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        raise PhaseError(f"client failed (exit {done.returncode}): {tail}")

    def start_worker(
        self,
        system: _systems.System,
        env: dict[str, str],
        argvs: list[list[str]],
        ready: tuple[str, int],
        phase: str,
    ) -> _procs.WorkerGroup:
        workers = []
        for index, argv in enumerate(argvs):
            name = f"{self.args.current_broker}-{system.name}-{phase}-{index}.log"
            log = self.logs / name.replace(" ", "_")
            workers.append(
                _procs.Worker(
                    f"{system.name} {phase} worker",
                    argv,
                    cwd=self.workdir,
                    env=env,
                    log_path=log,
                    ready_pattern=ready[0],
                    ready_count=ready[1],
                )
            )
        return _procs.WorkerGroup(workers)

    def measure_drain(
        self,
        system: _systems.System,
        env: dict[str, str],
        argvs: list[list[str]],
        ready: tuple[str, int],
        phase: str,
        expected: int,
        timeout: float,
    ) -> tuple[dict[str, Any], _procs.WorkerGroup]:
        """Start the worker on ``expected`` waiting tasks; time from ready to all done.

        Returns the measurement and the still-running worker (the caller stops it)."""
        counter = system.counter(expected)
        load_start = os.getloadavg()
        spawned = time.time()
        group = self.start_worker(system, env, argvs, ready, phase)
        try:
            try:
                ready_at = group.wait_ready(READY_TIMEOUT)
            except (TimeoutError, RuntimeError) as exc:
                raise PhaseError(str(exc)) from None
            t0, c0 = time.time(), counter()
            last, last_change, checked = c0, t0, t0
            while True:
                count = counter()
                now = time.time()
                if count >= expected:
                    t1 = now
                    break
                if count != last:
                    last, last_change = count, now
                if now - last_change > STALL_TIMEOUT:
                    raise PhaseError(
                        f"stalled at {count}/{expected} for {STALL_TIMEOUT:.0f}s ({group.tail()})"
                    )
                if now - t0 > timeout:
                    raise PhaseError(f"timed out at {count}/{expected} after {timeout:.0f}s")
                if now - checked > 0.5:
                    checked = now
                    try:
                        group.check_alive()
                    except RuntimeError as exc:
                        raise PhaseError(str(exc)) from None
                time.sleep(0.005)
        except BaseException:
            group.stop()
            raise
        measured = expected - c0
        if measured < max(1, expected // 10):
            group.stop()
            raise PhaseError(
                f"{c0} of {expected} tasks were done before the worker reported ready; "
                "use a larger --n"
            )
        result = {
            "value": measured / (t1 - t0),
            "unit": "tasks/s",
            "tasks": expected,
            "done_at_ready": c0,
            "measured_tasks": measured,
            "seconds": t1 - t0,
            "startup_s": ready_at - spawned,
            "wall_incl_startup_s": t1 - spawned,
            "rate_incl_startup": expected / (t1 - spawned),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        }
        return result, group

    # -- one system ------------------------------------------------------------------
    def run_system(self, system: _systems.System) -> dict[str, Any]:
        _TOUCHED.append(system)
        source = _work.with_work_tasks(system.name, system.source)
        (self.workdir / f"{system.module}.py").write_text(source)
        cells: dict[str, Any] = {}
        load_before = os.getloadavg()
        try:
            for workload, work_task, _desc in _work.WORKLOADS:
                if workload != "noop" and system.name not in _work.TASK_TEMPLATES:
                    continue  # no work tasks for this system (procrastinate): not run
                if workload in self.args.workloads:
                    task = system.noop_task if workload == "noop" else work_task
                    self.work_phases(system, cells, workload, task)
            if "io" in self.args.workloads:
                self.io_phases(system, cells)
        finally:
            with contextlib.suppress(Exception):
                system.cleanup()
        return {
            "cells": cells,
            "config": {
                "drain_and_rtt_worker": system.cpu_desc,
                "io_pools": {pool.label: pool.desc for pool in system.io_pools},
            },
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        }

    def fail(
        self, system: _systems.System, cells: dict[str, Any], keys: list[str], exc: BaseException
    ) -> None:
        """Record ``exc`` in the cells ``keys`` and go on with the next phase."""
        message = str(exc) if isinstance(exc, PhaseError) else repr(exc)
        if not isinstance(exc, PhaseError):
            message += " :: " + traceback.format_exc(limit=3).strip().splitlines()[-1]
        for key in keys:
            cells[key] = {"error": message}
        self.errors += 1
        self.say(system.name, keys[0], f"ERROR: {message}")

    def work_phases(
        self, system: _systems.System, cells: dict[str, Any], workload: str, task: str
    ) -> None:
        """Enqueue N tasks of ``workload``, drain them with 2 processes, then round trips;
        with ``--cpu-hog``, enqueue and drain them again under the hog."""
        args = self.args
        n = args.n if workload == "noop" else args.work_n
        if system.name == "rq":
            n = min(n, args.rq_n)  # a fork per job: ~50 tasks/s
        key = lambda measure: cell_key(workload, measure)  # noqa: E731
        what = workload if workload != "noop" else ""
        try:
            env = self._env(system, system.prepare())
            enq = self.driver(system, env, ["enqueue", task, str(n)], 60 + n * 0.02)
            system.reply_queue = enq.get("reply_queue")
        except Exception as exc:
            self.fail(system, cells, [key(m) for m in ("enqueue", "drain", "rtt_p50")], exc)
            return
        cells[key("enqueue")] = {"value": enq["rate"], "unit": "tasks/s", **enq}
        self.say(
            system.name,
            f"{what} enqueue".strip(),
            f"{fmt_rate(enq['rate'])} tasks/s ({n:,} delay() in {enq['seconds']:.2f}s)",
        )
        group = None
        try:
            drain, group = self.measure_drain(
                system, env, system.cpu_argv, system.cpu_ready, f"{workload}", n, 60 + n * 0.03
            )
            drain["verify"] = verify(system, n)
            cells[key("drain")] = drain
            self.say_drain(system, f"{what} drain".strip(), drain)
            rtt = self.driver(
                system,
                env,
                ["roundtrip", task, str(args.rtt), str(args.warmup), "30"],
                60 + args.rtt * 0.5,
            )
            cells[key("rtt_p50")] = {"value": rtt["p50_ms"], "unit": "ms", **rtt}
            cells[key("rtt_p99")] = {"value": rtt["p99_ms"], "unit": "ms", **rtt}
            self.say(
                system.name,
                f"{what} rtt".strip(),
                f"p50 {rtt['p50_ms']:.2f} ms, p90 {rtt['p90_ms']:.2f} ms, "
                f"p99 {rtt['p99_ms']:.2f} ms, max {rtt['max_ms']:.1f} ms "
                f"({args.rtt:,} sequential after {args.warmup} warm-up)",
            )
        except Exception as exc:
            missing = [key(m) for m in ("drain", "rtt_p50", "rtt_p99") if key(m) not in cells]
            self.fail(system, cells, missing, exc)
        finally:
            if group is not None:
                group.stop()
        if args.cpu_hog:
            self.hog_phase(system, cells, workload, task, n)

    def hog_phase(
        self, system: _systems.System, cells: dict[str, Any], workload: str, task: str, n: int
    ) -> None:
        """The drain again, with a busy loop on every core from before the worker starts
        until the last task is done."""
        key = cell_key(workload, "drain_hog")
        group = None
        try:
            env = self._env(system, system.prepare())
            enq = self.driver(system, env, ["enqueue", task, str(n)], 60 + n * 0.02)
            system.reply_queue = enq.get("reply_queue")
            with _work.CpuHog() as hog:
                drain, group = self.measure_drain(
                    system, env, system.cpu_argv, system.cpu_ready, f"{workload}-hog", n,
                    60 + n * 0.1,
                )  # fmt: skip
            drain["verify"] = verify(system, n)
            drain["hog_processes"] = hog.cores
            cells[key] = drain
            self.say_drain(system, f"{workload} hog", drain)
        except Exception as exc:
            self.fail(system, cells, [key], exc)
        finally:
            if group is not None:
                group.stop()

    def say_drain(self, system: _systems.System, what: str, drain: dict[str, Any]) -> None:
        load = f"load {drain['loadavg_start'][0]:.1f}->{drain['loadavg_end'][0]:.1f}"
        self.say(
            system.name,
            what,
            f"{fmt_rate(drain['value'])} tasks/s ({drain['measured_tasks']:,} tasks in "
            f"{drain['seconds']:.2f}s after ready; {drain['done_at_ready']:,} done "
            f"during start-up of {drain['startup_s']:.2f}s; "
            f"{fmt_rate(drain['rate_incl_startup'])}/s incl. start-up; {load})",
        )

    def io_phases(self, system: _systems.System, cells: dict[str, Any]) -> None:
        """The I/O workload under each of the system's I/O pools; the best is reported."""
        variants: dict[str, Any] = {}
        for pool in system.io_pools:
            try:
                variants[pool.label] = self.run_io(system, pool)
            except Exception as exc:
                message = str(exc) if isinstance(exc, PhaseError) else repr(exc)
                variants[pool.label] = {"error": message, "pool": pool.desc}
                self.say(system.name, "I/O", f"ERROR ({pool.label}): {message}")
        good = {k: v for k, v in variants.items() if "error" not in v}
        if good:
            best = max(good, key=lambda k: float(good[k]["value"]))
            cells["io"] = {**good[best], "best_pool": best, "variants": variants}
        else:
            errors = "; ".join(f"{k}: {v['error']}" for k, v in variants.items())
            self.fail(system, cells, ["io"], PhaseError(errors))

    def run_io(self, system: _systems.System, pool: _systems.IoPool) -> dict[str, Any]:
        """Enqueue the I/O tasks, start ``pool``'s worker, time it until all are done."""
        args = self.args
        env = self._env(system, system.prepare())
        enq = self.driver(
            system, env, ["enqueue", system.io_task, str(args.io_n)], 60 + args.io_n * 0.02
        )
        system.reply_queue = enq.get("reply_queue")
        io, group = self.measure_drain(
            system, env, pool.argv, pool.ready, f"io-{pool.label}", args.io_n, 60 + args.io_n * 0.05
        )
        try:
            io["verify"] = verify(system, args.io_n)
        finally:
            group.stop()
        io["pool"] = pool.desc
        self.say(
            system.name,
            "I/O",
            f"{fmt_rate(io['value'])} tasks/s with {pool.label} ({io['measured_tasks']:,} x "
            f"sleep 20 ms in {io['seconds']:.2f}s after ready; {io['done_at_ready']:,} done "
            f"during start-up of {io['startup_s']:.2f}s)",
        )
        return io

    def say(self, system: str, what: str, text: str) -> None:
        print(f"[{self.args.current_broker}] {system:<9} {what:<10} {text}", flush=True)


# -- systems per broker -------------------------------------------------------------------


def build_systems(
    broker: str, names: list[str], args: argparse.Namespace, workdir: Path
) -> tuple[list[_systems.System], dict[str, str], dict[str, Any]]:
    """The systems to run on ``broker``; plus errors for the ones that cannot run."""
    systems: list[_systems.System] = []
    unavailable: dict[str, str] = {}
    versions: dict[str, Any] = {"python": platform.python_version()}
    probe: dict[str, Any] = {}
    if "celeriac" in names:
        try:
            probe = _source.probe_celeriac(sys.executable, args.celeriac_src)
            versions["celeriac"] = probe["version"]
            versions["celeriac_from"] = str(Path(probe["file"]).parent)
        except RuntimeError as exc:
            unavailable["celeriac"] = str(exc)
    if broker == "sqlite":
        for name in names:
            if name != "celeriac":
                unavailable[name] = "no SQLite broker (celeriac only)"
        if "celeriac" in names and "celeriac" not in unavailable:
            sqlite_dir = workdir / "sqlite"
            sqlite_dir.mkdir(exist_ok=True)
            systems.append(
                _systems.celeriac(sys.executable, redis_base=None, sqlite_dir=sqlite_dir)
            )
        return systems, unavailable, versions

    if broker == "postgres":
        return _postgres_systems(names, args, unavailable, versions, workdir)
    if broker == "amqp":
        if probe and not (probe["amqp_broker"] and probe["rpc_backend"]):
            unavailable["celeriac"] = "this celeriac has no AMQP broker/rpc:// backend yet"
        return _amqp_systems(names, args, unavailable, versions)
    if probe and not (probe["redis_broker"] and probe["redis_backend"]):
        unavailable["celeriac"] = "this celeriac has no Redis broker/result backend yet"
    return _redis_systems(names, args, unavailable, versions)


def _amqp_systems(
    names: list[str],
    args: argparse.Namespace,
    unavailable: dict[str, str],
    versions: dict[str, Any],
) -> tuple[list[_systems.System], dict[str, str], dict[str, Any]]:
    """celeriac and Celery on the run's vhost (``args.vhost_url``), ``rpc://`` results."""
    systems: list[_systems.System] = []
    url = args.vhost_url
    if "celeriac" in names and "celeriac" not in unavailable:
        systems.append(
            _systems.celeriac(sys.executable, redis_base=None, sqlite_dir=None, amqp_url=url)
        )
    if "celery" not in names:
        return systems, unavailable, versions
    venv = Path(args.peers_venv)
    try:
        versions.update(ensure_peers_venv(venv))
    except Exception as exc:
        unavailable["celery"] = f"peers' venv {venv}: {exc}"
        return systems, unavailable, versions
    gevent = bool(versions.get("gevent")) and not args.no_gevent
    python = str(venv / "bin" / "python")
    systems.append(_systems.celery(python, "", gevent=gevent, amqp_url=url))
    return systems, unavailable, versions


def _postgres_systems(
    names: list[str],
    args: argparse.Namespace,
    unavailable: dict[str, str],
    versions: dict[str, Any],
    workdir: Path,
) -> tuple[list[_systems.System], dict[str, str], dict[str, Any]]:
    """celeriac, procrastinate and Celery (SQLAlchemy transport) on ``--postgres-url``."""
    systems: list[_systems.System] = []
    base = args.postgres_url
    try:
        _pg_systems.ping(base)
    except Exception as exc:
        for name in names:
            unavailable.setdefault(name, f"PostgreSQL at {base} is not reachable: {exc}")
        return systems, unavailable, versions
    if "celeriac" in names and "celeriac" not in unavailable:
        systems.append(_pg_systems.celeriac_pg(sys.executable, base, args.celeriac_pg_query))
    peers = [n for n in names if n in ("procrastinate", "celery")]
    if not peers:
        return systems, unavailable, versions
    venv = Path(args.peers_venv)
    try:
        versions.update(ensure_peers_venv(venv, postgres=True))
        versions["procrastinate"] = _source_version(venv, "procrastinate")
    except Exception as exc:
        for name in peers:
            unavailable[name] = f"peers' venv {venv}: {exc}"
        return systems, unavailable, versions
    python = str(venv / "bin" / "python")
    if "procrastinate" in peers:
        systems.append(_pg_systems.procrastinate(python, venv / "bin", base, workdir))
    if "celery" in peers:
        systems.append(_pg_systems.celery_sqla(python, base))
    return systems, unavailable, versions


def _source_version(venv: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def _redis_systems(
    names: list[str],
    args: argparse.Namespace,
    unavailable: dict[str, str],
    versions: dict[str, Any],
) -> tuple[list[_systems.System], dict[str, str], dict[str, Any]]:
    systems: list[_systems.System] = []
    base = args.redis_url
    try:
        _systems.ping_redis(base)
    except Exception as exc:
        for name in names:
            unavailable.setdefault(name, f"Redis at {base} is not reachable: {exc}")
        return systems, unavailable, versions
    if "celeriac" in names and "celeriac" not in unavailable:
        systems.append(_systems.celeriac(sys.executable, redis_base=base, sqlite_dir=None))
    peers = [n for n in names if n in PEERS]
    if not peers:
        return systems, unavailable, versions
    venv = Path(args.peers_venv)
    try:
        versions.update(ensure_peers_venv(venv))
    except Exception as exc:
        for name in peers:
            unavailable[name] = f"peers' venv {venv}: {exc}"
        return systems, unavailable, versions
    python, bin_dir = str(venv / "bin" / "python"), venv / "bin"
    gevent = bool(versions.get("gevent")) and not args.no_gevent
    makers = {
        "celery": lambda: _systems.celery(python, base, gevent=gevent),
        "dramatiq": lambda: _systems.dramatiq(
            python, bin_dir, base, gevent=gevent, threads=args.dramatiq_threads
        ),
        "rq": lambda: _systems.rq(
            python, bin_dir, base, io_workers=args.rq_io_workers, simple=args.rq_simple
        ),
        "huey": lambda: _systems.huey(python, bin_dir, base, gevent=gevent),
    }
    systems += [makers[name]() for name in peers]
    return systems, unavailable, versions


# -- report ------------------------------------------------------------------------------


def cell_text(cell: dict[str, Any] | None, unit: str) -> str:
    if cell is None:
        return "-"
    if "error" in cell:
        return "error"
    value = float(cell["value"])
    return f"{value:,.0f}" if unit == "tasks/s" else f"{value:.2f}"


def make_table(
    broker: str, results: dict[str, Any], names: list[str], workloads: list[Any]
) -> tuple[str, list[Any]]:
    """Markdown table: workload | each system | celeriac / each peer (plain ratio)."""
    peers = [n for n in names if n != "celeriac"]
    rows: list[dict[str, Any]] = []
    if broker == "sqlite":
        header = ["workload", "celeriac", "target", "met"]
    else:
        header = ["workload", *names, *[f"celeriac/{p}" for p in peers]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, label, unit, higher in workloads:
        better = "higher" if higher else "lower"
        row: dict[str, Any] = {"workload": key, "label": label, "unit": unit, "better": better}
        texts = [f"{label} ({unit}, {better} is better)"]
        values: dict[str, float | None] = {}
        for name in names:
            cell = results.get(name, {}).get("cells", {}).get(key)
            value = float(cell["value"]) if cell and "error" not in cell else None
            values[name] = value
            texts.append(cell_text(cell, unit))
        row["values"] = values
        if broker == "sqlite":
            target = SQLITE_TARGETS.get(key)
            mine = values.get("celeriac")
            if target is None:
                texts += ["", ""]
            else:
                met = mine is not None and (mine >= target if higher else mine <= target)
                texts += [f"{'>=' if higher else '<='} {target:g}", "yes" if met else "NO"]
                row["target"], row["met"] = target, met
        else:
            ratios: dict[str, float | None] = {}
            for peer in peers:
                mine, theirs = values.get("celeriac"), values.get(peer)
                ratio = mine / theirs if mine is not None and theirs else None
                ratios[peer] = ratio
                texts.append("-" if ratio is None else f"{ratio:.2f}x")
            row["celeriac_ratio"] = ratios
        rows.append(row)
        lines.append("| " + " | ".join(texts) + " |")
    return "\n".join(lines), rows


def errors_text(results: dict[str, Any]) -> list[str]:
    notes = []
    for name, result in results.items():
        if "unavailable" in result:
            notes.append(f"- {name}: not run: {result['unavailable']}")
            continue
        for key, cell in result.get("cells", {}).items():
            if "error" in cell:
                notes.append(f"- {name} {key}: {cell['error']}")
    return notes


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result per system from repeated runs: each cell is the run with the median
    value (the lower median for an even count), with every run's value beside it."""
    if len(runs) == 1:
        return runs[0]
    keys = dict.fromkeys(key for run in runs for key in run["cells"])
    cells: dict[str, Any] = {}
    for key in keys:
        found = [run["cells"][key] for run in runs if key in run["cells"]]
        good = sorted((c for c in found if "error" not in c), key=lambda c: float(c["value"]))
        errors = [c["error"] for c in found if "error" in c]
        if good:
            cell = dict(good[(len(good) - 1) // 2])
            cell["runs"] = [float(c["value"]) for c in good]
            if errors:
                cell["failed_runs"] = errors
            cells[key] = cell
        else:
            cells[key] = {"error": errors[0] if errors else "no run"}
    return {
        "cells": cells,
        "config": runs[0]["config"],
        "loadavg_per_run": [(r["loadavg_before"], r["loadavg_after"]) for r in runs],
    }


def print_notes(results: dict[str, Any]) -> dict[str, str]:
    """Print which I/O pool won, the machine load, and what was not measured."""
    pools = {
        name: result["cells"]["io"]["best_pool"]
        for name, result in results.items()
        if "io" in result.get("cells", {}) and "best_pool" in result["cells"]["io"]
    }
    if pools:
        print(
            "\nI/O pool used (best of those tried): "
            + ", ".join(f"{k} {v}" for k, v in pools.items())
        )
    loads = []
    for name, result in results.items():
        pairs = result.get("loadavg_per_run") or (
            [(result["loadavg_before"], result["loadavg_after"])]
            if "loadavg_before" in result
            else []
        )
        if pairs:
            loads.append(name + " " + ", ".join(f"{b[0]:.1f}->{a[0]:.1f}" for b, a in pairs))
    if loads:
        print("1-min load average before->after each system's run: " + "; ".join(loads))
    notes = errors_text(results)
    if notes:
        print("\nnot measured:\n" + "\n".join(notes))
    return pools


#: the systems each broker runs, and why the others do not
BROKER_SYSTEMS = {
    "sqlite": (("celeriac",), "no SQLite broker"),
    "redis": (("celeriac", *PEERS), ""),
    "postgres": (("celeriac", "procrastinate", "celery"), "not a PostgreSQL queue"),
    "amqp": (("celeriac", "celery"), "the RabbitMQ comparison is celeriac and Celery"),
}


def run_broker(broker: str, args: argparse.Namespace, workdir: Path) -> int:
    args.current_broker = broker
    allowed, why_not = BROKER_SYSTEMS[broker]
    names = [n for n in args.systems if n in allowed]
    skipped = [n for n in args.systems if n not in names]
    if skipped:
        print(f"[{broker}] skipping {', '.join(skipped)}: {why_not}", flush=True)
    if not names:
        return 0
    if broker != "amqp":
        return _run_broker(broker, names, args, workdir)
    vhost = f"celeriac-bench-{dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    user = urlsplit(args.amqp_url).username or "guest"
    try:
        _systems.ping_amqp(args.amqp_url)
        args.rabbitmq_version = _systems.rabbitmq_version(args.rabbitmqctl)
        _systems.add_vhost(args.rabbitmqctl, vhost, unquote(user))
    except Exception as exc:
        print(f"[{broker}] RabbitMQ at {args.amqp_url} is not usable: {exc}", flush=True)
        return len(names)
    args.vhost, args.vhost_url = vhost, _systems.amqp_vhost_url(args.amqp_url, vhost)
    print(f"[{broker}] RabbitMQ {args.rabbitmq_version}, private vhost {vhost}", flush=True)
    try:
        return _run_broker(broker, names, args, workdir)
    finally:
        # workers first (they hold connections to the vhost), then the vhost, always
        _procs.stop_all()
        try:
            _systems.delete_vhost(args.rabbitmqctl, vhost)
            print(f"[{broker}] deleted vhost {vhost}", flush=True)
        except Exception as exc:
            print(f"[{broker}] could not delete vhost {vhost}: {exc}", file=sys.stderr)


def _run_broker(broker: str, names: list[str], args: argparse.Namespace, workdir: Path) -> int:
    systems, unavailable, versions = build_systems(broker, names, args, workdir)
    bench = Bench(args, workdir)
    results: dict[str, Any] = {n: {"unavailable": why} for n, why in unavailable.items()}
    for name, why in unavailable.items():
        print(f"[{broker}] {name:<9} not run: {why}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {system.name: [] for system in systems}
    for round_no in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"[{broker}] round {round_no} of {args.repeat}", flush=True)
        # systems take turns, and the order rotates every round, so that load from other
        # processes (and the wake of the previous system) spreads evenly
        shift = (round_no - 1) % max(1, len(systems))
        for system in systems[shift:] + systems[:shift]:
            runs[system.name].append(bench.run_system(system))
    for name, system_runs in runs.items():
        results[name] = merge_runs(system_runs)
    table, rows = make_table(broker, results, names, table_rows(args))
    params = {
        "n": args.n,
        "rtt": args.rtt,
        "warmup": args.warmup,
        "io_n": args.io_n,
        "work_n": args.work_n,
        "workloads": args.workloads,
        "cpu_hog": args.cpu_hog,
        "cpu_loops_per_ms": args.cpu_loops,
        "repeat": args.repeat,
    }
    title = (
        f"{broker} broker: N={args.n:,} no-op, {args.work_n:,} of each other workload "
        f"(enqueue, drain), {args.rtt:,} round trips after {args.warmup} warm-up"
    )
    if "io" in args.workloads:
        title += f", {args.io_n:,} I/O tasks"
    if args.cpu_hog:
        title += "; CPU hog on every core for the hog rows"
    if broker == "amqp":
        title = (
            f"RabbitMQ {args.rabbitmq_version} broker, rpc:// results for both"
            + title.split(" broker", 1)[1]
        )
    if args.repeat > 1:
        title += f"; median of {args.repeat} runs"
    if broker == "postgres":
        table += "\n\n" + _pg_systems.targets_text(results)
    print(f"\n## {title}\n\n{table}")
    pools = print_notes(results)
    print()
    report = {
        "broker": broker,
        "title": title,
        "command": " ".join(["python", "bench/run.py", *sys.argv[1:]]),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_at_end": os.getloadavg(),
        },
        "versions": versions,
        "celeriac_git": _source.git_state(args.celeriac_sha),
        "params": params,
        "redis_url": args.redis_url if broker == "redis" else None,
        "amqp_url": args.amqp_url if broker == "amqp" else None,
        "postgres_url": args.postgres_url if broker == "postgres" else None,
        "amqp_vhost": getattr(args, "vhost", None) if broker == "amqp" else None,
        "table_markdown": table,
        "io_best_pool": pools,
        "rows": rows,
        "systems": results,
    }
    tag = f"-{args.tag}" if args.tag else ""
    out = Path(args.out_dir) / f"results-{broker}{tag}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}", flush=True)
    return bench.errors + len(unavailable)


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--broker", choices=["sqlite", "redis", "amqp", "postgres", "all"], default="all"
    )
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    parser.add_argument("--n", type=int, default=None, help="tasks to enqueue/drain (10000)")
    parser.add_argument("--rtt", type=int, default=None, help="round trips (1000)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up round trips (50)")
    parser.add_argument("--io-n", type=int, default=None, help="I/O tasks (2000)")
    parser.add_argument(
        "--work-n", type=int, default=None, help="tasks of incr/http/cpu to drain (--n)"
    )
    parser.add_argument(
        "--workloads",
        default="noop,incr,http,cpu,io",
        help="which to run, of noop (no-op), incr (one sync Redis INCR), http (one local "
        "HTTP GET), cpu (1 ms of Python CPU), io (20 ms sleeps, best I/O pool)",
    )
    parser.add_argument(
        "--cpu-hog",
        action="store_true",
        help="also drain each workload with a busy loop on every core",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument(
        "--amqp-url", default="amqp://guest:guest@127.0.0.1:5672", help="RabbitMQ (no vhost)"
    )
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--celeriac-pg-query",
        default="",
        help="query of celeriac's postgresql:// URL, e.g. synchronous_commit=off",
    )
    parser.add_argument("--rabbitmqctl", default="rabbitmqctl", help="adds/deletes the vhost")
    parser.add_argument("--peers-venv", default=str(HERE / ".venvs" / "peers"))
    parser.add_argument("--rq-io-workers", type=int, default=16)
    parser.add_argument(
        "--rq-n", type=int, default=500, help="at most this many tasks per RQ drain (500)"
    )
    parser.add_argument(
        "--rq-simple", action="store_true", help="RQ drain/round trip with SimpleWorker (no fork)"
    )
    parser.add_argument(
        "--dramatiq-threads", type=int, default=1, help="threads per Dramatiq process (drain)"
    )
    parser.add_argument("--no-gevent", action="store_true", help="peers' I/O on threads")
    parser.add_argument("--out-dir", default=str(HERE))
    parser.add_argument("--tag", default="", help="results-<broker>-<tag>.json")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--celeriac-ref",
        default=None,
        help="benchmark src/ of this git commit (exported with git archive), e.g. HEAD",
    )
    source.add_argument(
        "--celeriac-src", type=Path, default=None, help="benchmark celeriac from this src/ dir"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="run every system K times; report medians"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.n = args.n or (1000 if quick else 10_000)
    args.rtt = args.rtt or (200 if quick else 1000)
    args.warmup = args.warmup if args.warmup is not None else (20 if quick else 50)
    args.io_n = args.io_n or (500 if quick else 2000)
    args.work_n = args.work_n or args.n
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    known = [w for w, _, _ in _work.WORKLOADS] + ["io"]
    if [w for w in args.workloads if w not in known]:
        parser.error(f"unknown workload(s) in {args.workloads}; choose from {', '.join(known)}")
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in ALL_SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {unknown}; choose from {', '.join(ALL_SYSTEMS)}")
    host = args.redis_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host not in {"127.0.0.1", "localhost", "[::1]"} and not host.startswith("127."):
        parser.error("--redis-url must be a loopback address")
    for option, url in (("--amqp-url", args.amqp_url), ("--postgres-url", args.postgres_url)):
        host = urlsplit(url).hostname or ""
        if host not in {"127.0.0.1", "localhost", "::1"} and not host.startswith("127."):
            parser.error(f"{option} must be a loopback address")
    return args


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-bench-"))
    args.celeriac_sha = None
    if args.celeriac_ref:
        args.celeriac_src, args.celeriac_sha = _source.export_ref(
            args.celeriac_ref, workdir / "celeriac-ref"
        )
        print(f"benchmarking celeriac at {args.celeriac_sha[:12]} ({args.celeriac_ref})")
    brokers = ["sqlite", "redis"] if args.broker == "all" else [args.broker]
    failures = 0
    interrupted = False
    http = _work.HttpServer() if "http" in args.workloads else None
    args.cpu_loops = _work.calibrate_cpu()
    work_redis = _systems.redis_db_url(args.redis_url, _work.WORK_DB)
    args.work_env = {
        "BENCH_WORK_REDIS_URL": work_redis,
        "BENCH_WORK_HTTP": http.address if http else "",
        "BENCH_CPU_LOOPS": str(args.cpu_loops),
    }
    print(f"cpu workload: {args.cpu_loops:,} loop steps = 1 ms of CPU here", flush=True)
    try:
        for broker in brokers:
            failures += run_broker(broker, args, workdir)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping the workers this run started", file=sys.stderr)
    finally:
        _procs.stop_all()
        if http is not None:
            http.stop()
        with contextlib.suppress(Exception):
            _systems.delete_key(work_redis, _work.WORK_KEY)
        for system in _TOUCHED:
            with contextlib.suppress(Exception):
                system.cleanup()
        if args.keep or failures or interrupted:
            print(f"logs and task modules kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if interrupted:
        return 130
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
