"""``celeriac call``, ``shell``, ``report``, ``list bindings``; ``app.start()`` and
``app.worker_main()``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from celeriac import Celery
from servers import AMQP_URL
from support import WorkerProcess, write_module

TASKS = """
import pathlib, sys
from celeriac import Celery
HERE = pathlib.Path(__file__).resolve().parent
app = Celery("tools", broker=f"sqlite:///{HERE / 'b.db'}",
             broker_transport_options={"api_key": "k3y"},
             result_backend="redis://user:s3cret@127.0.0.1:1/0")

@app.task
def add(x, y, z=0):
    return x + y + z

if __name__ == "__main__":
    if sys.argv[1:2] == ["wm"]:
        app.worker_main(["worker", *sys.argv[2:]])
    app.start()
"""
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def celeriac(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celeriac", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input=stdin,
    )


def test_call_prints_the_task_id_and_sends_args_kwargs_queue_countdown(tmp_path: Path) -> None:
    write_module(
        tmp_path, "tools", TASKS.replace('result_backend="redis://user:s3cret@127.0.0.1:1/0"', "")
    )
    app = Celery("tools", broker=f"sqlite:///{tmp_path / 'b.db'}", set_as_current=False)
    sent = celeriac(
        tmp_path,
        "-A",
        "tools",
        "call",
        "tools.add",
        "--args",
        "[1, 2]",
        "--kwargs",
        '{"z": 3}',
        "--queue",
        "q1",
        "--countdown",
        "0.2",
    )
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    assert UUID.match(task_id)
    with WorkerProcess(tmp_path, "tools", "-P", "threads", "-Q", "q1"):
        assert app.AsyncResult(task_id).get(timeout=10) == 6
    bad = celeriac(tmp_path, "-A", "tools", "call", "tools.add", "--args", "{}")
    assert bad.returncode == 2 and "expected a JSON array" in bad.stderr


def test_report_masks_passwords_and_secrets(tmp_path: Path) -> None:
    write_module(tmp_path, "tools", TASKS)
    write_module(tmp_path, "more", "worker_prefetch_multiplier = 7\n")
    proc = celeriac(tmp_path, "-A", "tools", "--config", "more", "report")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "celeriac:" in out and "results:redis://user:**@127.0.0.1:1/0" in out
    assert "s3cret" not in out and "k3y" not in out
    assert "broker_transport_options: {'api_key': '********'}" in out
    assert "worker_prefetch_multiplier: 7" in out  # --config was loaded


def test_shell_has_the_app_and_its_tasks(tmp_path: Path) -> None:
    write_module(tmp_path, "tools", TASKS)
    code = "print('NAMES', add.name, app.main, celeriac.__name__, type(group).__name__)\n"
    proc = celeriac(tmp_path, "-A", "tools", "shell", "--python", stdin=code)
    assert proc.returncode == 0, proc.stderr
    assert "NAMES tools.add tools celeriac" in proc.stdout


def test_list_bindings_needs_amqp(tmp_path: Path) -> None:
    write_module(tmp_path, "tools", TASKS)
    proc = celeriac(tmp_path, "-A", "tools", "list", "bindings")
    assert proc.returncode == 1 and "list bindings needs an AMQP broker" in proc.stderr
    proc = celeriac(tmp_path, "-A", "tools", "-b", AMQP_URL, "list", "bindings")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[1].split() == ["celery", "celery", "celery"]


def test_list_bindings_shows_the_exchanges_task_queues_binds_to(tmp_path: Path) -> None:
    module = (
        TASKS + "\nfrom kombu import Exchange, Queue\n"
        "app.conf.task_queues = [Queue('lb_q', Exchange('lb_ex'), routing_key='lb_rk')]\n"
    )
    write_module(tmp_path, "tools", module)
    proc = celeriac(tmp_path, "-A", "tools", "-b", AMQP_URL, "list", "bindings")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert rows == [["lb_q", "lb_q", "lb_q"], ["lb_q", "lb_ex", "lb_rk"]]


def test_app_start_and_worker_main_run_the_command_line(tmp_path: Path) -> None:
    path = write_module(
        tmp_path, "tools", TASKS.replace('result_backend="redis://user:s3cret@127.0.0.1:1/0"', "")
    )
    app = Celery("tools", broker=f"sqlite:///{tmp_path / 'b.db'}", set_as_current=False)
    for argv in (["worker", "-l", "info", "-P", "threads"], ["wm", "-l", "info", "-P", "solo"]):
        result = app.send_task("tools.add", (2, 3))
        worker = WorkerProcess(tmp_path, "unused")
        worker.argv = [sys.executable, str(path), *argv]
        with worker:
            assert result.get(timeout=10) == 5
    version = subprocess.run(
        [sys.executable, str(path), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ},
    )
    assert version.returncode == 0 and version.stdout.strip()
