"""``--detach``, pidfiles and ``celeriac multi``, compared with Celery's where it shows."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celery
from servers import REDIS_URL, scratch_prefix
from support import wait_until, write_module

TASKS = """
import os, pathlib
from celeriac import Celery
app = Celery("dmn", broker=f"sqlite:///{pathlib.Path(__file__).resolve().parent / 'b.db'}")

@app.task
def pid():
    return os.getppid(), os.getpid()
"""

REDIS_TASKS = """
import os
from celeriac import Celery
PREFIX = os.environ["TEST_PREFIX"]
app = Celery("dmn", broker=os.environ["TEST_REDIS"], backend=os.environ["TEST_REDIS"],
             broker_transport_options={"global_keyprefix": PREFIX},
             result_backend_transport_options={"global_keyprefix": PREFIX})

@app.task
def pid():
    return os.getppid(), os.getpid()
"""


def celeriac(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celeriac", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (this test's directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


@contextlib.contextmanager
def no_process_left(directory: Path) -> Iterator[None]:
    """Fail if a process of ``directory`` outlives the block; kill any that does."""
    try:
        yield
    finally:
        left = processes_mentioning(str(directory))
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


def test_detach_writes_the_daemons_pid_and_refuses_a_live_pidfile(tmp_path: Path) -> None:
    write_module(tmp_path, "dmn", TASKS)
    app = Celery("dmn", broker=f"sqlite:///{tmp_path / 'b.db'}", set_as_current=False)
    pidfile, logfile = tmp_path / "run" / "w.pid", tmp_path / "log" / "w%I.log"
    pidfile.parent.mkdir()
    pidfile.write_text("999999\n")  # stale: no such process
    args = ["-A", "dmn", "worker", "-D", "-c", "1", "-l", "INFO", f"--pidfile={pidfile}"]
    args.append(f"--logfile={logfile}")
    with no_process_left(tmp_path):
        proc = celeriac(tmp_path, *args)
        assert proc.returncode == 0, proc.stderr
        daemon = int(pidfile.read_text())
        try:
            parent, _child = app.send_task("dmn.pid").get(timeout=20)
            assert parent == daemon
            assert os.getsid(daemon) != os.getsid(0)  # its own session, no terminal
            again = celeriac(tmp_path, *args)
            assert again.returncode == 1
            assert f"already exists: the worker seems to be running (pid {daemon})" in again.stderr
            main_log, child_log = tmp_path / "log" / "w.log", tmp_path / "log" / "w-1.log"
            wait_until(lambda: "ready." in main_log.read_text(), 20, "ready in w.log")
            wait_until(
                lambda: child_log.exists() and "succeeded" in child_log.read_text(), 20, "child log"
            )
        finally:
            os.kill(daemon, signal.SIGTERM)
            wait_until(lambda: not processes_mentioning(str(tmp_path)), 20, "the daemon to exit")
    assert not pidfile.exists()


def _fields(line: str) -> dict[str, str]:
    words = line.split()
    out = {}
    for i, word in enumerate(words):
        if word.startswith("--") and "=" in word:
            key, _, value = word.partition("=")
            out[key] = value
        elif word in ("-n", "-c", "-Q"):
            out[word] = words[i + 1]
    out.pop("--executable", None)
    return out


@pytest.mark.parametrize(
    "spec",
    [
        [
            "3",
            "-c:1",
            "3",
            "-n:2",
            "foo@%h",
            "-Q:1-2",
            "hi",
            "--pidfile=/r/%n-%h-%d-%p.pid",
            "--logfile=/l/%n%I-%i.log",
        ],
        ["a", "b@x.example.com", "--hostname=h.example.com", "-c", "2"],
        ["2", "--range-prefix=w"],
    ],
)
def test_multi_show_names_and_expands_as_celery(tmp_path: Path, spec: list[str]) -> None:
    ours = celeriac(tmp_path, "multi", "show", *spec)
    theirs = subprocess.run(
        [sys.executable, "-m", "celery", "multi", "show", *spec],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ours.returncode == theirs.returncode == 0, (ours.stderr, theirs.stderr)
    celery_lines = [_fields(line) for line in theirs.stdout.splitlines() if line.strip()]
    celeriac_lines = [_fields(line) for line in ours.stdout.splitlines() if line.strip()]
    assert celeriac_lines == celery_lines


@pytest.mark.parametrize("broker", ["sqlite", "redis"])
def test_multi_start_runs_tasks_and_stopwait_leaves_no_process(tmp_path: Path, broker: str) -> None:
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if broker == "redis":
            prefix = stack.enter_context(scratch_prefix("test-cli-multi"))
            env = {"TEST_PREFIX": prefix, "TEST_REDIS": REDIS_URL}
            write_module(tmp_path, "dmn", REDIS_TASKS)
            app = Celery(
                "dmn",
                broker=REDIS_URL,
                backend=REDIS_URL,
                set_as_current=False,
                broker_transport_options={"global_keyprefix": prefix},
                result_backend_transport_options={"global_keyprefix": prefix},
            )
        else:
            write_module(tmp_path, "dmn", TASKS)
            app = Celery("dmn", broker=f"sqlite:///{tmp_path / 'b.db'}", set_as_current=False)
        stack.callback(app.close)
        files = [f"--pidfile={tmp_path}/%n.pid", f"--logfile={tmp_path}/%n%I.log"]
        with no_process_left(tmp_path):
            try:
                started = celeriac(
                    tmp_path,
                    "multi",
                    "start",
                    "2",
                    "-A",
                    "dmn",
                    "-c",
                    "1",
                    "-l",
                    "INFO",
                    *files,
                    env=env,
                )
                assert started.returncode == 0, started.stderr
                assert "> celery1@" in started.stdout and "> celery2@" in started.stdout
                daemons = {int((tmp_path / f"celery{i}.pid").read_text()) for i in (1, 2)}
                parents = {app.send_task("dmn.pid").get(timeout=20)[0] for _ in range(8)}
                assert parents <= daemons
                stopped = celeriac(tmp_path, "multi", "stopwait", "2", *files)
                assert stopped.returncode == 0, stopped.stderr
                assert stopped.stdout.count(": OK") == 2, stopped.stdout
                assert not processes_mentioning(str(tmp_path))
                assert not list(tmp_path.glob("*.pid"))
                again = celeriac(tmp_path, "multi", "stop", "2", *files)
                assert again.stdout.count(": DOWN") == 2
            finally:
                for path in tmp_path.glob("*.pid"):
                    with contextlib.suppress(ValueError, ProcessLookupError):
                        os.kill(int(path.read_text()), signal.SIGKILL)


def test_umask_applies_and_an_unknown_uid_is_a_clear_error(tmp_path: Path) -> None:
    write_module(tmp_path, "dmn", TASKS)
    bad = celeriac(tmp_path, "-A", "dmn", "worker", "--uid", "no-such-user-here")
    assert bad.returncode == 2 and "no such user 'no-such-user-here'" in bad.stderr
    log = tmp_path / "w.log"
    args = ["-A", "dmn", "worker", "-D", "-P", "solo", "--umask", "077", f"--logfile={log}"]
    pidfile = tmp_path / "w.pid"
    with no_process_left(tmp_path):
        assert celeriac(tmp_path, *args, f"--pidfile={pidfile}").returncode == 0
        try:
            assert pidfile.stat().st_mode & 0o777 == 0o600  # written by the daemon
        finally:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
            wait_until(lambda: not processes_mentioning(str(tmp_path)), 20, "the daemon to exit")
