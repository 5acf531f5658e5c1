"""The command line, typed as a user types it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import celeriac
from celeriac import Celery
from support import WorkerProcess, write_module

CELERIAC = shutil.which("celeriac", path=os.path.dirname(sys.executable)) or "celeriac"

TASKS = """
import pathlib
from celeriac import Celery
app = Celery("clitasks", broker=f"sqlite:///{pathlib.Path(__file__).resolve().parent / 'b.db'}")

@app.task
def add(x, y):
    return x + y
"""


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CELERIAC, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_version(tmp_path: Path) -> None:
    proc = run(tmp_path, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == celeriac.__version__


def test_missing_module_is_one_clear_line(tmp_path: Path) -> None:
    line = one_error_line(run(tmp_path, "-A", "no_such_module", "worker"))
    assert "module 'no_such_module' not found" in line


def test_module_without_app_is_one_clear_line(tmp_path: Path) -> None:
    write_module(tmp_path, "noapp", "x = 1\n")
    line = one_error_line(run(tmp_path, "-A", "noapp", "worker"))
    assert "no celeriac app found in module 'noapp'" in line
    line = one_error_line(run(tmp_path, "-A", "noapp:thing", "worker"))
    assert "has no app named 'thing'" in line


def test_unreachable_broker_is_one_clear_line(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "farapp",
        """
        from celeriac import Celery
        app = Celery("far", broker="sqlite:////nonexistent/dir/broker.db")
    """,
    )
    line = one_error_line(run(tmp_path, "-A", "farapp", "purge", "-f"))
    assert "/nonexistent/dir" in line


def test_bad_setting_is_one_clear_line(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "badcfg",
        """
        from celeriac import Celery
        app = Celery("bad", broker="memory://", worker_prefetch_multiplyer=2)
    """,
    )
    line = one_error_line(run(tmp_path, "-A", "badcfg", "worker"))
    assert "did you mean 'worker_prefetch_multiplier'" in line


def test_package_with_celery_module_module_colon_app_purge_and_result(tmp_path: Path) -> None:
    package = tmp_path / "proj"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write_module(package, "celery", TASKS)
    app = Celery("clitasks", broker=f"sqlite:///{package / 'b.db'}", set_as_current=False)
    for _ in range(3):
        app.send_task("proj.celery.add", (1, 2))
    proc = run(tmp_path, "-A", "proj", "purge", "-f")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Purged 3 messages from 1 known task queue(s)."
    result = app.send_task("proj.celery.add", (20, 22))
    with WorkerProcess(tmp_path, "proj.celery:app", "-P", "threads", "-l", "info"):
        assert result.get(timeout=10) == 42
        proc = run(tmp_path, "-A", "proj", "result", result.id)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "42"


def test_worker_options_show_in_the_banner(tmp_path: Path) -> None:
    write_module(tmp_path, "bannerapp", TASKS)
    worker = WorkerProcess(
        tmp_path,
        "bannerapp",
        "-c",
        "3",
        "-P",
        "threads",
        "-Q",
        "a,b",
        "-n",
        "w1@%h",
        "--prefetch-multiplier",
        "2",
        "-l",
        "INFO",
    ).start()
    worker.stop()
    log = worker.log
    assert "w1@" in log and "concurrency: 3 (threads)" in log
    assert ".> a" in log and ".> b" in log and ". bannerapp.add" in log


@pytest.mark.parametrize("args", [["worker", "-P", "nosuchpool"], ["worker", "-c", "0"]])
def test_bad_worker_options_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    write_module(tmp_path, "optapp", TASKS)
    proc = run(tmp_path, "-A", "optapp", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Invalid value" in proc.stderr
