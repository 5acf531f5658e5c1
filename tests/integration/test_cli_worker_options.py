"""``celeriac worker`` takes every option of ``celery worker`` (read from the real Celery
5.7 installed beside it) and every global option, each implemented or warned about."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import click
import pytest
from celery.bin.beat import beat as celery_beat_command
from celery.bin.celery import celery as celery_group
from celery.bin.worker import worker as celery_worker_command

from celeriac import Celery
from celeriac._cli.beat import beat as celeriac_beat_command
from celeriac._cli.worker import NO_MEANING, auto_concurrency
from celeriac._cli.worker import worker as celeriac_worker_command
from celeriac.cli import cli
from celeriac.exceptions import TimeLimitExceeded
from support import WorkerProcess, wait_until, write_module

TASKS = """
import os, pathlib, time
from celeriac import Celery
from celeriac.exceptions import SoftTimeLimitExceeded
HERE = pathlib.Path(__file__).resolve().parent
app = Celery("opts", broker=f"sqlite:///{HERE / 'b.db'}")
HOARD = []

@app.task
def add(x, y):
    return x + y

@app.task
def pid():
    return os.getpid()

@app.task
def grow(mib):
    HOARD.append(bytearray(mib * 1024 * 1024))
    return os.getpid()

@app.task
def nap(seconds):
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "soft"
    return "slept"

@app.task
def hold(flag):
    deadline = time.monotonic() + 20
    while not (HERE / flag).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.environ["WORKER_NAME"]

@app.task
def where():
    return os.environ["WORKER_NAME"]
"""


def option_names(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names - {"--help", "-h"}


def client(tmp_path: Path) -> Celery:
    return Celery("opts", broker=f"sqlite:///{tmp_path / 'b.db'}", set_as_current=False)


def test_every_celery_worker_option_is_a_celeriac_worker_option() -> None:
    missing = option_names(celery_worker_command) - option_names(celeriac_worker_command)
    assert not missing, f"celery worker options celeriac lacks: {sorted(missing)}"
    for name in NO_MEANING:  # each warned-about option is one of Celery's
        assert name in {p.name for p in celery_worker_command.params}


def test_every_celery_beat_option_is_a_celeriac_beat_option() -> None:
    missing = option_names(celery_beat_command) - option_names(celeriac_beat_command)
    assert not missing, f"celery beat options celeriac lacks: {sorted(missing)}"


def test_every_celery_global_option_is_a_celeriac_global_option() -> None:
    missing = option_names(celery_group) - option_names(cli)
    assert not missing, f"celery global options celeriac lacks: {sorted(missing)}"


def test_options_with_no_meaning_here_each_warn_one_line_at_start_up(tmp_path: Path) -> None:
    write_module(tmp_path, "opts", TASKS)
    argv = ["-P", "threads", "-l", "INFO", "-S", "state.db", "-E", "--without-gossip"]
    argv += ["--without-mingle", "--without-heartbeat", "--heartbeat-interval", "5"]
    argv += ["-s", "beat-schedule", "--scheduler", "x.Y", "--executable", sys.executable]
    argv += ["--autoscale", "3,1", "--pool-start-method", "spawn"]
    with WorkerProcess(tmp_path, "opts", *argv) as worker:
        pass
    lines = [line for line in worker.lines if "WARNING" in line]
    for text in NO_MEANING.values():
        assert sum(text in line for line in lines) == 1, (text, worker.log)
    assert any("--autoscale=3,1: only the prefork pool" in line for line in lines)
    assert "concurrency: 3 (threads)" in worker.log
    assert any("--pool-start-method=spawn" in line for line in lines)


def test_a_systemd_style_command_line_starts_and_runs_tasks(tmp_path: Path) -> None:
    write_module(tmp_path, "opts", TASKS)
    argv = "-l INFO -c 2 -O fair --without-gossip --without-mingle --without-heartbeat"
    argv += " --max-tasks-per-child 100 --max-memory-per-child 200000 --time-limit 300"
    argv += " --soft-time-limit 240 --pidfile w.pid --logfile w.log -E"
    app = client(tmp_path)
    results = [app.send_task("opts.add", (i, i)) for i in range(4)]
    worker = WorkerProcess(tmp_path, "opts", *argv.split()).start(wait_ready=False)
    try:
        assert [r.get(timeout=20) for r in results] == [0, 2, 4, 6]
        assert int((tmp_path / "w.pid").read_text()) == worker.proc.pid  # type: ignore[union-attr]

        # "ready." comes once both children are up, which may be after the tasks ran
        def logged() -> bool:
            log = (tmp_path / "w.log").read_text()
            return "ready." in log and log.count("succeeded") == 4

        wait_until(logged, 20, "ready and 4 tasks in w.log")
        assert "--without-mingle" in (tmp_path / "w.log").read_text()
    finally:
        worker.stop()
    assert not (tmp_path / "w.pid").exists()


def test_time_limit_and_soft_time_limit_options(tmp_path: Path) -> None:
    write_module(tmp_path, "opts", TASKS)
    app = client(tmp_path)
    with WorkerProcess(tmp_path, "opts", "-c", "1", "--soft-time-limit", "0.3"):
        assert app.send_task("opts.nap", (10,)).get(timeout=15) == "soft"
    with WorkerProcess(tmp_path, "opts", "-c", "1", "--time-limit", "0.3"):
        result = app.send_task("opts.nap", (10,))
        with pytest.raises(TimeLimitExceeded):
            result.get(timeout=15)


def test_max_memory_per_child_replaces_the_child_after_the_task(tmp_path: Path) -> None:
    write_module(tmp_path, "opts", TASKS)
    app = client(tmp_path)
    with WorkerProcess(tmp_path, "opts", "-c", "1", "--max-memory-per-child", "100000"):
        first = app.send_task("opts.pid").get(timeout=10)
        assert app.send_task("opts.pid").get(timeout=10) == first  # small: kept
        assert app.send_task("opts.grow", (120,)).get(timeout=10) == first  # it completes
        assert app.send_task("opts.pid").get(timeout=10) != first  # then replaced


def test_fair_optimization_holds_one_message_per_slot(tmp_path: Path) -> None:
    """With ``-O fair`` a busy worker leaves the waiting tasks to a second worker."""
    write_module(tmp_path, "opts", TASKS)
    app = client(tmp_path)
    flag = f"flag-{uuid.uuid4().hex}"
    env = {"WORKER_NAME": "first"}
    with WorkerProcess(tmp_path, "opts", "-c", "1", "-O", "fair", "-l", "INFO", env=env) as w1:
        held = app.send_task("opts.hold", (flag,))
        w1.wait_for(r"opts\.hold.*received")
        later = [app.send_task("opts.where") for _ in range(3)]
        with WorkerProcess(
            tmp_path, "opts", "-c", "1", "-n", "second@%h", env={"WORKER_NAME": "second"}
        ):
            assert [r.get(timeout=15) for r in later] == ["second"] * 3
        (tmp_path / flag).touch()
        assert held.get(timeout=15) == "first"


def test_queue_options_purge_exclude_and_include(tmp_path: Path) -> None:
    write_module(tmp_path, "opts", TASKS)
    write_module(
        tmp_path, "extra", "from opts import app\n\n@app.task\ndef hello():\n    return 'hi'\n"
    )
    app = client(tmp_path)
    stale = [app.send_task("opts.add", (1, 1)) for _ in range(3)]
    fresh_b = app.send_task("opts.add", (2, 2), queue="b")
    argv = ["-P", "threads", "-Q", "a,b,c", "-X", "a,c", "--purge", "-I", "extra", "-l", "INFO"]
    with WorkerProcess(tmp_path, "opts", *argv) as worker:
        pass
    assert "Purged 1 message(s) from 1 queue(s)" in worker.log  # only b: the others are excluded
    queues = [line.split(".>")[1].strip() for line in worker.lines if line.startswith(" " * 16)]
    assert queues == ["b"] and ". extra.hello" in worker.log
    assert fresh_b.state == "PENDING" and stale[0].state == "PENDING"
    with WorkerProcess(tmp_path, "opts", "-P", "threads", "-Q", "celery"):
        assert [r.get(timeout=10) for r in stale] == [2, 2, 2]  # not purged: not its queue


def test_concurrency_auto_and_processes_pool(tmp_path: Path) -> None:
    write_module(tmp_path, "opts", TASKS)
    with WorkerProcess(tmp_path, "opts", "-c", "auto", "-P", "processes", "-l", "INFO") as w:
        pass
    assert f"concurrency: {auto_concurrency()} (prefork)" in w.log


def test_beat_with_another_scheduler_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    write_module(tmp_path, "opts", TASKS)
    scheduler = "django_celery_beat.schedulers:DatabaseScheduler"
    proc = subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "opts", "worker", "-B", "--scheduler", scheduler],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "celeriac's beat has one scheduler" in proc.stderr


def test_app_and_broker_after_the_subcommand_and_global_options(tmp_path: Path) -> None:
    write_module(tmp_path, "opts", TASKS)
    write_module(tmp_path, "settings", "worker_prefetch_multiplier = 2\n")
    other = tmp_path / "other"
    other.mkdir()
    broker = f"sqlite:///{other / 'o.db'}"
    app = Celery("opts", broker=broker, set_as_current=False)
    result = app.send_task("opts.add", (3, 4))
    worker = WorkerProcess(tmp_path, "opts", "-P", "threads", "-b", broker)
    worker.argv = [
        sys.executable,
        "-m",
        "celeriac",
        "-q",
        "--loader",
        "x.Loader",
        "--config",
        "settings",
        "--workdir",
        str(tmp_path),
        "-C",
        "--skip-checks",
        "--result-backend",
        broker,
        "worker",
        "-A",
        "opts",
        "-P",
        "threads",
        "-b",
        broker,
    ]
    worker.cwd = other
    with worker:
        assert result.get(timeout=10) == 7
    assert "--loader=x.Loader: celeriac has no loaders" in worker.log
    assert "[tasks]" not in worker.log  # -q: no banner


AUTOSCALE_TASKS = """
import os, pathlib, time
from celeriac import Celery
HERE = pathlib.Path(__file__).resolve().parent
app = Celery("scale", broker=f"sqlite:///{HERE / 'b.db'}")

@app.task
def hold(name):
    (HERE / f"started-{name}").touch()
    deadline = time.monotonic() + 20
    while not (HERE / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()
"""


def test_autoscale_grows_to_max_under_load_and_shrinks_to_min_when_idle(tmp_path: Path) -> None:
    write_module(tmp_path, "scale", AUTOSCALE_TASKS)
    app = Celery("scale", broker=f"sqlite:///{tmp_path / 'b.db'}", set_as_current=False)
    env = {"AUTOSCALE_KEEPALIVE": "1"}
    argv = ["--autoscale=3,1", "-l", "INFO"]
    with WorkerProcess(tmp_path, "scale", *argv, env=env) as worker:
        assert "concurrency: {min=1, max=3} (prefork, autoscale)" in worker.log
        results = [app.send_task("scale.hold", (str(i),)) for i in range(3)]
        # all three run at once, although the worker started with one process
        wait_until(lambda: len(list(tmp_path.glob("started-*"))) == 3, 15, "3 tasks running")
        worker.wait_for(r"Scaling up: 3 pool processes")
        (tmp_path / "release").touch()
        assert len({r.get(timeout=15) for r in results}) == 3
        worker.wait_for(r"Scaling down: 1 pool processes", timeout=15)
    assert "Scaling up: 4" not in worker.log
